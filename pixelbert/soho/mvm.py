"""SOHO's masked visual modelling (MVM): hide every cell that maps to the same dictionary entry as a randomly
chosen cell, and predict that entry's index from the text and the remaining cells.

Masking all cells of one entry (not single cells) stops the model from copying a masked cell's content from an
identical neighbour: the whole "visual word" disappears from the image at once.

Scoring (``PretrainConfig.mvm_head``): ``dictionary``, as released (researchmm/soho
``soho_singleStream_Pre.forward_train``), scores a masked position's fused output against every entry by cosine
similarity (no parameters, no temperature; the entries take no gradient, they move by moving average only);
``classifier`` is a learned BERT-style head over the entry indices (vlbench's earlier recipe).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pixelbert.config import TransformerConfig
from pixelbert.pretraining.objective import ObjectiveOutput
from pixelbert.transformer import ACTIVATIONS


def mvm_mask(codes: Tensor, mask: Tensor, probability: float, generator: torch.Generator | None = None) -> Tensor:
    """Which tokens MVM hides: [B, N] bool.

    Each image takes part with ``probability``; in a taking-part image one real cell is drawn uniformly and
    every real cell whose code equals that cell's code is masked. ``codes`` [B, N] long, ``mask`` [B, N] bool.
    """
    batch, count = codes.shape
    if count == 0:
        return torch.zeros_like(mask)
    gen_device = generator.device if generator is not None else codes.device
    scores = torch.rand(batch, count, generator=generator, device=gen_device).to(codes.device)
    anchor = scores.masked_fill(~mask, -1.0).argmax(dim=1, keepdim=True)  # a uniformly drawn real cell
    anchor_code = codes.gather(1, anchor)
    takes_part = torch.rand(batch, 1, generator=generator, device=gen_device).to(codes.device) < probability
    return (codes == anchor_code) & mask & takes_part & mask.any(dim=1, keepdim=True)


def dictionary_scores(hidden: Tensor, entries: Tensor) -> Tensor:
    """SOHO's MVM logits: cosine similarity of each hidden state [M, H] to each dictionary entry [K, H] -> [M, K].

    The entries are detached (the release reads ``embed.data``): MVM trains the transformer and CNN, while the
    dictionary follows its moving average."""
    return F.normalize(hidden.float(), dim=-1) @ F.normalize(entries.detach().float(), dim=-1).t()


class MvmHead(nn.Module):
    """Hidden state of a masked visual token -> logits over the dictionary's entries (BERT-style transform).
    The ``classifier`` option; the release scores against the entries instead (:func:`dictionary_scores`)."""

    def __init__(self, config: TransformerConfig, dictionary_size: int) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.activation = ACTIVATIONS[config.hidden_act]()
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.decoder = nn.Linear(config.hidden_size, dictionary_size)
        for layer in (self.dense, self.decoder):
            nn.init.normal_(layer.weight, std=0.02)
            nn.init.zeros_(layer.bias)

    def forward(self, hidden: Tensor) -> Tensor:
        return self.decoder(self.norm(self.activation(self.dense(hidden))))


def mvm_loss(head: MvmHead | None, visual_hidden: Tensor, codes: Tensor, masked: Tensor,
             entries: Tensor) -> ObjectiveOutput:
    """Cross-entropy of the entry index at the masked visual positions.

    visual_hidden [B, N, H] (the transformer's visual part), codes [B, N] long, masked [B, N] bool, entries
    [K, H] the dictionary. ``head`` None scores against the entries, as released; a :class:`MvmHead` classifies.
    """
    if not bool(masked.any()):
        return ObjectiveOutput(loss=visual_hidden.sum() * 0.0, correct=0, count=0)
    hidden = visual_hidden[masked]
    logits = dictionary_scores(hidden, entries) if head is None else head(hidden).float()
    target = codes[masked]
    loss = F.cross_entropy(logits, target)
    correct = int((logits.argmax(dim=-1) == target).sum())
    return ObjectiveOutput(loss=loss, correct=correct, count=int(target.numel()))

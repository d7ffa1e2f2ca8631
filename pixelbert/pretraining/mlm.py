"""Masked language modelling conditioned on the image (BERT's recipe, as Pixel-BERT and SOHO use it)."""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import Tensor

from pixelbert.heads import MlmHead
from pixelbert.pretraining.objective import IGNORE_INDEX, ObjectiveOutput


def mask_tokens(input_ids: Tensor, attention_mask: Tensor, *, vocab_size: int, mask_token_id: int,
                special_token_ids: Iterable[int], probability: float = 0.15,
                generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """BERT's masking: ``(masked_ids, labels)``, both [B, T].

    Each real, non-special token is chosen with ``probability``; a chosen token becomes [MASK] 80% of the time,
    a uniformly random vocabulary id 10%, and stays as it is 10%. ``labels`` holds the original id at chosen
    positions and ``IGNORE_INDEX`` elsewhere ([CLS], [SEP] and padding are never chosen).
    """
    shape = input_ids.shape
    special = torch.tensor(sorted(set(special_token_ids)), dtype=input_ids.dtype)
    candidates = attention_mask.bool().cpu() & ~torch.isin(input_ids.cpu(), special)
    chosen = (torch.rand(shape, generator=generator) < probability) & candidates
    roll = torch.rand(shape, generator=generator)
    random_ids = torch.randint(vocab_size, shape, generator=generator, dtype=input_ids.dtype)
    masked = input_ids.cpu().clone()
    masked[chosen & (roll < 0.8)] = mask_token_id
    to_random = chosen & (roll >= 0.8) & (roll < 0.9)
    masked[to_random] = random_ids[to_random]
    labels = input_ids.cpu().masked_fill(~chosen, IGNORE_INDEX)
    return masked.to(input_ids.device), labels.to(input_ids.device)


def mlm_loss(head: MlmHead, text_hidden: Tensor, labels: Tensor) -> ObjectiveOutput:
    """Cross-entropy over the vocabulary at the labelled positions; text_hidden [B, T, H], labels [B, T].

    Only the chosen positions go through the head, so no [B, T, vocab] tensor is ever built.
    """
    chosen = labels != IGNORE_INDEX
    if not bool(chosen.any()):
        return ObjectiveOutput(loss=text_hidden.sum() * 0.0, correct=0, count=0)
    logits = head(text_hidden[chosen]).float()
    target = labels[chosen]
    loss = F.cross_entropy(logits, target)
    return ObjectiveOutput(loss=loss, correct=int((logits.argmax(-1) == target).sum()), count=int(target.numel()))

"""Task heads, shared by every model (they read the transformer's outputs, never the visual encoder's).

- VqaHead: MLP on pooled [CLS] -> one logit per answer (soft-score binary cross-entropy), as in Pixel-BERT/UNITER.
- Nlvr2Head: pooled (left image, statement) and (right image, statement) concatenated -> true/false logits.
- ItmHead: pooled [CLS] -> (no-match, match) logits, for retrieval scores and pre-training ITM.
- MlmHead: BERT's masked-language-model head, decoder tied to the word embeddings.
Retrieval's contrastive first stage (ItcHead, and RetrievalHead = ITM + ITC) is in pixelbert/itc.py.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pixelbert.config import TransformerConfig
from pixelbert.transformer import ACTIVATIONS


def _init(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def _mlp(in_features: int, hidden: int, out_features: int, layer_norm_eps: float) -> nn.Sequential:
    """Linear -> GELU -> LayerNorm -> Linear: the classifier of UNITER / Pixel-BERT."""
    return nn.Sequential(
        nn.Linear(in_features, hidden), nn.GELU(), nn.LayerNorm(hidden, eps=layer_norm_eps),
        nn.Linear(hidden, out_features),
    )


class VqaHead(nn.Module):
    def __init__(self, hidden_size: int, num_answers: int, layer_norm_eps: float = 1e-12) -> None:
        super().__init__()
        self.num_answers = num_answers
        self.classifier = _mlp(hidden_size, 2 * hidden_size, num_answers, layer_norm_eps)
        _init(self)

    def forward(self, pooled: Tensor) -> Tensor:
        """[B, H] -> answer logits [B, num_answers] (train with BCE against soft VQA scores)."""
        return self.classifier(pooled)


class Nlvr2Head(nn.Module):
    """One transformer pass per (image, statement); the two pooled vectors are classified together."""

    def __init__(self, hidden_size: int, layer_norm_eps: float = 1e-12) -> None:
        super().__init__()
        self.classifier = _mlp(2 * hidden_size, 2 * hidden_size, 2, layer_norm_eps)
        _init(self)

    def forward(self, pooled_left: Tensor, pooled_right: Tensor) -> Tensor:
        """[B, H], [B, H] -> logits [B, 2] (index 1 = statement true)."""
        return self.classifier(torch.cat([pooled_left, pooled_right], dim=-1))


class ItmHead(nn.Module):
    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        self.classifier = nn.Linear(hidden_size, 2)
        _init(self)

    def forward(self, pooled: Tensor) -> Tensor:
        """[B, H] -> logits [B, 2] (index 1 = image and text match); train with cross-entropy."""
        return self.classifier(pooled)

    def match_score(self, pooled: Tensor) -> Tensor:
        """[B] retrieval score: log-probability of "match" (ranks like the logit margin)."""
        return F.log_softmax(self(pooled), dim=-1)[:, 1]


class MlmHead(nn.Module):
    """BERT's MLM head: dense -> activation -> LayerNorm -> decoder whose weight IS the word embedding matrix.

    Names mirror Hugging Face's ``cls.predictions`` (transform.dense, transform.LayerNorm, bias) so a BERT
    checkpoint's MLM head loads directly. Pass only the masked positions ([M, H]) to avoid a [B, T, vocab] tensor.
    """

    def __init__(self, config: TransformerConfig, word_embeddings: nn.Embedding) -> None:
        super().__init__()
        self.transform = nn.Module()
        self.transform.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.transform.activation = ACTIVATIONS[config.hidden_act]()
        self.transform.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        _init(self)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.decoder.weight = word_embeddings.weight  # tied: the output space is the input vocabulary
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))

    def forward(self, hidden: Tensor) -> Tensor:
        """[..., H] -> vocabulary logits [..., vocab_size]."""
        t = self.transform
        return self.decoder(t.LayerNorm(t.activation(t.dense(hidden)))) + self.bias

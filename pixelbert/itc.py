"""Image-text contrastive (ITC) first stage for retrieval: vlbench's addition, after ALBEF (arXiv 2107.07651).

Pixel-BERT scores every (image, caption) pair with its cross-encoder (the ITM head), n_images x n_captions
transformer passes: fine on 100 images, about 45 CPU minutes on 700. ALBEF's answer is a contrastive dual encoder
whose cosine similarities rank everything cheaply, with the cross-encoder re-scoring only the top k. vlbench keeps
the single-stream model (no second encoder, no extra transformer weights) and makes the two *unimodal* passes of
the same transformer its dual encoder:

- a text's embedding: the pooled [CLS] of ``model.fuse(ids, mask, None)``, the text without visual tokens (the
  pass the text-only control makes for every input);
- an image's embedding: the pooled [CLS] of ``[CLS] [SEP] visual tokens``, an empty text with the image's
  visual tokens (the empty text is what the tokenizer makes of ``""``, so position and type embeddings are the
  ones every pass uses, and [CLS] reads the image alone).

Each goes through its own linear projection to a small space (128), is L2-normalised, and pairs are scored by
cosine / temperature; the temperature is learned, starting at 0.07 (CLIP, ALBEF) and clamped to [0.001, 0.5] as
ALBEF does. One image costs one pass and one caption one pass, so a split costs n + 5n passes instead of 5n^2.
Models without visual tokens (the text-only control) give every image the same embedding: their first stage is at
chance, as it should be.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pixelbert.heads import ItmHead
from pixelbert.visual import VisualTokens

TEMPERATURE_INIT = 0.07
TEMPERATURE_RANGE = (0.001, 0.5)


class ItcHead(nn.Module):
    """Two projections (image, text) of pooled [CLS] vectors into a shared ``dim``-d space + a learned temperature."""

    def __init__(self, hidden_size: int, dim: int = 128) -> None:
        super().__init__()
        self.image_proj = nn.Linear(hidden_size, dim)
        self.text_proj = nn.Linear(hidden_size, dim)
        for layer in (self.image_proj, self.text_proj):
            nn.init.normal_(layer.weight, std=0.02)
            nn.init.zeros_(layer.bias)
        self.temp = nn.Parameter(torch.tensor(TEMPERATURE_INIT))

    @property
    def temperature(self) -> Tensor:
        return self.temp.clamp(*TEMPERATURE_RANGE)

    def image(self, pooled: Tensor) -> Tensor:
        """[B, H] pooled image-only passes -> [B, dim] unit vectors (float32)."""
        return F.normalize(self.image_proj(pooled.float()), dim=-1)

    def text(self, pooled: Tensor) -> Tensor:
        """[B, H] pooled text-only passes -> [B, dim] unit vectors (float32)."""
        return F.normalize(self.text_proj(pooled.float()), dim=-1)


class RetrievalHead(nn.Module):
    """The retrieval task's head with the ITC first stage: ``itm`` (the cross-encoder's classifier, the one
    pre-training trains) and ``itc``. Calling it is calling the ITM head, so every ITM caller works unchanged."""

    def __init__(self, hidden_size: int, itc_dim: int = 128) -> None:
        super().__init__()
        self.itm = ItmHead(hidden_size)
        self.itc = ItcHead(hidden_size, itc_dim)

    def forward(self, pooled: Tensor) -> Tensor:
        return self.itm(pooled)


def text_embeddings(model: nn.Module, head: ItcHead, ids: Tensor, mask: Tensor) -> Tensor:
    """[B, T] caption tokens -> [B, dim] ITC embeddings from the text-only pass."""
    pooled = model.fuse(ids, mask, None).pooled
    with torch.autocast(pooled.device.type, enabled=False):
        return head.text(pooled)


def image_embeddings(model: nn.Module, head: ItcHead, visual: VisualTokens, empty_ids: Tensor,
                     empty_mask: Tensor) -> Tensor:
    """Visual tokens of B images + the tokens of one empty text ([1, 2]: [CLS] [SEP]) -> [B, dim] ITC
    embeddings from the image-only pass."""
    n = visual.batch_size
    pooled = model.fuse(empty_ids.expand(n, -1), empty_mask.expand(n, -1), visual).pooled
    with torch.autocast(pooled.device.type, enabled=False):
        return head.image(pooled)


def itc_loss(image: Tensor, text: Tensor, temperature: Tensor) -> Tensor:
    """Symmetric InfoNCE over a batch of B aligned pairs (row i of ``image`` matches row i of ``text``, both unit
    vectors [B, dim]): the mean of image-to-text and text-to-image cross-entropies over cosine / temperature."""
    logits = image.float() @ text.float().T / temperature
    targets = torch.arange(logits.shape[0], device=logits.device)
    return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2

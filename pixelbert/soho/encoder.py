"""SOHO's visual encoder: Pixel-BERT's CNN pixels, each also looked up in the visual dictionary.

images -> CNN -> 2x2 max-pool -> Linear + LayerNorm (h) -> nearest dictionary entry q(h) (straight-through)
-> h + Linear(q) (the authors' release keeps the raw feature beside the entry) -> MVM: cells chosen for masked
visual modelling become a learned [MASK] vector -> LayerNorm -> + visual type (+ 2-D position) embedding
-> dropout -> optional random pixel sampling (pre-training only).

At fine-tuning the dictionary is bypassed, as in the authors' release (its ``SimpleVDforVQA`` neck): tokens are
h alone, LayerNorm, type (+ position) embedding. ``DictionaryConfig.fine_tune`` keeps it (and its moving-average
update in training mode). Pre-training sets ``use_dictionary``; masked visual modelling happens only while
``mvm_probability`` is set, which only the pre-training loop does.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from pixelbert.config import DictionaryConfig, VisualConfig
from pixelbert.pixel_encoder import PixelEncoder
from pixelbert.soho.mvm import mvm_mask
from pixelbert.soho.visual_dictionary import VisualDictionary
from pixelbert.visual import VisualTokens, feature_grid_mask


class SohoEncoder(PixelEncoder):
    def __init__(self, config: VisualConfig, dictionary: DictionaryConfig, hidden_size: int, dropout: float = 0.1,
                 layer_norm_eps: float = 1e-12) -> None:
        super().__init__(config, hidden_size, dropout=dropout, layer_norm_eps=layer_norm_eps)
        self.dictionary = VisualDictionary(dictionary, hidden_size)
        self.dictionary_projection = nn.Linear(hidden_size, hidden_size)
        self.mask_embedding = nn.Parameter(torch.zeros(hidden_size))
        nn.init.normal_(self.mask_embedding, std=0.02)
        self.output_norm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.mvm_probability: float | None = None
        """Set by pre-training: the share of images whose cells of one random entry are masked (None = off)."""
        self.mvm_generator: torch.Generator | None = None
        self.fine_tune_dictionary = dictionary.fine_tune
        self.use_dictionary = dictionary.fine_tune
        """Look tokens up in the dictionary: always in pre-training (set there), at fine-tuning as configured."""

    def forward(self, images: Tensor, image_sizes: Tensor | None = None) -> VisualTokens:
        features = self.feature_map(images, image_sizes)
        batch, _, rows, cols = features.shape
        flat = features.flatten(2).transpose(1, 2)  # [B, N, C], raster order
        p = self.projection
        h = p.norm(p.proj(flat))
        mask = feature_grid_mask(image_sizes, self.cell_size, (rows, cols))
        if mask is None:
            mask = torch.ones(batch, rows * cols, dtype=torch.bool, device=images.device)
        extra = self._position_embedding(rows, cols, images.device)
        if not self.use_dictionary:
            x = self.output_norm(h) + p.type_embedding
            return self.sample_tokens(self._tokens(p.dropout(x if extra is None else x + extra), mask))
        # Padding cells neither move the dictionary's entries nor become MVM targets.
        quantized, codes = self.dictionary(h.reshape(-1, h.shape[-1]), valid=mask.flatten())
        codes = codes.view(batch, rows * cols)
        x = h + self.dictionary_projection(quantized.view_as(h))
        masked = None
        if self.mvm_probability:
            masked = mvm_mask(codes, mask, self.mvm_probability, self.mvm_generator)
            x = torch.where(masked[..., None], self.mask_embedding.to(x.dtype), x)
        x = self.output_norm(x) + p.type_embedding
        if extra is not None:
            x = x + extra
        return self.sample_tokens(self._tokens(p.dropout(x), mask, codes=codes, masked=masked))

    @staticmethod
    def _tokens(features: Tensor, mask: Tensor, **fields: Tensor | None) -> VisualTokens:
        tokens = VisualTokens.grid(features, **fields)
        tokens.mask = mask
        return tokens

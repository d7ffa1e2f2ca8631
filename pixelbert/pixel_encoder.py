"""Pixel-BERT's visual side: every cell of the CNN's last feature map becomes one visual token.

images -> CNN (res5) -> 2x2 max-pool -> flatten to tokens -> Linear + LayerNorm -> + visual type embedding
(+ optional 2-D position embedding) -> dropout; during pre-training optionally a random subset of the pixels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from harness.errors import VlbenchError
from pixelbert.backbones import build_backbone
from pixelbert.config import VisualConfig
from pixelbert.visual import VisualEncoder, VisualProjection, VisualTokens, feature_grid_mask, pixel_mask

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def sample_pixels(tokens: VisualTokens, n: int, generator: torch.Generator | None = None) -> VisualTokens:
    """Random pixel sampling: keep a fresh random subset of ``n`` tokens per image (Pixel-BERT section 3.3).

    Each image draws its own subset; kept tokens stay in raster order. Padding tokens (mask False) are only
    taken when an image has fewer than ``n`` real ones. With ``n >= N`` the tokens come back unchanged.
    Vectorised: one random score per token, the ``n`` lowest per row win.
    """
    if n < 1:
        raise VlbenchError(f"pixel sample size must be >= 1, got {n}")
    batch, count = tokens.mask.shape
    if n >= count:
        return tokens
    device = tokens.features.device
    # Draw on the generator's device (a CPU generator may serve CUDA tokens), then move.
    scores = torch.rand(batch, count, generator=generator,
                        device=generator.device if generator is not None else device).to(device)
    scores = scores.masked_fill(~tokens.mask, 2.0)  # real tokens (scores in [0, 1)) before padding
    keep = scores.topk(n, dim=1, largest=False).indices.sort(dim=1).values  # [B, n]

    def take(t: Tensor) -> Tensor:
        index = keep.view(batch, n, *([1] * (t.dim() - 2))).expand(batch, n, *t.shape[2:])
        return t.gather(1, index)

    # Every per-token field (positions, boxes, SOHO's codes and MVM mask) follows the kept tokens.
    return tokens._map(take)


class TokenSampling(nn.Module):
    """Random token sampling for an encoder whose tokens form a grid (Pixel-BERT's pixels, ViLT's patches):
    ``pixel_sample`` tokens kept per image, only in training mode and only while it is set (pre-training sets
    it); ``sample_generator`` makes the draws reproducible."""

    pixel_sample: int | None = None
    sample_generator: torch.Generator | None = None

    def sample_tokens(self, tokens: VisualTokens) -> VisualTokens:
        if self.training and self.pixel_sample:
            return sample_pixels(tokens, self.pixel_sample, self.sample_generator)
        return tokens


class PixelEncoder(TokenSampling, VisualEncoder):
    """The CNN's pooled feature map as visual tokens, trained end to end with the transformer.

    Args:
        config: backbone, pooling, position-embedding and pixel-sampling settings.
        hidden_size: the transformer's hidden size (tokens are projected to it).
        dropout, layer_norm_eps: as in the transformer's config, so text and pixel embeddings match.

    ``pixel_sample`` (from the config, settable by a pre-training loop) applies only in training mode;
    ``sample_generator`` can be set to make the sampling reproducible.
    """

    cost_name = "cnn"

    def __init__(self, config: VisualConfig, hidden_size: int, dropout: float = 0.1,
                 layer_norm_eps: float = 1e-12) -> None:
        super().__init__(hidden_size)
        self.config = config
        self.backbone = build_backbone(config)
        self.pool = config.pixel_pool
        self.projection = VisualProjection(self.backbone.out_channels, hidden_size, dropout, layer_norm_eps)
        self.row_embedding: nn.Embedding | None = None
        self.col_embedding: nn.Embedding | None = None
        if config.position_embedding:
            self.row_embedding = nn.Embedding(config.max_grid, hidden_size)
            self.col_embedding = nn.Embedding(config.max_grid, hidden_size)
            nn.init.normal_(self.row_embedding.weight, std=0.02)
            nn.init.normal_(self.col_embedding.weight, std=0.02)
        self.pixel_sample: int | None = config.pixel_sample
        self.sample_generator: torch.Generator | None = None
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    cnn_frozen = False

    @property
    def cnn(self) -> nn.Module | None:
        return None if self.cnn_frozen else self.backbone  # frozen: nothing for the CNN optimiser

    def freeze_cnn(self) -> None:
        """No gradients into the CNN and its BatchNorm statistics kept: it stays in eval mode (see train)."""
        self.cnn_frozen = True
        self.backbone.requires_grad_(False)
        self.backbone.eval()

    def train(self, mode: bool = True) -> PixelEncoder:
        super().train(mode)
        if self.cnn_frozen:
            self.backbone.eval()
        return self

    @property
    def cell_size(self) -> int:
        """Input pixels per side of one pixel token: the CNN's output stride times the max-pool."""
        return self.backbone.stride * self.pool

    def feature_map(self, images: Tensor, image_sizes: Tensor | None = None) -> Tensor:
        """[B, 3, H, W] in [0, 1] -> pooled CNN features [B, C, h, w]."""
        if self.config.normalize:
            images = (images - self.mean) / self.std
        if image_sizes is not None:
            # Padding is zero after normalisation (as in Detectron's and Pixel-BERT's batching), so the CNN sees
            # at an image's edge what its own zero padding would show it.
            images = images * pixel_mask(image_sizes, *images.shape[-2:]).to(images.dtype)
        features = self.backbone(images)
        if self.pool > 1:
            # ceil_mode keeps the last row/column of an odd-sized map instead of dropping it.
            features = F.max_pool2d(features, kernel_size=self.pool, stride=self.pool, ceil_mode=True)
        return features

    def _position_embedding(self, rows: int, cols: int, device: torch.device) -> Tensor | None:
        if self.row_embedding is None or self.col_embedding is None:
            return None
        if rows > self.config.max_grid or cols > self.config.max_grid:
            raise VlbenchError(
                f"pixel grid {rows}x{cols} exceeds the position table ({self.config.max_grid}); raise max_grid"
            )
        row = self.row_embedding(torch.arange(rows, device=device))  # [rows, H]
        col = self.col_embedding(torch.arange(cols, device=device))  # [cols, H]
        return (row[:, None, :] + col[None, :, :]).reshape(rows * cols, -1)  # raster order, like flatten

    def forward(self, images: Tensor, image_sizes: Tensor | None = None) -> VisualTokens:
        features = self.feature_map(images, image_sizes)
        rows, cols = features.shape[-2:]
        flat = features.flatten(2).transpose(1, 2)  # [B, rows*cols, C], raster order
        hidden = self.projection(flat, extra=self._position_embedding(rows, cols, images.device))
        tokens = VisualTokens.grid(hidden)
        mask = feature_grid_mask(image_sizes, self.cell_size, (rows, cols))
        if mask is not None:
            tokens.mask = mask  # padding cells: out of attention, and sampled only when an image has too few
        return self.sample_tokens(tokens)

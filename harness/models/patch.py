"""``--model patch``: ViLT's visual embedding, the third family of visual features: no CNN and no detector.

The image is cut into P x P patches; each patch's pixels, flattened, are linearly projected to the hidden size
and get a learned position embedding (Kim et al. 2021, "ViLT: Vision-and-Language Transformer Without
Convolution or Region Supervision", section 3.1; dandelin/ViLT ``vision_transformer.py`` implements the projection
as a Conv2d whose kernel and stride are P, which is the same linear map). Everything after that (the shared
projection's LayerNorm and visual type embedding, the transformer, the heads) is what every vlbench model uses.

Choices, with why:
- Patch size: ViLT's 32 px at ImageNet-sized inputs (the base preset's shared Pixel-BERT geometry, short side
  800, gives 25 x 33 patches for a 640x480 image; ViLT itself uses short side 384 / long side 640, which
  ``--image-size 384 --max-size 640`` gives, for every model alike). On
  the tiny preset's 64 px images 32 px would leave 4 tokens, so there P is the pixel model's cell size (tiny CNN
  stride x Pixel-BERT's 2x2 pool = 16 px): patch and pixel models then see the same 4 x 4 grid of tokens, and a
  difference between them is the CNN, not the token count.
- Position embedding: one learned vector per patch of the preset's grid (ViLT's table), bilinearly resized when
  an image gives another grid (as ViLT resizes its table to each image's patch grid).
- Pixels are scaled to [-1, 1] (ViLT's normalisation), not ImageNet's mean/std: no ImageNet weights are involved.
- Not reproduced: ViLT initialises the transformer from an ImageNet ViT and adds an image [class] token; vlbench's
  transformer and pooling are shared by every model (the fairness rule), so the patch model gets them as they are.
- Random patch sampling in pre-training (ViLT samples 200 patches) uses Pixel-BERT's sampler, so ``pretrain
  --pixel-sample`` applies here too.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from harness.models import MODELS, Capabilities, ModelRecipe
from pixelbert.config import ModelConfig, VisualConfig
from pixelbert.pixel_encoder import TokenSampling
from pixelbert.visual import VisualEncoder, VisualProjection, VisualTokens, valid_grid

VILT_PATCH = 32


def patch_size(visual: VisualConfig) -> int:
    """ViLT's 32 px, or on the tiny CNN's small images the pixel model's cell size (see the module notes)."""
    if visual.backbone == "tiny_cnn":
        return visual.cnn_stride * visual.pixel_pool
    return VILT_PATCH


class PatchEncoder(TokenSampling, VisualEncoder):
    """Images -> non-overlapping P x P patches -> linear projection + position embedding -> visual tokens.

    ``pixel_sample`` / ``sample_generator``: random patch sampling in training mode (set by pre-training).
    """

    cost_name = "patch"

    def __init__(self, config: VisualConfig, hidden_size: int, dropout: float = 0.1,
                 layer_norm_eps: float = 1e-12) -> None:
        super().__init__(hidden_size)
        self.config = config
        self.patch_size = patch_size(config)
        self.grid = max(1, config.image_size // self.patch_size)
        self.projection = VisualProjection(3 * self.patch_size**2, hidden_size, dropout, layer_norm_eps)
        self.position = nn.Parameter(torch.zeros(1, hidden_size, self.grid, self.grid))
        nn.init.normal_(self.position, std=0.02)
        self.pixel_sample: int | None = config.pixel_sample
        self.sample_generator: torch.Generator | None = None

    def _table(self, rows: int, cols: int) -> Tensor:
        """The position table at ``rows`` x ``cols`` [rows * cols, H], raster order; resized (bilinear, as ViLT
        does) when an image gives another grid than the preset's."""
        table = self.position
        if (rows, cols) != (self.grid, self.grid):
            table = F.interpolate(table, size=(rows, cols), mode="bilinear", align_corners=False)
        return table.flatten(2).transpose(1, 2)[0]

    def _positions(self, rows: int, cols: int, valid_rows: Tensor | None = None,
                   valid_cols: Tensor | None = None) -> Tensor:
        """[rows * cols, H], or per image [B, rows * cols, H] when images of different sizes share a padded batch:
        each image's table is resized to its own patch grid, so its embedding does not depend on its batch."""
        if valid_rows is None or valid_cols is None:
            return self._table(rows, cols)
        out = self.position.new_zeros(len(valid_rows), rows, cols, self.position.shape[1])
        for r, c in sorted({(int(r), int(c)) for r, c in zip(valid_rows, valid_cols)}):
            same = (valid_rows == r) & (valid_cols == c)
            if r and c:
                out[same, :r, :c] = self._table(r, c).view(r, c, -1).to(out.dtype)
        return out.flatten(1, 2)

    def forward(self, images: Tensor, image_sizes: Tensor | None = None) -> VisualTokens:
        if self.config.normalize:
            images = images * 2.0 - 1.0  # ViLT: pixels in [-1, 1]
        size = self.patch_size
        # [B, 3, H, W] -> [B, 3*P*P, rows*cols]: each column one patch's pixels (a partial last row/column of
        # pixels, when H or W is not a multiple of P, is left out, as ViLT's strided projection leaves it out).
        patches = F.unfold(images, kernel_size=size, stride=size)
        rows, cols = images.shape[-2] // size, images.shape[-1] // size
        valid_rows = valid_cols = None
        if image_sizes is not None:
            # The same rule within a padded batch: a patch is real when it lies wholly inside its image.
            valid_rows, valid_cols = image_sizes[:, 0].long() // size, image_sizes[:, 1].long() // size
        hidden = self.projection(patches.transpose(1, 2), extra=self._positions(rows, cols, valid_rows, valid_cols))
        tokens = VisualTokens.grid(hidden)
        if valid_rows is not None and valid_cols is not None:
            tokens.mask = valid_grid(valid_rows, valid_cols, rows, cols)
        return self.sample_tokens(tokens)


@MODELS.register("patch")
class Patch(ModelRecipe):
    description = "ViLT patch embeddings: linear projection of image patches + position embedding, no CNN"
    capabilities = Capabilities(token_sampling=True)
    report_order = 15
    colour = "#ff7f0e"

    def visual_encoder(self, config: ModelConfig) -> PatchEncoder:
        t = config.transformer
        return PatchEncoder(config.visual, t.hidden_size, dropout=t.dropout, layer_norm_eps=t.layer_norm_eps)

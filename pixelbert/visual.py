"""What every visual encoder hands to the shared transformer, and the base class they all derive from.

A model in vlbench is a visual encoder (pixels, frozen grid, detector regions, or nothing) plus the shared text
embeddings, cross-modal transformer and heads. Encoders differ only in how they produce ``VisualTokens``: vectors
already in the transformer's hidden size, with a mask saying which ones are real.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields, replace

import torch
from torch import Tensor, nn

from harness.errors import VlbenchError


@dataclass
class VisualTokens:
    """A batch of visual tokens.

    features: [B, N, H] float, in the transformer's hidden size.
    mask: [B, N] bool, True where a token is real (False = padding, e.g. fewer regions in one image).
    positions: optional [B, N] long, the row-major cell index in the (pooled) feature grid of each pixel token
        (kept through random sampling, so SOHO's MVM and analyses can find where a token came from).
    boxes: optional [B, N, 4] float, normalised (x1, y1, x2, y2) of region tokens.
    codes: optional [B, N] long, the visual-dictionary entry each token was mapped to (SOHO); the targets of
        masked visual modelling.
    masked: optional [B, N] bool, True where masked visual modelling replaced the token's input (SOHO
        pre-training only).
    """

    features: Tensor
    mask: Tensor
    positions: Tensor | None = None
    boxes: Tensor | None = None
    codes: Tensor | None = None
    masked: Tensor | None = None

    @property
    def batch_size(self) -> int:
        return self.features.shape[0]

    @property
    def num_tokens(self) -> int:
        return self.features.shape[1]

    def _map(self, fn: Callable[[Tensor], Tensor]) -> VisualTokens:
        """Apply ``fn`` to every tensor field (all share the leading batch dimension)."""
        present = {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}
        return replace(self, **{name: fn(tensor) for name, tensor in present.items()})

    def index(self, batch_index: Tensor | list[int] | slice) -> VisualTokens:
        """Pick images along the batch: ``tokens.index(torch.tensor([0, 0, 3]))`` (repeats allowed)."""
        if isinstance(batch_index, list):
            batch_index = torch.as_tensor(batch_index, dtype=torch.long, device=self.features.device)
        return self._map(lambda t: t[batch_index])

    def repeat_interleave(self, repeats: int) -> VisualTokens:
        """Each image ``repeats`` times in a row: [a, b] -> [a, a, a, b, b, b] (one image against k captions)."""
        return self._map(lambda t: t.repeat_interleave(repeats, dim=0))

    def expand_to(self, batch_size: int) -> VisualTokens:
        """One image broadcast to ``batch_size`` rows without copying (score one image against many captions)."""
        if self.batch_size != 1:
            raise ValueError(f"expand_to needs a single image, got a batch of {self.batch_size}")
        return self._map(lambda t: t.expand(batch_size, *t.shape[1:]))

    def to(self, device: torch.device | str) -> VisualTokens:
        return self._map(lambda t: t.to(device))

    def detach(self) -> VisualTokens:
        return self._map(lambda t: t.detach())

    @staticmethod
    def grid(features: Tensor, **fields: Tensor | None) -> VisualTokens:
        """The tokens of a whole feature grid ``[B, N, H]`` in raster order: every token real, positions 0..N-1."""
        batch, count = features.shape[:2]
        return VisualTokens(features=features,
                            mask=torch.ones(batch, count, dtype=torch.bool, device=features.device),
                            positions=torch.arange(count, device=features.device).expand(batch, -1), **fields)

    @staticmethod
    def empty(batch_size: int, hidden_size: int, device: torch.device | str = "cpu",
              dtype: torch.dtype = torch.float32) -> VisualTokens:
        """N = 0 tokens: the text-only control."""
        return VisualTokens(
            features=torch.zeros(batch_size, 0, hidden_size, device=device, dtype=dtype),
            mask=torch.zeros(batch_size, 0, dtype=torch.bool, device=device),
        )


def valid_grid(valid_rows: Tensor, valid_cols: Tensor, rows: int, cols: int) -> Tensor:
    """[B, rows * cols] bool in raster order: True in each image's top-left ``valid_rows[i]`` x ``valid_cols[i]``
    cells (the rest is the padding of a batch of images of different sizes)."""
    device = valid_rows.device
    inside_rows = torch.arange(rows, device=device)[None, :] < valid_rows[:, None]  # [B, rows]
    inside_cols = torch.arange(cols, device=device)[None, :] < valid_cols[:, None]  # [B, cols]
    return (inside_rows[:, :, None] & inside_cols[:, None, :]).flatten(1)


def feature_grid_mask(image_sizes: Tensor | None, cell: int, grid: tuple[int, int]) -> Tensor | None:
    """Which cells of a CNN feature grid (``grid`` rows, cols; each cell ``cell`` input pixels a side: the CNN's
    stride times the pooling) see an image: the ``ceil(size / cell)`` cells the image has alone (stride-2 convs
    with "same" padding and ceil-mode pooling give exactly that), in its top-left corner. None when
    ``image_sizes`` is None (square images, no padding)."""
    if image_sizes is None:
        return None
    rows, cols = grid
    valid = (image_sizes.to(torch.long) + cell - 1) // cell
    return valid_grid(valid[:, 0].clamp(max=rows), valid[:, 1].clamp(max=cols), rows, cols)


def pixel_mask(image_sizes: Tensor, height: int, width: int) -> Tensor:
    """[B, 1, height, width] bool: True on each image's own pixels, False on the batch's padding."""
    sizes = image_sizes.to(torch.long)
    rows = torch.arange(height, device=sizes.device)[None, :] < sizes[:, 0:1]
    cols = torch.arange(width, device=sizes.device)[None, :] < sizes[:, 1:2]
    return (rows[:, :, None] & cols[:, None, :])[:, None]


class VisualProjection(nn.Module):
    """Raw visual features [B, N, C] -> transformer inputs [B, N, H].

    Linear -> LayerNorm -> + the learned visual type embedding (Pixel-BERT's "semantic embedding" s_v, which
    tells the transformer "this is an image token") -> + optional extra embedding (2-D position, box geometry)
    -> dropout. Every visual encoder uses this same module, so encoders differ only in their features.
    """

    def __init__(self, in_features: int, hidden_size: int, dropout: float = 0.1, layer_norm_eps: float = 1e-12) -> None:
        super().__init__()
        self.proj = nn.Linear(in_features, hidden_size)
        self.norm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.type_embedding = nn.Parameter(torch.zeros(hidden_size))
        nn.init.normal_(self.type_embedding, std=0.02)  # BERT's embedding init
        self.dropout = nn.Dropout(dropout)

    def forward(self, features: Tensor, extra: Tensor | None = None) -> Tensor:
        x = self.norm(self.proj(features)) + self.type_embedding
        if extra is not None:
            x = x + extra
        return self.dropout(x)


class VisualEncoder(nn.Module):
    """Base class: ``forward(images [B, 3, H, W] float RGB in [0, 1], image_sizes=None) -> VisualTokens`` of
    ``hidden_size``. ``image_sizes`` [B, 2] (height, width): each image's extent in a zero-padded batch of images of
    different sizes (None: every image fills the batch); tokens that see only padding get mask False.

    ``cost_name`` labels this encoder's share of the time in ``bench`` ("cnn", "detector", "none").
    ``cnn`` is the sub-module trained at the CNN learning rate (None when there is none or it is frozen).
    """

    cost_name: str = "visual"

    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        self.hidden_size = hidden_size

    @property
    def cnn(self) -> nn.Module | None:
        return None

    def freeze_cnn(self) -> None:
        """Fine-tune with the CNN fixed (``TrainConfig.freeze_cnn``); only encoders with a trainable CNN can."""
        raise VlbenchError(f"{type(self).__name__} has no trainable CNN to freeze")

    def forward(self, images: Tensor, image_sizes: Tensor | None = None) -> VisualTokens:  # pragma: no cover
        raise NotImplementedError


class NoVisualEncoder(VisualEncoder):
    """The text-only control: zero visual tokens, so the transformer sees only [CLS] text [SEP]."""

    cost_name = "none"

    def forward(self, images: Tensor, image_sizes: Tensor | None = None) -> VisualTokens:
        dtype = images.dtype if images.is_floating_point() else torch.float32
        return VisualTokens.empty(images.shape[0], self.hidden_size, device=images.device, dtype=dtype)

"""``--model grid``: the "In Defense of Grid Features for VQA" middle point.

Exactly Pixel-BERT's tokens (CNN feature map, 2x2 max-pool, shared ``VisualProjection``), but the CNN is frozen:
its weights come from the region baseline's trained detector backbone (as in the paper, grid features of a
detection-trained CNN) or from ``--cnn-init``, and only the projection learns with the transformer.
"""

from __future__ import annotations

from torch import nn

from pixelbert.config import VisualConfig
from pixelbert.pixel_encoder import PixelEncoder


class GridEncoder(PixelEncoder):
    cost_name = "cnn"

    def __init__(self, config: VisualConfig, hidden_size: int, dropout: float = 0.1,
                 layer_norm_eps: float = 1e-12) -> None:
        super().__init__(config, hidden_size, dropout, layer_norm_eps)
        self.backbone.requires_grad_(False)
        self.backbone.eval()

    @property
    def cnn(self) -> nn.Module | None:
        return None  # frozen: nothing for the CNN optimiser

    def train(self, mode: bool = True) -> GridEncoder:
        super().train(mode)
        self.backbone.eval()  # frozen BatchNorm statistics too
        return self

    def load_backbone_from_detector(self, detector: nn.Module) -> None:
        """Take the (trained) detector's backbone weights: same CNN family and config by construction."""
        self.backbone.load_state_dict(detector.backbone.state_dict())

"""``--model pixelbert``: a trainable CNN whose 2x2-max-pooled feature map gives the visual tokens."""

from __future__ import annotations

from pathlib import Path

from harness.models import MODELS, Capabilities, ModelRecipe
from pixelbert.backbones import load_backbone_state_dict
from pixelbert.config import ModelConfig
from pixelbert.pixel_encoder import PixelEncoder


@MODELS.register("pixelbert")
class PixelBert(ModelRecipe):
    description = "Pixel-BERT: CNN pixel features trained end to end with the transformer"
    capabilities = Capabilities(token_sampling=True, trainable_cnn=True)
    report_order = 0
    colour = "#1f77b4"

    def visual_encoder(self, config: ModelConfig) -> PixelEncoder:
        t = config.transformer
        return PixelEncoder(config.visual, t.hidden_size, dropout=t.dropout, layer_norm_eps=t.layer_norm_eps)

    def load_cnn(self, encoder: PixelEncoder, path: Path) -> None:
        load_backbone_state_dict(encoder.backbone, path)

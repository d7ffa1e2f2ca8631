"""``--model soho``: Pixel-BERT's trainable CNN pixels plus SOHO's visual dictionary (pixelbert/soho/)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from harness.models import MODELS, ModelRecipe
from pixelbert.backbones import load_backbone_state_dict
from pixelbert.config import DICTIONARY_PRESETS, DictionaryConfig, ModelConfig
from pixelbert.soho.encoder import SohoEncoder


@MODELS.register("soho")
class Soho(ModelRecipe):
    description = "SOHO: CNN pixel features mapped through a moving-average visual dictionary"

    def configure_preset(self, config: ModelConfig, preset: str) -> ModelConfig:
        dictionary = config.dictionary or DICTIONARY_PRESETS.get(preset, DictionaryConfig())
        # SOHO adds a 2-D position encoding to the grid (Pixel-BERT does not); MVM needs to know where a
        # masked cell was.
        return replace(config, dictionary=dictionary, visual=replace(config.visual, position_embedding=True))

    def visual_encoder(self, config: ModelConfig) -> SohoEncoder:
        t = config.transformer
        dictionary = config.dictionary or DictionaryConfig()
        return SohoEncoder(config.visual, dictionary, t.hidden_size, dropout=t.dropout,
                           layer_norm_eps=t.layer_norm_eps)

    def load_cnn(self, encoder: SohoEncoder, path: Path) -> None:
        load_backbone_state_dict(encoder.backbone, path)

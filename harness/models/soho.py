"""``--model soho``: Pixel-BERT's trainable CNN pixels plus SOHO's visual dictionary (pixelbert/soho/)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from harness.models import MODELS, Capabilities, ModelRecipe, ModelSetup
from pixelbert.backbones import load_backbone_state_dict
from pixelbert.config import DICTIONARY_PRESETS, DictionaryConfig, ModelConfig
from pixelbert.soho.encoder import SohoEncoder


@MODELS.register("soho")
class Soho(ModelRecipe):
    description = "SOHO: CNN pixel features mapped through a moving-average visual dictionary"
    capabilities = Capabilities(token_sampling=True, visual_dictionary=True, trainable_cnn=True,
                                options={"dictionary_size": "visual dictionary", "dictionary_momentum": "visual dictionary",
                                             "dictionary_schedule": "visual dictionary",
                                             "keep_dictionary": "visual dictionary"})
    report_order = 10
    colour = "#2ca02c"

    def configure_preset(self, config: ModelConfig, preset: str) -> ModelConfig:
        dictionary = config.dictionary or DICTIONARY_PRESETS.get(preset, DictionaryConfig())
        # SOHO adds a 2-D position encoding to the grid (Pixel-BERT does not); MVM needs to know where a
        # masked cell was.
        return replace(config, dictionary=dictionary, visual=replace(config.visual, position_embedding=True))

    def apply_options(self, setup: ModelSetup, options: dict[str, Any]) -> ModelSetup:
        if setup.dictionary is None:
            return setup
        changes: dict[str, Any] = {}
        if options.get("dictionary_size") is not None:
            changes["size"] = options["dictionary_size"]
        if options.get("dictionary_momentum") is not None:
            changes["momentum"] = options["dictionary_momentum"]
        if options.get("dictionary_schedule") is not None:
            changes["schedule"] = options["dictionary_schedule"]
        if options.get("keep_dictionary"):
            changes["fine_tune"] = True
        if not changes:
            return setup
        return replace(setup, config=replace(setup.config, dictionary=replace(setup.dictionary, **changes)))

    def visual_encoder(self, config: ModelConfig) -> SohoEncoder:
        t = config.transformer
        dictionary = config.dictionary or DictionaryConfig()
        return SohoEncoder(config.visual, dictionary, t.hidden_size, dropout=t.dropout,
                           layer_norm_eps=t.layer_norm_eps)

    def load_cnn(self, encoder: SohoEncoder, path: Path) -> None:
        load_backbone_state_dict(encoder.backbone, path)

"""``--model grid``: Pixel-BERT's tokens from a frozen CNN ("In Defense of Grid Features for VQA")."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from baselines.grid_encoder import GridEncoder
from harness.models import MODELS, Capabilities, ModelRecipe, ModelSetup, PrepareContext, Prepared
from harness.models.region import DETECTOR_OPTIONS, detector_source, region_preset
from pixelbert.backbones import load_backbone_state_dict
from pixelbert.config import ModelConfig
from pixelbert.model import VisionLanguageModel


@MODELS.register("grid")
class Grid(ModelRecipe):
    description = "grid baseline: frozen CNN feature map (the region detector's backbone), Pixel-BERT tokens"
    capabilities = Capabilities(token_sampling=True, options=DETECTOR_OPTIONS)
    report_order = 20
    colour = "#9467bd"

    def configure(self, config: ModelConfig) -> ModelConfig:
        # The region config names the detector whose backbone is frozen here (same one the region model uses).
        return config if config.region is not None else replace(config, region=region_preset(config))

    def visual_encoder(self, config: ModelConfig) -> GridEncoder:
        t = config.transformer
        return GridEncoder(config.visual, t.hidden_size, dropout=t.dropout, layer_norm_eps=t.layer_norm_eps)

    def load_cnn(self, encoder: GridEncoder, path: Path) -> None:
        load_backbone_state_dict(encoder.backbone, path)

    def prepare(self, setup: ModelSetup, context: PrepareContext) -> Prepared | None:
        if setup.cnn_init is not None:
            return None  # frozen ImageNet CNN from --cnn-init; no detector needed
        from baselines.region_setup import resolve_detector

        assert setup.config.region is not None
        detector, info = resolve_detector(setup.visual, setup.config.region, context.spec, detector_source(context))

        def finish(model: VisionLanguageModel) -> dict[str, Any]:
            model.visual_encoder.load_backbone_from_detector(detector)  # type: ignore[operator]
            return {"encoder": "grid", "frozen_backbone_from": "detector", "detector": info}

        return Prepared(setup, finish)

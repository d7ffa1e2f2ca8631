"""``--model region``: frozen Faster R-CNN region features + box geometry (the bottom-up-attention baseline)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch

from baselines.detector import num_classes_of
from baselines.region_encoder import RegionEncoder
from harness.models import MODELS, ModelRecipe, ModelSetup, PrepareContext, Prepared
from pixelbert.config import ModelConfig, RegionConfig
from pixelbert.model import VisionLanguageModel


def region_preset(config: ModelConfig) -> RegionConfig:
    """Region settings that go with a preset's backbone (same CNN family as the pixel model)."""
    if config.visual.backbone == "tiny_cnn":
        return RegionConfig()  # 64 px scenes: 8-32 px anchors, 5x5 RoIs, 256-d features, 10-36 boxes
    # Larger images and ImageNet CNNs (base): anchors and head of torchvision's single-map Faster R-CNN,
    # bottom-up attention's 10-100 boxes.
    return RegionConfig(anchor_sizes=(32, 64, 128, 256, 512), roi_size=7, representation_size=1024,
                        max_boxes=100, detector_epochs=12, detector_lr=0.02, detector_batch_size=8)


def with_region(setup: ModelSetup, region: RegionConfig) -> ModelSetup:
    return replace(setup, config=replace(setup.config, region=region))


def region_options(context: PrepareContext) -> Any:
    from baselines.region_setup import DetectorSource

    o = context.options
    return DetectorSource(detector=o.get("detector"), detector_data=o.get("detector_data"),
                          embedded_world=bool(o.get("embedded_world")), progress=context.progress,
                          seed=int(o.get("detector_seed", 0)))


@MODELS.register("region")
class Region(ModelRecipe):
    description = "region baseline: frozen Faster R-CNN RoI features of the top boxes + box geometry"

    def configure(self, config: ModelConfig) -> ModelConfig:
        return config if config.region is not None else replace(config, region=region_preset(config))

    def visual_encoder(self, config: ModelConfig) -> RegionEncoder:
        t = config.transformer
        return RegionEncoder(config, t.hidden_size, dropout=t.dropout, layer_norm_eps=t.layer_norm_eps)

    def prepare(self, setup: ModelSetup, context: PrepareContext) -> Prepared:
        from baselines.region_setup import (
            extraction_stamp,
            fill_cache,
            managed_cache_dir,
            resolve_detector,
            time_extraction,
        )

        assert setup.config.region is not None
        detector, info = resolve_detector(setup.visual, setup.config.region, context.spec, region_options(context))
        region = replace(setup.config.region, num_classes=num_classes_of(detector.state_dict()))
        setup = with_region(setup, region)

        def finish(model: VisionLanguageModel) -> dict[str, Any]:
            encoder: RegionEncoder = model.visual_encoder  # type: ignore[assignment]
            encoder.detector.load_state_dict(detector.state_dict())
            if context.options.get("feature_cache") is False:
                # `bench` times the detector itself: no cache attached, every image goes through it live.
                return {"encoder": "region", "boxes": region.boxes, "detector": info, "cache": None}
            stamp = extraction_stamp(info["hash"], setup.visual, region)
            paths = list(dict.fromkeys(p for split in context.splits for p in context.task.image_paths(split)))
            stats = fill_cache(encoder, context.spec, paths, context.images, managed_cache_dir(context.spec, stamp),
                               stamp, progress=context.progress)
            ms = stats["extraction_ms_per_image"]
            if ms is None:  # everything came from the cache: time the detector live on a few images
                sample = torch.stack([context.images.uint8(p) for p in paths[:16]]).float().div(255.0)
                ms = time_extraction(encoder, sample.to(next(encoder.detector.parameters()).device))
            return {"encoder": "region", "boxes": region.boxes, "detector": info, "cache": stats,
                    "extraction_ms_per_image": ms}

        return Prepared(setup, finish)

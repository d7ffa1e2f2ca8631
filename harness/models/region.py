"""``--model region``: frozen Faster R-CNN region features + box geometry (the bottom-up-attention baseline)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch

from baselines.detector import inference_state, num_classes_of
from baselines.region_encoder import RegionEncoder
from harness.errors import VlbenchError
from harness.models import MODELS, Capabilities, ModelRecipe, ModelSetup, PrepareContext, Prepared
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


# The options of a model whose features come from a detector (region, and grid's frozen backbone).
DETECTOR_OPTIONS = {"detector": "detector", "detector_data": "detector"}


def detector_source(context: PrepareContext) -> Any:
    """Where the detector comes from: ``--detector``, ``--detector-data``, the spec's own boxes, or the boxes
    the caller named for specs without any (``context.detector_boxes``)."""
    from baselines.region_setup import DetectorSource

    o = context.options
    return DetectorSource(detector=o.get("detector"), detector_data=o.get("detector_data"),
                          fallback_boxes=context.detector_boxes, progress=context.progress,
                          cache=context.cache_root)


@MODELS.register("region")
class Region(ModelRecipe):
    description = "region baseline: frozen Faster R-CNN RoI features of the top boxes + box geometry"
    capabilities = Capabilities(options={**DETECTOR_OPTIONS, "boxes": "detector boxes",
                                         "features": "imported region features"})
    report_order = 30
    colour = "#d62728"

    def configure(self, config: ModelConfig) -> ModelConfig:
        return config if config.region is not None else replace(config, region=region_preset(config))

    def visual_encoder(self, config: ModelConfig) -> RegionEncoder:
        t = config.transformer
        return RegionEncoder(config, t.hidden_size, dropout=t.dropout, layer_norm_eps=t.layer_norm_eps)

    def apply_options(self, setup: ModelSetup, options: dict[str, Any]) -> ModelSetup:
        assert setup.config.region is not None
        if options.get("features") is not None:
            from baselines.feature_cache import open_cache

            clash = [f"--{name.replace('_', '-')}" for name in ("boxes", "detector", "detector_data")
                     if options.get(name) is not None]
            if clash:
                raise VlbenchError(f"--features reads imported regions; {', '.join(clash)} is for a detector")
            cache = open_cache(options["features"])  # a one-line error when it is not a feature cache
            return with_region(setup, replace(setup.config.region, features="imported", num_classes=0,
                                              representation_size=cache.feature_dim,
                                              features_source=str(cache.stamp.get("source_hash", ""))))
        if options.get("boxes") is None:
            return setup
        return with_region(setup, replace(setup.config.region, boxes=options["boxes"]))

    def prepare(self, setup: ModelSetup, context: PrepareContext) -> Prepared:
        from baselines.region_setup import (
            extraction_stamp,
            fill_cache,
            managed_cache_dir,
            resolve_detector,
            time_extraction,
        )

        assert setup.config.region is not None
        if setup.config.region.features == "imported":
            return Prepared(setup, lambda model: imported_features(model, context))
        detector, info = resolve_detector(setup.visual, setup.config.region, context.spec, detector_source(context))
        region = replace(setup.config.region, num_classes=num_classes_of(detector.state_dict()))
        setup = with_region(setup, region)

        def finish(model: VisionLanguageModel) -> dict[str, Any]:
            encoder: RegionEncoder = model.visual_encoder  # type: ignore[assignment]
            encoder.detector.load_state_dict(inference_state(detector))
            if not context.feature_cache:
                # `bench` times the detector itself: no cache attached, every image goes through it live.
                return {"encoder": "region", "boxes": region.boxes, "detector": info, "cache": None}
            stamp = extraction_stamp(info["hash"], setup.visual, region)
            paths = list(dict.fromkeys(p for split in context.splits for p in context.task.image_paths(split)))
            cache_dir = managed_cache_dir(context.spec, stamp, context.cache_root)
            stats = fill_cache(encoder, context.spec, paths, context.images, cache_dir, stamp,
                               progress=context.progress)
            ms = stats["extraction_ms_per_image"]
            if ms is None:  # everything came from the cache: time the detector live on a few images
                decoded = [context.images.uint8(p) for p in paths[:16]]  # one size: no padding in the timing
                sample = torch.stack([d for d in decoded if d.shape == decoded[0].shape]).float().div(255.0)
                ms = time_extraction(encoder, sample.to(next(encoder.detector.parameters()).device))
            return {"encoder": "region", "boxes": region.boxes, "detector": info, "cache": stats,
                    "extraction_ms_per_image": ms}

        return Prepared(setup, finish)

    def attach_inputs(self, setup: ModelSetup, model: VisionLanguageModel,
                      context: PrepareContext) -> dict[str, Any] | None:
        assert setup.config.region is not None
        if setup.config.region.features != "imported":
            if context.options.get("features") is not None:
                raise VlbenchError("--features is for a region model trained on imported features; this one "
                                   "runs its own detector (its weights are in the checkpoint)")
            return None  # the detector is in the checkpoint and runs live
        return imported_features(model, context)


def imported_features(model: VisionLanguageModel, context: PrepareContext) -> dict[str, Any]:
    """Attach ``--features``' cache to the encoder for every image the run uses; the run.json record."""
    from baselines.region_setup import attach_imported

    cache = context.options.get("features")
    if cache is None:
        raise VlbenchError("this region model reads imported features: pass --features CACHE (the cache "
                           "`vlbench features import` wrote)")
    paths = list(dict.fromkeys(p for split in context.splits for p in context.task.image_paths(split)))
    record = attach_imported(model.visual_encoder, cache, paths, context.images,  # type: ignore[arg-type]
                             progress=context.progress, require_all=context.feature_cache)
    return {"encoder": "region", "features": record, "detector": None}

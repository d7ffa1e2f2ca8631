"""What a region (or grid) run does before training: get the detector, then fill the feature cache.

1. :func:`resolve_detector`: ``--detector CK`` if given; else the detector trained on this dataset's boxes with
   these settings, found in ``$VLBENCH_CACHE/detectors`` or trained now (and its held-out box mAP measured).
2. :func:`fill_cache`: every image of the task's splits gets region features, cached on disk keyed by image id
   and stamped with the detector hash and extraction config; only images missing from the cache are extracted.
   The time per extracted image is measured and recorded in run.json. Under torchrun the extraction is
   sharded over the ranks (each extracts a contiguous run of batches) into one cache identical to a
   1-process one.
"""

from __future__ import annotations

import hashlib
import itertools
import re
import shutil
import sys
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from baselines.coco_boxes import CocoBoxes, load_coco_boxes, split_boxes_file
from baselines.detector import (
    build_detector,
    evaluate_attributes,
    evaluate_map,
    load_detector,
    save_detector,
    train_detector,
)
from baselines.feature_cache import (
    CachedImage,
    CacheWriter,
    FeatureCache,
    open_cache,
    pixel_digest,
    stamp_hash,
    write_cache,
)
from baselines.region_encoder import RegionEncoder, pixels_uint8
from baselines.regions import extract_regions
from harness import distributed
from harness.batches import ImageTensors
from harness.data.spec import DatasetSpec, load_spec
from harness.errors import VlbenchError
from harness.fileio import cache_root
from pixelbert.config import RegionConfig, VisualConfig

SPLITS = ("train", "val", "test")
_TRAILING_ID = re.compile(r"_0*(\d+)$")


def image_id_of(path: Path) -> str:
    """The id a cache row is keyed by: COCO-style names (``COCO_val2014_000000123456.jpg``, ``world_000001``)
    give the integer id ("123456"), as bottom-up feature files key them; other names their stem."""
    match = _TRAILING_ID.search(path.stem)
    return str(int(match.group(1))) if match else path.stem


@dataclass
class DetectorSource:
    """Where a run's detector comes from: ``detector`` (a trained one), else one trained on the COCO boxes of
    ``detector_data``, of the run's own spec, or of ``fallback_boxes`` (a spec the caller names for data without
    boxes, e.g. NLVR2 pair images), in that order; trained detectors are kept under ``cache``."""

    detector: Path | None = None
    detector_data: Path | None = None
    fallback_boxes: Path | None = None
    progress: bool = True
    seed: int = 0
    cache: Path | None = None
    """Root of the shared cache (detectors/ below it); None = ``$VLBENCH_CACHE``."""


def _file_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def _boxes_spec(spec: DatasetSpec, source: DetectorSource) -> DatasetSpec:
    if source.detector_data is not None:
        return load_spec(source.detector_data)
    if "train" in spec.splits and split_boxes_file(spec, "train") is not None:
        return spec
    if source.fallback_boxes is not None:
        return load_spec(source.fallback_boxes)
    raise VlbenchError(f"{spec.path}: the train split has no 'boxes:' to train a detector on; pass --detector CK "
                       "or --detector-data SPEC (a spec whose train split has COCO boxes)")


def _held_out(spec: DatasetSpec) -> str | None:
    for split in ("test", "val"):
        if split in spec.splits and split_boxes_file(spec, split) is not None:
            return split
    return None


def train_and_save(visual: VisualConfig, region: RegionConfig, spec: DatasetSpec, out: Path, *, seed: int = 0,
                   progress: bool = True, train_data: CocoBoxes | None = None) -> dict[str, Any]:
    """Train a detector on ``spec``'s train boxes, measure held-out mAP, write ``out``; returns its record."""
    data = train_data or load_coco_boxes(spec, "train")
    torch.manual_seed(seed)
    attributes = data.attributes if region.attribute_loss_weight > 0 else None
    detector = build_detector(visual, region, len(data.categories), len(attributes or ()))
    if progress:
        print(f"training the region detector on {len(data.images)} images of {data.file} (once)", file=sys.stderr)
    training = train_detector(detector, data, region, seed=seed, progress=progress)
    held_out = _held_out(spec)
    held = load_coco_boxes(spec, held_out) if held_out else None
    quality = evaluate_map(detector, held, progress=progress) if held is not None else None
    attribute_quality = evaluate_attributes(detector, held, progress=progress) if held is not None else None
    meta = {"visual": visual.to_dict(), "region": region.to_dict(), "categories": data.categories,
            "boxes": str(data.file), "map_split": held_out, "mAP": quality, "training": training, "seed": seed,
            **({"attributes": attributes, "attribute_accuracy": attribute_quality} if attributes else {})}
    digest = save_detector(out, detector, meta)
    return {**meta, "hash": digest, "path": str(out)}


_RECORD_KEYS = ("path", "hash", "mAP", "map_split", "boxes", "categories", "attributes", "attribute_accuracy", "seed",
                "source")


def _record(meta: dict[str, Any], trained_now: bool) -> dict[str, Any]:
    """The detector's entry in run.json (its configs are already in the run's config)."""
    out = {"trained_now": trained_now, **{k: meta[k] for k in _RECORD_KEYS if k in meta}}
    training = meta.get("training")
    if training:
        out["training"] = {k: v for k, v in training.items() if k != "history"}
    return out


def resolve_detector(visual: VisualConfig, region: RegionConfig, spec: DatasetSpec,
                     source: DetectorSource) -> tuple[nn.Module, dict[str, Any]]:
    """The run's detector and its record (path, hash, mAP, whether it was trained in this run)."""
    if source.detector is not None:
        detector, meta = load_detector(source.detector, visual, region)
        return detector, _record(meta, False)
    boxes_spec = _boxes_spec(spec, source)
    train_file = split_boxes_file(boxes_spec, "train")
    assert train_file is not None
    identity = {"visual": visual.to_dict(), "region": {k: v for k, v in asdict(region).items() if k in (
        "backend", "detector_size", "anchor_sizes", "aspect_ratios", "roi_size", "representation_size",
        "detector_epochs", "detector_lr", "detector_batch_size", "attribute_loss_weight")},
        "boxes": _file_hash(train_file), "seed": source.seed}
    path = (source.cache or cache_root()) / "detectors" / f"frcnn-{stamp_hash(identity)}.safetensors"
    trained_now = False
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        train_and_save(visual, region, boxes_spec, path, seed=source.seed, progress=source.progress)
        trained_now = True
    detector, meta = load_detector(path, visual, region)
    return detector, _record(meta, trained_now)


def extraction_stamp(detector_hash: str, visual: VisualConfig, region: RegionConfig) -> dict[str, Any]:
    """Everything that decides a cached row: who detected, how boxes were chosen, what pixels it saw."""
    return {"extractor": f"{region.backend}-faster-rcnn", "detector": detector_hash, "boxes": region.boxes,
            "selection": region.selection, "score_threshold": region.score_threshold, "nms_iou": region.nms_iou, "min_boxes": region.min_boxes,
            "max_boxes": region.max_boxes, "image_size": visual.image_size,
            **({"max_size": visual.max_size} if visual.keeps_aspect else {}),
            **({"resampler": visual.resampler} if visual.resampler != "pil" else {}),
            "feature_dim": region.representation_size}


def _gt_boxes(spec: DatasetSpec, images: ImageTensors) -> dict[Path, torch.Tensor]:
    """Annotated boxes per image file, scaled to the image the model sees."""
    out: dict[Path, torch.Tensor] = {}
    for split in spec.splits:
        if split_boxes_file(spec, split) is None:
            continue
        for item in load_coco_boxes(spec, split).images:
            width, height = images.target_size(item.width, item.height)
            scale = torch.tensor([width / item.width, height / item.height] * 2)
            out[item.path] = item.boxes * scale
    return out


def fill_cache(encoder: RegionEncoder, spec: DatasetSpec, paths: list[Path], images: ImageTensors,
               cache_dir: Path, stamp: dict[str, Any], *, batch_size: int = 32, progress: bool = True,
               rebuild_stale: bool = True) -> dict[str, Any]:
    """Extract what ``cache_dir`` lacks for ``paths``, write the cache, attach it to ``encoder``; returns stats.

    Under torchrun every rank calls this and extracts its own contiguous run of the batches one process would
    make; rank 0 merges the ranks' shards (see :func:`_assemble`) into the same cache, byte for byte, as one
    process writes. The pixels are decoded batch by batch and not kept, and the features go to disk as they are
    extracted, so memory does not grow with the number of images (their digests do)."""
    region = encoder.region
    old: FeatureCache | None = None
    stale = False
    if (cache_dir / "meta.json").is_file():
        try:
            old = open_cache(cache_dir, expect=stamp)
        except VlbenchError:
            if not rebuild_stale:
                raise
            stale = True  # another detector/config wrote it: rebuild from scratch, never reuse its rows
    show = progress and distributed.is_main()
    # Each rank digests its share of the images; every rank then knows every digest.
    mine = [pixel_digest(images.uint8(p).numpy())
            for p in tqdm(distributed.shard(paths), desc="hash images", disable=not show, leave=False, unit="img")]
    digests = dict(zip(paths, distributed.gather_concat(mine), strict=True))
    todo = [p for p in paths if old is None or image_id_of(p) not in old
            or old.digests[old.index[image_id_of(p)]] not in ("", digests[p])]
    todo = list({image_id_of(p): p for p in todo}.values())  # one row per image id (the last file named so)
    gt = _gt_boxes(spec, images) if region.boxes == "gt" and todo else {}
    # The batches one process makes, whole: a batch's features may depend on its neighbours at float precision,
    # so sharding whole batches (not single images) is what keeps the cache identical to a 1-process one.
    batches = [todo[begin:begin + batch_size] for begin in range(0, len(todo), batch_size)]
    # New rows go straight to disk, into this rank's shard of a staging folder beside the cache.
    staging = cache_dir.parent / f".{cache_dir.name}.new-{distributed.broadcast_object(uuid.uuid4().hex)}"
    start = time.perf_counter()
    try:
        fallback = _extract_shard(encoder, [batches[i] for i in distributed.shard_range(len(batches))], images,
                                  gt, digests, staging / f"rank{distributed.rank():05d}", stamp, show)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)  # no staging folder left beside the cache
        raise
    seconds = time.perf_counter() - start
    own = sum(len(batches[i]) for i in distributed.shard_range(len(batches)))
    by_rank = distributed.gather_concat([(own, seconds, fallback)])  # (images extracted, seconds, no-box images)
    cache = _assemble(cache_dir, stamp, old, staging, region.representation_size,
                      write=bool(todo) or old is None)
    rows = {digests[p]: cache.index[image_id_of(p)] for p in paths}
    encoder.attach(cache, rows)
    counts = np.diff(cache.offsets)
    busy = sum(part[1] for part in by_rank)
    return {"dir": str(cache_dir), "images": len(paths), "extracted": len(todo), "rebuilt_stale": stale,
            "extracted_by_rank": [part[0] for part in by_rank],
            "extraction_ms_per_image": round(1000 * busy / len(todo), 2) if todo else None,
            "zero_detection_images": sum(part[2] for part in by_rank),
            "mean_boxes": round(float(counts.mean()), 2) if len(counts) else 0.0, "stamp_hash": stamp_hash(stamp)}


def _extract_shard(encoder: RegionEncoder, batches: list[list[Path]], images: ImageTensors,
                   gt: dict[Path, torch.Tensor], digests: dict[Path, str], shard_path: Path, stamp: dict[str, Any],
                   show: bool) -> int:
    """Extract ``batches`` (this rank's) into a cache at ``shard_path``, row by row, straight to disk (a whole
    dataset's features, e.g. VQA v2's 200k images x 36 boxes x 1024 floats, do not fit in memory). Returns the
    number of images without any detection (given one whole-image box)."""
    region = encoder.region
    encoder.detector.eval()
    device = next(encoder.detector.parameters()).device
    fallback = 0
    with CacheWriter(shard_path, region.representation_size) as shard:
        for chunk in tqdm(batches, desc="extract regions", disable=not show, leave=False, unit="batch"):
            if region.boxes == "gt":
                missing = [p for p in chunk if p not in gt]
                if missing:
                    raise VlbenchError(f"--boxes gt: {missing[0]} has no entry in the spec's boxes files (NLVR2 "
                                       "images have no annotations; use the detector's boxes)")
            decoded = [images.uint8(p).numpy() for p in chunk]
            # Images of one size go through the detector together (all of them with square geometry; with the
            # aspect ratio kept, each run of equally sized ones), so no image is ever padded.
            for _, run in itertools.groupby(range(len(chunk)), key=lambda i: decoded[i].shape):
                run = list(run)
                batch = torch.from_numpy(np.stack([decoded[i] for i in run])).to(device).float().div_(255.0)
                boxes = [gt[chunk[i]] for i in run] if region.boxes == "gt" else None
                for i, r in zip(run, extract_regions(encoder.detector, batch, region, boxes)):
                    fallback += int(r.fallback)
                    shard.add(CachedImage(image_id_of(chunk[i]), r.features.cpu().numpy(), r.boxes.cpu().numpy(),
                                          digests[chunk[i]]))
        shard.finish(stamp)
    return fallback


def _assemble(cache_dir: Path, stamp: dict[str, Any], old: FeatureCache | None, staging: Path,
              feature_dim: int, write: bool) -> FeatureCache:
    """The cache holding ``old``'s rows that were not re-extracted, then the new rows in extraction order.

    Every rank has written its new rows as a small cache of its own under ``staging`` (on disk, not through a
    collective: a whole dataset's features can exceed what one message, or one machine's memory, holds). Rank 0
    streams ``old``'s kept rows and the shards, in rank order (the order one process extracts in), into the cache
    and renames it into place; then every rank opens it. The cache folder must therefore be on a filesystem every
    node sees (``$VLBENCH_CACHE``), as the world and detector caches already must."""
    distributed.barrier()
    cache: FeatureCache | None = None
    if distributed.is_main():
        try:
            if write:
                merged: dict[str, CachedImage] = {}  # memory-mapped rows: nothing is copied until written
                for r in range(distributed.world_size()):
                    part = staging / f"rank{r:05d}"
                    if not (part / "meta.json").is_file():
                        raise VlbenchError(f"{part}: rank {r}'s region features are not visible to rank 0; the "
                                           "cache folder ($VLBENCH_CACHE) must be on a filesystem every node shares")
                    # A later rank's row for the same image id wins, in the first one's place, as in one process.
                    merged.update((item.image_id, item) for item in FeatureCache(part).items())
                keep = (item for item in (old.items() if old is not None else []) if item.image_id not in merged)
                cache = write_cache(cache_dir, stamp, itertools.chain(keep, merged.values()), feature_dim)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    distributed.barrier()
    if not write:
        assert old is not None
        return old
    return cache if cache is not None else open_cache(cache_dir, expect=stamp)


def attach_imported(encoder: RegionEncoder, cache_path: Path, paths: list[Path], images: ImageTensors, *,
                    progress: bool = True, require_all: bool = True) -> dict[str, Any]:
    """Serve ``paths``' regions from an imported cache (``vlbench features import``), read by image id.

    Every image must be in the cache: the first missing one is a one-line error naming it (``require_all``
    False, for ``bench``, which uses a few images of a split: the missing ones are left out and would fail only
    if shown to the model). The encoder sees pixels, not ids, so each image's pixel digest is mapped to its id's
    row (one decode per image, as when a cache is filled). Returns what run.json records under
    ``visual_encoder.features``."""
    cache = open_cache(cache_path, feature_dim=encoder.feature_dim)
    expected = encoder.region.features_source
    if expected and cache.stamp.get("source_hash") != expected:
        raise VlbenchError(f"{cache_path}: imported from another file ({cache.stamp.get('source')}) than the features "
                           "this model was trained on; pass the cache it was trained with")
    ids = {p: image_id_of(p) for p in paths}
    missing = [p for p in paths if ids[p] not in cache]
    if missing and not require_all:
        paths = [p for p in paths if ids[p] in cache]
    elif missing:
        more = f" (and {len(missing) - 1} more of the run's {len(paths)} images)" if len(missing) > 1 else ""
        raise VlbenchError(f"{cache_path}: image {missing[0]} (id {ids[missing[0]]}) is not in the imported "
                           f"features{more}")
    show = progress and distributed.is_main()
    mine = [pixel_digest(images.uint8(p).numpy())
            for p in tqdm(distributed.shard(paths), desc="hash images", disable=not show, leave=False, unit="img")]
    digests = distributed.gather_concat(mine)
    seen: dict[str, tuple[Path, str]] = {}
    for path, digest in zip(paths, digests, strict=True):
        other = seen.setdefault(ids[path], (path, digest))
        if other[1] != digest:  # e.g. train/x_1.jpg and val/x_1.jpg: one row cannot stand for both
            raise VlbenchError(f"{other[0]} and {path} are different images with the same id {ids[path]}; "
                               "imported features are keyed by id, so each id must name one image")
    encoder.attach(cache, {digest: cache.index[ids[p]] for p, digest in zip(paths, digests, strict=True)})
    used = [cache.index[ids[p]] for p in dict.fromkeys(paths)]
    boxes = [int(cache.offsets[i + 1] - cache.offsets[i]) for i in used]
    stamp = cache.stamp
    return {"source": stamp.get("source"), "source_hash": stamp.get("source_hash"),
            "extractor": stamp.get("extractor"), "cache": str(cache_path), "count": len(cache),
            "feature_dim": cache.feature_dim, "images_used": len(used),
            "mean_boxes": round(sum(boxes) / max(len(boxes), 1), 2),
            "images_without_boxes": sum(1 for b in boxes if b == 0)}


@torch.no_grad()
def time_extraction(encoder: RegionEncoder, images: torch.Tensor, repeats: int = 3) -> float:
    """Detector + RoI features, ms per image, timed live (used when every image came from the cache)."""
    extract_regions(encoder.detector, images[:2], encoder.region)  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        extract_regions(encoder.detector, images, encoder.region)
    return round(1000 * (time.perf_counter() - start) / (repeats * len(images)), 2)


def managed_cache_dir(spec: DatasetSpec, stamp: dict[str, Any], root: Path | None = None) -> Path:
    """The feature cache of ``spec``'s images under ``stamp``, below ``root`` (None = ``$VLBENCH_CACHE``)."""
    where = hashlib.sha256(str(spec.folder).encode()).hexdigest()[:8]
    return (root or cache_root()) / "region-features" / f"{spec.name}-{where}-{stamp_hash(stamp)}"


__all__ = ["DetectorSource", "attach_imported", "fill_cache", "image_id_of", "managed_cache_dir", "resolve_detector",
           "time_extraction", "train_and_save", "pixels_uint8"]

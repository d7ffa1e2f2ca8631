"""Importers for precomputed bottom-up-attention features into the vlbench feature cache.

- TSV (peteanderson80/bottom-up-attention, LXMERT, ViLBERT): tab-separated rows ``image_id, image_w, image_h,
  num_boxes, boxes, features`` with ``boxes`` / ``features`` base64-encoded float32 arrays [num_boxes, 4] and
  [num_boxes, D] (absolute x1, y1, x2, y2 boxes).
- ``.npz`` per image (VisualBERT / MMF-style extraction): ``x`` [num_bbox, D], ``bbox`` [num_bbox, 4],
  ``num_bbox``, ``image_h``, ``image_w``; the image id comes from the file name (``COCO_val2014_000000000042``
  -> 42, as ``region_setup.image_id_of`` keys images).

Both write the same cache as extraction does, stamped with the source file(s), with boxes normalised by the
image size. Malformed input (truncated row, wrong array sizes, mixed feature dimensions) is a one-line error
naming the file and row.
"""

from __future__ import annotations

import base64
import binascii
import csv
import hashlib
import io
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from tqdm import tqdm

from baselines.feature_cache import CachedImage, CacheWriter, FeatureCache
from harness.errors import VlbenchError
from harness.fileio import open_untrusted, read_untrusted

TSV_FIELDS = ("image_id", "image_w", "image_h", "num_boxes", "boxes", "features")


def _source_stamp(kind: str, files: list[Path], feature_dim: int) -> dict:
    digest = hashlib.sha256()
    for f in sorted(files):
        stat = f.stat()
        digest.update(f"{f.name}:{stat.st_size}:{int(stat.st_mtime)}".encode())
    return {"extractor": f"import-{kind}", "source": str(files[0].parent if kind == "npz" else files[0]),
            "source_hash": digest.hexdigest()[:16], "feature_dim": feature_dim}


def _normalised(boxes: np.ndarray, width: float, height: float, where: str) -> np.ndarray:
    if width <= 0 or height <= 0:
        raise VlbenchError(f"{where}: image size must be positive, got {width}x{height}")
    return (boxes / np.array([width, height, width, height], dtype=np.float32)).clip(0.0, 1.0)


def _decode(text: str, count: int, where: str, field: str) -> np.ndarray:
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise VlbenchError(f"{where}: field {field!r} is not valid base64 (truncated row?)") from None
    if len(raw) % 4:
        raise VlbenchError(f"{where}: field {field!r} has {len(raw)} bytes, not whole float32 values (truncated?)")
    values = np.frombuffer(raw, dtype=np.float32)
    if count and values.size % count:
        raise VlbenchError(f"{where}: field {field!r} holds {values.size} floats, not a multiple of "
                           f"num_boxes={count} (truncated row?)")
    return values


def read_tsv(path: Path) -> Iterator[CachedImage]:
    """Rows of a bottom-up TSV as cache entries (image id as a string, boxes normalised)."""
    csv.field_size_limit(sys.maxsize)
    with io.TextIOWrapper(open_untrusted(path, "TSV file"), newline="") as handle:
        for number, row in enumerate(csv.reader(handle, delimiter="\t"), start=1):
            where = f"{path}: row {number}"
            if len(row) != len(TSV_FIELDS):
                raise VlbenchError(f"{where}: expected {len(TSV_FIELDS)} tab-separated fields "
                                   f"({', '.join(TSV_FIELDS)}), got {len(row)} (truncated row?)")
            try:
                image_id, width, height, count = row[0].strip(), float(row[1]), float(row[2]), int(row[3])
            except ValueError:
                raise VlbenchError(f"{where}: image_w, image_h and num_boxes must be numbers") from None
            if count < 0:
                raise VlbenchError(f"{where}: num_boxes is negative")
            boxes = _decode(row[4], count, where, "boxes")
            if boxes.size != 4 * count:
                raise VlbenchError(f"{where}: boxes hold {boxes.size} floats, expected 4 x num_boxes = {4 * count}")
            features = _decode(row[5], count, where, "features")
            dim = features.size // count if count else 0
            yield CachedImage(image_id, features.reshape(count, dim) if count else features.reshape(0, 0),
                              _normalised(boxes.reshape(count, 4), width, height, where))


def read_npz_dir(folder: Path) -> Iterator[CachedImage]:
    """Every ``*.npz`` under ``folder`` as a cache entry."""
    from baselines.region_setup import image_id_of

    files = sorted(folder.rglob("*.npz"))
    if not files:
        raise VlbenchError(f"{folder}: no .npz feature files")
    for file in files:
        try:
            with np.load(io.BytesIO(read_untrusted(file, what=".npz file")), allow_pickle=False) as data:
                x, bbox = np.asarray(data["x"], np.float32), np.asarray(data["bbox"], np.float32)
                count, height, width = int(data["num_bbox"]), float(data["image_h"]), float(data["image_w"])
        except KeyError as exc:
            raise VlbenchError(f"{file}: missing array {exc} (need x, bbox, num_bbox, image_h, image_w)") from None
        except (OSError, ValueError) as exc:
            raise VlbenchError(f"{file}: unreadable .npz ({type(exc).__name__}: {exc})") from None
        if x.ndim != 2 or bbox.shape != (x.shape[0], 4) or count != x.shape[0]:
            raise VlbenchError(f"{file}: x {tuple(x.shape)}, bbox {tuple(bbox.shape)} and num_bbox {count} disagree")
        yield CachedImage(image_id_of(file), x, _normalised(bbox, width, height, str(file)))


def _import(entries: Iterator[CachedImage], where: Path, out: Path, kind: str, sources: list[Path],
            progress: bool) -> FeatureCache:
    """Stream ``entries`` into a cache at ``out`` (the official VQA v2 TSV is tens of GB: never all in memory)."""
    with CacheWriter(out) as writer:
        for item in tqdm(entries, desc=f"import {where.name}", disable=not progress, unit="img"):
            dim = writer.feature_dim
            if item.features.shape[0] and dim is not None and item.features.shape[1] != dim:
                raise VlbenchError(f"{where}: image {item.image_id} has {item.features.shape[1]}-d features, "
                                   f"earlier images {dim}-d")
            writer.add(item)
        if writer.feature_dim is None:
            raise VlbenchError(f"{where}: no features to import")
        return writer.finish(_source_stamp(kind, sources, writer.feature_dim))


def import_tsv(path: Path, out: Path, progress: bool = True) -> FeatureCache:
    return _import(read_tsv(path), path, out, "tsv", [path], progress)


def import_npz(folder: Path, out: Path, progress: bool = True) -> FeatureCache:
    return _import(read_npz_dir(folder), folder, out, "npz", sorted(folder.rglob("*.npz")), progress)

"""The region feature cache: a folder of ``.npy`` arrays, memory-mapped on read, keyed by image id.

Layout (ragged: images have different numbers of boxes, so rows are concatenated with offsets)::

    meta.json      format, stamp (who made it: detector hash + config, or the imported file), feature_dim
    ids.json       image ids, one per image, in row order
    digests.json   content digest of the pixels each row was extracted from ("" for imported features)
    offsets.npy    [N + 1] int64: image i owns rows offsets[i]:offsets[i + 1]
    features.npy   [T, D] float32 region features
    boxes.npy      [T, 4] float32 normalised (x1, y1, x2, y2)

A cache is only ever used with the stamp it was written with: :func:`open_cache` with an ``expect`` stamp raises
on any difference (another detector, another extraction config, another feature dimension), so a stale cache
is never used silently. Writes go to a temporary folder renamed into place, so a reader never sees half a cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from harness.errors import VlbenchError
from harness.fileio import write_json

CACHE_FORMAT = "vlbench-region-cache-v1"
_SWAP_RETRIES = 5


def stamp_hash(stamp: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(stamp, sort_keys=True).encode()).hexdigest()[:16]


def pixel_digest(pixels: np.ndarray) -> str:
    """Digest of a uint8 image array: ties a cached row to the exact pixels the model is given."""
    return hashlib.blake2b(np.ascontiguousarray(pixels).tobytes(), digest_size=12).hexdigest()


@dataclass
class CachedImage:
    image_id: str
    features: np.ndarray  # [K, D]
    boxes: np.ndarray  # [K, 4] normalised
    digest: str = ""


class FeatureCache:
    """A read-only, memory-mapped cache; ``row(image_id)`` -> (features [K, D], boxes [K, 4])."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        for attempt in range(_SWAP_RETRIES):
            try:
                self._read()
                break
            except FileNotFoundError:
                # Another run replaced the cache between two of our reads (write_cache renames the old folder
                # out and the new one in): read the new copy from the start.
                if attempt == _SWAP_RETRIES - 1:
                    if not (self.path / "meta.json").is_file():
                        raise VlbenchError(f"{self.path}: no region feature cache here (meta.json missing)") from None
                    raise VlbenchError(f"{self.path}: unreadable region feature cache (a file is missing); "
                                       "delete it to rebuild") from None
                time.sleep(0.1 * (attempt + 1))

    def _read(self) -> None:
        meta_path = self.path / "meta.json"
        try:
            self.meta = json.loads(meta_path.read_text())
            if self.meta.get("format") != CACHE_FORMAT:
                raise VlbenchError(f"{self.path}: not a vlbench region feature cache")
            self.ids: list[str] = json.loads((self.path / "ids.json").read_text())
            self.digests: list[str] = json.loads((self.path / "digests.json").read_text())
            self.offsets = np.load(self.path / "offsets.npy")
            self.features = np.load(self.path / "features.npy", mmap_mode="r")
            self.boxes = np.load(self.path / "boxes.npy", mmap_mode="r")
        except FileNotFoundError:
            raise  # retried by __init__: most likely a concurrent replacement
        except (OSError, ValueError) as exc:
            raise VlbenchError(f"{self.path}: unreadable region feature cache ({type(exc).__name__}: {exc}); "
                               "delete it to rebuild") from None
        if not (isinstance(self.ids, list) and isinstance(self.digests, list)
                and all(isinstance(v, str) for v in (*self.ids, *self.digests))):
            raise VlbenchError(f"{self.path}: inconsistent region feature cache (ids and digests must be lists of "
                               "strings); delete it")
        n = len(self.ids)
        if len(self.digests) != n or self.offsets.shape != (n + 1,) or self.offsets.dtype.kind not in "iu" \
                or self.features.ndim != 2 or self.features.shape[0] != self.offsets[-1] \
                or self.boxes.shape != (self.features.shape[0], 4):
            raise VlbenchError(f"{self.path}: inconsistent region feature cache (array sizes disagree); delete it")
        # Image i owns rows offsets[i]:offsets[i + 1]: a decreasing or negative offset would hand an image another
        # image's rows (or none) without any error, so the whole array is checked once here.
        if self.offsets[0] != 0 or (np.diff(self.offsets) < 0).any():
            raise VlbenchError(f"{self.path}: inconsistent region feature cache (offsets.npy must start at 0 and "
                               "never decrease); delete it")
        self.index = {image_id: i for i, image_id in enumerate(self.ids)}

    @property
    def stamp(self) -> dict[str, Any]:
        return self.meta["stamp"]

    @property
    def feature_dim(self) -> int:
        return int(self.features.shape[1])

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, image_id: str) -> bool:
        return image_id in self.index

    def row(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Image ``i``'s features and boxes (memory-mapped), checked to be finite as they are read: the features
        file can be tens of GB, too much to check at open."""
        begin, end = int(self.offsets[i]), int(self.offsets[i + 1])
        features, boxes = self.features[begin:end], self.boxes[begin:end]
        if not (np.isfinite(features).all() and np.isfinite(boxes).all()):
            raise VlbenchError(f"{self.path}: image {self.ids[i]}: its cached features or boxes are not all finite; "
                               "delete the cache to rebuild it (or re-import the features)")
        return features, boxes

    def get(self, image_id: str) -> CachedImage:
        i = self.index[image_id]
        features, boxes = self.row(i)
        return CachedImage(image_id, np.asarray(features), np.asarray(boxes), self.digests[i])

    def items(self) -> Iterable[CachedImage]:
        for image_id in self.ids:
            yield self.get(image_id)


def open_cache(path: Path, expect: dict[str, Any] | None = None, feature_dim: int | None = None) -> FeatureCache:
    """Open a cache, refusing one made by another detector/config (``expect``) or of another feature size."""
    path = Path(path)
    if not (path / "meta.json").is_file():
        raise VlbenchError(f"{path}: no region feature cache here (meta.json missing)")
    cache = FeatureCache(path)
    if expect is not None and cache.stamp != expect:
        differing = sorted(k for k in set(expect) | set(cache.stamp) if expect.get(k) != cache.stamp.get(k))
        raise VlbenchError(f"{path}: feature cache was made by another detector or config (differs in "
                           f"{', '.join(differing)}); delete it or point to a matching one")
    if feature_dim is not None and cache.feature_dim != feature_dim:
        raise VlbenchError(f"{path}: cached region features have dimension {cache.feature_dim} but the model "
                           f"expects {feature_dim} (set region representation_size to {cache.feature_dim})")
    return cache


# A .npy file streamed row by row: the header is reserved at a fixed size first and rewritten with the final
# shape at the end (format 1.0: magic, version, uint16 header length, a padded dict; total a multiple of 64).
_NPY_HEADER_BYTES = 128


def _npy_header(shape: tuple[int, int]) -> bytes:
    text = repr({"descr": "<f4", "fortran_order": False, "shape": tuple(int(n) for n in shape)})
    preamble = b"\x93NUMPY\x01\x00"
    length = _NPY_HEADER_BYTES - len(preamble) - 2
    if len(text) + 1 > length:
        raise VlbenchError(f"region feature cache: shape {shape} does not fit the .npy header")
    return preamble + length.to_bytes(2, "little") + (text.ljust(length - 1) + "\n").encode("ascii")


class CacheWriter:
    """Writes a cache image by image, straight to disk, so a whole dataset's features (VQA v2: 123k images x 36
    boxes x 2048 floats, about 36 GB) never sit in memory; :meth:`finish` renames it into place atomically.

    ``feature_dim`` None = take it from the first image that has boxes (imported features). Use as a context
    manager, or call :meth:`abort` on failure, so the temporary folder goes away.
    """

    def __init__(self, path: Path, feature_dim: int | None = None) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.feature_dim = feature_dim
        self.ids: list[str] = []
        self.digests: list[str] = []
        self.offsets = [0]
        self._seen: set[str] = set()
        self._temp = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.", dir=self.path.parent))
        self._features = open(self._temp / "features.npy", "wb")  # noqa: SIM115 - closed in finish/abort
        self._boxes = open(self._temp / "boxes.npy", "wb")  # noqa: SIM115
        for handle in (self._features, self._boxes):
            handle.write(b"\0" * _NPY_HEADER_BYTES)

    def __enter__(self) -> CacheWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, traceback: object) -> None:
        if exc_type is not None:
            self.abort()

    def add(self, item: CachedImage) -> None:
        if item.image_id in self._seen:
            raise VlbenchError(f"image id {item.image_id!r} appears twice in the features written to {self.path}")
        self._seen.add(item.image_id)
        f = np.asarray(item.features, dtype=np.float32)  # float32: cached and live tokens agree exactly
        if f.ndim == 2 and len(f) and self.feature_dim is None:
            self.feature_dim = f.shape[1]
        if f.size == 0:
            f = f.reshape(0, self.feature_dim or 0)
        if f.ndim != 2 or (len(f) and f.shape[1] != self.feature_dim):
            raise VlbenchError(f"image {item.image_id}: features of shape {tuple(f.shape)}, expected "
                               f"[boxes, {self.feature_dim}]")
        b = np.asarray(item.boxes, dtype=np.float32).reshape(-1, 4)
        if len(b) != len(f):
            raise VlbenchError(f"image {item.image_id}: {len(f)} feature rows but {len(b)} boxes")
        self._features.write(np.ascontiguousarray(f, dtype="<f4").tobytes())
        self._boxes.write(np.ascontiguousarray(b, dtype="<f4").tobytes())
        self.ids.append(item.image_id)
        self.digests.append(item.digest)
        self.offsets.append(self.offsets[-1] + len(f))

    def finish(self, stamp: dict[str, Any], extra_meta: dict[str, Any] | None = None) -> FeatureCache:
        """Complete the files and move the cache into place (replacing one already there)."""
        if self.feature_dim is None:
            self.abort()
            raise VlbenchError(f"{self.path}: no features to write (every image has zero boxes)")
        temp, path = self._temp, self.path
        try:
            for handle, width in ((self._features, self.feature_dim), (self._boxes, 4)):
                handle.seek(0)
                handle.write(_npy_header((self.offsets[-1], width)))
                handle.close()
            np.save(temp / "offsets.npy", np.asarray(self.offsets, dtype=np.int64))
            write_json(temp / "ids.json", self.ids, indent=None)
            write_json(temp / "digests.json", self.digests, indent=None)
            write_json(temp / "meta.json", {"format": CACHE_FORMAT, "stamp": stamp, "stamp_hash": stamp_hash(stamp),
                                            "feature_dim": self.feature_dim, "images": len(self.ids),
                                            "boxes": self.offsets[-1], **(extra_meta or {})})
            if path.exists():
                old = path.with_name(f".{path.name}.old-{os.getpid()}")
                os.rename(path, old)
                os.rename(temp, path)
                shutil.rmtree(old, ignore_errors=True)
            else:
                try:
                    os.rename(temp, path)
                except OSError:
                    if not (path / "meta.json").is_file():
                        raise
                    # Another run filled the same cache meanwhile (two runs on one results root): keep its
                    # complete copy; the stamp check on open decides whether it is usable.
                    shutil.rmtree(temp, ignore_errors=True)
        except BaseException:
            self.abort()
            raise
        return FeatureCache(path)

    def abort(self) -> None:
        """Drop everything written so far."""
        self._features.close()
        self._boxes.close()
        shutil.rmtree(self._temp, ignore_errors=True)


def write_cache(path: Path, stamp: dict[str, Any], images: Iterable[CachedImage], feature_dim: int,
                extra_meta: dict[str, Any] | None = None) -> FeatureCache:
    """Write a complete cache atomically (temporary folder, then rename over ``path``), streaming ``images``."""
    with CacheWriter(path, feature_dim) as writer:
        for item in images:
            writer.add(item)
        return writer.finish(stamp, extra_meta)

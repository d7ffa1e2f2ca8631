"""The feature cache is written image by image: a dataset's features (VQA v2's official TSV: tens of GB) must
never be held in memory at once, the files must stay the plain .npy a reader memory-maps, and a failure midway
must leave nothing behind."""

from __future__ import annotations

import gc
import weakref
from pathlib import Path

import numpy as np
import pytest

from baselines.feature_cache import CachedImage, CacheWriter, open_cache, write_cache
from harness.errors import VlbenchError

STAMP = {"detector": "abc"}


def _image(i: int, boxes: int = 3, dim: int = 5) -> CachedImage:
    rng = np.random.default_rng(i)
    return CachedImage(str(i), rng.standard_normal((boxes, dim)).astype(np.float32),
                       rng.random((boxes, 4)).astype(np.float32), digest=f"d{i}")


def test_written_rows_are_not_kept_in_memory(tmp_path: Path) -> None:
    alive: list[weakref.ref] = []

    def stream():
        for i in range(6):
            item = _image(i)
            alive.append(weakref.ref(item.features))
            yield item
            del item
            if i >= 2:
                gc.collect()
                assert alive[i - 2]() is None, f"image {i - 2}'s features are still referenced after it was written"

    cache = write_cache(tmp_path / "cache", STAMP, stream(), feature_dim=5)
    assert len(cache) == 6


def test_streamed_files_are_plain_npy_with_every_row_in_order(tmp_path: Path) -> None:
    images = [_image(0), _image(1, boxes=0), _image(2, boxes=7)]
    cache = write_cache(tmp_path / "cache", STAMP, iter(images), feature_dim=5)
    features = np.load(tmp_path / "cache/features.npy")  # no mmap: the header must describe the data exactly
    boxes = np.load(tmp_path / "cache/boxes.npy")
    assert features.shape == (10, 5) and features.dtype == np.float32 and boxes.shape == (10, 4)
    np.testing.assert_array_equal(features, np.concatenate([i.features for i in images]))
    np.testing.assert_array_equal(boxes, np.concatenate([i.boxes for i in images]))
    assert cache.ids == ["0", "1", "2"] and cache.digests == ["d0", "d1", "d2"]
    assert list(cache.offsets) == [0, 3, 3, 10]
    assert cache.get("1").features.shape == (0, 5)
    assert open_cache(tmp_path / "cache", expect=STAMP, feature_dim=5).meta["boxes"] == 10


def test_feature_dim_is_taken_from_the_first_image_with_boxes(tmp_path: Path) -> None:
    with CacheWriter(tmp_path / "cache") as writer:
        writer.add(CachedImage("empty", np.zeros((0, 0), np.float32), np.zeros((0, 4), np.float32)))
        writer.add(_image(1, dim=6))
        with pytest.raises(VlbenchError, match="expected"):
            writer.add(_image(2, dim=7))
        cache = writer.finish(STAMP)
    assert cache.feature_dim == 6 and cache.get("empty").features.shape == (0, 6)


def test_a_failure_midway_leaves_no_cache_and_no_temporary_folder(tmp_path: Path) -> None:
    def stream():
        yield _image(0)
        yield _image(0)  # duplicate id: refused

    with pytest.raises(VlbenchError, match="appears twice"):
        write_cache(tmp_path / "cache", STAMP, stream(), feature_dim=5)
    assert list(tmp_path.iterdir()) == []


def test_a_cache_whose_offsets_give_images_other_rows_is_refused(tmp_path: Path) -> None:
    """Decreasing offsets would hand an image another image's rows without any error: refused at open."""
    write_cache(tmp_path / "cache", STAMP, iter([_image(0), _image(1), _image(2)]), feature_dim=5)
    np.save(tmp_path / "cache/offsets.npy", np.asarray([0, 6, 3, 9], dtype=np.int64))
    with pytest.raises(VlbenchError, match="offsets.npy must start at 0 and never decrease"):
        open_cache(tmp_path / "cache", expect=STAMP, feature_dim=5)


def test_non_finite_cached_features_are_an_error_naming_the_image(tmp_path: Path) -> None:
    bad = _image(1)
    bad.features[1, 2] = np.nan
    cache = write_cache(tmp_path / "cache", STAMP, iter([_image(0), bad]), feature_dim=5)
    assert cache.get("0").features.shape == (3, 5)
    with pytest.raises(VlbenchError, match=r"image 1: its cached features or boxes are not all finite"):
        cache.get("1")

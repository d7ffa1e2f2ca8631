"""Two runs on one results root filling the same feature cache at once: the one that finishes second keeps the
first one's complete cache instead of failing or clobbering it."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from baselines import feature_cache
from baselines.feature_cache import CachedImage, open_cache, write_cache
from harness.errors import VlbenchError

STAMP = {"detector": "abc", "config": 1}


def _images(value: float) -> list[CachedImage]:
    return [CachedImage(image_id=str(i), digest=f"d{i}", features=np.full((2, 4), value, np.float32),
                        boxes=np.zeros((2, 4), np.float32)) for i in range(3)]


def test_second_writer_keeps_the_cache_the_first_one_finished(tmp_path: Path, monkeypatch) -> None:
    target = tmp_path / "cache"
    real_rename = os.rename
    raced = []

    def rename(src, dst):
        if Path(dst) == target and not raced:  # the other run completes its cache just before ours lands
            raced.append(True)
            monkeypatch.setattr(feature_cache.os, "rename", real_rename)
            write_cache(target, STAMP, _images(1.0), feature_dim=4)
        return real_rename(src, dst)

    monkeypatch.setattr(feature_cache.os, "rename", rename)
    write_cache(target, STAMP, _images(2.0), feature_dim=4)
    assert raced
    cache = open_cache(target, expect=STAMP)
    assert cache.ids == ["0", "1", "2"] and float(np.asarray(cache.features).max()) == 1.0
    assert [p.name for p in tmp_path.iterdir()] == ["cache"], "no temporary folder is left behind"


def test_a_reader_caught_by_a_concurrent_replacement_reads_the_new_copy(tmp_path: Path, monkeypatch) -> None:
    """Three region runs on one results root: one opens the cache while another swaps in a fuller copy (the
    folder renamed out between two of the reader's file reads). Seen on a GPU machine as 'unreadable region
    feature cache (FileNotFoundError: digests.json)'. The reader retries and gets the new copy."""
    target = tmp_path / "cache"
    write_cache(target, STAMP, _images(1.0), feature_dim=4)
    real_read_text = Path.read_text
    swapped = []

    def read_text(self: Path, *args, **kwargs):
        if self.name == "digests.json" and not swapped:  # the writer swaps right before this read
            swapped.append(True)
            write_cache(target, STAMP, _images(3.0), feature_dim=4)
            raise FileNotFoundError(2, "No such file or directory", str(self))
        return real_read_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", read_text)
    cache = open_cache(target, expect=STAMP)
    assert swapped and float(np.asarray(cache.features).max()) == 3.0


def test_a_cache_with_a_file_really_missing_is_a_clear_error(tmp_path: Path) -> None:
    target = tmp_path / "cache"
    write_cache(target, STAMP, _images(1.0), feature_dim=4)
    (target / "digests.json").unlink()
    with pytest.raises(VlbenchError, match="unreadable region feature cache .*delete it"):
        open_cache(target)

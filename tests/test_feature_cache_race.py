"""Two runs on one results root filling the same feature cache at once: the one that finishes second keeps the
first one's complete cache instead of failing or clobbering it."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from baselines import feature_cache
from baselines.feature_cache import CachedImage, open_cache, write_cache

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

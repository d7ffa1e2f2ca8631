"""The decoded-image cache is bounded in bytes (memory must not grow with the dataset) and changes no result."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from harness.batches import ImageTensors


def _images(folder: Path, count: int) -> list[Path]:
    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        path = folder / f"{i}.png"
        Image.fromarray(rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def test_the_cache_stops_at_its_budget_and_changes_nothing(tmp_path: Path) -> None:
    paths = _images(tmp_path, 6)
    one = 3 * 16 * 16  # bytes of one decoded 16x16 RGB image
    bounded = ImageTensors(16, cache_bytes=2 * one + 10)
    uncached = ImageTensors(16, cache_bytes=0)
    for _ in range(2):  # a second epoch: hits for the cached two, fresh decodes for the rest
        assert torch.equal(bounded.batch(paths), uncached.batch(paths))
    assert bounded.cached_bytes == 2 * one and uncached.cached_bytes == 0
    assert bounded.uint8(paths[0]) is bounded.uint8(paths[0])  # cached: the same tensor, not a new decode


def test_worker_processes_share_the_budget() -> None:
    assert ImageTensors(16, cache_bytes=8 << 20, processes=9).budget == (8 << 20) // 9

"""The decoded-image cache is bounded in bytes (memory must not grow with the dataset) and changes no result."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from harness.batches import ImageTensors
from harness.errors import DataError


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


def test_large_jpegs_decode_at_a_reduced_scale_close_to_a_full_decode(tmp_path: Path) -> None:
    y, x = np.mgrid[0:480, 0:640]
    smooth = np.stack([(x * 255 // 640), (y * 255 // 480), ((x + y) * 255 // 1120)], -1).astype(np.uint8)
    path = tmp_path / "big.jpg"
    Image.fromarray(smooth).save(path, format="JPEG", quality=95)
    reduced = ImageTensors(64, cache_bytes=0).uint8(path).float()
    full = torch.from_numpy(np.array(Image.open(path).convert("RGB").resize((64, 64), resample=2))).permute(2, 0, 1)
    assert reduced.shape == (3, 64, 64) and (reduced - full.float()).abs().mean() < 2.0  # of 255
    data = path.read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"cut\.jpg: cannot decode image"):
        ImageTensors(64, cache_bytes=0).uint8(tmp_path / "cut.jpg")  # reduced scale still reads every scan

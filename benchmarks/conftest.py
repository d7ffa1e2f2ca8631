"""Fixtures of the pytest-benchmark suite (``nox -s benchmarks``; not part of the default ``pytest`` run).

Everything is built once per session on the tiny preset: a small world (for real image files), a Pixel-BERT
model, a region detector with random weights (its cost is what matters here: proposals, RoIAlign, box head; the
number of boxes kept is held at the config's ``min_boxes`` .. ``max_boxes`` whatever the weights).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _setup(tmp_path_factory: pytest.TempPathFactory) -> None:
    os.environ.setdefault("VLBENCH_CACHE", str(tmp_path_factory.mktemp("vlbench-cache")))
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from harness.world.synth import generate_world

    out = tmp_path_factory.mktemp("world") / "tiny"
    generate_world(out, seed=0, size="tiny", progress=False)
    return out


@pytest.fixture(scope="session")
def image_paths(world: Path) -> list[Path]:
    return sorted((world / "images").rglob("*.png"))[:32]


@pytest.fixture(scope="session")
def model():
    from harness.models import build_model, model_setup

    return build_model(model_setup("pixelbert", "tiny")).eval()


@pytest.fixture(scope="session")
def detector():
    from baselines.detector import build_detector
    from pixelbert.config import RegionConfig, get_preset

    region = RegionConfig(num_classes=5)
    return build_detector(get_preset("tiny").visual, region, 5).eval(), region


@pytest.fixture(scope="session")
def images() -> torch.Tensor:
    return torch.rand(32, 3, 64, 64)


@pytest.fixture(scope="session")
def text() -> dict[str, torch.Tensor]:
    from harness.batches import TextBatcher
    from pixelbert.tokenizer import load_tokenizer

    questions = [f"how many {c} objects are left of the {s}?" for c in ("red", "blue", "green", "gray")
                 for s in ("cube", "ball", "cone", "ring", "star", "disk", "tile", "bar")]
    return TextBatcher(load_tokenizer(), 40)(questions)

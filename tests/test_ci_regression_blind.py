"""The CI regression gate's blind run: the pixelbert run of test_ci_regression.py with its images replaced by
noise must fail the committed baseline. Its own file so that pytest-xdist (which hands a whole file to one
worker) trains it beside the gate's pixelbert run instead of after it: each takes minutes."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

# _threads_restored: the autouse fixture, here too (RUN_ARGS has --threads 1, which sets the whole process's count).
from test_ci_regression import BASELINE, RUN_ARGS, _threads_restored  # noqa: F401

from harness.cli.main import cli


@pytest.fixture(scope="module")
def ci_blind_run(world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The CI pixelbert run with its CNN fed uniform noise instead of the images: a model that has lost its
    visual skill and answers from the question alone."""
    import torch

    from pixelbert.pixel_encoder import PixelEncoder

    run_dir = tmp_path_factory.mktemp("ci-blind") / "pixelbert-vqa"
    real = PixelEncoder.forward
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(PixelEncoder, "forward",
                      lambda self, images, image_sizes=None: real(self, torch.rand_like(images), image_sizes))
        result = CliRunner().invoke(cli, ["run", *RUN_ARGS, "--data", str(world / "vqa.yaml"),
                                          "--run-dir", str(run_dir)])
    assert result.exit_code == 0, result.output
    return run_dir


@pytest.mark.slow
def test_ci_subset_without_vision_fails_the_baseline(ci_blind_run: Path) -> None:
    result = CliRunner().invoke(cli, ["check", "--baseline", str(BASELINE), str(ci_blind_run)])
    assert result.exit_code == 1, result.output
    assert "REGRESSION" in result.output

"""The CI regression gate: small real pixelbert and region VQA runs on the embedded world must pass the committed
baseline (`results/baselines/ci-tiny.yaml`); the same runs made worse must fail it, and so must the pixelbert run
with its images replaced by noise. The pixelbert run (one pass over 6000 scenes' 18,000 questions, 563 steps,
from scratch) learns counting and colours well above the question-only level (test number about 60 against 38
blind), so the gate catches a loss of visual skill, not only a broken pipeline. The region run uses a detector
trained by `vlbench detector train` on 48 scenes for 2 epochs, so the whole subset is plain CLI commands; it
guards the region pipeline (its accuracy at 200 questions says nothing finer). The blind run is in
test_ci_regression_blind.py: a file goes to one pytest-xdist worker, so the two long trainings run side by side.

Refresh the baseline after an intended change with the commands in the README (same options as RUN_ARGS)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from harness.cli.main import cli

BASELINE = Path(__file__).resolve().parents[1] / "results" / "baselines" / "ci-tiny.yaml"
# One thread, as the baseline was made: CPU float sums depend on the thread count, and 563 steps from scratch turn
# that into points ("other" was 35.49 with torch's 2 threads and 39.01 with one, on the same machine and code).
RUN_ARGS = ["--model", "pixelbert", "--task", "vqa", "--limit", "18000", "--epochs", "1", "--precision", "fp32",
            "--threads", "1", "--no-progress"]
DETECTOR_ARGS = ["--epochs", "2", "--limit", "48", "--no-progress"]
REGION_ARGS = ["--model", "region", "--task", "vqa", "--limit", "200", "--epochs", "2", "--precision", "fp32",
               "--threads", "1", "--no-progress"]


@pytest.fixture(scope="module", autouse=True)
def _threads_restored():
    """`--threads 1` sets torch's thread count for the whole test process: give the other modules theirs back."""
    import torch

    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def ci_run(world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("ci") / "pixelbert-vqa"
    result = CliRunner().invoke(cli, ["run", *RUN_ARGS, "--data", str(world / "vqa.yaml"), "--run-dir", str(run_dir)])
    assert result.exit_code == 0, result.output
    return run_dir


@pytest.fixture(scope="module")
def ci_region_run(world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ci-region")
    result = CliRunner().invoke(cli, ["detector", "train", "--data", str(world / "vqa.yaml"),
                                      "--run-dir", str(root / "detector"), *DETECTOR_ARGS])
    assert result.exit_code == 0, result.output
    run_dir = root / "region-vqa"
    result = CliRunner().invoke(cli, ["run", *REGION_ARGS, "--data", str(world / "vqa.yaml"), "--run-dir", str(run_dir),
                                      "--detector", str(root / "detector" / "detector.safetensors")])
    assert result.exit_code == 0, result.output
    return run_dir


@pytest.mark.slow
def test_ci_subset_meets_committed_baseline(ci_run: Path, ci_region_run: Path) -> None:
    result = CliRunner().invoke(cli, ["check", "--baseline", str(BASELINE), str(ci_run), str(ci_region_run)])
    assert result.exit_code == 0, result.output
    assert "OK:" in result.output and "not checked" not in result.output, "both baseline entries were checked"


@pytest.mark.slow
def test_ci_subset_made_worse_fails_the_baseline(ci_run: Path, tmp_path: Path) -> None:
    worse = tmp_path / "worse"
    shutil.copytree(ci_run, worse)
    record = json.loads((worse / "run.json").read_text())
    limit = yaml.safe_load(BASELINE.read_text())["runs"][0]["metrics"]["overall"]
    # Just past the allowed drop: what a learning regression looks like to the gate.
    record["metrics"]["test"]["overall"] = limit["value"] - limit["tolerance"] - 0.01
    (worse / "run.json").write_text(json.dumps(record))
    result = CliRunner().invoke(cli, ["check", "--baseline", str(BASELINE), str(worse)])
    assert result.exit_code == 1, result.output
    assert "REGRESSION" in result.output and "overall" in result.output

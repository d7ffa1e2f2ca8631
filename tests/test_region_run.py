"""`vlbench run --model region|grid` end to end on the tiny world, one short run per task.

The detector comes from the session fixture (`--detector`), so each run only extracts features for the
images it uses (`--limit`) and trains the shared transformer; every run must lower its training loss.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from harness.cli.main import cli


def _run(world: Path, out: Path, model: str, task: str, detector: Path, *extra: str) -> dict:
    result = CliRunner().invoke(cli, ["run", "--model", model, "--task", task, "--data", str(world / f"{task}.yaml"),
                                      "--run-dir", str(out), "--detector", str(detector), "--no-progress", *extra])
    assert result.exit_code == 0, result.output
    return json.loads((out / "run.json").read_text())


def _losses(record: dict) -> list[float]:
    return [h["loss"] for h in record["train"]["history"]]


@pytest.fixture(scope="module")
def region_vqa(world: Path, detector_file, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("region-vqa")
    _run(world, out, "region", "vqa", detector_file[0], "--epochs", "3", "--limit", "256")
    return out


def test_region_vqa_learns_and_records_the_detector(region_vqa: Path, detector_file) -> None:
    record = json.loads((region_vqa / "run.json").read_text())
    losses = _losses(record)
    assert losses[-1] < losses[0] * 0.9
    assert record["metrics"]["test"]["overall"] > 20.0
    visual = record["visual_encoder"]
    assert visual["encoder"] == "region" and visual["detector"]["path"] == str(detector_file[0])
    assert len(visual["detector"]["hash"]) == 16 and visual["extraction_ms_per_image"] > 0
    cache = visual["cache"]
    assert cache["extracted"] == cache["images"] > 0 and 10 <= cache["mean_boxes"] <= 36
    assert record["config"]["model"]["region"]["num_classes"] == 5
    assert (region_vqa / "predictions_test.json").is_file()


def test_second_region_run_reuses_the_cache(region_vqa: Path, world: Path, detector_file, tmp_path: Path) -> None:
    record = _run(world, tmp_path, "region", "vqa", detector_file[0], "--epochs", "1", "--limit", "256")
    cache = record["visual_encoder"]["cache"]
    assert cache["extracted"] == 0 and cache["dir"] == json.loads((region_vqa / "run.json").read_text())[
        "visual_encoder"]["cache"]["dir"]
    assert record["visual_encoder"]["extraction_ms_per_image"] > 0  # timed live when nothing was extracted


def test_eval_of_a_region_checkpoint_runs_the_detector_itself(region_vqa: Path, world: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["eval", "--checkpoint", str(region_vqa / "checkpoint.safetensors"), "--task",
                                      "vqa", "--data", str(world / "vqa.yaml"), "--run-dir", str(tmp_path),
                                      "--limit", "256", "--no-progress"])
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "run.json").read_text())
    original = json.loads((region_vqa / "run.json").read_text())
    assert record["metrics"]["test"]["overall"] == pytest.approx(original["metrics"]["test"]["overall"], abs=0.5)


def test_region_nlvr2_learns(world: Path, detector_file, tmp_path: Path) -> None:
    # Batch 32 (the tiny NLVR2 preset's is 64): six steps on 96 pairs, enough for the loss to move.
    record = _run(world, tmp_path, "region", "nlvr2", detector_file[0], "--epochs", "2", "--limit", "96",
                  "--batch-size", "32")
    assert _losses(record)[-1] < _losses(record)[0]
    assert len((tmp_path / "predictions_test.csv").read_text().splitlines()) == 96


def test_region_retrieval_learns(world: Path, detector_file, tmp_path: Path) -> None:
    record = _run(world, tmp_path, "region", "retrieval", detector_file[0], "--epochs", "2", "--limit", "12")
    assert _losses(record)[-1] < _losses(record)[0]
    assert np.load(tmp_path / "scores_test.npy").shape == (12, 60)


def test_region_gt_boxes_mode(world: Path, detector_file, tmp_path: Path) -> None:
    record = _run(world, tmp_path, "region", "vqa", detector_file[0], "--epochs", "1", "--limit", "64",
                  "--boxes", "gt")
    assert record["visual_encoder"]["boxes"] == "gt" and record["config"]["model"]["region"]["boxes"] == "gt"
    # The world has 2-5 objects per scene: the oracle's token counts follow the annotations, not min_boxes.
    assert record["visual_encoder"]["cache"]["mean_boxes"] < 10


def test_grid_run_freezes_the_detector_backbone(world: Path, detector_file, tmp_path: Path) -> None:
    record = _run(world, tmp_path, "grid", "vqa", detector_file[0], "--epochs", "2", "--limit", "128")
    assert _losses(record)[-1] < _losses(record)[0]
    assert record["visual_encoder"]["frozen_backbone_from"] == "detector"


def test_nlvr2_spec_without_boxes_needs_a_detector_source(world: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["run", "--model", "region", "--task", "nlvr2", "--data",
                                      str(world / "nlvr2.yaml"), "--run-dir", str(tmp_path), "--no-progress"])
    assert result.exit_code == 2 and "--detector-data" in result.output and "Traceback" not in result.output


def test_gt_boxes_refused_for_other_models(world: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["run", "--model", "pixelbert", "--task", "vqa", "--data", str(world / "vqa.yaml"),
                                      "--run-dir", str(tmp_path), "--boxes", "gt", "--no-progress"])
    assert result.exit_code == 2 and "--boxes applies only to --model region" in result.output

"""Every registered model x every registered task, end to end through the CLI: pre-train, train, evaluate, bench
and compare. The lists come from the registries, so a model or task file that some command does not handle
fails here (the promise that adding one is one file)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from harness.cli.main import cli
from harness.models import MODELS, recipe
from harness.tasks import TASKS

ALL_MODELS = MODELS.names()
ALL_TASKS = TASKS.names()


def _invoke(*args: object) -> str:
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.output


def _model_args(model: str, detector: Path) -> list[object]:
    """What a model needs beyond the common options: models that take a detector get the session's."""
    return ["--detector", detector] if "detector" in recipe(model).capabilities.options else []


@pytest.fixture(scope="module")
def runs(world: Path, detector_file, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One short run of every model on every task, into RUNS/<model>-<task>."""
    root = tmp_path_factory.mktemp("registry-runs")
    with pytest.MonkeyPatch.context() as patch:
        # A feature cache of its own: tests elsewhere assert what a fresh cache extracts.
        patch.setenv("VLBENCH_CACHE", str(tmp_path_factory.mktemp("registry-cache")))
        for model in ALL_MODELS:
            for task in ALL_TASKS:
                _invoke("run", "--model", model, "--task", task, "--data", world / f"{task}.yaml", "--limit", 8,
                        "--epochs", 1, "--run-dir", root / f"{model}-{task}", "--no-progress",
                        *_model_args(model, detector_file[0]))
    return root


def test_the_registries_find_every_module_themselves() -> None:
    package = Path(__file__).resolve().parents[1] / "harness"
    model_files = {p.stem for p in (package / "models").glob("*.py") if not p.stem.startswith("_")}
    assert model_files == set(ALL_MODELS), "one model per file in harness/models/, each registered"
    assert {"vqa", "nlvr2", "retrieval"} <= set(ALL_TASKS)


@pytest.mark.parametrize("task", ALL_TASKS)
def test_every_task_declares_what_reports_need(task: str) -> None:
    cls = TASKS.get(task)
    names = [m.name for m in cls.metrics]
    assert cls.title and names and len(set(names)) == len(names)
    assert cls.primary().name == cls.selection_metric, "the selection metric is one of the declared metrics"
    assert cls.significance in ("mcnemar", "bootstrap", "bootstrap_images")
    assert cls.images_per_sample >= 1


@pytest.mark.slow
@pytest.mark.parametrize("model", ALL_MODELS)
@pytest.mark.parametrize("task", ALL_TASKS)
def test_every_model_trains_and_evaluates_on_every_task(runs: Path, world: Path, tmp_path: Path, model: str,
                                                        task: str) -> None:
    record = json.loads((runs / f"{model}-{task}" / "run.json").read_text())
    assert record["model"] == model and record["task"] == task
    primary = TASKS.get(task).primary()
    assert primary.read(record["metrics"]["test"]) is not None
    # eval of the saved checkpoint gives the run's own test numbers
    _invoke("eval", "--checkpoint", runs / f"{model}-{task}" / "checkpoint.safetensors", "--task", task,
            "--data", world / f"{task}.yaml", "--limit", 8, "--split", "test", "--run-dir", tmp_path / "eval",
            "--no-progress")
    again = json.loads((tmp_path / "eval" / "run.json").read_text())
    assert primary.read(again["metrics"]["test"]) == pytest.approx(primary.read(record["metrics"]["test"]))


@pytest.mark.slow
def test_compare_reports_every_model_on_every_task(runs: Path, tmp_path: Path) -> None:
    _invoke("compare", *sorted(runs.iterdir()), "--out", tmp_path, "--resamples", 200)
    with (tmp_path / "comparison.csv").open() as handle:
        rows = {row["label"]: row for row in csv.DictReader(handle)}
    assert set(rows) == set(ALL_MODELS)
    for task in ALL_TASKS:
        column = f"{task}.{TASKS.get(task).primary().name}.mean"
        assert all(row[column] not in ("", None) for row in rows.values()), column
    table = (tmp_path / "comparison.md").read_text()
    assert all(TASKS.get(task).title in table for task in ALL_TASKS)


@pytest.mark.slow
@pytest.mark.parametrize("model", ALL_MODELS)
def test_every_model_pretrains(world: Path, detector_file, tmp_path: Path, model: str, monkeypatch) -> None:
    monkeypatch.setenv("VLBENCH_CACHE", str(tmp_path / "cache"))
    objectives = "mlm,itm" if recipe(model).capabilities.visual_tokens else "mlm"
    _invoke("pretrain", "--model", model, "--objectives", objectives, "--data", world / "captions.yaml",
            "--limit", 8, "--epochs", 1, "--batch-size", 4, "--run-dir", tmp_path / "pt", "--no-progress",
            *_model_args(model, detector_file[0]))
    record = json.loads((tmp_path / "pt" / "run.json").read_text())
    assert record["model"] == model and record["train"]["steps"] == 2


@pytest.mark.slow
def test_bench_times_every_model_with_visual_tokens_side_by_side(world: Path, detector_file, tmp_path: Path) -> None:
    timed = [m for m in ALL_MODELS if recipe(m).capabilities.visual_tokens]
    _invoke("bench", "--model", timed[0], "--compare", ",".join(ALL_MODELS), "--task", "vqa", "--data",
            world / "vqa.yaml", "--detector", detector_file[0], "--batch-size", 2, "--warmup", 0, "--repeats", 1,
            "--train-steps", 1, "--overhead-steps", 0, "--run-dir", tmp_path, "--no-progress")
    report = json.loads((tmp_path / "bench.json").read_text())
    assert sorted(report["models"]) == sorted(timed)
    assert all(r["inference"]["samples_per_second"] > 0 for r in report["models"].values())

"""Issue 21's classes that this module closes at their root: numbers a run cannot use, non-finite weights and
metrics, checkpoint headers that are not JSON, a run directory used by two commands at once, and --overwrite
leaving the replaced run's files behind. Each is a one-line error (exit 2) or a correct result."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner
from compare_helpers import FP, vqa_run
from safetensors.torch import save_file

from harness.assembly import LOCK_NAME, RunDirLock, prepare_run_dir
from harness.checkpoints import load_checkpoint, save_checkpoint
from harness.cli.main import cli
from harness.errors import VlbenchError


def _invoke(*args: object):
    return CliRunner().invoke(cli, [str(a) for a in args])


def _one_line_error(result, text: str) -> None:
    assert result.exit_code == 2, result.output
    assert text in result.output and "Traceback" not in result.output, result.output


@pytest.mark.parametrize("option, value, text", [
    ("--lr", "nan", "is not a finite number"),
    ("--lr", "inf", "is not a finite number"),
    ("--cnn-lr", "-inf", "--cnn-lr"),
    ("--seed", str(2**70), "--seed"),
    ("--seed", "-1", "--seed"),
    ("--seeds", f"1,{2**70}", "--seeds"),
    ("--device", "banana", "unknown device 'banana'"),
])
def test_numbers_and_devices_a_run_cannot_use_are_refused(world: Path, tmp_path: Path, option: str, value: str,
                                                          text: str) -> None:
    result = _invoke("run", "--model", "textonly", "--task", "vqa", "--data", world / "vqa.yaml", option, value,
                     "--run-dir", tmp_path / "r", "--limit", 4, "--no-progress")
    _one_line_error(result, text)
    assert not (tmp_path / "r" / "run.json").exists()


def test_non_finite_weights_are_neither_saved_nor_loaded(tmp_path: Path) -> None:
    with pytest.raises(VlbenchError, match="NaN or infinite values.*try a lower --lr"):
        save_checkpoint(tmp_path / "nan.safetensors", {"model.w": torch.tensor([1.0, float("nan")])}, {})
    assert not list(tmp_path.iterdir()), "nothing written, no temporary left"
    # A stranger's file with the vlbench header but NaN weights: refused when read.
    save_file({"model.w": torch.tensor([float("inf")])}, str(tmp_path / "inf.safetensors"),
              metadata={"vlbench": json.dumps({"format": "vlbench-checkpoint-v1", "model": "textonly"})})
    with pytest.raises(VlbenchError, match="the checkpoint is broken"):
        load_checkpoint(tmp_path / "inf.safetensors")


@pytest.mark.parametrize("header, text", [("{not json", "is not JSON"), ("[1, 2]", "not a JSON object")])
def test_checkpoint_headers_that_are_not_a_json_object(world: Path, tmp_path: Path, header: str, text: str) -> None:
    path = tmp_path / "ck.safetensors"
    save_file({"model.w": torch.zeros(1)}, str(path), metadata={"vlbench": header})
    _one_line_error(_invoke("eval", "--checkpoint", path, "--task", "vqa", "--data", world / "vqa.yaml",
                            "--run-dir", tmp_path / "e", "--no-progress"), text)


def test_a_diverging_run_stops_instead_of_saving_a_model_of_nans(world: Path, tmp_path: Path) -> None:
    result = _invoke("run", "--model", "textonly", "--task", "vqa", "--data", world / "vqa.yaml", "--lr", "1e38",
                     "--limit", 16, "--epochs", 1, "--run-dir", tmp_path / "r", "--no-progress")
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert "NaN" in result.output or "non-finite" in result.output or "became" in result.output, result.output
    assert not (tmp_path / "r" / "run.json").exists()
    assert not (tmp_path / "r" / "checkpoint.safetensors").exists()


def test_a_non_finite_metric_in_a_run_record_is_bad_input_for_compare(tmp_path: Path) -> None:
    good = vqa_run(tmp_path / "pb", "pixelbert", [1.0, 0.0] * 10)
    bad = vqa_run(tmp_path / "rg", "region", [1.0, 0.0] * 10)
    record = json.loads((bad / "run.json").read_text())
    record["metrics"]["test"]["overall"] = float("nan")
    (bad / "run.json").write_text(json.dumps(record))
    result = CliRunner().invoke(cli, ["compare", str(good), str(bad), "--out", str(tmp_path / "rep")])
    _one_line_error(result, "metrics.test.overall is nan, not a finite number")


def test_a_non_finite_baseline_number_is_bad_input_for_check(tmp_path: Path) -> None:
    run = vqa_run(tmp_path / "pb", "pixelbert", [1.0, 0.0] * 10)
    for field in ("value", "tolerance"):
        entry = {"value": 50.0, "tolerance": 5.0, field: float("nan")}
        baseline = {"runs": [{"model": "pixelbert", "task": "vqa", "fingerprint": FP["vqa"],
                              "metrics": {"overall": entry}}]}
        path = tmp_path / f"{field}.yaml"
        path.write_text(yaml.safe_dump(baseline))
        _one_line_error(CliRunner().invoke(cli, ["check", "--baseline", str(path), str(run)]), "must be finite")


def test_a_run_directory_is_locked_while_a_command_works_in_it(tmp_path: Path) -> None:
    held = RunDirLock(tmp_path)
    with pytest.raises(VlbenchError, match="in use by another vlbench command"):
        prepare_run_dir(tmp_path, overwrite=False)
    held.release()
    assert not (tmp_path / LOCK_NAME).exists()
    lock = prepare_run_dir(tmp_path, overwrite=False)
    assert lock is not None
    lock.release()


def test_a_second_process_into_the_same_run_dir_is_refused(tmp_path: Path) -> None:
    """Another process holds the lock (as a running `vlbench run` would): this one stops at once."""
    code = (f"import time; from pathlib import Path; from harness.assembly import RunDirLock; "
            f"lock = RunDirLock(Path({str(tmp_path)!r})); print('held', flush=True); time.sleep(30)")
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        start = time.monotonic()
        result = _invoke("run", "--model", "textonly", "--task", "vqa", "--run-dir", tmp_path, "--no-progress")
        _one_line_error(result, "in use by another vlbench command")
        assert time.monotonic() - start < 10, "refused before any slow work"
    finally:
        holder.kill()
        holder.wait()
    # the killed holder's lock went with it
    lock = prepare_run_dir(tmp_path, overwrite=False)
    assert lock is not None
    lock.release()


def test_overwrite_clears_the_replaced_runs_files(tmp_path: Path) -> None:
    for name in ("run.json", "checkpoint.safetensors", "predictions_test.json", "per_example_val.json",
                 "scores_test.npy", "notes.txt"):
        (tmp_path / name).write_text("old")
    lock = prepare_run_dir(tmp_path, overwrite=True)
    assert lock is not None
    lock.release()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"], "only vlbench's own files are removed"


def test_a_full_disk_while_saving_a_checkpoint_is_one_line_and_leaves_nothing(tmp_path: Path, monkeypatch) -> None:
    from safetensors import SafetensorError

    import harness.checkpoints as checkpoints

    def full_disk(*args: object, **kwargs: object) -> None:
        raise SafetensorError("Error while serializing: IoError(Os { code: 28, message: \"No space left on device\" })")

    monkeypatch.setattr(checkpoints, "save_file", full_disk)
    with pytest.raises(VlbenchError, match="cannot write the checkpoint"):
        save_checkpoint(tmp_path / "ck.safetensors", {"model.w": torch.zeros(2)}, {})
    assert list(tmp_path.iterdir()) == []


def test_a_refused_run_dir_does_not_stay_locked(tmp_path: Path) -> None:
    """The refusal happens after the lock is taken; the lock must go with the error, not with the traceback
    (an in-process caller, like a test runner, keeps tracebacks alive)."""
    (tmp_path / "run.json").write_text("{}")
    with pytest.raises(VlbenchError, match="already holds a run") as first:
        prepare_run_dir(tmp_path, overwrite=False)
    with pytest.raises(VlbenchError, match="already holds a run"):
        prepare_run_dir(tmp_path, overwrite=False)  # not "in use by another vlbench command"
    assert first.value is not None and not (tmp_path / LOCK_NAME).exists()


def test_a_model_whose_outputs_are_not_finite_is_not_scored(world: Path, tmp_path: Path) -> None:
    """Huge but finite weights (one step at --lr 1e30) overflow to NaN outputs; argmax would still pick answers
    (the run used to report 40.62); now the run stops before scoring them."""
    result = _invoke("run", "--model", "textonly", "--task", "vqa", "--data", world / "vqa.yaml", "--lr", "1e30",
                     "--limit", 16, "--epochs", 1, "--run-dir", tmp_path / "r", "--no-progress")
    _one_line_error(result, "outputs are NaN or infinite")
    assert not (tmp_path / "r" / "run.json").exists()

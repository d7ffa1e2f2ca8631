"""Resume after a crash: a run killed with SIGKILL (at seeded random moments) and continued with --resume ends
with exactly the metrics and predictions of an uninterrupted run with the same seed (CPU)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from harness.cli.main import cli
from harness.training.resume import RESUME_NAME

ARGS = ["--model", "pixelbert", "--task", "vqa", "--limit", "256", "--epochs", "3", "--batch-size", "16",
        "--checkpoint-every", "3", "--no-progress"]


def _default_sigint() -> None:
    # A job started in the background by a non-interactive shell (as CI may start the tests) inherits SIGINT as
    # ignored, and Python then installs no KeyboardInterrupt handler: Ctrl-C would never reach the run.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def vlbench(*args: str | Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "harness", *[str(a) for a in args]], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=_default_sigint)


@pytest.fixture(scope="module")
def uninterrupted(world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("resume") / "full"
    # A subprocess like the killed runs: the same thread count, so the same float reduction order.
    process = vlbench("run", *ARGS, "--data", world / "vqa.yaml", "--run-dir", out)
    output = process.communicate(timeout=600)[0]
    assert process.returncode == 0, output
    assert not (out / RESUME_NAME).exists(), "a finished run leaves no resume point behind"
    return out


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_sigkill_at_a_random_moment_then_resume_matches_the_uninterrupted_run(
        seed: int, world: Path, uninterrupted: Path, tmp_path: Path) -> None:
    out = tmp_path / "killed"
    args = ["run", *ARGS, "--data", world / "vqa.yaml", "--run-dir", out]
    process = vlbench(*args)
    deadline = time.monotonic() + 300
    while not (out / RESUME_NAME).exists():  # wait for the first resume point, then a random moment more
        assert process.poll() is None, process.communicate()[0]
        assert time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(random.Random(seed).uniform(0.0, 4.0))
    if process.poll() is not None:
        pytest.skip("the run finished before the kill (machine faster than the test expects)")
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (out / "run.json").exists()

    resumed = vlbench(*args, "--resume")
    output = resumed.communicate(timeout=600)[0]
    assert resumed.returncode == 0, output
    full, again = (json.loads((d / "run.json").read_text()) for d in (uninterrupted, out))
    assert again["train"]["resumed"] is True
    assert again["metrics"] == full["metrics"]
    assert [e["loss"] for e in again["train"]["history"]] == [e["loss"] for e in full["train"]["history"]]
    assert (out / "predictions_test.json").read_bytes() == (uninterrupted / "predictions_test.json").read_bytes()
    assert not (out / RESUME_NAME).exists()


def test_resume_refuses_other_settings_and_missing_points(world: Path, uninterrupted: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    base = ["run", *ARGS, "--data", str(world / "vqa.yaml")]
    result = runner.invoke(cli, [*base, "--run-dir", str(tmp_path / "empty"), "--resume"])
    assert result.exit_code != 0 and "nothing to resume" in result.output
    result = runner.invoke(cli, [*base, "--run-dir", str(uninterrupted), "--resume"])
    assert result.exit_code != 0 and "finished run" in result.output


def test_ctrl_c_leaves_a_resume_point_and_a_one_line_message(world: Path, tmp_path: Path) -> None:
    out = tmp_path / "interrupted"
    # 100 epochs (1600 steps): the first resume point comes after 3, so Ctrl-C always lands mid-run, however fast
    # the machine (the 3-epoch run of the other tests could finish first on an idle one, and this test skipped).
    args = [*ARGS, "--epochs", "100"]
    process = vlbench("run", *args, "--data", world / "vqa.yaml", "--run-dir", out)
    deadline = time.monotonic() + 300
    while not (out / RESUME_NAME).exists():
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    output = process.communicate(timeout=120)[0]
    assert process.returncode != 0, output
    assert "--resume" in output and "Traceback" not in output
    assert (out / RESUME_NAME).exists()
    # Different settings are refused, naming what differs.
    result = CliRunner().invoke(cli, ["run", *args, "--data", str(world / "vqa.yaml"), "--run-dir", str(out),
                                      "--resume", "--lr", "0.001"])
    assert result.exit_code != 0 and "train_config" in result.output


@pytest.mark.slow
def test_pretraining_killed_after_an_epoch_resumes_to_the_same_result(world: Path, tmp_path: Path) -> None:
    """SOHO pre-training (pixel sampling, MVM masks and dictionary re-seeding all draw random numbers) resumes at
    epoch granularity and ends exactly where an uninterrupted run ends."""
    args = ["pretrain", "--model", "soho", "--objectives", "mlm,itm,mvm", "--dictionary-size", "32",
            "--data", world / "captions.yaml", "--limit", "32", "--epochs", "3", "--batch-size", "16", "--no-progress"]
    full = vlbench(*args, "--run-dir", tmp_path / "full")
    assert full.wait(timeout=600) == 0, full.communicate()[0]
    out = tmp_path / "killed"
    process = vlbench(*args, "--run-dir", out)
    deadline = time.monotonic() + 300
    while not (out / RESUME_NAME).exists():
        assert process.poll() is None, process.communicate()[0]
        assert time.monotonic() < deadline
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    resumed = vlbench(*args, "--run-dir", out, "--resume")
    output = resumed.communicate(timeout=600)[0]
    assert resumed.returncode == 0, output
    one, two = (json.loads((d / "run.json").read_text()) for d in (tmp_path / "full", out))
    assert two["train"]["resumed"] is True
    assert two["metrics"] == one["metrics"]
    assert [e["val"] for e in two["train"]["history"]] == [e["val"] for e in one["train"]["history"]]
    assert not (out / RESUME_NAME).exists()

"""DataLoader workers and CPU threads: a worker's bad image is the same one-line error as in the main process, a
worker that dies is reported instead of hung on, and the default thread count shares the CPUs among the vlbench
processes running now."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from torch.utils.data import DataLoader

from harness import threads
from harness.cli.main import cli
from harness.data.workers import original_message, reported
from harness.errors import DataError, VlbenchError


class _Failing(torch.utils.data.Dataset):
    def __init__(self, how: str) -> None:
        self.how = how

    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int) -> int:
        if index == 2:
            if self.how == "error":
                raise DataError("images/world_000002.png: cannot decode image (truncated?)")
            os.kill(os.getpid(), signal.SIGKILL)  # an out-of-memory kill, as the kernel would do it
        return index


def test_a_worker_error_keeps_its_type_and_one_line_message() -> None:
    loader = DataLoader(_Failing("error"), batch_size=1, num_workers=1)
    with pytest.raises(DataError) as caught:
        list(reported(iter(loader)))
    assert str(caught.value) == "images/world_000002.png: cannot decode image (truncated?)"


def test_a_killed_worker_is_reported_not_hung_on() -> None:
    loader = DataLoader(_Failing("kill"), batch_size=1, num_workers=1, timeout=60)
    batches = iter(loader)
    with pytest.raises(VlbenchError, match=r"^a data-loader worker died \(.*\); out of memory\? Run with fewer --workers"):
        list(reported(batches))
    # Reported once: the iterator (alive here, as it is while a caller handles the error) has shut its workers
    # down, which unregisters them from PyTorch's SIGCHLD handler; otherwise a late SIGCHLD raises a second error,
    # a RuntimeError, wherever the process stands (seen in CI, inside the handling of this one).
    assert batches._shutdown


def test_messages_that_are_not_wrapped_pass_unchanged() -> None:
    assert original_message("x.png: image not found") == "x.png: image not found"
    wrapped = ("Caught DataError in DataLoader worker process 0.\nOriginal Traceback (most recent call last):\n"
               '  File "x.py", line 1, in f\nharness.errors.DataError: a: b c\n')
    assert original_message(wrapped) == "a: b c"


def test_run_with_workers_reports_a_bad_training_image_in_one_line(world: Path, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A training image that fails to decode inside a DataLoader worker: exit 2 and one line naming the file."""
    import harness.batches

    real = harness.batches.decode_image

    def decode(path, at_least=None):
        if str(path).endswith(".png") and os.getpid() != parent:  # only in a worker: the main process is fine
            raise DataError(f"{path}: cannot decode image (truncated?)")
        return real(path, at_least)

    parent = os.getpid()
    monkeypatch.setattr(harness.batches, "decode_image", decode)  # forked workers inherit it
    result = CliRunner().invoke(cli, ["run", "--model", "textonly", "--task", "vqa", "--data", str(world / "vqa.yaml"),
                                      "--run-dir", str(tmp_path / "r"), "--epochs", "1", "--limit", "16",
                                      "--pretraining", "none", "--workers", "1", "--threads", "1", "--no-progress"])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and lines[0].endswith(".png: cannot decode image (truncated?)"), result.output
    assert "Traceback" not in result.output and str(world / "images") in lines[0]


def test_workers_are_recorded_in_the_config(world: Path, tmp_path: Path) -> None:
    before = torch.get_num_threads()
    try:
        result = CliRunner().invoke(cli, ["run", "--model", "textonly", "--task", "nlvr2", "--data",
                                          str(world / "nlvr2.yaml"), "--run-dir", str(tmp_path / "r"), "--epochs", "1",
                                          "--limit", "16", "--pretraining", "none", "--workers", "1", "--threads", "1",
                                          "--no-progress"])
    finally:
        torch.set_num_threads(before)
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "r" / "run.json").read_text())
    assert record["config"]["train"]["num_workers"] == 1
    assert record["env"]["torch_threads"] == 1 and record["env"]["threads_chosen_by"] == "--threads"


# --- the default thread count ---------------------------------------------------------------------------------


@pytest.fixture
def slots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "slots"
    monkeypatch.setenv(threads.SLOTS_ENV, str(folder))
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv(threads.THREADS_ENV, raising=False)
    monkeypatch.setattr(threads, "usable_cpus", lambda: 4)
    monkeypatch.setattr(threads, "busy_cpus", lambda: 0.0)  # an idle machine unless a test says otherwise
    monkeypatch.setattr(threads, "_slot", None)
    return folder


def _hold_slot(folder: Path, threads_used: int) -> subprocess.Popen:
    """Another vlbench process: registers its slot with the thread count it uses, and waits."""
    code = ("import os, sys; os.environ['VLBENCH_SLOTS'] = sys.argv[1]; from harness import threads; "
            "threads.register(); threads._publish(int(sys.argv[2])); print('ready', flush=True); sys.stdin.read()")
    child = subprocess.Popen([sys.executable, "-c", code, str(folder), str(threads_used)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[1])
    assert child.stdout is not None and child.stdout.readline().strip() == "ready"
    return child


def test_explicit_and_environment_counts_win(slots: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert threads.choose(3) == threads.ThreadChoice(3, "--threads")
    assert (slots / f"slot-{os.getpid()}").is_file()  # counted by the processes that start after it
    monkeypatch.setenv(threads.THREADS_ENV, "3")
    assert threads.choose(None) == threads.ThreadChoice(3, "VLBENCH_THREADS")
    monkeypatch.setenv("OMP_NUM_THREADS", "2")  # torchrun's 1 per rank must win over a shell's VLBENCH_THREADS
    assert threads.choose(None) == threads.ThreadChoice(2, "OMP_NUM_THREADS")


@pytest.mark.parametrize("others, expected", [
    ((), 4),  # alone: every usable CPU
    ((1,), 2),  # beside a one-thread job: half
    ((1, 1), 1),  # three processes on four CPUs: a third, rounded down
    ((4,), 1),  # beside a job that took all four when it started alone: what is left, at least one
    ((2,), 2),
])
def test_default_is_a_share_of_the_cpus_left_by_running_vlbench_processes(slots: Path, others: tuple[int, ...],
                                                                         expected: int) -> None:
    children = [_hold_slot(slots, n) for n in others]
    try:
        choice = threads.choose(None)
        assert choice.threads == expected
        assert f"share of 4 usable CPUs: {len(others)} other vlbench process" in choice.reason
    finally:
        for child in children:
            child.kill()
            child.wait()


@pytest.mark.parametrize("busy, others, expected", [
    (1.2, (), 3),  # one job that is not vlbench keeps a CPU busy
    (3.9, (), 1),
    (1.0, (2,), 2),  # the vlbench process's 2 threads are what keeps the machine busy: not counted twice
    (None, (), 4),  # CPU use unknown (not Linux): the process count alone
])
def test_busy_cpus_that_no_vlbench_process_holds_are_left_alone(slots: Path, monkeypatch: pytest.MonkeyPatch,
                                                                busy: float | None, others: tuple[int, ...],
                                                                expected: int) -> None:
    monkeypatch.setattr(threads, "busy_cpus", lambda: busy)
    children = [_hold_slot(slots, n) for n in others]
    try:
        assert threads.choose(None).threads == expected
    finally:
        for child in children:
            child.kill()
            child.wait()


def test_busy_cpus_measures_the_machine() -> None:
    busy = threads.busy_cpus(0.05)
    assert busy is not None and 0.0 <= busy <= os.cpu_count() + 0.01


def test_a_process_that_died_frees_its_slot(slots: Path) -> None:
    child = _hold_slot(slots, 4)
    assert threads.choose(None).threads == 1
    child.kill()
    child.wait()
    assert threads.choose(None).threads == 4
    assert sorted(p.name for p in slots.iterdir()) == [f"slot-{os.getpid()}"]  # the stale file is cleaned up


def test_usable_cpus_follow_the_affinity_mask() -> None:
    assert 1 <= threads.usable_cpus() <= len(os.sched_getaffinity(0))


def test_evaluation_in_workers_scores_exactly_as_the_main_process(world: Path, tmp_path: Path) -> None:
    """`eval --workers 2` decodes the image blocks in two processes: same scores, in the same order."""
    before = torch.get_num_threads()
    try:
        common = ["--no-progress", "--threads", "1"]
        result = CliRunner().invoke(cli, ["run", "--model", "pixelbert", "--task", "retrieval", "--data",
                                          str(world / "retrieval.yaml"), "--run-dir", str(tmp_path / "r"), "--epochs",
                                          "1", "--limit", "40", "--pretraining", "none", *common])
        assert result.exit_code == 0, result.output
        scores = {}
        for workers in ("0", "2"):
            out = tmp_path / f"eval-{workers}"
            result = CliRunner().invoke(cli, ["eval", "--checkpoint", str(tmp_path / "r" / "checkpoint.safetensors"),
                                              "--task", "retrieval", "--data", str(world / "retrieval.yaml"),
                                              "--split", "test", "--limit", "40", "--run-dir", str(out),
                                              "--workers", workers, *common])
            assert result.exit_code == 0, result.output
            scores[workers] = (out / "scores_test.npy").read_bytes()
            assert json.loads((out / "run.json").read_text())["config"]["train"]["num_workers"] == int(workers)
    finally:
        torch.set_num_threads(before)
    assert scores["0"] == scores["2"]

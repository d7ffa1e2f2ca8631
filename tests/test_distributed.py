"""Several processes through torchrun (gloo on CPU): a DDP training run, evaluation that gives the same metrics
and the same prediction files on 1 and 2 processes (each rank scores one contiguous shard), a DDP pre-training
whose sharded validation equals a 1-process scoring of its checkpoint, and region-feature extraction sharded
over the ranks into a cache byte-identical to a 1-process one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from harness.cli.main import cli

PREDICTIONS = {"vqa": "predictions_test.json", "nlvr2": "predictions_test.csv", "retrieval": "scores_test.npy"}
LIMITS = {"vqa": "64", "nlvr2": "48", "retrieval": "12"}


def torchrun(*args: str | Path, processes: int = 2) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes),
               "--standalone", "-m", "harness", *[str(a) for a in args]]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)


def in_process(*args: str | Path) -> None:
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert result.exit_code == 0, result.output


@pytest.fixture(scope="module")
def ddp_vqa_run(world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ddp") / "vqa"
    done = torchrun("run", "--model", "pixelbert", "--task", "vqa", "--data", world / "vqa.yaml", "--limit", "64",
                    "--epochs", "2", "--batch-size", "16", "--run-dir", out, "--no-progress")
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("pixelbert on vqa") == 1, "only rank 0 reports"
    return out


@pytest.mark.slow
def test_ddp_training_run_records_two_processes(ddp_vqa_run: Path) -> None:
    record = json.loads((ddp_vqa_run / "run.json").read_text())
    assert record["config"]["world_size"] == 2 and record["config"]["effective_batch_size"] == 32
    train = record["train"]
    # 64 examples, 2 ranks x batch 16: 2 steps an epoch, every example once per epoch.
    assert train["steps"] == 4 and train["samples"] == 128
    assert (ddp_vqa_run / "checkpoint.safetensors").is_file() and (ddp_vqa_run / "predictions_test.json").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("task", ["vqa", "nlvr2", "retrieval"])
def test_evaluation_is_identical_on_one_and_two_processes(task: str, world: Path, ddp_vqa_run: Path,
                                                          tmp_path: Path) -> None:
    if task == "vqa":
        checkpoint = ddp_vqa_run / "checkpoint.safetensors"
    else:
        in_process("run", "--model", "pixelbert", "--task", task, "--data", world / f"{task}.yaml",
                   "--limit", LIMITS[task], "--epochs", "1", "--run-dir", tmp_path / "trained", "--no-progress")
        checkpoint = tmp_path / "trained" / "checkpoint.safetensors"
    args = ["eval", "--checkpoint", checkpoint, "--task", task, "--data", world / f"{task}.yaml",
            "--limit", LIMITS[task], "--no-progress"]
    in_process(*args, "--run-dir", tmp_path / "one")
    done = torchrun(*args, "--run-dir", tmp_path / "two")
    assert done.returncode == 0, done.stdout + done.stderr

    one = json.loads((tmp_path / "one" / "run.json").read_text())
    two = json.loads((tmp_path / "two" / "run.json").read_text())
    assert two["config"]["world_size"] == 2 and one["config"]["world_size"] == 1
    assert one["metrics"] == two["metrics"]
    name = PREDICTIONS[task]
    assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()
    assert (tmp_path / "one" / "per_example_test.json").read_bytes() == \
        (tmp_path / "two" / "per_example_test.json").read_bytes()


@pytest.mark.slow
def test_region_run_on_two_processes_fills_the_same_feature_cache_as_on_one(world: Path, detector_file,
                                                                            tmp_path: Path) -> None:
    """Each rank extracts its own contiguous run of batches (33 images in batches of 32: 32 on rank 0, 1 on rank
    1) and rank 0 merges them: one consistent cache, byte-identical to a 1-process run's."""
    detector, _ = detector_file
    args = ["run", "--model", "region", "--task", "vqa", "--data", world / "vqa.yaml", "--detector", detector,
            "--limit", "32", "--epochs", "1", "--no-progress"]
    caches = {}
    for processes in (1, 2):
        cache = tmp_path / f"cache{processes}"
        env = {**os.environ, "OMP_NUM_THREADS": "1", "VLBENCH_CACHE": str(cache)}
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes),
                   "-m", "harness", *[str(a) for a in args], "--run-dir", str(tmp_path / f"run{processes}")]
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
        assert done.returncode == 0, done.stdout + done.stderr
        (folder,) = (cache / "region-features").iterdir()
        caches[processes] = folder
    for name in ("features.npy", "boxes.npy", "offsets.npy", "ids.json", "digests.json", "meta.json"):
        assert (caches[1] / name).read_bytes() == (caches[2] / name).read_bytes(), name
    records = {n: json.loads((tmp_path / f"run{n}" / "run.json").read_text()) for n in (1, 2)}
    assert records[2]["config"]["world_size"] == 2
    one, two = (records[n]["visual_encoder"]["cache"] for n in (1, 2))
    assert one["extracted"] == two["extracted"] == 33
    assert one["extracted_by_rank"] == [33] and two["extracted_by_rank"] == [32, 1]
    assert not [p for p in caches[2].parent.iterdir() if p.name.startswith(".")], "no staging folder left behind"


@pytest.mark.slow
def test_pretrain_on_two_processes_validates_exactly_as_one_process(world: Path, tmp_path: Path) -> None:
    """SOHO (MLM + ITM + MVM) under DDP: rank 0 alone writes; the validation after the epoch, sharded over the
    ranks (3 batches: 2 on rank 0, 1 on rank 1), equals a 1-process scoring of the checkpoint, which needs the
    BatchNorm statistics and the visual dictionary to be the same on both ranks."""
    from harness.pretraining.evaluate import evaluate_pretraining_checkpoint

    out = tmp_path / "soho"
    done = torchrun("pretrain", "--model", "soho", "--objectives", "mlm,itm,mvm", "--data", world / "captions.yaml",
                    "--limit", "48", "--epochs", "1", "--batch-size", "8", "--eval-batch-size", "16",
                    "--dictionary-size", "32", "--run-dir", out, "--no-progress")
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("soho pre-trained") == 1, "only rank 0 reports"
    record = json.loads((out / "run.json").read_text())
    assert record["config"]["world_size"] == 2 and record["config"]["effective_batch_size"] == 16
    # 48 images, 2 ranks x batch 8: 3 steps, every image once.
    assert record["train"]["steps"] == 3 and record["train"]["samples"] == 48
    assert not (out / "resume.safetensors").exists()
    alone = evaluate_pretraining_checkpoint(out / "checkpoint.safetensors", world / "captions.yaml", limit=48)
    assert alone == record["metrics"]["val"]
    assert alone["mvm_predictions"] > 0 and alone["itm_predictions"] == 48

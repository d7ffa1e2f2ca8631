"""--precision: auto picks bf16 autocast only where the hardware multiplies bf16 natively; the choice is applied
to training and evaluation and recorded in run.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from harness.cli.main import cli
from harness.errors import VlbenchError
from harness.runtime import Runtime
from harness.training import precision
from harness.training.precision import resolve_precision


def test_auto_is_bf16_on_cuda_and_on_cpus_with_native_bf16_only(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert resolve_precision("auto", cuda) == "bf16"
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    assert resolve_precision("auto", cpu) == "bf16"
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    assert resolve_precision("auto", cpu) == "fp32"
    assert resolve_precision("bf16", cpu) == "bf16" and resolve_precision("fp32", cuda) == "fp32"
    with pytest.raises(VlbenchError, match="unknown precision 'fp16'"):
        resolve_precision("fp16", cpu)


def test_the_chosen_precision_is_what_autocast_applies() -> None:
    """Two runtimes in one process keep their own precision (nothing process-wide is set)."""
    layer = torch.nn.Linear(4, 4)
    bf16 = Runtime.start("cpu", "bf16", join=False)
    fp32 = Runtime.start("cpu", "fp32", join=False)
    assert bf16.precision_name == "bf16-autocast" and fp32.precision_name == "fp32"
    with bf16.autocast():
        assert layer(torch.randn(2, 4)).dtype == torch.bfloat16
    with fp32.autocast():
        assert layer(torch.randn(2, 4)).dtype == torch.float32
    with bf16.autocast():
        assert layer(torch.randn(2, 4)).dtype == torch.bfloat16


@pytest.mark.parametrize("choice, recorded", [("fp32", "fp32"), ("bf16", "bf16-autocast")])
def test_run_records_the_precision_it_trained_with(world: Path, tmp_path: Path, choice: str, recorded: str) -> None:
    result = CliRunner().invoke(cli, ["run", "--model", "textonly", "--task", "vqa", "--data", str(world / "vqa.yaml"),
                                      "--limit", "32", "--epochs", "1", "--precision", choice, "--no-progress",
                                      "--run-dir", str(tmp_path / choice)])
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / choice / "run.json").read_text())
    assert record["config"]["precision"] == recorded

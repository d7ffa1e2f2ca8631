"""`vlbench run --seeds 1,2,3`: one configuration, one run per seed, into RUN_DIR/seed-N (training stubbed: the
option's job is the fan-out; `run` itself is tested in test_run.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

import harness.experiment
from harness.cli.main import cli


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list:
    seen: list = []

    def fake_run(options):  # the real signature: RunOptions -> run record
        seen.append(options)
        return {"metrics": {}, "train": {"wall_seconds": 0.0, "samples_per_second": 1.0}}

    monkeypatch.setattr(harness.experiment, "run_experiment", fake_run)
    return seen


def test_seeds_fan_out_into_sibling_directories(calls: list, tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["run", "--model", "pixelbert", "--task", "vqa", "--run-dir", str(tmp_path / "pb"),
                                      "--seeds", "1,2,3", "--epochs", "2", "--limit", "8"])
    assert result.exit_code == 0, result.output
    assert [(o.seed, o.run_dir) for o in calls] == [(s, tmp_path / "pb" / f"seed-{s}") for s in (1, 2, 3)]
    # Everything but the seed and directory is the same configuration.
    assert all(o.train_overrides == calls[0].train_overrides and o.limit == 8 for o in calls)
    assert "(seed 3)" in result.output


@pytest.mark.parametrize("args,message", [(["--seeds", "1,x"], "comma-separated integers"),
                                          (["--seeds", "1,1"], "distinct seeds"),
                                          (["--seeds", "1,2", "--seed", "5"], "either --seed or --seeds")])
def test_bad_seeds_are_usage_errors(calls: list, tmp_path: Path, args: list[str], message: str) -> None:
    result = CliRunner().invoke(cli, ["run", "--model", "pixelbert", "--task", "vqa", "--run-dir", str(tmp_path),
                                      *args])
    assert result.exit_code == 2 and message in result.output
    assert calls == []

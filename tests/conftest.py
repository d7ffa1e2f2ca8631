"""Shared fixtures: one embedded world per test session, generated through the real CLI."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

# Real NLVR2 dev lines (see tests/fixtures/README.md).
NLVR2_DEV_SAMPLE = Path(__file__).resolve().parent / "fixtures" / "nlvr2_dev_sample.jsonl"


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Keep tests from writing the user's ~/.cache/vlbench (the default world cache)."""
    import os

    os.environ["VLBENCH_CACHE"] = str(tmp_path_factory.mktemp("vlbench-cache"))


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny embedded world (seed 0), as `vlbench data synth` writes it."""
    from harness.cli.main import cli

    out = tmp_path_factory.mktemp("world") / "tiny"
    result = CliRunner().invoke(cli, ["data", "synth", "--out", str(out), "--seed", "0", "--size", "tiny",
                                      "--no-progress"])
    assert result.exit_code == 0, result.output
    return out

"""A full disk while writing: the previous file stays intact, no temporary file is left, and the CLI reports one
line (exit 2) instead of a traceback."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from harness import fileio
from harness.cli.main import cli


def _disk_full(*_args) -> None:
    raise OSError(errno.ENOSPC, "No space left on device")


def test_write_on_a_full_disk_keeps_the_old_file_and_no_temporary(tmp_path: Path, monkeypatch) -> None:
    target = tmp_path / "run.json"
    fileio.write_json(target, {"metrics": 1})
    monkeypatch.setattr(fileio.os, "fsync", _disk_full)
    with pytest.raises(OSError, match="No space left"):
        fileio.write_json(target, {"metrics": 2})
    assert json.loads(target.read_text()) == {"metrics": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["run.json"]


def test_cli_reports_a_full_disk_in_one_line(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(fileio.os, "fsync", _disk_full)
    result = CliRunner().invoke(cli, ["data", "synth", "--out", str(tmp_path / "world"), "--no-progress"])
    assert result.exit_code == 2, result.output
    assert "No space left on device" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "world" / "WORLD.json").exists(), "no world is marked complete"

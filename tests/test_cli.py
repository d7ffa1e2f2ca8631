"""The top-level command: every command is reachable by name, and `vlbench --help` (and the pure-Python `score`)
answer without importing torch or any command module (they used to take about 5 s here)."""

from __future__ import annotations

import subprocess
import sys

import click
from click.testing import CliRunner

from harness.cli.main import COMMANDS, cli


def test_every_command_in_the_table_loads_and_its_help_line_matches() -> None:
    ctx = click.Context(cli)
    for name, (_, _, help_line) in COMMANDS.items():
        command = cli.get_command(ctx, name)
        assert command is not None and command.name == name
        assert command.get_short_help_str(limit=10_000) == help_line, f"COMMANDS[{name!r}] help is out of date"


def test_help_lists_every_command_and_an_unknown_one_is_refused() -> None:
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    listed = [line.split()[0] for line in result.output.split("Commands:")[1].splitlines() if line.strip()]
    assert listed == sorted(COMMANDS)
    unknown = CliRunner().invoke(cli, ["nosuch"])
    assert unknown.exit_code == 2 and "No such command 'nosuch'" in unknown.output


def _imported_after(args: list[str]) -> set[str]:
    code = ("import sys\nfrom click.testing import CliRunner\nfrom harness.cli.main import cli\n"
            f"result = CliRunner().invoke(cli, {args!r})\nassert result.exit_code == 0, result.output\n"
            "print(' '.join(sorted(m for m in sys.modules if m == 'torch' or m.startswith('harness.cli.'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return set(out.split())


def test_top_level_help_imports_no_command_and_no_torch() -> None:
    assert _imported_after(["--help"]) == {"harness.cli.main"}


def test_score_loads_only_its_own_module() -> None:
    assert _imported_after(["score", "--help"]) == {"harness.cli.main", "harness.cli.score_cmd"}


def test_run_summary_prints_metrics_to_two_decimals() -> None:
    """The line a user reads after `run`: 52.67, not 52.666666666666664 (run.json keeps full precision)."""
    from harness.cli.run_cmd import _summary

    record = {"metrics": {"val": {"accuracy": 52.666666666666664, "consistency": 4.0},
                          "test": {"rsum": 239.20000000000002, "per_type": {"x": 1.0}}}}
    assert _summary(record) == "val: accuracy 52.67, consistency 4.00; test: rsum 239.20"

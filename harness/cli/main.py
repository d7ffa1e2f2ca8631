"""Entry point of the ``vlbench`` command: the top-level group and error handling.

Every command raises :class:`harness.errors.VlbenchError` for bad input; the group turns it into
``error: <one line>`` on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from harness import __version__
from harness.errors import VlbenchError


class VlbenchGroup(click.Group):
    """A click group that reports VlbenchError, Ctrl-C and OS errors (a full disk) as one-line errors."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except VlbenchError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)
        except KeyboardInterrupt:
            click.echo("error: interrupted", err=True)
            sys.exit(130)
        except OSError as exc:
            # The machine, not the input: a full disk, a read-only or vanished folder. Writes are atomic, so
            # nothing half-written was left behind.
            where = f"{exc.filename}: " if exc.filename else ""
            click.echo(f"error: {where}{exc.strerror or exc} (nothing was half-written)", err=True)
            sys.exit(2)


@click.group(cls=VlbenchGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="vlbench")
def cli() -> None:
    """vlbench: pixels or regions? Train, evaluate and compare Pixel-BERT, SOHO and
    region-feature vision-language models on identical VQA v2 / NLVR2 / retrieval splits.

    Without --data every command uses the embedded world: procedurally rendered scenes written
    in the official dataset formats, generated once and cached, so everything runs offline on a CPU.
    """


def _register_commands() -> None:
    from harness.cli import (
        ablation_cmd,
        bench_cmd,
        compare_cmd,
        data_cmd,
        detector_cmd,
        pretrain_cmd,
        regress_cmd,
        run_cmd,
        score_cmd,
    )

    cli.add_command(data_cmd.data)
    cli.add_command(score_cmd.score)
    cli.add_command(detector_cmd.detector)
    cli.add_command(detector_cmd.features)
    cli.add_command(compare_cmd.compare)
    cli.add_command(regress_cmd.check_baseline)
    for command in (*run_cmd.COMMANDS, *pretrain_cmd.COMMANDS, *ablation_cmd.COMMANDS, *bench_cmd.COMMANDS):
        cli.add_command(command)


_register_commands()

"""Entry point of the ``vlbench`` command: the top-level group and error handling.

Every command raises :class:`harness.errors.VlbenchError` for bad input; the group turns it into
``error: <one line>`` on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import click

from harness import __version__
from harness.errors import VlbenchError

# Every command by name: (module, attribute, the first line of its help). Most commands import torch and the
# model registry (seconds); loading a command only when it is named keeps `vlbench --help` and the pure-Python
# ones (`score`, `data check`) quick. tests/test_cli.py checks this table against the commands themselves.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "bench": ("harness.cli.bench_cmd", "bench", "Time MODEL's real pipeline on TASK and write DIR/bench.json."),
    "check": ("harness.cli.regress_cmd", "check_baseline",
              "Check runs against a committed baseline: no metric may drop by more than its tolerance, and (when "
              "the run directory has bench.json) throughput may not fall below its allowed ratio."),
    "compare": ("harness.cli.compare_cmd", "compare",
                "Compare runs: one row per model (+ configuration), one column group per task."),
    "data": ("harness.cli.data_cmd", "data", "Generate the embedded world or validate a dataset spec."),
    "detector": ("harness.cli.detector_cmd", "detector",
                 "The region baseline's detector (torchvision Faster R-CNN on the preset's CNN family)."),
    "eval": ("harness.cli.run_cmd", "eval_",
             "Score a saved checkpoint on a dataset without training; writes the same files as `run`."),
    "features": ("harness.cli.detector_cmd", "features",
                 "Region feature caches: import precomputed bottom-up features."),
    "pretrain": ("harness.cli.pretrain_cmd", "pretrain",
                 "Pre-train MODEL on image-caption pairs with MLM / ITM (/ MVM), then fine-tune with `vlbench run "
                 "--init`."),
    "pretrain-ablation": ("harness.cli.ablation_cmd", "pretrain_ablation",
                          "Fine-tune pixelbert from scratch / MLM / ITM / MLM+ITM / MLM+ITM+pixel sampling "
                          "pre-training and soho MLM+ITM+MVM on VQA, NLVR2 and retrieval; write OUT/ablation.md."),
    "run": ("harness.cli.run_cmd", "run",
            "Train MODEL on TASK, select the checkpoint on val, predict val and test, write DIR/run.json."),
    "score": ("harness.cli.score_cmd", "score",
              "Score prediction files with the official metrics (VQA v2, NLVR2, retrieval recall@K)."),
}


class VlbenchGroup(click.Group):
    """The top-level group: loads each command on first use, and reports VlbenchError, Ctrl-C and OS errors (a
    full disk) as one-line errors."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *COMMANDS})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in self.commands and name in COMMANDS:
            module, attribute, _ = COMMANDS[name]
            self.add_command(getattr(importlib.import_module(module), attribute), name)
        return super().get_command(ctx, name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The command list of ``--help`` from the table, without importing any command."""
        names = self.list_commands(ctx)
        limit = formatter.width - 6 - max(len(name) for name in names)
        # A bare Command with the table's text shortens it exactly as click would shorten the real one's.
        rows = [(name, (self.commands.get(name) or click.Command(name, help=COMMANDS[name][2])).get_short_help_str(limit))
                for name in names]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except VlbenchError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)
        except KeyboardInterrupt:
            click.echo("error: interrupted", err=True)
            sys.exit(130)
        except RuntimeError as exc:
            from harness.data.workers import worker_died

            died = worker_died(exc)
            if died is None:
                raise
            click.echo(f"error: {died}", err=True)
            sys.exit(2)
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

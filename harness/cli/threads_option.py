"""The ``--threads`` option of the commands that train, evaluate or time (one definition, one help text)."""

from __future__ import annotations

import click


def _set_threads(_ctx: click.Context, _param: click.Parameter, value: int | None) -> int | None:
    from harness import threads

    threads.apply(value)
    return value


threads_option = click.option(
    "--threads", type=click.IntRange(min=1), default=None, expose_value=False, callback=_set_threads,
    help="CPU threads torch uses. Default: OMP_NUM_THREADS or VLBENCH_THREADS if set, else this run's share of the CPUs it may use "
         "among the vlbench processes running now, and no more than they leave (alone: all of them; beside one "
         "other one-thread run: half), so concurrent runs do not oversubscribe the cores. Recorded in run.json (env.threads). Results can differ in the last "
         "digits between thread counts: pass the same --threads to reproduce a run exactly.")

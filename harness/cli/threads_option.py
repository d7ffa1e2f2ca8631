"""The ``--threads`` option of the commands that train or evaluate (one definition, one help text)."""

from __future__ import annotations

import click


def _set_threads(_ctx: click.Context, _param: click.Parameter, value: int | None) -> int | None:
    if value is not None:
        import torch  # here, not at import: `vlbench --help` stays fast

        torch.set_num_threads(value)
    return value


threads_option = click.option(
    "--threads", type=click.IntRange(min=1), default=None, expose_value=False, callback=_set_threads,
    help="CPU threads torch uses (default: torch's own, one per core). On a shared machine give each job its "
         "share of the cores: more threads than cores slow every job down. Recorded in run.json "
         "(env.torch_threads).")

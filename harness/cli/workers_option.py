"""The ``--workers`` option of the commands that train (one definition, one help text)."""

from __future__ import annotations

import click

workers_option = click.option(
    "--workers", type=click.IntRange(min=0), default=None,
    help="DataLoader worker processes that decode and batch the images and texts, for training and evaluation "
         "(default: the preset's, tiny 0, base 8; eval: the checkpoint's). 0 decodes in the main process. Each worker keeps its own decoded-image cache within one shared "
         "budget; a worker that fails or dies stops the run with a one-line error.")

"""The ``--precision`` option, shared by every command that runs a model (one definition, one help text)."""

from __future__ import annotations

import click

from harness.training.precision import PRECISIONS

precision_option = click.option(
    "--precision", type=click.Choice(PRECISIONS), default="auto", show_default=True,
    help="auto: bf16 autocast on CUDA and on CPUs with native bf16 (AVX512-BF16/AMX; about 2-3x faster than "
         "fp32 there), fp32 elsewhere. fp32/bf16 force it. Recorded in run.json.")

"""``vlbench data``: generate the embedded world (``synth``) and validate datasets (``check``)."""

from __future__ import annotations

import click

from harness.cli.check_cmd import check
from harness.cli.synth_cmd import synth


@click.group()
def data() -> None:
    """Generate the embedded world or validate a dataset spec."""


data.add_command(synth)
data.add_command(check)

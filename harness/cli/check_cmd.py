"""``vlbench data check --data SPEC``: counts per split and every problem found.

Exit status: 0 clean, 1 when problems were found, 2 (VlbenchError, via the top-level group) when the spec
itself cannot be read or is invalid.
"""

from __future__ import annotations

from pathlib import Path

import click

from harness.data.check import check_dataset


@click.command("check")
@click.option("--data", "data_spec", required=True, type=click.Path(path_type=Path, dir_okay=False),
              metavar="SPEC", help="Dataset spec YAML (docs/dataset-spec.md).")
@click.option("--images/--no-images", "images", default=True, show_default=True,
              help="Probe every image (exists, decodes by its header, not truncated).")
@click.pass_context
def check(ctx: click.Context, data_spec: Path, images: bool) -> None:
    """Validate a dataset spec and its files: counts per split, every problem on its own line."""
    report = check_dataset(data_spec, probe_images=images, progress=True)
    click.echo(f"{report.name} ({report.task}): {report.spec}")
    click.echo(report.table())
    if not images:
        click.echo("images: not probed (--no-images)")
    for warning in report.warnings:
        click.echo(f"warning: {warning}")
    if report.ok:
        click.echo("OK: no problems found")
        return
    click.echo(f"{len(report.problems)} problem(s):")
    for problem in report.problems:
        click.echo(f"  {problem}")
    ctx.exit(1)

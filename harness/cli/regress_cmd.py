"""``vlbench check --baseline FILE RUN_DIR...``: the CI regression gate (``harness/cli/check_cmd.py`` is the
unrelated ``data check``).

Exit status: 0 every run meets its baseline, 1 a regression (the verdict table says which), 2 bad input
(unreadable baseline, a run without an entry, a run on other data than the baseline's).
"""

from __future__ import annotations

from pathlib import Path

import click
import yaml

from harness.cli.types import FiniteFloatRange
from harness.fileio import write_text


@click.command("check")
@click.option("--baseline", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Baseline YAML/JSON (results/baselines/*.yaml): per model/task metric values with tolerances.")
@click.argument("run_dirs", nargs=-1, required=True,
                type=click.Path(exists=True, file_okay=False, path_type=Path), metavar="RUN_DIR...")
@click.option("--write", "write", is_flag=True,
              help="Refresh: write --baseline from these runs (mean over seeds) instead of checking.")
@click.option("--tolerance", type=FiniteFloatRange(min=0), default=5.0, show_default=True,
              help="With --write: allowed drop of every metric, in points.")
@click.option("--tolerance-std", type=FiniteFloatRange(min=0), default=None,
              help="With --write: also allow a drop of this many seed standard deviations of the given runs (needs "
                   "two or more seeds per model and task); the larger allowance applies.")
@click.option("--throughput-tolerance", type=FiniteFloatRange(min=0, max=1), default=0.5, show_default=True,
              help="With --write: allowed fractional throughput loss (0.5 = may run at half the speed).")
@click.option("--split", default="test", show_default=True, help="With --write: the split whose metrics count.")
@click.option("--description", default="", help="With --write: what the baseline covers and how it was made.")
@click.pass_context
def check_baseline(ctx: click.Context, baseline: Path, run_dirs: tuple[Path, ...], write: bool, tolerance: float,
                   tolerance_std: float | None, throughput_tolerance: float, split: str, description: str) -> None:
    """Check runs against a committed baseline: no metric may drop by more than its tolerance, and (when the
    run directory has bench.json) throughput may not fall below its allowed ratio.

    Prints a verdict table; exits 0 when everything passes, 1 on any regression, 2 on bad input.

    \b
    Example (the CI subset):
      vlbench run --model pixelbert --task vqa --data WORLD/vqa.yaml --limit 18000 --epochs 1 \\
        --precision fp32 --run-dir /tmp/ci/pixelbert-vqa
      vlbench check --baseline results/baselines/ci-tiny.yaml /tmp/ci/pixelbert-vqa
    Refresh a baseline after an intended change (review the diff before committing):
      vlbench check --write --baseline results/baselines/ci-tiny.yaml --tolerance 4 /tmp/ci/pixelbert-vqa
    """
    from harness.regress.baseline import baseline_from_runs, check_runs, load_baseline, verdict_table

    if write:
        data = baseline_from_runs(list(run_dirs), split, tolerance, throughput_tolerance, description, tolerance_std)
        write_text(baseline, yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
        click.echo(f"wrote {baseline} ({len(data['runs'])} entr{'y' if len(data['runs']) == 1 else 'ies'})")
        return
    spec = load_baseline(baseline)
    verdicts, notes = check_runs(spec, list(run_dirs))
    click.echo(verdict_table(verdicts))
    for note in notes:
        click.echo(f"note: {note}")
    regressions = [v for v in verdicts if v.status == "REGRESSION"]
    if regressions:
        click.echo(f"FAILED: {len(regressions)} regression(s) against {baseline}:")
        for v in regressions:
            click.echo(f"  {v.what}: {v.metric} = {v.current:g}, baseline {v.baseline:g} (allowed {v.tolerance})")
        ctx.exit(1)
    click.echo(f"OK: {len(verdicts)} check(s) against {baseline} passed")

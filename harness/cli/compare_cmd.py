"""``vlbench compare RUN_DIR... --out DIR``: the comparison tables, significance tests, plots and HTML report."""

from __future__ import annotations

from pathlib import Path

import click

from harness.reports.significance import DEFAULT_RESAMPLES, FAMILIES


@click.command()
@click.argument("run_dirs", nargs=-1, required=True,
                type=click.Path(exists=True, file_okay=False, path_type=Path), metavar="RUN_DIR...")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder for comparison.md/.csv/.tex/.html, significance.csv, runs.csv and the plots.")
@click.option("--split", default="test", show_default=True,
              help="Which evaluated split to tabulate (val when test has no labels, e.g. VQA test-dev).")
@click.option("--allow-different-splits", is_flag=True,
              help="Tabulate runs of one task whose split fingerprints differ (the report says so; no paired "
                   "tests across them). Without it such runs are refused.")
@click.option("--resamples", type=click.IntRange(min=100), default=DEFAULT_RESAMPLES, show_default=True,
              help="Cluster-bootstrap resamples for the example variance of every test.")
@click.option("--holm-family", type=click.Choice(FAMILIES), default="column", show_default=True,
              help="What Holm's correction counts together: column = the pairwise comparisons of one task and "
                   "metric (what a column's bold and daggers rest on); report = every comparison of the report "
                   "(every metric, sub-metrics included: far more conservative).")
@click.option("--no-plots", is_flag=True, help="Tables and HTML only.")
@click.option("--embed", "embeds", multiple=True, metavar="FILE:NAME",
              help="Also write the main table into FILE between the lines <!-- NAME:begin --> and <!-- NAME:end "
                   "--> (repeatable): how the README and docs/results quote committed runs (nox -s results).")
def compare(run_dirs: tuple[Path, ...], out: Path, split: str, allow_different_splits: bool, resamples: int,
            holm_family: str, no_plots: bool, embeds: tuple[str, ...]) -> None:
    """Compare runs: one row per model (+ configuration), one column group per task.

    RUN_DIR is a `vlbench run`/`eval` directory (run.json, per_example_*.json, optional bench.json), a
    directory with only bench.json (throughput for its model), or a folder searched for those (e.g. the
    parent of `run --seeds` output). Seeds of one configuration are aggregated as mean ± std with their count;
    pre-training runs are skipped with a note. Runs of one task must share the split fingerprint.

    Significance (per pair of configurations on the same split, every task and metric alike): the difference of
    seed means with its variance from the seeds plus a paired bootstrap over clusters of examples (VQA images,
    NLVR2 sentences, retrieval images), a t interval, Holm-corrected within each column (--holm-family); a
    dagger marks cells that differ significantly from the column's best (docs/significance.md).

    \b
    Example:
      vlbench run --model pixelbert --task vqa --seeds 1,2,3 --run-dir results/pb-vqa
      vlbench run --model region --task vqa --seeds 1,2,3 --run-dir results/rg-vqa
      vlbench compare results/pb-vqa results/rg-vqa --out results/report
    """
    from harness.reports.embed import parse_target, read_block, write_block
    from harness.reports.report import compare_runs

    targets = [parse_target(e) for e in embeds]
    for document, name in targets:  # before the slow part: a missing marker is a one-line error now
        read_block(document, name)
    result = compare_runs(list(run_dirs), out, split=split, allow_different_splits=allow_different_splits,
                          plots=not no_plots, resamples=resamples, holm_family=holm_family)
    for note in result.notes:
        click.echo(f"note: {note}", err=True)
    click.echo(f"compared {len(result.rows)} configuration(s): {', '.join(result.rows)}")
    click.echo(f"wrote {len(result.files)} files to {out} (comparison.md, .csv, .tex, .html, plots)")
    command = "vlbench compare " + " ".join(str(p) for p in run_dirs) + f" --out {out}"
    for document, name in targets:
        write_block(document, name, result.summary, command)
        click.echo(f"wrote the main table into {document} ({name})")

"""The whole ``compare`` pipeline: collect → check splits → aggregate → test → tables, plots, HTML."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from harness.fileio import write_text
from harness.reports.aggregate import (
    aggregate,
    check_duplicate_seeds,
    check_splits,
    long_table,
    reference_points,
    row_order,
)
from harness.reports.collect import collect
from harness.reports.html import render_page
from harness.reports.plots import all_plots
from harness.reports.significance import DEFAULT_RESAMPLES, pairwise
from harness.reports.tables import (
    build_table,
    differences_markdown,
    footnotes,
    pairwise_markdown,
    render_html,
    render_latex,
    render_markdown,
    speeds,
    wide_csv_frame,
)


@dataclass
class ReportResult:
    summary: str
    """The main table with its footnotes (markdown): what ``--embed`` puts into a document."""
    files: list[Path]
    notes: list[str]
    rows: list[str]


def compare_runs(paths: list[Path], out: Path, split: str = "test", allow_different_splits: bool = False,
                 plots: bool = True, resamples: int = DEFAULT_RESAMPLES, holm_family: str = "column") -> ReportResult:
    collection = collect(paths)
    notes = list(collection.notes)
    runs = collection.runs
    notes += check_splits(runs, split, allow_different_splits)
    long, missing = long_table(runs, split)
    notes += missing
    check_duplicate_seeds(long)
    labels = [label for label in row_order(runs) if (long.label == label).any()]
    agg = aggregate(long)
    pairs, pair_notes = pairwise(runs, split, labels, resamples, family=holm_family)
    notes += pair_notes
    speed, speed_notes = speeds(collection, labels)
    notes += speed_notes
    references = reference_points(runs, split)
    table = build_table(agg, labels, pairs, speed, references)
    foot = footnotes(table, resamples, pairs)

    out.mkdir(parents=True, exist_ok=True)
    files: list[Path] = []
    models = {r.label: r.model for r in runs}
    plot_files: list[Path] = []
    if plots:
        plot_files, plot_notes = all_plots(agg, long, labels, models, speed, out, references)
        notes += plot_notes
    title = f"vlbench comparison ({split} split)"

    write_text(out / "comparison.csv", wide_csv_frame(table, agg).to_csv(index=False))
    write_text(out / "significance.csv", pairs.to_csv(index=False))
    write_text(out / "runs.csv", long.to_csv(index=False))
    md = [f"# {title}", ""]
    md += [f"> {n}" for n in notes if n.startswith("WARNING")]
    md += ["", render_markdown(table), ""]
    md += [f"<sub>{n}</sub>" for n in foot]
    md += ["", "## Differences to each column's best (points, 95% interval over seeds and examples)", "",
           differences_markdown(table), ""]
    md += ["## Paired significance tests", "", pairwise_markdown(pairs), ""]
    if plot_files:
        md += ["## Figures", ""] + [f"![{p.stem}]({p.name})" for p in plot_files if p.suffix == ".png"] + [""]
    other = [n for n in notes if not n.startswith("WARNING")]
    if other:
        md += ["## Notes", ""] + [f"- {n}" for n in other] + [""]
    md += ["## Runs", ""] + [f"- `{r.path}` ({r.label}, {r.task}, seed {r.seed})" for r in runs] + [""]
    write_text(out / "comparison.md", "\n".join(md))
    write_text(out / "comparison.tex", render_latex(table, f"{title}.", foot))
    write_text(out / "comparison.html", render_page(title, render_html(table), foot, notes, pairwise_markdown(pairs),
                                                    plot_files, [f"{r.path} ({r.label}, {r.task}, seed {r.seed})"
                                                                 for r in runs]))
    files += [out / n for n in ("comparison.md", "comparison.csv", "comparison.tex", "comparison.html",
                                "significance.csv", "runs.csv")]
    files += plot_files
    return ReportResult(files=files, notes=notes, rows=labels, summary="\n".join(
        [f"> {n}" for n in notes if n.startswith("WARNING")] + [render_markdown(table), ""]
        + [f"<sub>{n}</sub>" for n in foot]))

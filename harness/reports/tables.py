"""The comparison as tables: a numeric wide frame (CSV), and rendered Markdown, LaTeX (booktabs) and HTML.

Rows are configurations (model + what differs), column groups are tasks. A cell is ``mean ± std`` over seeds
(std omitted for one seed); each task group has a seed-count column. The best mean of a column is bold only when
it is significantly better than the runner-up; a dagger marks a value significantly different from that column's
best (see :mod:`harness.reports.significance`). Reference rows (chance, the train-answer prior) computed from the
split's data close the table, so a chance-level number reads as one.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field

import pandas as pd

from harness.reports.aggregate import Aggregate, metric_title, task_class, task_order
from harness.reports.collect import BenchInfo, Collection
from harness.reports.significance import ALPHA

DAGGER = "†"
SPEED = "Speed"


@dataclass
class Speed:
    images_per_second: float | None
    ms_per_image: float | None
    files: int
    tasks: list[str] = field(default_factory=list)


def speeds(collection: Collection, labels: list[str]) -> tuple[dict[str, Speed], list[str]]:
    """Throughput per row from bench.json files (in run directories or bench-only ones), averaged over files."""
    found: dict[str, list[tuple[str | None, BenchInfo]]] = {label: [] for label in labels}
    notes: list[str] = []
    for run in collection.runs:
        if run.bench is not None and run.label in found:
            found[run.label].append((run.task, run.bench))
    model_labels: dict[str, list[str]] = {}
    for run in collection.runs:
        if run.label not in model_labels.setdefault(run.model, []):
            model_labels[run.model].append(run.label)
    for model, task, bench in collection.benches:
        targets = model_labels.get(model, [])
        if len(targets) != 1:
            notes.append(f"{bench.path}: model {model!r} matches {len(targets)} table rows; its speed is not shown")
            continue
        found[targets[0]].append((task, bench))
    out: dict[str, Speed] = {}
    for label, entries in found.items():
        if not entries:
            continue
        ms = [b.ms_per_image for _, b in entries if b.ms_per_image]
        mean_ms = sum(ms) / len(ms) if ms else None
        out[label] = Speed(images_per_second=1000.0 / mean_ms if mean_ms else None, ms_per_image=mean_ms,
                           files=len(entries), tasks=sorted({t for t, _ in entries if t}))
    return out, notes


def columns(agg: Aggregate) -> list[tuple[str, str]]:
    """(task, metric) pairs present, in table order: tasks by their ``report_order``, metrics as each task
    declares them (further ones, e.g. a dataset's own VQA answer types, after them by name)."""
    present = agg.frame[["task", "metric"]].drop_duplicates()
    out = []
    for task in task_order(present.task):
        metrics = present[present.task == task].metric.tolist()
        order = [m.name for m in task_class(task).metrics]
        out += [(task, m) for m in sorted(metrics, key=lambda m: (order.index(m) if m in order else len(order), m))]
    return out


def _higher_is_better(task: str, metric: str) -> bool:
    return next((m.higher_is_better for m in task_class(task).metrics if m.name == metric), True)


def _versus(pairs: pd.DataFrame, task: str, metric: str, x: str, y: str) -> tuple[bool, tuple[float, ...]] | None:
    """Whether ``x`` differs significantly from ``y`` and ``x - y`` with its interval, from the pairs table."""
    if pairs.empty:
        return None
    hit = pairs[(pairs.task == task) & (pairs.metric == metric)
                & (((pairs.a == x) & (pairs.b == y)) | ((pairs.a == y) & (pairs.b == x)))]
    if hit.empty:
        return None
    row = hit.iloc[0]
    sign = 1.0 if row.a == x else -1.0
    low, high = sorted((sign * float(row.ci_low), sign * float(row.ci_high)))
    return bool(row.significant), (sign * float(row["diff"]), low, high)


@dataclass
class Cell:
    mean: float | None
    std: float | None = None
    best: bool = False
    """Bold: the column's top mean, significantly ahead of the runner-up."""
    top: bool = False
    """The column's top mean (what the other cells are tested against), significant or not."""
    marked: bool = False
    to_best: tuple[float, ...] | None = None
    """This cell minus the column's best, and its 95% interval (seeds and examples), when tested."""


@dataclass
class Table:
    labels: list[str]
    columns: list[tuple[str, str]]
    cells: dict[tuple[str, str, str], Cell]
    seeds: dict[tuple[str, str], int]
    speed: dict[str, Speed]
    tested: set[tuple[str, str]]
    """Columns with at least one significance test (the footnote applies to them)."""
    references: dict[tuple[str, str], dict[str, float]] = field(default_factory=dict)
    """(task, metric) -> {"chance": value, "prior": value}: the reference rows under the table."""

    @property
    def reference_names(self) -> list[str]:
        return list(dict.fromkeys(name for values in self.references.values() for name in values))

    @property
    def tasks(self) -> list[str]:
        return list(dict.fromkeys(t for t, _ in self.columns))


def build_table(agg: Aggregate, labels: list[str], pairs: pd.DataFrame, speed: dict[str, Speed],
                references: dict[tuple[str, str], dict[str, float]] | None = None) -> Table:
    cols = columns(agg)
    cells: dict[tuple[str, str, str], Cell] = {}
    seeds: dict[tuple[str, str], int] = {}
    tested: set[tuple[str, str]] = set()
    for task, metric in cols:
        present = {}
        for label in labels:
            row = agg.cell(label, task, metric)
            if row is None:
                continue
            std = None if math.isnan(row["std"]) else float(row["std"])
            present[label] = Cell(float(row["mean"]), std)
            seeds[(label, task)] = int(row["n"])
        if not present:
            continue
        sign = 1.0 if _higher_is_better(task, metric) else -1.0
        ranked = sorted(present, key=lambda label: -sign * present[label].mean)
        best = ranked[0]
        present[best].top = True
        for label, cell in present.items():
            verdict = _versus(pairs, task, metric, label, best) if label != best else None
            if verdict is not None:
                tested.add((task, metric))
                cell.marked, cell.to_best = verdict
            cells[(label, task, metric)] = cell
        # Bold only a lead that holds: the runner-up tested and significantly behind (untested: no bold).
        present[best].best = len(ranked) > 1 and present[ranked[1]].marked
    return Table(labels, cols, cells, seeds, speed, tested, references or {})


def wide_csv_frame(table: Table, agg: Aggregate) -> pd.DataFrame:
    """Numbers only, one row per configuration: ``<task>.<metric>.mean/std``, ``<task>.n``, speed columns and
    ``<task>.<metric>.sig_vs_best`` (True/False, empty when untested)."""
    rows = []
    for label in table.labels:
        row: dict[str, object] = {"label": label}
        for task, metric in table.columns:
            cell = table.cells.get((label, task, metric))
            row[f"{task}.{metric}.mean"] = None if cell is None else round(cell.mean, 4)
            row[f"{task}.{metric}.std"] = None if cell is None or cell.std is None else round(cell.std, 4)
            row[f"{task}.{metric}.sig_vs_best"] = (None if cell is None or (task, metric) not in table.tested
                                                   or cell.top else cell.marked)
            diff = None if cell is None or cell.to_best is None else cell.to_best
            for name, index in (("diff_vs_best", 0), ("ci_low_vs_best", 1), ("ci_high_vs_best", 2)):
                row[f"{task}.{metric}.{name}"] = None if diff is None else round(diff[index], 4)
        for task in table.tasks:
            row[f"{task}.n"] = table.seeds.get((label, task))
        speed = table.speed.get(label)
        row["images_per_second"] = None if speed is None or speed.images_per_second is None else round(
            speed.images_per_second, 3)
        row["ms_per_image"] = None if speed is None or speed.ms_per_image is None else round(speed.ms_per_image, 3)
        rows.append(row)
    return pd.DataFrame(rows)


# --- rendering -----------------------------------------------------------------------------------------------
def _fmt(cell: Cell | None, style: str) -> str:
    if cell is None:
        return "–" if style != "latex" else "--"
    pm = {"md": " ± ", "html": " ± ", "latex": r" $\pm$ "}[style]
    text = f"{cell.mean:.2f}" + (f"{pm}{cell.std:.2f}" if cell.std is not None else "")
    if style == "md":
        text = f"**{text}**" if cell.best else text
        return text + (DAGGER if cell.marked else "")
    if style == "html":
        text = f"<b>{text}</b>" if cell.best else text
        return text + (f"<sup>{DAGGER}</sup>" if cell.marked else "")
    text = rf"\textbf{{{text}}}" if cell.best else text
    return text + (r"$^{\dagger}$" if cell.marked else "")


def _speed_cells(speed: Speed | None, style: str) -> list[str]:
    dash = "--" if style == "latex" else "–"
    if speed is None:
        return [dash, dash]
    ips = f"{speed.images_per_second:.1f}" if speed.images_per_second else dash
    ms = f"{speed.ms_per_image:.2f}" if speed.ms_per_image else dash
    return [ips, ms]


def _reference_cells(table: Table, name: str, style: str) -> list[str]:
    dash = "--" if style == "latex" else "–"
    row = []
    for task in table.tasks:
        for t, m in table.columns:
            if t == task:
                value = table.references.get((t, m), {}).get(name)
                row.append(dash if value is None else f"{value:.2f}")
        row.append(dash)  # the seed-count column
    return row


def display_frame(table: Table, style: str) -> pd.DataFrame:
    """Strings with a (group, column) MultiIndex header, for rendering; reference rows last."""
    header: list[tuple[str, str]] = []
    for task in table.tasks:
        title = task_class(task).title
        header += [(title, metric_title(task, m)) for t, m in table.columns if t == task]
        header.append((title, "n"))
    has_speed = bool(table.speed)
    if has_speed:
        header += [(SPEED, "img/s"), (SPEED, "ms/img")]
    rows = []
    for label in table.labels:
        row = []
        for task in table.tasks:
            row += [_fmt(table.cells.get((label, t, m)), style) for t, m in table.columns if t == task]
            n = table.seeds.get((label, task))
            row.append(str(n) if n else ("--" if style == "latex" else "–"))
        if has_speed:
            row += _speed_cells(table.speed.get(label), style)
        rows.append(row)
    names = table.reference_names
    for name in names:
        rows.append(_reference_cells(table, name, style) + (_speed_cells(None, style) if has_speed else []))
    index = [_latex_escape(label) if style == "latex" else label for label in table.labels]
    index += [f"({name})" for name in names]
    # No index name in LaTeX: pandas would spend a header row on it.
    return pd.DataFrame(rows, index=pd.Index(index, name=None if style == "latex" else "model"),
                        columns=pd.MultiIndex.from_tuples(header))


def holm_scope(pairs: pd.DataFrame) -> str:
    """How many comparisons each Holm family of ``pairs`` holds, in words (for the footnote)."""
    if pairs.empty:
        return "over all 0 comparisons of this report"
    if set(pairs["family"]) == {"report"}:
        return f"over all {len(pairs)} comparisons of this report"
    sizes = sorted(set(pairs["family_size"].astype(int)))
    size = str(sizes[0]) if len(sizes) == 1 else f"{sizes[0]}-{sizes[-1]}"
    return (f"within each column (the {size} pairwise comparisons of one task and metric; {len(pairs)} in the "
            "report; `--holm-family report` corrects over all of them)")


def footnotes(table: Table, resamples: int, pairs: pd.DataFrame) -> list[str]:
    notes = [f"Cells: mean ± sample std over seeds (n = seed count); bold = best in column and significantly ahead of "
             f"the runner-up (no bold where the lead is not significant). {DAGGER} = significantly "
             f"different from the column's best at p < {ALPHA} after Holm's correction {holm_scope(pairs)}. "
             "The test counts both seed variance (between the seeds of each row) and "
             f"example variance (a paired bootstrap, {resamples} resamples, seeded, of whole clusters: VQA questions "
             "with their image, NLVR2 statements with their sentence's pairs, retrieval images with their captions), "
             "a t interval with Welch-Satterthwaite degrees of freedom (docs/significance.md). With one seed on a "
             "side only example variance is covered."]
    if table.references:
        from harness.metrics.reference import MEANING

        notes.append("Reference rows, computed from the split's data: " + "; ".join(
            f"({name}) {MEANING.get(name, name)}" for name in table.reference_names) + ".")
    if table.speed:
        tasks = sorted({t for s in table.speed.values() for t in s.tasks})
        notes.append("Speed from bench.json (inference, the whole pipeline: region rows include the detector), "
                     f"averaged over bench files{' (tasks: ' + ', '.join(tasks) + ')' if tasks else ''}; "
                     "compare rows measured on the same device only.")
    return notes


def render_markdown(table: Table) -> str:
    frame = display_frame(table, "md")
    header = ["model", *[f"{group} {name}" for group, name in frame.columns]]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(["---"] + ["---:"] * len(frame.columns)) + " |"]
    for label, values in zip(frame.index, frame.values.tolist()):
        lines.append("| " + " | ".join([label.replace("|", "\\|"), *values]) + " |")
    return "\n".join(lines)


def render_latex(table: Table, caption: str, notes: list[str]) -> str:
    frame = display_frame(table, "latex")
    frame.columns = pd.MultiIndex.from_tuples([(_latex_escape(g), _latex_escape(c)) for g, c in frame.columns])
    body = frame.to_latex(escape=False, multicolumn=True, multicolumn_format="c",
                          column_format="l" + "r" * len(frame.columns))
    foot = " ".join(_latex_escape(n).replace(_latex_escape(DAGGER), r"$^{\dagger}$") for n in notes)
    return ("% vlbench compare: needs \\usepackage{booktabs}\n\\begin{table*}[t]\n\\centering\n\\small\n"
            f"{body}\\caption{{{_latex_escape(caption)} {foot}}}\n\\end{{table*}}\n")


def render_html(table: Table) -> str:
    frame = display_frame(table, "html")
    groups: list[tuple[str, int]] = []
    for group, _ in frame.columns:
        if groups and groups[-1][0] == group:
            groups[-1] = (group, groups[-1][1] + 1)
        else:
            groups.append((group, 1))
    top = "".join(f'<th colspan="{span}">{html.escape(group)}</th>' for group, span in groups)
    second = "".join(f"<th>{html.escape(name)}</th>" for _, name in frame.columns)
    rows = "".join("<tr><th>" + html.escape(label) + "</th>" + "".join(f"<td>{v}</td>" for v in values) + "</tr>"
                   for label, values in zip(frame.index, frame.values.tolist()))
    return (f'<table class="cmp"><thead><tr><th rowspan="2">model</th>{top}</tr><tr>{second}</tr></thead>'
            f"<tbody>{rows}</tbody></table>")


def pairwise_markdown(pairs: pd.DataFrame) -> str:
    if pairs.empty:
        return "_No paired tests (need two configurations with per-example results on the same split)._"
    lines = ["| task | A | B | metric | A − B (points) | 95% CI | p | p (Holm) | what is covered | significant |",
             "| --- | --- | --- | --- | ---: | --- | ---: | ---: | --- | --- |"]
    for row in pairs.itertuples():
        lines.append(f"| {row.task} | {row.a} | {row.b} | {row.metric} | {row.diff:+.2f} | "
                     f"[{row.ci_low:+.2f}, {row.ci_high:+.2f}] | {row.p_value:.3g} | {row.p_holm:.3g} | {row.detail} | "
                     f"{'yes' if row.significant else 'no'} |")
    return "\n".join(lines)


def differences_markdown(table: Table) -> str:
    """Each tested cell minus its column's best, with the 95% interval: what the daggers rest on."""
    columns = [c for c in table.columns if c in table.tested]
    if not columns:
        return "_No differences tested._"
    header = ["model", *[f"{task_class(t).title} {metric_title(t, m)}" for t, m in columns]]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(["---"] * len(header)) + " |"]
    for label in table.labels:
        cells = []
        for task, metric in columns:
            cell = table.cells.get((label, task, metric))
            if cell is None:
                cells.append("–")
            elif cell.top:
                cells.append("best")
            elif cell.to_best is None:
                cells.append("not tested")
            else:
                diff, low, high = cell.to_best
                cells.append(f"{diff:+.2f} [{low:+.2f}, {high:+.2f}]{DAGGER if cell.marked else ''}")
        lines.append("| " + " | ".join([label.replace("|", "\\|"), *cells]) + " |")
    return "\n".join(lines)


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                  "<": r"$<$", ">": r"$>$"}


def _latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in str(text)).replace("±", r"$\pm$")

"""Runs to numbers: one long table of (row, task, metric, seed, value), the split check, mean ± std over seeds.

What a task reports (its metrics, their order and titles, its primary metric) and where a model's row goes are
read from the task and model registries, so a new task or model appears in every report without edits here.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import pandas as pd

from harness.errors import VlbenchError
from harness.reports.collect import RunInfo
from harness.tasks import TASKS
from harness.tasks.base import Metric, Task


def task_class(name: str) -> type[Task]:
    """The registered task ``name`` (one-line error for a task this vlbench does not know)."""
    return TASKS.get(name)


def task_order(names: Iterable[str]) -> list[str]:
    """Tasks in table order (each task's ``report_order``, then name)."""
    return sorted(set(names), key=lambda name: (task_class(name).report_order, name))


def tabulated(task: str, metrics: dict) -> dict[Metric, float]:
    """The tabulated metrics of one split's metrics dict (keys of ``vlbench score``), in table order."""
    return task_class(task).tabulate(metrics)


def task_metrics(task: str, metrics: dict) -> dict[str, float]:
    """:func:`tabulated` by metric name (the long table's ``metric`` column)."""
    return {metric.name: value for metric, value in tabulated(task, metrics).items()}


def reference_points(runs: list[RunInfo], split: str) -> dict[tuple[str, str], dict[str, float]]:
    """(task, metric) -> {"chance": value, "prior": value} for the compared split, from the first run of each
    task that recorded them (runs of a task share the split: check_splits). Non-finite values are dropped."""
    out: dict[tuple[str, str], dict[str, float]] = {}
    for task in task_order({r.task for r in runs}):
        run = next((r for r in runs if r.task == task and isinstance(r.references.get(split), dict)), None)
        for name, values in (run.references[split].items() if run else ()):
            if isinstance(values, dict):
                for metric, value in task_metrics(task, values).items():
                    if math.isfinite(value):
                        out.setdefault((task, metric), {})[name] = value
    return out


def metric_title(task: str, name: str) -> str:
    return next((m.title for m in task_class(task).metrics if m.name == name), name)


def check_splits(runs: list[RunInfo], split: str, allow: bool) -> list[str]:
    """Refuse runs of one task evaluated on different ``split`` data (different fingerprints) unless ``allow``.

    Returns notes for the report (what differed, when allowed). The error is one line naming the runs.
    """
    notes: list[str] = []
    for task in sorted({r.task for r in runs}):
        groups: dict[str | None, list[RunInfo]] = {}
        for run in (r for r in runs if r.task == task):
            groups.setdefault(run.fingerprints.get(split), []).append(run)
        if len(groups) < 2:
            continue
        described = "; ".join(f"{_short(fp)}: {', '.join(str(r.path) for r in group)}"
                              for fp, group in groups.items())
        if not allow:
            raise VlbenchError(f"{task} runs were evaluated on different {split} splits (fingerprint {described}); "
                               "compare runs on identical data, or pass --allow-different-splits")
        notes.append(f"WARNING: {task} runs on different {split} splits (--allow-different-splits): {described}. "
                     "Their numbers are not directly comparable and no significance tests are made across them.")
    return notes


def _short(fingerprint: str | None) -> str:
    if not fingerprint:
        return "none"
    return fingerprint.split(":")[-1][:12]


def long_table(runs: list[RunInfo], split: str) -> tuple[pd.DataFrame, list[str]]:
    """One row per (run, metric): label, model, task, seed, metric, value, run path."""
    rows = []
    notes = []
    for run in runs:
        metrics = run.metrics.get(split)
        if not isinstance(metrics, dict):
            notes.append(f"{run.path}: no {split} metrics (unlabelled split?); left out")
            continue
        for metric, value in task_metrics(run.task, metrics).items():
            rows.append({"label": run.label, "model": run.model, "config": run.config_key, "task": run.task,
                         "seed": run.seed, "metric": metric, "value": value, "run": str(run.path)})
    frame = pd.DataFrame(rows, columns=["label", "model", "config", "task", "seed", "metric", "value", "run"])
    return frame, notes


def check_duplicate_seeds(frame: pd.DataFrame) -> None:
    """Two runs of one configuration with the same seed would be counted twice in mean ± std: refuse."""
    per_seed = frame.drop_duplicates(["label", "task", "seed", "run"]).groupby(["label", "task", "seed"])["run"]
    for (label, task, seed), paths in per_seed:
        if len(paths) > 1:
            raise VlbenchError(f"{label} on {task}: seed {seed} appears in more than one run ({', '.join(paths)}); "
                               "pass each seed once")


@dataclass
class Aggregate:
    """mean, std (sample, ddof=1; NaN for one seed), n and the seeds, per (label, task, metric)."""

    frame: pd.DataFrame

    def cell(self, label: str, task: str, metric: str) -> pd.Series | None:
        hit = self.frame[(self.frame.label == label) & (self.frame.task == task) & (self.frame.metric == metric)]
        return None if hit.empty else hit.iloc[0]


def aggregate(frame: pd.DataFrame) -> Aggregate:
    grouped = frame.groupby(["label", "task", "metric"], sort=False)["value"]
    out = grouped.agg(mean="mean", std=lambda v: v.std(ddof=1) if len(v) > 1 else float("nan"), n="count")
    seeds = frame.groupby(["label", "task", "metric"], sort=False)["seed"].agg(lambda s: sorted(s.tolist()))
    out["seeds"] = seeds
    return Aggregate(out.reset_index())


def row_order(runs: list[RunInfo]) -> list[str]:
    """Rows in a stable, meaningful order: each model's ``report_order`` (pixel models first, the text floor
    last); a model this vlbench does not know goes after the known ones."""
    from harness.models import MODELS

    labels = {r.label: r.model for r in runs}

    def order(model: str) -> int:
        return MODELS.get(model).report_order if model in MODELS else 1000

    return sorted(labels, key=lambda label: (order(labels[label]), label))

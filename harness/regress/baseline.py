"""CI regression baselines: what a run must reach, read from a committed YAML/JSON file, and the check.

Baseline file (``results/baselines/*.yaml``)::

    description: what this baseline covers and how it was made
    split: test                       # the evaluated split whose metrics are checked (default test)
    runs:
      - model: pixelbert
        task: vqa
        fingerprint: sha256:...       # optional: the split the numbers were measured on; other data = bad input
        metrics:                      # dotted keys into run.json metrics.<split> (the `vlbench score` keys)
          overall: {value: 45.0, tolerance: 4.0}            # fails when current < value - tolerance
          perAnswerType.yes/no: {value: 60.0, std: 1.5, tolerance_std: 3}   # ... < value - 3 x std
          perAnswerType.number: {value: 40.0, tolerance: 2.0, std: 1.5, tolerance_std: 3}  # the larger drop
        throughput:                   # checked only when the run directory has bench.json
          samples_per_second: {value: 120.0, tolerance: 0.5}  # fails when current / value < 1 - tolerance

``std`` is the sample standard deviation of the baseline's runs over seeds (``check --write`` records it from
runs of several seeds); a tolerance in seed standard deviations keeps the gate as loose as training noise makes
necessary and no looser, so it is neither blind nor flaky. Every metric is higher-is-better, so only drops fail; throughput is compared as a ratio because absolute
speed depends on the machine (a loose tolerance is the honest setting for shared CI machines).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from harness.errors import VlbenchError
from harness.fileio import MAX_SPEC_FILE_BYTES, read_json, read_untrusted_text
from harness.reports.collect import RunInfo, collect

THROUGHPUT_KEYS = ("samples_per_second", "images_per_second")


@dataclass
class Limit:
    value: float
    tolerance: float
    """Allowed drop in points (metrics) or fraction (throughput)."""
    std: float | None = None
    """The baseline runs' seed standard deviation (metrics)."""
    tolerance_std: float | None = None
    """Allowed drop in multiples of ``std``; the larger of the two allowances applies."""

    @property
    def allowed(self) -> float:
        by_std = self.tolerance_std * self.std if self.tolerance_std is not None and self.std is not None else 0.0
        return max(self.tolerance, by_std)

    def describe(self) -> str:
        if self.tolerance_std is None:
            return f"-{self.tolerance:g}"
        return f"-{self.allowed:.3g} ({self.tolerance_std:g} std)"


@dataclass
class Entry:
    model: str
    task: str
    fingerprint: str | None
    metrics: dict[str, Limit]
    throughput: dict[str, Limit]


@dataclass
class Baseline:
    path: Path
    split: str
    entries: list[Entry]
    description: str = ""


def _limit(path: Path, where: str, raw: Any) -> Limit:
    by_std = isinstance(raw, dict) and "tolerance_std" in raw
    if not isinstance(raw, dict) or "value" not in raw or not ("tolerance" in raw or by_std):
        raise VlbenchError(f"{path}: {where}: expected {{value: NUMBER, tolerance: NUMBER}} or {{value: NUMBER, "
                           f"std: NUMBER, tolerance_std: NUMBER}}, got {raw!r}")
    if by_std and "std" not in raw:
        raise VlbenchError(f"{path}: {where}: tolerance_std needs the baseline's seed 'std'")
    try:
        numbers = {k: float(raw[k]) for k in ("value", "tolerance", "std", "tolerance_std") if k in raw}
    except (TypeError, ValueError):
        raise VlbenchError(f"{path}: {where}: value, tolerance, std and tolerance_std must be numbers, "
                           f"got {raw!r}") from None
    if not all(math.isfinite(v) for v in numbers.values()):
        raise VlbenchError(f"{path}: {where}: numbers must be finite, got {raw!r}")
    if any(numbers.get(k, 0.0) < 0 for k in ("tolerance", "std", "tolerance_std")):
        raise VlbenchError(f"{path}: {where}: tolerance, std and tolerance_std must be >= 0, got {raw!r}")
    return Limit(numbers["value"], numbers.get("tolerance", 0.0), numbers.get("std"), numbers.get("tolerance_std"))


def load_baseline(path: Path) -> Baseline:
    text = read_untrusted_text(path, MAX_SPEC_FILE_BYTES, what="baseline")
    try:
        raw = read_json(path) if path.suffix == ".json" else yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise VlbenchError(f"{path}: malformed YAML ({str(exc).splitlines()[0]})") from None
    except RecursionError:
        raise VlbenchError(f"{path}: malformed YAML (nested too deeply)") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("runs"), list) or not raw["runs"]:
        raise VlbenchError(f"{path}: a baseline needs a non-empty 'runs' list")
    entries = []
    for i, item in enumerate(raw["runs"]):
        where = f"runs[{i}]"
        if not isinstance(item, dict) or not isinstance(item.get("model"), str) or not isinstance(item.get("task"),
                                                                                                   str):
            raise VlbenchError(f"{path}: {where}: needs 'model' and 'task'")
        metrics = item.get("metrics") or {}
        throughput = item.get("throughput") or {}
        if not isinstance(metrics, dict) or not isinstance(throughput, dict) or not (metrics or throughput):
            raise VlbenchError(f"{path}: {where}: needs a 'metrics' and/or 'throughput' mapping")
        unknown = sorted(set(throughput) - set(THROUGHPUT_KEYS))
        if unknown:
            raise VlbenchError(f"{path}: {where}: unknown throughput key(s) {', '.join(unknown)} "
                               f"(known: {', '.join(THROUGHPUT_KEYS)})")
        entries.append(Entry(
            model=item["model"], task=item["task"], fingerprint=item.get("fingerprint"),
            metrics={k: _limit(path, f"{where}.metrics.{k}", v) for k, v in metrics.items()},
            throughput={k: _limit(path, f"{where}.throughput.{k}", v) for k, v in throughput.items()},
        ))
    keys = [(e.model, e.task) for e in entries]
    if len(set(keys)) != len(keys):
        raise VlbenchError(f"{path}: a (model, task) pair appears twice")
    return Baseline(path=path, split=str(raw.get("split", "test")), entries=entries,
                    description=str(raw.get("description", "")))


@dataclass
class Verdict:
    run: str
    what: str
    metric: str
    baseline: float
    tolerance: str
    current: float | None
    status: str
    """ok | REGRESSION | skipped"""


def _metric(metrics: dict[str, Any], dotted: str) -> Any:
    """A dotted key into a metrics dict; answer-type names contain '/', never '.', so split on the first dot."""
    node: Any = metrics
    head, _, rest = dotted.partition(".")
    for part in [head, rest] if rest else [head]:
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def check_runs(baseline: Baseline, paths: list[Path]) -> tuple[list[Verdict], list[str]]:
    """Every metric and throughput limit of each run's entry. Bad input (no entry, other data, a missing
    metric) raises VlbenchError; regressions are verdicts. Returns the verdicts and notes."""
    collection = collect(paths)
    notes = list(collection.notes)
    verdicts: list[Verdict] = []
    by_key = {(e.model, e.task): e for e in baseline.entries}
    seen: set[tuple[str, str]] = set()
    for run in collection.runs:
        entry = by_key.get((run.model, run.task))
        if entry is None:
            raise VlbenchError(f"{run.path}: no baseline entry for model {run.model!r} on task {run.task!r} in "
                               f"{baseline.path}")
        seen.add((run.model, run.task))
        verdicts += _check_one(baseline, entry, run)
    for entry in baseline.entries:
        if (entry.model, entry.task) not in seen:
            notes.append(f"baseline entry {entry.model}/{entry.task} was not checked (no run given)")
    return verdicts, notes


def _check_one(baseline: Baseline, entry: Entry, run: RunInfo) -> list[Verdict]:
    what = f"{run.model}/{run.task} seed {run.seed}"
    fingerprint = run.fingerprints.get(baseline.split)
    if entry.fingerprint and fingerprint != entry.fingerprint:
        raise VlbenchError(f"{run.path}: evaluated on different {baseline.split} data than the baseline "
                           f"({fingerprint} vs {entry.fingerprint}); rerun with the baseline's data and --limit")
    metrics = run.metrics.get(baseline.split)
    if not isinstance(metrics, dict):
        raise VlbenchError(f"{run.path}: no {baseline.split} metrics in run.json")
    out = []
    for name, limit in entry.metrics.items():
        current = _metric(metrics, name)
        if not isinstance(current, (int, float)):
            raise VlbenchError(f"{run.path}: metric {name!r} not in its {baseline.split} metrics")
        ok = float(current) >= limit.value - limit.allowed
        out.append(Verdict(str(run.path), what, name, limit.value, limit.describe(), float(current),
                           "ok" if ok else "REGRESSION"))
    bench = read_json(run.path / "bench.json") if (run.path / "bench.json").is_file() else None
    for name, limit in entry.throughput.items():
        current = None
        if run.bench is not None:
            current = run.bench.samples_per_second if name == "samples_per_second" else (
                1000.0 / run.bench.ms_per_image if run.bench.ms_per_image else None)
        if bench is None or current is None:
            out.append(Verdict(str(run.path), what, name, limit.value, f"x{1 - limit.tolerance:g}", None, "skipped"))
            continue
        ok = current / limit.value >= 1 - limit.tolerance
        out.append(Verdict(str(run.path), what, name, limit.value, f"x{1 - limit.tolerance:g}", current,
                           "ok" if ok else "REGRESSION"))
    return out


def verdict_table(verdicts: list[Verdict]) -> str:
    header = ("run", "metric", "baseline", "allowed", "current", "change", "verdict")
    rows = [header]
    for v in verdicts:
        change = "" if v.current is None else (f"{v.current - v.baseline:+.2f}" if not v.tolerance.startswith("x")
                                               else f"x{v.current / v.baseline:.2f}")
        rows.append((v.what, v.metric, f"{v.baseline:g}", v.tolerance, "n/a" if v.current is None else f"{v.current:g}",
                     change, v.status))
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def baseline_from_runs(paths: list[Path], split: str, tolerance: float, throughput_tolerance: float,
                       description: str, tolerance_std: float | None = None) -> dict[str, Any]:
    """A fresh baseline from runs (refreshing): per (model, task) the mean over the given runs (seeds) of every
    tabulated metric, with one tolerance in points and, with ``tolerance_std``, the seed std and a tolerance in
    multiples of it (needs at least two seeds per model and task); their bench throughput when present."""
    from harness.reports.aggregate import tabulated

    collection = collect(paths)
    grouped: dict[tuple[str, str], list[RunInfo]] = {}
    for run in collection.runs:
        grouped.setdefault((run.model, run.task), []).append(run)
    entries = []
    for (model, task), runs in grouped.items():
        fingerprints = {r.fingerprints.get(split) for r in runs}
        if len(fingerprints) != 1:
            raise VlbenchError(f"{model}/{task}: the runs were evaluated on different {split} data")
        values: dict[str, list[float]] = {}
        for run in runs:
            metrics = run.metrics.get(split)
            if not isinstance(metrics, dict):
                raise VlbenchError(f"{run.path}: no {split} metrics")
            for metric, value in tabulated(task, metrics).items():
                values.setdefault(metric.path, []).append(value)
        if tolerance_std is not None and len(runs) < 2:
            raise VlbenchError(f"{model}/{task}: --tolerance-std needs runs of at least two seeds (got one)")

        def limit(v: list[float]) -> dict[str, float]:
            out = {"value": round(statistics.fmean(v), 2), "tolerance": tolerance}
            if tolerance_std is not None:
                out.update(std=round(statistics.stdev(v), 3), tolerance_std=tolerance_std)
            return out

        entry: dict[str, Any] = {"model": model, "task": task, "fingerprint": fingerprints.pop(),
                                 "metrics": {k: limit(v) for k, v in values.items()}}
        speeds = [r.bench.samples_per_second for r in runs if r.bench and r.bench.samples_per_second]
        if speeds:
            entry["throughput"] = {"samples_per_second": {"value": round(sum(speeds) / len(speeds), 2),
                                                          "tolerance": throughput_tolerance}}
        entries.append(entry)
    return {"description": description, "split": split, "runs": entries}

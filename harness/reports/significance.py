"""Is configuration A different from configuration B on this split? One test for every task and metric that counts
both sources of variance a benchmark number has: which seed trained the model, and which examples it was tested on.

The estimate is the difference of seed means, ``mean_i m(A_i) - mean_j m(B_j)``, where ``m`` is the official
metric over the split. Its variance has two parts, estimated separately and added:

- **seeds** (training randomness): ``s_A^2 / n_A + s_B^2 / n_B``, the sample variances of the per-seed metrics
  (Welch's two-sample form; the runs of A and B are not paired by seed number: different models share no
  training randomness);
- **examples** (the test set is a sample): a paired **cluster bootstrap** of the difference of seed means, the
  same resample of clusters for every run of both configurations. Examples are resampled in their natural
  clusters, never alone: VQA questions with their image, NLVR2 statements with their consistency group (one
  sentence over several image pairs), retrieval images with their captions. Clustering matters: questions about
  one image are correlated, and resampling them as independent understates the variance.

The interval is ``diff ± t(df) * SE`` with Welch-Satterthwaite degrees of freedom over the three variance terms
(seed terms with n - 1, the bootstrap term with clusters - 1), and the p-value the two-sided t tail. p-values
are corrected for the number of comparisons by Holm's step-down method, and a difference is marked significant only
when the corrected p is below ``ALPHA``. The family corrected together is, by default, one **column** of the table:
every pair of configurations on one task and metric, the comparisons behind that column's bold and daggers (the
post-hoc convention of Demšar 2006, "Statistical comparisons of classifiers over multiple data sets", JMLR).
``report`` corrects every metric of every task together, which controls the error over the whole report but, with
sub-metrics counted (VQA's answer types, each recall@K), grows to hundreds of comparisons and hides differences of
20 points that hold in every seed.

Why not a two-level bootstrap of seeds too (Saravanan et al. 2020, "Application of the hierarchical bootstrap to
multi-level data in neuroscience")? With the 3 seeds a benchmark affords, resampling seeds with replacement sees
only 10 distinct means and shrinks the seed variance by (n - 1) / n: in a simulation of two configurations from
one distribution (benchmarks/significance_calibration.py) it called them different 15.0% of the time at a nominal
5%, where this test did so 4.5% of the time (tests/test_significance.py keeps it near 5%). The split into seed and example variance follows Bouthillier et al.
2021 ("Accounting for variance in machine learning benchmarks", MLSys), which shows that ignoring either source
overstates differences; the cluster bootstrap is Field & Welsh 2007 ("Bootstrapping clustered data", JRSS B).

With one seed on either side the seed variance cannot be estimated: the test then covers example variance only,
and says so in the row and in the report.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats

from harness.errors import DataError
from harness.metrics.nlvr2 import nlvr2_consistency_key
from harness.reports.aggregate import task_class
from harness.reports.collect import RunInfo

ALPHA = 0.05
DEFAULT_RESAMPLES = 10_000
BOOTSTRAP_SEED = 0
_KS = (1, 5, 10)
METHOD = "seed + cluster variance t test, Holm-corrected"
FAMILIES = ("column", "report")
"""What Holm's correction treats as one family: a table column (task + metric) or the whole report."""


# --- one run's per-cluster numbers --------------------------------------------------------------------------
@dataclass
class Units:
    """A run's split as clusters: per metric, components of (numerator, denominator) per cluster; the metric is
    the sum over components of ``100 * sum(num) / sum(den)`` (one component, or retrieval RSUM's six)."""

    clusters: list[str]
    metrics: dict[str, list[tuple[np.ndarray, np.ndarray]]] = field(default_factory=dict)
    note: str | None = None
    """Why the clusters are not the natural ones (an older run without image ids), if so."""

    def value(self, metric: str) -> float:
        return float(sum(100.0 * num.sum() / den.sum() for num, den in self.metrics[metric]))

    def resampled(self, metric: str, weights: np.ndarray) -> np.ndarray:
        """The metric under each row of cluster ``weights`` (resamples x clusters counts); NaN where a resample
        holds none of the metric's examples (a rare VQA answer type)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return sum(100.0 * (weights @ num) / (weights @ den) for num, den in self.metrics[metric])


def _by_cluster(keys: Sequence[str], *columns: np.ndarray) -> tuple[list[str], list[np.ndarray]]:
    """Cluster keys in first-seen order and each column summed per cluster."""
    order = list(dict.fromkeys(keys))
    index = {k: i for i, k in enumerate(order)}
    owner = np.array([index[k] for k in keys], dtype=np.int64)
    return order, [np.bincount(owner, weights=c, minlength=len(order)) for c in columns]


def vqa_units(per_example: dict) -> Units:
    """VQA accuracy per question, clustered by image (``clusters``); each answer type a metric of its own."""
    values = np.asarray(per_example["values"], dtype=np.float64)
    clusters = per_example.get("clusters")
    note = None
    if clusters is None:
        clusters, note = list(per_example["ids"]), "questions not grouped by image (run without image ids)"
    keys = [str(c) for c in clusters]
    ones = np.ones(len(values))
    order, (num, den) = _by_cluster(keys, values, ones)
    units = Units(order, {"overall": [(num, den)]}, note)
    types = per_example.get("answer_types")
    if types is not None:
        types = np.asarray([str(t) for t in types])
        for name in sorted(set(types.tolist())):
            mask = (types == name).astype(np.float64)
            _, (tnum, tden) = _by_cluster(keys, values * mask, mask)
            units.metrics[name] = [(tnum, tden)]
    return units


def _consistency_group(identifier: str) -> str:
    try:
        return nlvr2_consistency_key(identifier)
    except DataError:  # not split-set-pair-sentence: the example is its own group
        return identifier


def nlvr2_units(per_example: dict) -> Units:
    """NLVR2 correctness clustered by consistency group (one sentence over its image pairs): accuracy, and
    consistency (a group counts when all its examples are right)."""
    correct = np.asarray(per_example["values"], dtype=np.float64)
    keys = [_consistency_group(str(i)) for i in per_example["ids"]]
    order, (num, den) = _by_cluster(keys, correct, np.ones(len(correct)))
    consistent = (num == den).astype(np.float64)
    return Units(order, {"accuracy": [(num, den)], "consistency": [(consistent, np.ones(len(order)))]})


def retrieval_units(per_example: dict) -> Units:
    """Recall@K clustered by image: TR hits per image, IR hits summed over the image's captions. Ranks are 0-based,
    so a hit at K is rank < K."""
    tr = np.asarray(per_example["tr_best_rank"])
    ir = np.asarray(per_example["ir_rank"])
    counts = per_example.get("captions_per_image")
    if counts is None:
        if len(ir) % len(tr):
            raise ValueError("captions per image unknown (older run) and captions do not divide evenly by images")
        counts = [len(ir) // len(tr)] * len(tr)
    counts = np.asarray(counts, dtype=np.float64)
    owner = np.repeat(np.arange(len(tr)), counts.astype(np.int64))
    images = np.ones(len(tr))
    metrics: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
    for k in _KS:
        metrics[f"tr_r{k}"] = [((tr < k).astype(np.float64), images)]
        metrics[f"ir_r{k}"] = [(np.bincount(owner, weights=(ir < k).astype(np.float64), minlength=len(tr)), counts)]
    metrics["rsum"] = [c for k in _KS for c in (*metrics[f"tr_r{k}"], *metrics[f"ir_r{k}"])]
    return Units([str(i) for i in range(len(tr))], metrics)


UNITS = {"vqa_accuracy": vqa_units, "correct": nlvr2_units, "ranks": retrieval_units}
"""Per-example formats (the ``kind`` a task writes into per_example_<split>.json) -> their clustered units."""


# --- the test ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Difference:
    diff: float
    ci_low: float
    ci_high: float
    p_value: float
    se_seeds: float | None
    """Standard error from seed variance (None: one seed on a side, not estimable)."""
    se_examples: float
    df: float


def _cluster_weights(clusters: int, resamples: int, seed: int) -> Iterator[np.ndarray]:
    """Blocks of bootstrap resamples as per-cluster counts, bounded in memory whatever the split size."""
    rng = np.random.default_rng(seed)
    block = max(1, 2_000_000 // max(clusters, 1))
    done = 0
    while done < resamples:
        size = min(block, resamples - done)
        draws = rng.integers(0, clusters, size=(size, clusters))
        yield np.stack([np.bincount(row, minlength=clusters) for row in draws]).astype(np.float64)
        done += size


def difference(a: list[Units], b: list[Units], metric: str, resamples: int = DEFAULT_RESAMPLES,
               seed: int = BOOTSTRAP_SEED) -> Difference:
    """A - B on ``metric`` (runs = seeds of each configuration, all on the same clusters), with its 95% interval
    and two-sided p-value from seed and cluster variance (see the module notes)."""
    if not a or not b:
        raise ValueError("each configuration needs at least one run")
    clusters = len(a[0].clusters)
    if any(u.clusters != a[0].clusters for u in (*a, *b)):
        raise ValueError("the runs were not evaluated on the same clusters")
    va = np.array([u.value(metric) for u in a])
    vb = np.array([u.value(metric) for u in b])
    observed = float(va.mean() - vb.mean())
    boot = np.concatenate([
        np.mean([u.resampled(metric, w) for u in a], axis=0) - np.mean([u.resampled(metric, w) for u in b], axis=0)
        for w in _cluster_weights(clusters, resamples, seed)])
    boot = boot[np.isfinite(boot)]
    var_examples = float(np.var(boot, ddof=1)) if len(boot) > 1 else 0.0
    terms = [(var_examples, max(clusters - 1, 1))]
    se_seeds = None
    if len(va) > 1 and len(vb) > 1:
        seed_terms = [(float(va.var(ddof=1)) / len(va), len(va) - 1), (float(vb.var(ddof=1)) / len(vb), len(vb) - 1)]
        terms += seed_terms
        se_seeds = float(np.sqrt(sum(v for v, _ in seed_terms)))
    total = sum(v for v, _ in terms)
    if total <= 0:
        p = 1.0 if observed == 0 else 0.0
        return Difference(observed, observed, observed, p, se_seeds, 0.0, float("inf"))
    denominator = sum(v * v / d for v, d in terms)
    df = total * total / denominator if denominator > 0 else float("inf")
    se = float(np.sqrt(total))
    half = float(stats.t.ppf(1 - ALPHA / 2, df)) * se
    p = float(2 * stats.t.sf(abs(observed) / se, df))
    return Difference(observed, observed - half, observed + half, p, se_seeds, float(np.sqrt(var_examples)), df)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment: family-wise error at most alpha over all the given comparisons."""
    order = np.argsort(p_values, kind="stable")
    count = len(p_values)
    adjusted = [0.0] * count
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (count - rank) * float(p_values[index])))
        adjusted[index] = running
    return adjusted


# --- a report's pairs ----------------------------------------------------------------------------------------
def _units(runs: list[RunInfo], split: str) -> tuple[list[Units] | None, str | None]:
    data = [r.per_example(split) for r in runs]
    if any(d is None for d in data):
        return None, "per-example results missing"
    kinds = {d.get("kind") for d in data}
    if len(kinds) != 1 or next(iter(kinds)) not in UNITS:
        return None, f"per-example results of unknown or mixed kinds ({', '.join(sorted(map(str, kinds)))})"
    try:
        return [UNITS[next(iter(kinds))](d) for d in data], None
    except (KeyError, ValueError, TypeError, DataError) as exc:
        return None, f"per-example results unusable ({exc})"


def compare_pair(task: str, a: list[RunInfo], b: list[RunInfo], split: str,
                 resamples: int = DEFAULT_RESAMPLES) -> tuple[list[dict], str | None]:
    """A vs B (their runs = seeds) on every tabulated metric of ``task`` their per-example results support.

    Rows ``{metric, diff, ci_low, ci_high, p_value, test, significant, detail}``, uncorrected (``pairwise``
    corrects a report's p-values together), and a note when the per-example data is missing or does not line
    up."""
    units, note = _units([*a, *b], split)
    if units is None:
        return [], note
    ua, ub = units[: len(a)], units[len(a):]
    if any(u.clusters != ua[0].clusters for u in units):
        return [], "per-example results on different examples"
    covered = "seeds + examples" if len(a) > 1 and len(b) > 1 else "examples only (one seed on a side)"
    rows: list[dict] = []
    for metric in (m.name for m in task_class(task).tabulate(a[0].metrics.get(split) or {})):
        if metric not in ua[0].metrics:
            continue
        d = difference(ua, ub, metric, resamples)
        detail = f"{len(ua[0].clusters)} clusters, seeds {len(a)}/{len(b)}: {covered}"
        if ua[0].note:
            detail += f"; {ua[0].note}"
        rows.append({"metric": metric, "diff": d.diff, "ci_low": d.ci_low, "ci_high": d.ci_high,
                     "p_value": d.p_value, "test": "seed+cluster t", "significant": d.p_value < ALPHA,
                     "detail": detail})
    return rows, None


def pairwise(runs: list[RunInfo], split: str, labels: list[str], resamples: int = DEFAULT_RESAMPLES,
             family: str = "column") -> tuple[pd.DataFrame, list[str]]:
    """Every pair of configurations, per task, on identical data (same split fingerprint); p-values Holm-corrected
    within each ``family`` (``column``: one task and metric; ``report``: all rows) into ``p_holm``, which alone
    decides ``significant``. ``family`` and ``family_size`` say what each row was corrected with."""
    if family not in FAMILIES:
        raise ValueError(f"unknown Holm family {family!r} (known: {', '.join(FAMILIES)})")
    rows: list[dict] = []
    notes: list[str] = []
    for task in sorted({r.task for r in runs}):
        groups: dict[tuple[str, str | None], list[RunInfo]] = {}
        for run in runs:
            if run.task == task and isinstance(run.metrics.get(split), dict):
                groups.setdefault((run.label, run.fingerprints.get(split)), []).append(run)
        keys = sorted(groups, key=lambda k: labels.index(k[0]) if k[0] in labels else len(labels))
        for i, key_a in enumerate(keys):
            for key_b in keys[i + 1:]:
                if key_a[1] != key_b[1] or key_a[1] is None:
                    continue  # different data: no paired test is meaningful
                results, note = compare_pair(task, groups[key_a], groups[key_b], split, resamples)
                if note:
                    notes.append(f"{task}: {key_a[0]} vs {key_b[0]}: no significance test ({note})")
                for result in results:
                    rows.append({"task": task, "a": key_a[0], "b": key_b[0], **result})
    columns = ["task", "a", "b", "metric", "diff", "ci_low", "ci_high", "p_value", "p_holm", "family", "family_size",
               "test", "significant", "detail"]
    frame = pd.DataFrame(rows, columns=columns)
    if not frame.empty:
        frame["family"] = frame["task"] + "/" + frame["metric"] if family == "column" else "report"
        for _, index in frame.groupby("family", sort=False).groups.items():
            frame.loc[index, "p_holm"] = holm(frame.loc[index, "p_value"].tolist())
            frame.loc[index, "family_size"] = len(index)
        frame["p_holm"] = frame["p_holm"].astype(float)
        frame["family_size"] = frame["family_size"].astype(int)
        frame["significant"] = frame["p_holm"] < ALPHA
        if any("examples only" in str(d) for d in frame["detail"]):
            notes.append("some configurations have one seed: their tests cover example variance only, not training "
                         "variance (run --seeds 1,2,3 for both)")
    return frame, notes

"""Paired significance tests between two configurations evaluated on the same split.

- NLVR2 accuracy: McNemar's exact test. Only examples where the two models disagree (one right, one wrong)
  carry information; under the null each such example is equally likely to favour either model, so the
  count favouring A is Binomial(discordant, 1/2) and the two-sided p-value is scipy's exact binomial test.
  With several seeds the seeds are paired (same seed number, else in sorted order) and the largest p-value
  is reported: a difference counts only if it holds for every seed pair (conservative).
- VQA soft accuracy and retrieval recall@K: a paired bootstrap of the difference in the metric. Examples
  (retrieval: whole images with their captions, so text-to-image recall resamples the queries that belong
  together) are resampled with replacement, the same resample for both models; the 95% percentile interval
  of the difference excludes 0 = significant. Per-example values are first averaged over each configuration's
  seeds. The generator is seeded, so a report is reproducible.
No correction for multiple comparisons is applied; the footnote says so.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.stats import binomtest

from harness.reports.aggregate import task_class
from harness.reports.collect import RunInfo

ALPHA = 0.05
DEFAULT_RESAMPLES = 10_000
BOOTSTRAP_SEED = 0
_KS = (1, 5, 10)


@dataclass(frozen=True)
class McNemar:
    a_only: int
    """examples A gets right and B wrong"""
    b_only: int
    p_value: float


def mcnemar_exact(a_correct: np.ndarray, b_correct: np.ndarray) -> McNemar:
    a = np.asarray(a_correct, dtype=bool)
    b = np.asarray(b_correct, dtype=bool)
    if a.shape != b.shape:
        raise ValueError(f"paired arrays differ in shape: {a.shape} vs {b.shape}")
    a_only = int(np.sum(a & ~b))
    b_only = int(np.sum(~a & b))
    discordant = a_only + b_only
    p = 1.0 if discordant == 0 else float(binomtest(a_only, discordant, 0.5, alternative="two-sided").pvalue)
    return McNemar(a_only, b_only, p)


def _resample_indices(n: int, resamples: int, seed: int):
    """Yield blocks of bootstrap index rows, bounded in memory whatever the split size."""
    rng = np.random.default_rng(seed)
    block = max(1, 2_000_000 // max(n, 1))
    done = 0
    while done < resamples:
        size = min(block, resamples - done)
        yield rng.integers(0, n, size=(size, n))
        done += size


def bootstrap_ratio_diff(num_a: np.ndarray, num_b: np.ndarray, den: np.ndarray, resamples: int = DEFAULT_RESAMPLES,
                         seed: int = BOOTSTRAP_SEED) -> tuple[float, float, float]:
    """Difference A - B of 100 * sum(num) / sum(den) over units, and its 95% paired percentile interval.

    With ``den`` all ones this is the difference of mean per-example scores (VQA soft accuracy, TR recall)."""
    num_a, num_b, den = (np.asarray(x, dtype=np.float64) for x in (num_a, num_b, den))
    diff_units = num_a - num_b
    observed = 100.0 * diff_units.sum() / den.sum()
    stats = np.concatenate([100.0 * diff_units[idx].sum(axis=1) / den[idx].sum(axis=1)
                            for idx in _resample_indices(len(den), resamples, seed)])
    low, high = np.percentile(stats, [100 * ALPHA / 2, 100 * (1 - ALPHA / 2)])
    return float(observed), float(low), float(high)


def retrieval_units(per_example: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per image: TR hits at K (images x 3), IR hits at K summed over the image's captions (images x 3), and
    the image's caption count. Ranks are 0-based, so a hit at K is rank < K."""
    tr = np.asarray(per_example["tr_best_rank"])
    ir = np.asarray(per_example["ir_rank"])
    counts = per_example.get("captions_per_image")
    if counts is None:
        if len(ir) % len(tr):
            raise ValueError("captions per image unknown (older run) and captions do not divide evenly by images")
        counts = [len(ir) // len(tr)] * len(tr)
    counts = np.asarray(counts)
    owner = np.repeat(np.arange(len(tr)), counts)
    tr_hits = np.stack([(tr < k).astype(float) for k in _KS], axis=1)
    ir_hits = np.stack([np.bincount(owner, weights=(ir < k).astype(float), minlength=len(tr)) for k in _KS], axis=1)
    return tr_hits, ir_hits, counts.astype(float)


def bootstrap_retrieval(a: tuple, b: tuple, resamples: int = DEFAULT_RESAMPLES,
                        seed: int = BOOTSTRAP_SEED) -> dict[str, tuple[float, float, float]]:
    """All seven recall metrics' A - B differences with 95% intervals from one set of image resamples."""
    tr_a, ir_a, counts = a
    tr_b, ir_b, counts_b = b
    if not np.array_equal(counts, counts_b):
        raise ValueError("the runs' images have different caption counts")
    n = len(counts)
    keys = [f"tr_r{k}" for k in _KS] + [f"ir_r{k}" for k in _KS]

    def metrics(tr: np.ndarray, ir: np.ndarray, idx: np.ndarray | None) -> np.ndarray:
        if idx is None:
            idx = np.arange(n)[None, :]
        tr_r = 100.0 * tr[idx].sum(axis=1) / idx.shape[1]                   # resamples x 3
        ir_r = 100.0 * ir[idx].sum(axis=1) / counts[idx].sum(axis=1)[:, None]
        both = np.concatenate([tr_r, ir_r], axis=1)
        return np.concatenate([both, both.sum(axis=1, keepdims=True)], axis=1)  # + rsum

    observed = (metrics(tr_a, ir_a, None) - metrics(tr_b, ir_b, None))[0]
    stats = np.concatenate([metrics(tr_a, ir_a, idx) - metrics(tr_b, ir_b, idx)
                            for idx in _resample_indices(n, resamples, seed)])
    low, high = np.percentile(stats, [100 * ALPHA / 2, 100 * (1 - ALPHA / 2)], axis=0)
    return {key: (float(observed[i]), float(low[i]), float(high[i])) for i, key in enumerate([*keys, "rsum"])}


def _seed_pairs(a: list[RunInfo], b: list[RunInfo]) -> list[tuple[RunInfo, RunInfo]]:
    by_seed_b = {r.seed: r for r in b}
    common = [(r, by_seed_b[r.seed]) for r in sorted(a, key=lambda r: r.seed) if r.seed in by_seed_b]
    return common or list(zip(sorted(a, key=lambda r: r.seed), sorted(b, key=lambda r: r.seed)))


def _aligned(runs: list[RunInfo], split: str) -> list[dict] | None:
    """Per-example files of the runs, or None if any is missing or their example ids disagree."""
    data = [r.per_example(split) for r in runs]
    if any(d is None for d in data):
        return None
    ids = [d.get("ids") for d in data]
    if any(i != ids[0] for i in ids):
        return None
    return data


def compare_pair(task: str, a: list[RunInfo], b: list[RunInfo], split: str,
                 resamples: int = DEFAULT_RESAMPLES) -> tuple[list[dict], str | None]:
    """Test every metric of ``task`` that has a test between configurations A and B (their runs = seeds).

    Returns rows ``{metric, diff, ci_low, ci_high, p_value, test, significant, detail}`` and a note when the
    per-example data is missing or does not line up."""
    data = _aligned([*a, *b], split)
    if data is None:
        return [], "per-example results missing or on different examples"
    da, db = data[: len(a)], data[len(a):]
    rows: list[dict] = []
    test = task_class(task).significance
    if test == "mcnemar":
        tests = []
        for ra, rb in _seed_pairs(a, b):
            pa, pb = ra.per_example(split), rb.per_example(split)
            tests.append(mcnemar_exact(np.asarray(pa["values"]), np.asarray(pb["values"])))
        worst = max(tests, key=lambda t: t.p_value)
        n = len(da[0]["values"])
        diff = float(np.mean([100.0 * (t.a_only - t.b_only) / n for t in tests]))
        rows.append({"metric": "accuracy", "diff": diff, "ci_low": None, "ci_high": None, "p_value": worst.p_value,
                     "test": "McNemar exact", "significant": worst.p_value < ALPHA,
                     "detail": f"discordant {worst.a_only}/{worst.b_only}, {len(tests)} seed pair(s), max p"})
    elif test == "bootstrap":
        va = np.mean([np.asarray(d["values"], dtype=float) for d in da], axis=0)
        vb = np.mean([np.asarray(d["values"], dtype=float) for d in db], axis=0)
        groups = {task_class(task).primary().name: np.ones(len(va), dtype=bool)}
        types = da[0].get("answer_types")
        if types is not None and all(d.get("answer_types") == types for d in data):
            types = np.asarray([str(t) for t in types])
            groups.update({str(t): types == t for t in sorted(set(types.tolist()))})
        for metric, mask in groups.items():
            if not mask.any():
                continue
            diff, low, high = bootstrap_ratio_diff(va[mask], vb[mask], np.ones(int(mask.sum())), resamples)
            rows.append(_interval_row(metric, diff, low, high, "paired bootstrap"))
    elif test == "bootstrap_images":
        try:
            units_a = [retrieval_units(d) for d in da]
            units_b = [retrieval_units(d) for d in db]
        except (KeyError, ValueError) as exc:
            return [], f"retrieval per-example ranks unusable ({exc})"

        def mean_units(units: list[tuple]) -> tuple:
            return (np.mean([u[0] for u in units], axis=0), np.mean([u[1] for u in units], axis=0), units[0][2])

        for metric, (diff, low, high) in bootstrap_retrieval(mean_units(units_a), mean_units(units_b),
                                                             resamples).items():
            rows.append(_interval_row(metric, diff, low, high, "paired bootstrap (images)"))
    else:
        return [], f"no paired test named {test!r} (task {task!r})"
    return rows, None


def _interval_row(metric: str, diff: float, low: float, high: float, test: str) -> dict:
    return {"metric": metric, "diff": diff, "ci_low": low, "ci_high": high, "p_value": None, "test": test,
            "significant": bool(low > 0 or high < 0), "detail": f"95% CI [{low:+.2f}, {high:+.2f}]"}


def pairwise(runs: list[RunInfo], split: str, labels: list[str],
             resamples: int = DEFAULT_RESAMPLES) -> tuple[pd.DataFrame, list[str]]:
    """Every pair of configurations, per task, on identical data (same split fingerprint)."""
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
    columns = ["task", "a", "b", "metric", "diff", "ci_low", "ci_high", "p_value", "test", "significant", "detail"]
    return pd.DataFrame(rows, columns=columns), notes

"""How often does `compare`'s test call two configurations from one distribution different? And the alternative
it replaced or did not choose? A simulation, printed as rates (docs/significance.md quotes it).

Each repetition: 150 images x 3 VQA-like questions with a shared difficulty per image, two configurations of
``--seeds`` seeds each whose seeds shift every score by N(effect, seed std); per-question noise on top. Rates of
p < 0.05 (the t test of harness/reports/significance.py) and of a 95% interval excluding 0 (a two-level bootstrap
that resamples seeds and images).

    python benchmarks/significance_calibration.py [--reps 200] [--effect 0.0] [--seed-std 0.03] [--seeds 3]
"""

from __future__ import annotations

import argparse

import numpy as np

from harness.reports.significance import ALPHA, Units, difference


def _run(rng: np.random.Generator, difficulty: np.ndarray, shift: float, per: int = 3) -> Units:
    values = np.clip(difficulty[:, None] + shift + rng.normal(0, 0.15, (len(difficulty), per)), 0, 1)
    return Units([str(i) for i in range(len(difficulty))],
                 {"overall": [(values.sum(axis=1), np.full(len(difficulty), float(per)))]})


def two_level_bootstrap_rejects(a: list[Units], b: list[Units], resamples: int, rng: np.random.Generator) -> bool:
    clusters = len(a[0].clusters)
    stats = []
    for _ in range(resamples):
        weights = np.bincount(rng.integers(0, clusters, clusters), minlength=clusters).astype(float)[None, :]
        pick_a, pick_b = rng.integers(0, len(a), len(a)), rng.integers(0, len(b), len(b))
        stats.append(np.mean([a[i].resampled("overall", weights)[0] for i in pick_a])
                     - np.mean([b[i].resampled("overall", weights)[0] for i in pick_b]))
    low, high = np.percentile(stats, [100 * ALPHA / 2, 100 * (1 - ALPHA / 2)])
    return bool(low > 0 or high < 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=200)
    parser.add_argument("--effect", type=float, default=0.0, help="true A - B shift (0.03 = 3 points)")
    parser.add_argument("--seed-std", type=float, default=0.03)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--resamples", type=int, default=400)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    t_test = bootstrap = 0
    for rep in range(args.reps):
        difficulty = rng.uniform(0.2, 0.9, 150)
        a = [_run(rng, difficulty, rng.normal(args.effect, args.seed_std)) for _ in range(args.seeds)]
        b = [_run(rng, difficulty, rng.normal(0.0, args.seed_std)) for _ in range(args.seeds)]
        t_test += difference(a, b, "overall", resamples=args.resamples, seed=rep).p_value < ALPHA
        bootstrap += two_level_bootstrap_rejects(a, b, args.resamples, np.random.default_rng(rep))
    print(f"{args.reps} repetitions, effect {100 * args.effect:g} points, seed std {100 * args.seed_std:g} points, "
          f"{args.seeds} seeds: called different by the seed + cluster t test {100 * t_test / args.reps:.1f}%, "
          f"by a two-level (seeds x images) bootstrap {100 * bootstrap / args.reps:.1f}%")


if __name__ == "__main__":
    main()

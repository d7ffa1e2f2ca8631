"""The seed- and cluster-aware significance test of `compare` (harness/reports/significance.py), on constructed
runs whose truth is known. Statistical, but deterministic: every generator is seeded."""

from __future__ import annotations

import numpy as np
import pytest

from harness.metrics.nlvr2 import nlvr2_scores
from harness.metrics.retrieval import retrieval_recall
from harness.reports.significance import (
    ALPHA,
    Units,
    difference,
    holm,
    nlvr2_units,
    retrieval_units,
    vqa_units,
)


def _run(rng: np.random.Generator, difficulty: np.ndarray, shift: float, per: int = 3) -> Units:
    """One seed's VQA-like run: ``per`` questions on each image, each scored in [0, 1] around the image's difficulty
    plus this seed's shift (training randomness) plus noise."""
    values = np.clip(difficulty[:, None] + shift + rng.normal(0, 0.15, (len(difficulty), per)), 0, 1)
    return Units([str(i) for i in range(len(difficulty))],
                 {"overall": [(values.sum(axis=1), np.full(len(difficulty), float(per)))]})


def _pairs(seed: int, reps: int, effect: float, sigma_seed: float = 0.03, seeds: int = 3, clusters: int = 150):
    rng = np.random.default_rng(seed)
    for rep in range(reps):
        difficulty = rng.uniform(0.2, 0.9, clusters)
        a = [_run(rng, difficulty, rng.normal(effect, sigma_seed)) for _ in range(seeds)]
        b = [_run(rng, difficulty, rng.normal(0.0, sigma_seed)) for _ in range(seeds)]
        yield rep, a, b


def test_same_distribution_with_large_seed_variance_is_rarely_called_different() -> None:
    """Two configurations from one distribution, seed std 3 points (about the examples' own spread): over 200
    repetitions of 3 seeds each, p < 0.05 about 5% of the time (measured 4.5%), never far above it. The old
    seed-averaged bootstrap, and a two-level bootstrap that resamples seeds too, call such pairs different far more
    often (benchmarks/significance_calibration.py)."""
    rejected = sum(difference(a, b, "overall", resamples=400, seed=rep).p_value < ALPHA
                   for rep, a, b in _pairs(seed=0, reps=200, effect=0.0))
    assert rejected / 200 <= 0.08


def test_a_difference_that_holds_on_every_seed_and_cluster_is_found() -> None:
    rng = np.random.default_rng(3)
    difficulty = rng.uniform(0.2, 0.8, 100)
    b = [_run(rng, difficulty, rng.normal(0.0, 0.01)) for _ in range(3)]
    a = [Units(u.clusters, {"overall": [(u.metrics["overall"][0][0] + 0.3, u.metrics["overall"][0][1])]}) for u in b]
    d = difference(a, b, "overall", resamples=1000)
    assert d.diff == pytest.approx(10.0)  # +0.3 of 3 questions per image = 10 points
    assert d.p_value < 0.05 and 0 < d.ci_low < d.diff < d.ci_high
    assert d.se_seeds is not None


def test_clustering_by_image_widens_the_interval_when_an_images_questions_agree() -> None:
    """Questions about one image all right or all wrong together: resampling them as independent questions would
    understate the variance; by image it does not."""
    rng = np.random.default_rng(5)
    images = 60
    right_a = rng.random(images) < 0.7
    right_b = rng.random(images) < 0.6
    per_image = 5

    def per_example(right: np.ndarray, clustered: bool) -> dict:
        values = np.repeat(right.astype(float), per_image).tolist()
        out = {"kind": "vqa_accuracy", "ids": [str(i) for i in range(len(values))], "values": values}
        if clustered:
            out["clusters"] = [str(i // per_image) for i in range(len(values))]
        return out

    widths = {}
    for clustered in (True, False):
        d = difference([vqa_units(per_example(right_a, clustered))], [vqa_units(per_example(right_b, clustered))],
                       "overall", resamples=2000)
        widths[clustered] = d.ci_high - d.ci_low
    assert widths[True] > 2.0 * widths[False]  # about sqrt(5) wider


def test_one_seed_covers_example_variance_only() -> None:
    rng = np.random.default_rng(7)
    difficulty = rng.uniform(0.2, 0.8, 50)
    d = difference([_run(rng, difficulty, 0.0)], [_run(rng, difficulty, 0.0), _run(rng, difficulty, 0.0)],
                   "overall", resamples=500)
    assert d.se_seeds is None and d.se_examples > 0


def test_the_test_is_reproducible() -> None:
    _, a, b = next(_pairs(seed=1, reps=1, effect=0.02))
    assert difference(a, b, "overall", resamples=300) == difference(a, b, "overall", resamples=300)


def test_holm_matches_a_hand_computed_adjustment() -> None:
    # sorted p: 0.01, 0.02, 0.04 -> 3 * 0.01, 2 * 0.02, max(0.04, 1 * 0.04) = 0.03, 0.04, 0.04
    assert holm([0.04, 0.01, 0.02]) == pytest.approx([0.04, 0.03, 0.04])
    assert holm([0.9, 0.5]) == pytest.approx([1.0, 1.0])


def test_nlvr2_units_group_by_sentence_and_reproduce_the_official_metrics() -> None:
    ids = ["test1-0-0-0", "test1-0-1-0", "test1-0-2-0", "test1-1-0-1", "test1-1-1-1", "test1-2-0-0"]
    correct = [True, True, False, True, True, True]
    units = nlvr2_units({"kind": "correct", "ids": ids, "values": correct})
    assert units.clusters == ["test1-0--0", "test1-1--1", "test1-2--0"]
    labels = {i: "True" for i in ids}
    official = nlvr2_scores({i: str(c) for i, c in zip(ids, correct)}, labels)
    assert units.value("accuracy") == pytest.approx(official["accuracy"])
    assert units.value("consistency") == pytest.approx(official["consistency"])


def test_retrieval_units_group_captions_by_image_and_reproduce_recall() -> None:
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(6, 12))
    per_image = [2] * 6
    from harness.metrics.retrieval import retrieval_per_query_ranks

    ranks = retrieval_per_query_ranks(scores, per_image)
    units = retrieval_units({"tr_best_rank": ranks["tr"].tolist(), "ir_rank": ranks["ir"].tolist(),
                             "captions_per_image": per_image})
    official = retrieval_recall(scores, per_image)
    for key in ("tr_r1", "tr_r5", "ir_r1", "ir_r5", "ir_r10", "rsum"):
        assert units.value(key) == pytest.approx(official[key]), key
    assert len(units.clusters) == 6


def test_a_rare_answer_type_absent_from_some_resamples_still_gets_a_finite_interval() -> None:
    rng = np.random.default_rng(11)
    n = 40
    types = ["yes/no"] * (n - 1) + ["other"]

    def per_example(values: np.ndarray) -> dict:
        return {"kind": "vqa_accuracy", "ids": [str(i) for i in range(n)], "values": values.tolist(),
                "answer_types": types, "clusters": [str(i) for i in range(n)]}

    a = vqa_units(per_example(rng.random(n)))
    b = vqa_units(per_example(rng.random(n)))
    d = difference([a], [b], "other", resamples=500)  # its one question is missing from about a third of them
    assert all(np.isfinite([d.diff, d.ci_low, d.ci_high, d.p_value]))

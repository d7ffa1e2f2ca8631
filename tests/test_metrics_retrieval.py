"""Retrieval recall@K: hand-made matrices, folds, ties, and the argsort reference on random scores."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from harness.errors import DataError, PredictionsError
from harness.metrics.retrieval import (
    captions_per_image_from_karpathy,
    retrieval_per_query_ranks,
    retrieval_recall,
    retrieval_tie_count,
)


def argsort_reference(scores: np.ndarray, counts: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """The usual VSE++/SCAN i2t/t2i loops (argsort descending, position of the gold item), generalised to
    any number of captions per image. Agrees with the counting rule whenever there are no ties."""
    owner = np.repeat(np.arange(len(counts)), counts)
    tr = np.zeros(len(counts), dtype=int)
    for image in range(len(counts)):
        inds = np.argsort(scores[image])[::-1]
        tr[image] = min(np.where(inds == c)[0][0] for c in np.flatnonzero(owner == image))
    ir = np.zeros(len(owner), dtype=int)
    for caption in range(len(owner)):
        inds = np.argsort(scores[:, caption])[::-1]
        ir[caption] = np.where(inds == owner[caption])[0][0]
    return tr, ir


# Three images with 2, 1 and 2 captions: columns c0 c1 | c2 | c3 c4.
HAND = np.array(
    [
        [0.9, 0.1, 0.8, 0.2, 0.3],  # image 0: best own caption 0.9, nothing higher -> TR rank 0
        [0.5, 0.6, 0.4, 0.7, 0.1],  # image 1: own 0.4, three higher -> TR rank 3
        [0.3, 0.2, 0.1, 0.05, 0.25],  # image 2: best own 0.25, one higher (0.3) -> TR rank 1
    ]
)
HAND_COUNTS = [2, 1, 2]


def test_hand_matrix_ranks() -> None:
    ranks = retrieval_per_query_ranks(HAND, HAND_COUNTS)
    assert ranks.tr.tolist() == [0, 3, 1]
    # IR, column by column: c0 gold 0.9 of (0.9, 0.5, 0.3) -> 0; c1 gold 0.1 of (0.1, 0.6, 0.2) -> 2;
    # c2 gold 0.4 of (0.8, 0.4, 0.1) -> 1; c3 gold 0.05 of (0.2, 0.7, 0.05) -> 2; c4 gold 0.25 -> 1.
    assert ranks.ir.tolist() == [0, 2, 1, 2, 1]
    tr, ir = argsort_reference(HAND, HAND_COUNTS)
    assert tr.tolist() == ranks.tr.tolist() and ir.tolist() == ranks.ir.tolist()
    # Attribute, key and tuple access all work.
    assert ranks["tr"] is ranks.tr and ranks[1] is ranks.ir
    unpacked_tr, unpacked_ir = ranks
    assert unpacked_tr is ranks.tr and unpacked_ir is ranks.ir
    with pytest.raises(KeyError):
        ranks["rsum"]


def test_hand_matrix_recall() -> None:
    result = retrieval_recall(HAND, HAND_COUNTS, ks=(1, 2, 3))
    assert result == pytest.approx(
        {
            "tr_r1": 100 / 3,
            "tr_r2": 200 / 3,
            "tr_r3": 200 / 3,
            "ir_r1": 20.0,
            "ir_r2": 60.0,
            "ir_r3": 100.0,
            "rsum": 500 / 3 + 180.0,
        }
    )
    default = retrieval_recall(HAND, HAND_COUNTS)
    assert list(default) == ["tr_r1", "tr_r5", "tr_r10", "ir_r1", "ir_r5", "ir_r10", "rsum"]
    assert default["tr_r5"] == default["ir_r10"] == 100.0
    assert default["rsum"] == pytest.approx(sum(v for k, v in default.items() if k != "rsum"))


def test_perfect_scores() -> None:
    counts = [5] * 4
    scores = np.kron(np.eye(4), np.ones((1, 5)))  # 1 on own captions, 0 elsewhere
    result = retrieval_recall(scores, counts)
    assert result["rsum"] == 600.0


def test_folds_score_each_fold_on_its_own() -> None:
    big = 9.0  # cross-fold entries would dominate if they were not cut away
    scores = np.array(
        [
            [1, 0, big, big],
            [0, 1, big, big],
            [big, big, 0, 1],  # image 2: own caption (col 2) scores 0 < 1 -> rank 1 inside the fold
            [big, big, 1, 0],
        ],
        dtype=np.float32,
    )
    counts = [1, 1, 1, 1]
    two = retrieval_recall(scores, counts, folds=2)
    assert two["tr_r1"] == 50.0 and two["ir_r1"] == 50.0  # fold 1: 100, fold 2: 0
    assert two["tr_r5"] == two["ir_r5"] == 100.0
    one = retrieval_recall(scores, counts, folds=1)
    assert one["tr_r1"] == 0.0  # globally the big cross-fold entries win
    ranks = retrieval_per_query_ranks(scores, counts, folds=2)
    assert ranks.tr.tolist() == [0, 0, 1, 1] and ranks.ir.tolist() == [0, 0, 1, 1]


def test_folds_with_uneven_caption_counts_average_fold_metrics() -> None:
    rng = np.random.default_rng(3)
    counts = [1, 3, 2, 2, 5, 1]
    scores = rng.normal(size=(6, sum(counts)))
    three = retrieval_recall(scores, counts, ks=(1, 2), folds=3)
    offsets = np.cumsum([0, *counts])
    per_fold = [
        retrieval_recall(
            scores[2 * k : 2 * k + 2, offsets[2 * k] : offsets[2 * k + 2]],
            counts[2 * k : 2 * k + 2],
            ks=(1, 2),
        )
        for k in range(3)
    ]
    for key in ("tr_r1", "tr_r2", "ir_r1", "ir_r2"):
        assert three[key] == pytest.approx(np.mean([fold[key] for fold in per_fold]))
    assert three["rsum"] == pytest.approx(sum(three[k] for k in ("tr_r1", "tr_r2", "ir_r1", "ir_r2")))


def test_folds_must_divide_images() -> None:
    with pytest.raises(PredictionsError, match="cannot split 3 images into 2 equal folds"):
        retrieval_recall(HAND, HAND_COUNTS, folds=2)
    with pytest.raises(PredictionsError, match="positive integer"):
        retrieval_recall(HAND, HAND_COUNTS, folds=0)


def test_ties_rules() -> None:
    counts = [2, 2, 2]
    constant = np.zeros((3, 6))
    optimistic = retrieval_recall(constant, counts, ks=(1, 3, 5), ties="optimistic")
    assert all(value == 100.0 for key, value in optimistic.items() if key != "rsum")
    pessimistic = retrieval_recall(constant, counts, ks=(1, 3, 5))  # the default: no credit for ties
    # TR: 4 other captions tie -> rank 4; IR: 2 other images tie -> rank 2.
    assert pessimistic == {
        "tr_r1": 0.0,
        "tr_r3": 0.0,
        "tr_r5": 100.0,
        "ir_r1": 0.0,
        "ir_r3": 100.0,
        "ir_r5": 100.0,
        "rsum": 300.0,
    }
    assert retrieval_tie_count(constant, counts) == {"tr": 3, "ir": 6}


def test_ties_between_own_captions_do_not_count_against_the_image() -> None:
    # Image 0's two captions tie at the top: under any tie-break one of them is first -> rank 0 both ways.
    scores = np.array([[1.0, 1.0, 0.5], [0.0, 0.0, 1.0]])
    for ties in ("optimistic", "pessimistic"):
        assert retrieval_per_query_ranks(scores, [2, 1], ties=ties).tr.tolist() == [0, 0]
    # A tie with a foreign caption: optimistic rank 0, pessimistic rank 1.
    scores = np.array([[1.0, 0.2, 1.0], [0.0, 0.0, 1.0]])
    assert retrieval_per_query_ranks(scores, [2, 1], ties="optimistic").tr.tolist() == [0, 0]
    assert retrieval_per_query_ranks(scores, [2, 1]).tr.tolist() == [1, 0]
    # Column 2 (image 1's caption) also ties image 0 with image 1.
    assert retrieval_tie_count(scores, [2, 1]) == {"tr": 1, "ir": 1}


@pytest.mark.parametrize("seed", range(4))
def test_matches_argsort_reference_without_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    counts = rng.integers(1, 6, size=rng.integers(2, 12)).tolist()
    scores = rng.normal(size=(len(counts), sum(counts))).astype(np.float32)
    tr, ir = argsort_reference(scores, counts)
    for ties in ("optimistic", "pessimistic"):
        ranks = retrieval_per_query_ranks(scores, counts, ties=ties)
        assert ranks.tr.tolist() == tr.tolist() and ranks.ir.tolist() == ir.tolist()
    result = retrieval_recall(scores, counts)
    for k in (1, 5, 10):
        assert result[f"tr_r{k}"] == pytest.approx(100 * np.mean(tr < k))
        assert result[f"ir_r{k}"] == pytest.approx(100 * np.mean(ir < k))


def test_more_images_than_one_block() -> None:
    rng = np.random.default_rng(7)
    counts = rng.integers(1, 3, size=300).tolist()  # > 256 rows: exercises the row blocking
    scores = rng.normal(size=(300, sum(counts)))
    scores[np.repeat(np.arange(300), counts), np.arange(sum(counts))] += 2.0
    tr, ir = argsort_reference(scores, counts)
    ranks = retrieval_per_query_ranks(scores, counts)
    assert ranks.tr.tolist() == tr.tolist() and ranks.ir.tolist() == ir.tolist()


def test_integer_scores() -> None:
    scores = np.array([[3, 1], [2, 4]], dtype=np.int64)
    assert retrieval_recall(scores, [1, 1], ks=(1,)) == {"tr_r1": 100.0, "ir_r1": 100.0, "rsum": 200.0}


@pytest.mark.parametrize(
    ("scores", "counts", "error", "message"),
    [
        (np.zeros((3, 4)), HAND_COUNTS, PredictionsError, r"shape \(3, 4\).*expected shape \(3, 5\)"),
        (np.zeros((2, 5)), HAND_COUNTS, PredictionsError, "3 images and 5 captions"),
        (np.zeros(5), HAND_COUNTS, PredictionsError, "2-D"),
        (np.zeros((3, 5), dtype=bool), HAND_COUNTS, PredictionsError, "real-valued"),
        (
            np.array([[0.1, np.nan], [0.0, 1.0]]),
            [1, 1],
            PredictionsError,
            r"1 non-finite.*image 0, caption 1",
        ),
        (np.array([[0.1, np.inf], [0.0, 1.0]]), [1, 1], PredictionsError, "non-finite"),
        (np.zeros((2, 2)), [2, 0], DataError, "at least one"),
        (np.zeros((0, 0)), [], DataError, "no images"),
        ([[0.0]], [1], PredictionsError, "numpy array"),
    ],
)
def test_bad_inputs(scores, counts, error, message) -> None:
    with pytest.raises(error, match=message):
        retrieval_recall(scores, counts)


def test_bad_ks_and_ties() -> None:
    with pytest.raises(ValueError, match="ks"):
        retrieval_recall(HAND, HAND_COUNTS, ks=(0, 1))
    with pytest.raises(ValueError, match="ties"):
        retrieval_recall(HAND, HAND_COUNTS, ties="random")  # type: ignore[arg-type]


def test_captions_per_image_from_karpathy(tmp_path: Path) -> None:
    data = {
        "dataset": "coco",
        "images": [
            {"filename": "a.jpg", "split": "train", "sentences": [{"raw": "x"}] * 5},
            {"filename": "b.jpg", "split": "test", "sentences": [{"raw": "x"}] * 5},
            {"filename": "c.jpg", "split": "restval", "sentences": [{"raw": "x"}] * 6},
            {"filename": "d.jpg", "split": "test", "sentences": [{"raw": "x"}] * 7},
        ],
    }
    path = tmp_path / "dataset_coco.json"
    path.write_text(json.dumps(data))
    assert captions_per_image_from_karpathy(path, "test") == [5, 7]
    assert captions_per_image_from_karpathy(path, "train") == [5]  # restval is its own split here
    with pytest.raises(DataError, match=r"no images in split 'val' \(splits present: restval, test, train\)"):
        captions_per_image_from_karpathy(path, "val")
    data["images"][3]["sentences"] = []
    path.write_text(json.dumps(data))
    with pytest.raises(DataError, match=r"images\[3\] \(d\.jpg\): 'sentences' must be a non-empty list"):
        captions_per_image_from_karpathy(path, "test")
    path.write_text(json.dumps([1, 2]))
    with pytest.raises(DataError, match='"images" list'):
        captions_per_image_from_karpathy(path, "test")
    with pytest.raises(DataError, match="file not found"):
        captions_per_image_from_karpathy(tmp_path / "missing.json", "test")

"""Re-ranking's candidate selection and score merge (pure functions)."""

from __future__ import annotations

import numpy as np
import pytest

from harness.errors import VlbenchError
from harness.metrics.retrieval import retrieval_recall
from harness.tasks.rerank import Rerank, candidate_mask, merge_scores


def test_candidates_are_each_rows_and_each_columns_top_k() -> None:
    first = np.random.default_rng(0).normal(size=(6, 30))
    mask = candidate_mask(first, 3)
    for row in range(6):
        assert mask[row, np.argsort(-first[row])[:3]].all()
    for column in range(30):
        assert mask[np.argsort(-first[:, column])[:3], column].all()
    assert mask.sum() < mask.size


def test_merge_keeps_rescored_candidates_above_the_rest_in_first_stage_order() -> None:
    rng = np.random.default_rng(1)
    first, rescored = rng.normal(size=(5, 25)), rng.normal(size=(5, 25)) * 10
    mask = candidate_mask(first, 2)
    merged = merge_scores(first, mask, rescored)
    assert (merged[mask] == rescored[mask].astype(np.float32)).all()
    assert merged[~mask].max() < merged[mask].min()
    rest = np.flatnonzero(~mask.ravel())
    order_first = np.argsort(first.ravel()[rest], kind="stable")
    assert (np.diff(merged.ravel()[rest][order_first]) >= 0).all()


def test_k_covering_everything_is_full_scoring() -> None:
    rng = np.random.default_rng(2)
    first, rescored = rng.normal(size=(4, 20)), rng.normal(size=(4, 20)).astype(np.float32)
    mask = candidate_mask(first, 20)
    assert mask.all()
    merged = merge_scores(first, mask, rescored)
    assert retrieval_recall(merged, [5] * 4) == retrieval_recall(rescored, [5] * 4)


def test_first_stage_file_is_checked(tmp_path) -> None:
    np.save(tmp_path / "nan.npy", np.array([[np.nan, 1.0]]))
    with pytest.raises(VlbenchError, match="NaN"):
        Rerank.from_file(tmp_path / "nan.npy", 2)
    (tmp_path / "junk.npy").write_bytes(b"not numpy")
    with pytest.raises(VlbenchError, match="not a readable"):
        Rerank.from_file(tmp_path / "junk.npy", 2)

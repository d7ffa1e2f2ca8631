"""Image-text retrieval recall@K (the Karpathy-split protocol of VSE++/SCAN/UNITER/Pixel-BERT), as pure
functions over a score matrix.

``scores[i, j]`` is the model's similarity of image ``i`` and caption ``j``. Rows follow the split's images
in file order; columns follow their captions image by image (image 0's captions, then image 1's, ...), so
caption ``j`` belongs to the image whose cumulative caption count first exceeds ``j``.

- TR (text retrieval, image -> text): for each image rank all captions; hit@K when the best-ranked of its
  own captions has rank < K.
- IR (image retrieval, text -> image): for each caption rank all images; hit@K when its image has rank < K.
- Recall@K is the percentage of hits; ``rsum`` is the sum of the six recalls.
- ``folds=K`` splits the images into K contiguous equal folds (with their captions), scores each fold's
  sub-matrix on its own and averages each metric over folds (COCO 1K = 5 folds of the 5K test split).

Ties. The reference implementations take ``inds = np.argsort(scores)[::-1]`` and the position
``np.where(inds == gold)``; with tied scores that position depends on the sort algorithm, so it is not
reproducible. Here a rank is a *count*, which is deterministic:

- ``ties="pessimistic"`` (default): rank = number of non-gold items with a score >= the gold score, i.e.
  every tie is broken against the gold item. A model that cannot tell items apart (the text-only control
  scores every image the same for a caption) gets no credit for it.
- ``ties="optimistic"``: rank = number of items with a strictly greater score than the gold item (for TR,
  than the best-scored gold caption). Tied items do not push the gold item down.

Both equal the argsort convention whenever the gold item is not tied with anything, which for float scores
from a real model is almost always. A constant score matrix gets 100% recall with the optimistic rule and ~0%
with the pessimistic one; :func:`retrieval_tie_count` says how many queries are affected.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal, NamedTuple

import numpy as np

from harness.errors import DataError, PredictionsError
from harness.fileio import read_json

__all__ = [
    "RetrievalRanks",
    "captions_per_image_from_karpathy",
    "retrieval_per_query_ranks",
    "retrieval_recall",
    "retrieval_tie_count",
]

TieRule = Literal["optimistic", "pessimistic"]
_TIE_RULES = ("optimistic", "pessimistic")
# Rows per block when comparing against the gold scores: bounds the temporary boolean matrix.
_BLOCK_ROWS = 256


class RetrievalRanks(NamedTuple):
    """0-based ranks: ``tr[i]`` the best rank of image i's captions, ``ir[j]`` the rank of caption j's image.

    Read as ``ranks.tr``, ``ranks["tr"]`` or ``tr, ir = ranks``.
    """

    tr: np.ndarray
    ir: np.ndarray

    def __getitem__(self, key):  # type: ignore[override]
        # Also allow mapping-style access by field name, as callers treating the result as a dict do.
        if isinstance(key, str):
            if key not in self._fields:
                raise KeyError(key)
            return getattr(self, key)
        return tuple.__getitem__(self, key)


def _check_inputs(
    scores: np.ndarray, captions_per_image: Sequence[int], folds: int
) -> tuple[np.ndarray, np.ndarray]:
    """Validate shapes and values; return (scores, caption -> image index)."""
    if not isinstance(scores, np.ndarray):
        raise PredictionsError(f"retrieval scores must be a numpy array, got {type(scores).__name__}")
    if scores.dtype == np.bool_ or not (
        np.issubdtype(scores.dtype, np.floating) or np.issubdtype(scores.dtype, np.integer)
    ):
        raise PredictionsError(
            f"retrieval scores must be a real-valued numeric matrix, got dtype {scores.dtype}"
        )
    if scores.ndim != 2:
        raise PredictionsError(
            f"retrieval scores must be a 2-D matrix [n_images, n_captions], got shape {scores.shape}"
        )
    counts = list(captions_per_image)
    if not counts:
        raise DataError("retrieval: no images (captions_per_image is empty)")
    for index, count in enumerate(counts):
        if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 1:
            raise DataError(
                f"retrieval: image {index} has {count!r} captions; every image needs at least one"
            )
    n_images, n_captions = len(counts), int(sum(counts))
    if scores.shape != (n_images, n_captions):
        raise PredictionsError(
            f"retrieval scores have shape {scores.shape} but the split has {n_images} images and {n_captions} "
            f"captions (expected shape ({n_images}, {n_captions}))"
        )
    if not isinstance(folds, (int, np.integer)) or isinstance(folds, bool) or folds < 1:
        raise PredictionsError(f"folds must be a positive integer, got {folds!r}")
    if n_images % folds:
        raise PredictionsError(f"cannot split {n_images} images into {folds} equal folds")
    if np.issubdtype(scores.dtype, np.floating) and not np.isfinite(scores).all():
        bad = np.argwhere(~np.isfinite(scores))
        raise PredictionsError(
            f"retrieval scores contain {len(bad)} non-finite values (first at image {bad[0][0]}, caption {bad[0][1]})"
        )
    caption_image = np.repeat(np.arange(n_images), counts)
    return scores, caption_image


def _ranks(scores: np.ndarray, caption_image: np.ndarray, ties: TieRule) -> RetrievalRanks:
    """Ranks within one (sub-)matrix whose captions belong to images ``caption_image`` (0-based, local)."""
    n_images, n_captions = scores.shape
    # IR: gold score of every caption is the entry of its own image.
    gold_ir = scores[caption_image, np.arange(n_captions)]
    ir = np.zeros(n_captions, dtype=np.int64)
    tr = np.empty(n_images, dtype=np.int64)
    for start in range(0, n_images, _BLOCK_ROWS):
        block = scores[start : start + _BLOCK_ROWS]
        # block_own[r, j]: caption j belongs to image start + r.
        block_own = caption_image[None, :] == np.arange(start, start + len(block))[:, None]
        # TR: best gold score of every image over its own captions.
        best_gold = np.where(block_own, block, block.min()).max(axis=1)
        if ties == "optimistic":
            tr[start : start + len(block)] = (block > best_gold[:, None]).sum(axis=1)
            ir += (block > gold_ir[None, :]).sum(axis=0)
        else:
            tr[start : start + len(block)] = ((block >= best_gold[:, None]) & ~block_own).sum(axis=1)
            ir += ((block >= gold_ir[None, :]) & ~block_own).sum(axis=0)
    return RetrievalRanks(tr=tr, ir=ir)


def _fold_slices(captions_per_image: Sequence[int], folds: int) -> list[tuple[slice, slice]]:
    counts = [int(c) for c in captions_per_image]
    offsets = np.concatenate([[0], np.cumsum(counts)])
    per_fold = len(counts) // folds
    return [
        (
            slice(k * per_fold, (k + 1) * per_fold),
            slice(int(offsets[k * per_fold]), int(offsets[(k + 1) * per_fold])),
        )
        for k in range(folds)
    ]


def retrieval_per_query_ranks(
    scores: np.ndarray,
    captions_per_image: Sequence[int],
    folds: int = 1,
    ties: TieRule = "pessimistic",
) -> RetrievalRanks:
    """0-based ranks per query, for significance tests: ``tr`` (one per image: best rank among its captions)
    and ``ir`` (one per caption: rank of its image). With ``folds > 1`` each rank is within its fold.
    Tie rule as described in the module docstring."""
    if ties not in _TIE_RULES:
        raise ValueError(f"ties must be one of {_TIE_RULES}, got {ties!r}")
    scores, caption_image = _check_inputs(scores, captions_per_image, folds)
    tr_parts, ir_parts = [], []
    for rows, cols in _fold_slices(captions_per_image, folds):
        local_images = caption_image[cols] - rows.start
        ranks = _ranks(scores[rows, cols], local_images, ties)
        tr_parts.append(ranks.tr)
        ir_parts.append(ranks.ir)
    return RetrievalRanks(tr=np.concatenate(tr_parts), ir=np.concatenate(ir_parts))


def retrieval_recall(
    scores: np.ndarray,
    captions_per_image: Sequence[int],
    ks: Sequence[int] = (1, 5, 10),
    folds: int = 1,
    ties: TieRule = "pessimistic",
) -> dict[str, float]:
    """Recall@K in percent: ``{"tr_r1", "tr_r5", "tr_r10", "ir_r1", "ir_r5", "ir_r10", "rsum"}`` (keys
    follow ``ks``), each averaged over ``folds`` contiguous equal folds; ``rsum`` is the sum of the recalls.

    Raises :class:`PredictionsError` for a non-finite score, a shape that does not match the caption counts
    (``[len(captions_per_image), sum(captions_per_image)]``), or images not divisible into ``folds``.
    """
    ks = list(ks)
    if not ks or any(isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1 for k in ks):
        raise ValueError(f"ks must be positive integers, got {ks!r}")
    if ties not in _TIE_RULES:
        raise ValueError(f"ties must be one of {_TIE_RULES}, got {ties!r}")
    scores, caption_image = _check_inputs(scores, captions_per_image, folds)
    per_fold: list[dict[str, float]] = []
    for rows, cols in _fold_slices(captions_per_image, folds):
        ranks = _ranks(scores[rows, cols], caption_image[cols] - rows.start, ties)
        fold_metrics = {f"tr_r{k}": 100.0 * float(np.mean(ranks.tr < k)) for k in ks}
        fold_metrics.update({f"ir_r{k}": 100.0 * float(np.mean(ranks.ir < k)) for k in ks})
        per_fold.append(fold_metrics)
    result = {key: float(np.mean([metrics[key] for metrics in per_fold])) for key in per_fold[0]}
    result["rsum"] = float(sum(result.values()))
    return result


def retrieval_tie_count(
    scores: np.ndarray, captions_per_image: Sequence[int], folds: int = 1
) -> dict[str, int]:
    """How many TR and IR queries get a different rank under the optimistic and pessimistic tie rules
    (i.e. whose gold item is tied with another item that could outrank it)."""
    optimistic = retrieval_per_query_ranks(scores, captions_per_image, folds, "optimistic")
    pessimistic = retrieval_per_query_ranks(scores, captions_per_image, folds, "pessimistic")
    return {
        "tr": int((optimistic.tr != pessimistic.tr).sum()),
        "ir": int((optimistic.ir != pessimistic.ir).sum()),
    }


def captions_per_image_from_karpathy(path: str | Path, split: str) -> list[int]:
    """Caption count of every image of ``split`` in a Karpathy-split JSON (``images[].split``,
    ``images[].sentences``), in file order: the row/column layout of a retrieval score matrix.

    Minimal on purpose (the full loader lives in ``harness.data``): exact ``split`` match, so ``restval``
    images are not part of ``train`` here. Raises :class:`DataError` for a malformed file or an empty split.
    """
    path = Path(path)
    data = read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise DataError(f'{path}: expected a JSON object with an "images" list (Karpathy split format)')
    counts: list[int] = []
    splits_seen: set[str] = set()
    for index, image in enumerate(data["images"]):
        if not isinstance(image, dict) or not isinstance(image.get("split"), str):
            raise DataError(f"{path}: images[{index}]: expected an object with a string 'split'")
        splits_seen.add(image["split"])
        if image["split"] != split:
            continue
        sentences = image.get("sentences")
        if not isinstance(sentences, list) or not sentences:
            raise DataError(
                f"{path}: images[{index}] ({image.get('filename', '?')}): 'sentences' must be a non-empty list"
            )
        counts.append(len(sentences))
    if not counts:
        known = ", ".join(sorted(splits_seen)) or "none"
        raise DataError(f"{path}: no images in split {split!r} (splits present: {known})")
    return counts

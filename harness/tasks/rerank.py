"""Top-k re-ranking for retrieval on large splits: the cross-encoder scores only a first stage's candidates.

Scoring every image against every caption costs n_images x n_captions transformer passes (125M on COCO 5K).
A first stage (any score matrix of the same shape: a dual encoder's cosine similarities, or another run's
``scores_test.npy``) names candidates; the cross-encoder scores the union of each image's top-k captions and each
caption's top-k images, as UNITER/ALBEF-style evaluations do. Everything else stays below every re-scored pair,
in the first stage's order, so TR and IR recall@K for K <= k are exactly those of the re-ranking pipeline.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness.errors import VlbenchError
from harness.fileio import read_untrusted_npy


@dataclass(frozen=True)
class Rerank:
    """Re-rank the top ``k`` of ``first_stage`` ([n_images, n_captions], read from ``source``). ``first_stage``
    None: the model's own ITC first stage (``source`` "itc"), computed per split by the retrieval task."""

    k: int
    first_stage: np.ndarray | None
    source: str

    @classmethod
    def itc(cls, k: int) -> Rerank:
        if k < 1:
            raise VlbenchError(f"re-ranking k must be at least 1, got {k}")
        return cls(k=k, first_stage=None, source="itc")

    @classmethod
    def from_file(cls, path: Path, k: int) -> Rerank:
        if k < 1:
            raise VlbenchError(f"re-ranking k must be at least 1, got {k}")
        first = read_untrusted_npy(path, ".npy score matrix")
        if first.ndim != 2 or not np.issubdtype(first.dtype, np.number):
            raise VlbenchError(f"{path}: expected a 2-D numeric score matrix, got shape {first.shape} {first.dtype}")
        if not np.isfinite(first).all():
            raise VlbenchError(f"{path}: the first-stage scores contain NaN or inf")
        return cls(k=k, first_stage=first.astype(np.float64), source=str(path))

    def check_shape(self, n_images: int, n_captions: int) -> None:
        if self.first_stage is not None and self.first_stage.shape != (n_images, n_captions):
            raise VlbenchError(f"{self.source}: first-stage scores are {self.first_stage.shape[0]}x"
                               f"{self.first_stage.shape[1]}, the split has {n_images} images x {n_captions} captions")


def candidate_mask(first_stage: np.ndarray, k: int) -> np.ndarray:
    """[n_images, n_captions] bool: each image's top-k captions, or-ed with each caption's top-k images."""
    n_images, n_captions = first_stage.shape
    mask = np.zeros(first_stage.shape, dtype=bool)
    k_captions, k_images = min(k, n_captions), min(k, n_images)
    top_captions = np.argpartition(-first_stage, k_captions - 1, axis=1)[:, :k_captions]
    np.put_along_axis(mask, top_captions, True, axis=1)
    top_images = np.argpartition(-first_stage, k_images - 1, axis=0)[:k_images, :]
    np.put_along_axis(mask, top_images, True, axis=0)
    return mask


def merge_scores(first_stage: np.ndarray, candidates: np.ndarray, rescored: np.ndarray) -> np.ndarray:
    """Re-scored candidates keep their scores; every other pair gets a value below all of them, an increasing
    affine map of its first-stage score (so the first stage still orders the rest, in both directions)."""
    out = np.empty(first_stage.shape, dtype=np.float32)
    out[candidates] = rescored[candidates]
    rest = ~candidates
    if rest.any():
        floor = float(rescored[candidates].min()) if candidates.any() else 0.0
        low, high = float(first_stage[rest].min()), float(first_stage[rest].max())
        scaled = (first_stage[rest] - low) / (high - low) if high > low else np.zeros(int(rest.sum()))
        out[rest] = floor - 2.0 + scaled  # in [floor - 2, floor - 1]: strictly below every candidate
    return out

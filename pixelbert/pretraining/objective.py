"""What every pre-training objective returns: its loss and how many of its predictions were right."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

IGNORE_INDEX = -100
"""Label of positions that carry no target (cross-entropy's default ignore_index, as in BERT)."""


@dataclass
class ObjectiveOutput:
    loss: Tensor
    """Scalar mean loss over the ``count`` predictions (zero, still in the graph, when ``count`` is 0)."""
    correct: int
    count: int

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.count if self.count else None

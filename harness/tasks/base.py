"""The interface every task implements; the training loop and ``run``/``eval`` talk only to this."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from harness.batches import ImageTensors, TextBatcher
from harness.data.compact import worker_shared
from harness.data.spec import DatasetSpec
from harness.errors import VlbenchError
from harness.training.config import TrainConfig


@dataclass
class Evaluation:
    """The outcome of predicting one split.

    ``metrics`` has the keys of ``vlbench score <task>`` (None when the split has no labels);
    ``write`` writes the prediction files in the official format into a run directory;
    ``per_example`` keeps per-example results for paired significance tests.
    """

    split: str
    metrics: dict[str, Any] | None
    write: Callable[[Path], list[str]]
    per_example: dict[str, Any] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    """How the split was evaluated when it is not the default (e.g. retrieval re-ranking); goes into run.json."""


class Task(ABC):
    name: ClassVar[str]
    selection_metric: ClassVar[str]
    """Key of ``metrics`` used to pick the best checkpoint on the validation split (higher is better)."""
    pretrained_head: ClassVar[str | None] = None
    """The pre-training head (``itm``, ...) whose weights this task's head starts from under ``run --init``,
    when the checkpoint has it; None = the head always starts fresh."""

    def __init__(self, spec: DatasetSpec, images: ImageTensors, text: TextBatcher, config: TrainConfig,
                 state: dict[str, Any] | None = None, limit: int | None = None) -> None:
        if spec.task not in self.accepted_spec_tasks():
            raise VlbenchError(f"{spec.path}: a {spec.task!r} dataset cannot be used for task {self.name!r}")
        self.spec = spec
        self.images = images
        self.text = text
        self.config = config
        self.limit = limit
        """Keep only the first ``limit`` examples (retrieval: images) of every split: quick checks, CI subsets.
        The split fingerprints cover exactly what was used, so such runs never compare with full ones."""
        self._examples: dict[str, Sequence] = {}
        self.restore_state(state or {})

    @classmethod
    def accepted_spec_tasks(cls) -> tuple[str, ...]:
        return (cls.name,)

    def examples(self, split: str) -> Sequence:
        if split not in self._examples:
            if split not in self.spec.splits:
                raise VlbenchError(f"{self.spec.path}: no split {split!r} (has: {', '.join(self.spec.splits)})")
            examples = self.load_split(split)
            examples = examples[: self.limit] if self.limit else examples
            if not examples:
                raise VlbenchError(f"{self.spec.path}: split {split!r} is empty")
            self._examples[split] = worker_shared(examples, split, self.config.num_workers)
        return self._examples[split]

    # --- data -------------------------------------------------------------------------------------------
    @abstractmethod
    def load_split(self, split: str) -> list: ...

    @abstractmethod
    def fingerprint(self, split: str) -> str: ...

    @abstractmethod
    def texts(self, split: str) -> list[str]:
        """Every text of the split, for counting truncated and empty ones."""

    def summary(self, split: str) -> dict[str, Any]:
        return {"examples": len(self.examples(split))}

    def image_paths(self, split: str) -> list[Path]:
        """Every image file the split uses, once each (e.g. to extract and cache region features)."""
        raise NotImplementedError(f"task {self.name!r} does not list its images")

    # --- model ------------------------------------------------------------------------------------------
    @abstractmethod
    def build_head(self, hidden_size: int) -> nn.Module: ...

    def prepare_training(self) -> None:  # noqa: B027 - optional hook
        """Work that needs the training split (e.g. the answer vocabulary); called before build_head."""

    def state(self) -> dict[str, Any]:
        """What a checkpoint must carry to predict again (e.g. the answer vocabulary)."""
        return {}

    def restore_state(self, state: dict[str, Any]) -> None:  # noqa: B027 - optional hook
        """Take back what :meth:`state` returned (from a checkpoint)."""

    # --- training ---------------------------------------------------------------------------------------
    def train_size(self) -> int:
        return len(self.examples("train"))

    @abstractmethod
    def collate_train(self, indices: list[int]) -> dict[str, Any]: ...

    @abstractmethod
    def training_loss(self, model: nn.Module, head: nn.Module, batch: dict[str, Any]) -> torch.Tensor: ...

    # --- evaluation -------------------------------------------------------------------------------------
    @abstractmethod
    def evaluate(self, model: nn.Module, head: nn.Module, split: str, device: torch.device,
                 progress: bool = True) -> Evaluation: ...

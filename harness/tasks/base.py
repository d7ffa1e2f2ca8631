"""The interface every task implements; the training loop, ``run``/``eval``, ``bench`` and the reports talk only
to this.

A task declares its metrics (:class:`Metric`: where each number sits in the metrics dict, its title, which way
is better; the selection metric is the primary one), the significance test its per-example results support, and
its preset budget adjustments, so ``compare``, ``check`` and ``bench`` read that instead of naming tasks.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import torch
from torch import nn

from harness.batches import ImageTensors, TextBatcher
from harness.data.compact import worker_shared
from harness.data.spec import DatasetSpec
from harness.errors import VlbenchError
from harness.runtime import Runtime
from harness.training.config import TrainConfig

T = TypeVar("T")


@dataclass(frozen=True)
class Metric:
    """One reported number of a task: ``key`` is its path in the metrics dict (``("perAnswerType", "yes/no")``)."""

    key: tuple[str, ...]
    title: str
    higher_is_better: bool = True
    axis: str | None = None
    """A plot axis label with its unit (default: the task's title, this title and %)."""
    description: str | None = None
    """What the number means, where its name does not say (shown under run results and in reports)."""

    @property
    def name(self) -> str:
        """Its name in tables, plots and the long table of ``compare`` (the last part of the key)."""
        return self.key[-1]

    @property
    def path(self) -> str:
        """Its dotted name in baselines (``perAnswerType.yes/no``)."""
        return ".".join(self.key)

    def read(self, metrics: dict[str, Any]) -> float | None:
        value: Any = metrics
        for part in self.key:
            value = value.get(part) if isinstance(value, dict) else None
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def finite_outputs(logits: torch.Tensor, task: str, split: str) -> torch.Tensor:
    """``logits`` as float32, or a VlbenchError when any is NaN or infinite: a diverged model still 'predicts'
    (argmax of NaNs picks an answer) and would be scored as if it had."""
    logits = logits.float()
    if not bool(torch.isfinite(logits).all()):
        raise VlbenchError(f"{task} {split}: the model's outputs are NaN or infinite (its weights diverged, e.g. a "
                           "learning rate far too high); nothing is scored")
    return logits


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
    title: ClassVar[str]
    """How reports name the task (``VQA v2``)."""
    selection_metric: ClassVar[str]
    """Key of ``metrics`` used to pick the best checkpoint on the validation split (higher is better); the
    task's primary metric in reports."""
    metrics: ClassVar[tuple[Metric, ...]]
    """The tabulated metrics, in table order (keys of ``vlbench score <task>``)."""
    open_group: ClassVar[str | None] = None
    """A nested metrics dict whose further keys are tabulated too, after the declared ones (VQA's
    ``perAnswerType``: a dataset's own answer types)."""
    significance: ClassVar[str]
    """The paired test ``compare`` runs on this task's per-example results (harness/reports/significance.py)."""
    images_per_sample: ClassVar[int] = 1
    """Images one example feeds the model (NLVR2: 2), for ms per image from samples per second."""
    report_order: ClassVar[int] = 50
    """Where the task's columns go in comparison tables."""
    preset_overrides: ClassVar[dict[str, dict[str, Any]]] = {}
    """Per preset, what this task changes in the training config to fit the preset's budget (every model on the
    task gets the same, which is what fairness needs)."""
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

    def eval_batches(self, items: Sequence[T], size: int,
                     collate: Callable[[Sequence[T]], dict[str, Any]]) -> Iterator[tuple[Sequence[T], dict[str, Any]]]:
        """``items`` in chunks of ``size``, each with ``collate(chunk)`` (decoded images, tokens): made in the
        training config's DataLoader workers when it has any, so evaluation decodes in parallel as training does
        (order kept; a worker's failure is the main process's one-line error)."""
        chunks = [items[start:start + size] for start in range(0, len(items), size)]
        if self.config.num_workers == 0 or len(chunks) < 2:
            for chunk in chunks:
                yield chunk, collate(chunk)
            return
        from torch.utils.data import DataLoader

        from harness.data.workers import reported

        # batch_size=None: each chunk is one item and collate_fn turns it into its batch inside a worker.
        loader = DataLoader(chunks, batch_size=None, collate_fn=collate, num_workers=self.config.num_workers)
        yield from zip(chunks, reported(iter(loader)), strict=True)

    @classmethod
    def accepted_spec_tasks(cls) -> tuple[str, ...]:
        return (cls.name,)

    @classmethod
    def tabulate(cls, metrics: dict[str, Any]) -> dict[Metric, float]:
        """The tabulated numbers of one split's metrics dict, in table order."""
        out = {m: v for m in cls.metrics if (v := m.read(metrics)) is not None}
        if cls.open_group is not None:
            group = metrics.get(cls.open_group)
            declared = {m.key for m in cls.metrics}
            for name in sorted(group) if isinstance(group, dict) else []:
                extra = Metric((cls.open_group, name), name)
                if extra.key not in declared and (v := extra.read(metrics)) is not None:
                    out[extra] = v
        return out

    @classmethod
    def primary(cls) -> Metric:
        return next(m for m in cls.metrics if m.key == (cls.selection_metric,))

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
        """Counts recorded in run.json's ``data.splits.SPLIT``; a ``warnings`` list there is also shown."""
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

    def use_rerank(self, rerank: Any) -> None:
        """``eval --rerank-k``: score only a first stage's top-k candidates (tasks that rank override this)."""
        raise VlbenchError(f"re-ranking (--rerank-k) applies only to ranking tasks; {self.name!r} is not one")

    # --- training ---------------------------------------------------------------------------------------
    def train_size(self) -> int:
        return len(self.examples("train"))

    @abstractmethod
    def collate_train(self, indices: list[int]) -> dict[str, Any]: ...

    @abstractmethod
    def training_loss(self, model: nn.Module, head: nn.Module, batch: dict[str, Any]) -> torch.Tensor: ...

    # --- evaluation -------------------------------------------------------------------------------------
    @abstractmethod
    def inference_inputs(self, examples: Sequence) -> tuple[list[Path], list[str]]:
        """Image paths and texts of one evaluation forward pass over ``examples`` (what ``bench`` times)."""

    def inference_logits(self, head: nn.Module, pooled: torch.Tensor, examples: int) -> torch.Tensor:
        """The head on the pooled outputs of :meth:`inference_inputs` for ``examples`` examples."""
        return head(pooled)

    @abstractmethod
    def evaluate(self, model: nn.Module, head: nn.Module, split: str, runtime: Runtime,
                 progress: bool = True) -> Evaluation:
        """Predict ``split`` on ``runtime.device`` under ``runtime.autocast()``; score it when it has labels."""

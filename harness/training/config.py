"""Training hyper-parameters: one dataclass, identical for every model so comparisons stay fair."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, TypeVar

from harness.errors import VlbenchError

C = TypeVar("C", bound="ReadableConfig")


class ReadableConfig:
    """Shared by the hyper-parameter dataclasses: read back from run.json / checkpoint headers (keys that a later
    version dropped are ignored) and overridden from CLI options (None = keep the preset's value)."""

    @classmethod
    def from_dict(cls: type[C], data: dict[str, Any]) -> C:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def with_overrides(self: C, **overrides: Any) -> C:
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})


RETRIEVAL_OBJECTIVES = ("itm", "ranking")


@dataclass(frozen=True)
class TrainConfig(ReadableConfig):
    epochs: int = 4
    batch_size: int = 32
    eval_batch_size: int = 256
    lr: float = 3e-4
    """AdamW learning rate of the transformer, text embeddings and task heads."""
    cnn_lr: float = 3e-4
    """Learning rate of the visual backbone (Pixel-BERT trains its CNN at its own rate)."""
    cnn_optimizer: str = "adamw"
    """``adamw`` or ``sgd`` (Pixel-BERT trained the CNN with SGD, momentum 0.9)."""
    head_lr_mult: float = 1.0
    """The task head learns at ``lr`` x this (ViLT fine-tunes its VQA and NLVR2 classifiers at 10x)."""
    weight_decay: float = 0.01
    cnn_weight_decay: float | None = None
    """The CNN's own weight decay (None: ``weight_decay``). Pixel-BERT trains its CNN with SGD at 5e-4, SOHO at
    1e-4, far below the transformer's AdamW 0.01; the base preset uses Pixel-BERT's."""
    warmup_ratio: float = 0.1
    """Linear warm-up over this fraction of the steps, then (``lr_decay_epochs`` empty) linear decay to zero."""
    lr_decay_epochs: tuple[int, ...] = ()
    """A step schedule instead of the linear decay: after warm-up, the rates are divided by 10 at the start of
    each listed epoch (1-based; Pixel-BERT's fine-tuning decays by 10 at fixed epochs)."""
    grad_clip: float = 1.0
    grad_accum: int = 1
    max_text_len: int = 40
    """Longer texts are truncated; the count of truncated texts is recorded in run.json."""
    num_workers: int = 0
    itm_hard_negatives: bool = False
    """Retrieval, ``itm`` objective: pick each positive's negative caption as the highest-scoring of
    ``itm_candidates``."""
    itm_candidates: int = 8
    retrieval_objective: str = "itm"
    """Retrieval's fine-tuning loss. ``itm``: two-class ITM on each positive, one negative caption and one negative
    image (vlbench's tiny default: three passes per image). ``ranking``: Pixel-BERT's, the base default: each
    image's caption against ``ranking_negatives`` captions of other images, the matching score (ITM margin) put
    through a softmax cross-entropy over the positive and the ``ranking_hardest`` highest-scoring negatives only
    (the rest are scored without gradients, to find them)."""
    ranking_negatives: int = 20
    ranking_hardest: int = 5
    freeze_cnn: bool = False
    """Fine-tune with the CNN fixed (no gradients, BatchNorm statistics kept); pixel models only."""
    itc: bool = False
    """Retrieval: also train an image-text contrastive (ITC) first stage (pixelbert/itc.py; symmetric InfoNCE over
    the batch, added to the ITM loss), and rank splits of more than ``full_scoring_images`` images with it, the
    cross-encoder re-scoring only its top ``rerank_k`` (harness/tasks/rerank.py). On for retrieval's presets;
    False is Pixel-BERT's ITM alone (and what checkpoints from before this option read back as)."""
    rerank_k: int = 10
    """Retrieval with ITC: each image's top-k captions and each caption's top-k images are re-scored (recall@K for
    K <= k is then exactly the pipeline's). 10, the smallest k that leaves every reported recall (R@1/5/10) to the
    cross-encoder, chosen on val: on pixelbert seed 1's 100 val images smaller k scored higher (val RSUM: full
    scoring 205.4; k = 32, 16, 12, 10: 206.0, 220.8, 229.4, 239.4; k = 4: 263.8; the ITC first stage alone 256.2),
    docs/results/discriminate.md."""
    full_scoring_images: int = 100
    """Retrieval: splits of at most this many images are scored in full by the cross-encoder (val selection)."""
    answer_min_count: int = 1
    """VQA: answers seen fewer times than this (in ``answer_vocab_splits``) are left out of the vocabulary."""
    answer_vocab_splits: tuple[str, ...] = ("train",)
    """VQA: the splits whose majority answers build the vocabulary. ``("train", "val")`` with
    ``answer_min_count`` 9 is the 3,129-answer convention of bottom-up attention and Pixel-BERT (train + val
    answers seen at least 9 times); selecting checkpoints on a val split whose answers shaped the vocabulary is
    what those papers did, and only the classifier's label set is affected."""
    eval_every: int = 1
    """Validate every N epochs (and after the last) to select the checkpoint."""
    checkpoint_every: int = 100
    """Rewrite the run's resume point (``resume.safetensors``) every N optimiser steps, besides after every
    epoch and on Ctrl-C; 0 = only those. ``run --resume`` continues from it."""

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise VlbenchError(f"epochs must be at least 1, got {self.epochs}")
        if self.batch_size < 1 or self.eval_batch_size < 1:
            raise VlbenchError("batch sizes must be at least 1")
        if self.retrieval_objective not in RETRIEVAL_OBJECTIVES:
            raise VlbenchError(f"retrieval objective must be one of {', '.join(RETRIEVAL_OBJECTIVES)}, got "
                               f"{self.retrieval_objective!r}")
        if not 1 <= self.ranking_hardest <= self.ranking_negatives:
            raise VlbenchError(f"need 1 <= ranking_hardest <= ranking_negatives, got {self.ranking_hardest} and "
                               f"{self.ranking_negatives}")
        if self.cnn_optimizer not in ("adamw", "sgd"):
            raise VlbenchError(f"cnn optimizer must be adamw or sgd, got {self.cnn_optimizer!r}")
        if not (math.isfinite(self.head_lr_mult) and self.head_lr_mult > 0):
            raise VlbenchError(f"head_lr_mult must be a positive number, got {self.head_lr_mult}")
        if self.grad_accum < 1:
            raise VlbenchError(f"gradient accumulation must be at least 1, got {self.grad_accum}")
        if self.rerank_k < 1 or self.full_scoring_images < 0:
            raise VlbenchError(f"rerank_k must be >= 1 and full_scoring_images >= 0, got {self.rerank_k}, "
                               f"{self.full_scoring_images}")
        if self.checkpoint_every < 0:
            raise VlbenchError(f"checkpoint_every must be >= 0, got {self.checkpoint_every}")
        object.__setattr__(self, "lr_decay_epochs", tuple(int(e) for e in self.lr_decay_epochs))
        object.__setattr__(self, "answer_vocab_splits", tuple(str(s) for s in self.answer_vocab_splits))
        if any(e < 1 for e in self.lr_decay_epochs) or list(self.lr_decay_epochs) != sorted(set(self.lr_decay_epochs)):
            raise VlbenchError(f"lr_decay_epochs must be increasing epochs >= 1, got {self.lr_decay_epochs}")
        if self.cnn_weight_decay is not None and not (math.isfinite(self.cnn_weight_decay)
                                                      and self.cnn_weight_decay >= 0):
            raise VlbenchError(f"cnn_weight_decay must be a non-negative number, got {self.cnn_weight_decay}")
        if not self.answer_vocab_splits:
            raise VlbenchError("answer_vocab_splits must name at least one split")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)



TRAIN_PRESETS: dict[str, TrainConfig] = {
    # CPU minutes on the embedded world.
    "tiny": TrainConfig(),
    # The papers' fine-tuning recipes (Pixel-BERT: AdamW 1e-4 for the transformer, SGD 1e-2 for the CNN).
    # CNN weight decay 5e-4 (Pixel-BERT's SGD); answers: train + val seen >= 9 times (the 3,129-answer convention).
    "base": TrainConfig(
        epochs=18, batch_size=256, eval_batch_size=512, lr=1e-4, cnn_lr=1e-2, cnn_optimizer="sgd",
        cnn_weight_decay=5e-4, warmup_ratio=0.05, max_text_len=40, answer_min_count=9,
        answer_vocab_splits=("train", "val"), num_workers=8,
    ),
}

def train_preset(preset: str, task: str) -> TrainConfig:
    """The training config of ``preset`` for ``task``: the preset plus what the task changes to fit the preset's
    budget (its ``preset_overrides``). Fairness is between models on the same task, which all get the same
    config; tasks may differ, as the papers' per-task recipes do."""
    from harness.tasks import TASKS  # tasks import this module

    if preset not in TRAIN_PRESETS:
        raise VlbenchError(f"unknown preset {preset!r} (known: {', '.join(TRAIN_PRESETS)})")
    return TRAIN_PRESETS[preset].with_overrides(**TASKS.get(task).preset_overrides.get(preset, {}))

"""Pre-training hyper-parameters: one dataclass, the same for every model so pre-trained runs stay comparable."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from harness.errors import VlbenchError
from harness.training.config import ReadableConfig, TrainConfig
from pixelbert.config import MVM_HEADS

OBJECTIVES = ("mlm", "itm", "mvm")



def parse_objectives(text: str) -> tuple[str, ...]:
    """``"mlm,itm"`` -> ``("mlm", "itm")`` (order fixed, duplicates and unknown names are errors)."""
    names = [n.strip().lower() for n in text.split(",") if n.strip()]
    unknown = sorted(set(names) - set(OBJECTIVES))
    if not names or unknown:
        raise VlbenchError(f"objectives must be a comma list of {', '.join(OBJECTIVES)}; got {text!r}")
    if len(set(names)) != len(names):
        raise VlbenchError(f"objectives name one twice: {text!r}")
    return tuple(n for n in OBJECTIVES if n in names)


@dataclass(frozen=True)
class PretrainConfig(ReadableConfig):
    objectives: tuple[str, ...] = ("mlm", "itm")
    epochs: int = 3
    """Passes over the training data; what one pass holds is ``epoch_pairs``."""
    epoch_pairs: str = "images"
    """``images``: an epoch visits every training image once with one of its captions drawn at random (tiny world:
    the 18,000 Karpathy train + restval scenes, about 2 minutes of pixelbert on an idle 2-core CPU); ``captions``:
    every (image, caption) pair once, the papers' epoch (5x the rows on COCO; the base preset's)."""
    batch_size: int = 32
    eval_batch_size: int = 128
    lr: float = 3e-4
    cnn_lr: float = 3e-4
    cnn_optimizer: str = "adamw"
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    grad_clip: float = 1.0
    grad_accum: int = 1
    max_text_len: int = 40
    num_workers: int = 0
    mlm_probability: float = 0.15
    """BERT: 15% of the tokens are chosen (then 80% [MASK], 10% random, 10% kept)."""
    itm_negative_ratio: float = 0.5
    """Share of rows whose caption is replaced by another image's (Pixel-BERT / UNITER: half)."""
    itm_swap_negatives: float = 0.0
    """Share of those negatives that are instead the image's own caption with one colour word swapped for a colour
    none of its captions names (``pixelbert/pretraining/itm.py``; NegCLIP's and SVLC's word-swap hard negatives).
    0 = Pixel-BERT's random negatives only. vlbench's addition: it makes ITM bind words to pixels (measured in
    docs/results/discriminate.md)."""
    pixel_sample: int | None = None
    """Random pixel sampling: pixel tokens kept per image per training step; None = the model's default
    (see ``pixel_sample_fraction``), 0 = off."""
    pixel_sample_fraction: float = 100 / 273
    """Default share of pixel tokens kept: Pixel-BERT kept 100 of the about 273 cells of an 800 x 1333 image
    after res5 and 2x2 pooling; the same share of the tiny world's 16 cells is 6."""
    mvm_probability: float = 0.5
    """Share of images in which SOHO's MVM masks the cells of one random dictionary entry."""
    mvm_head: str = "dictionary"
    """How MVM predicts the masked entry: ``dictionary`` (as released: cosine similarity of the fused output to
    every entry, no parameters) or ``classifier`` (a learned head over the entry indices; vlbench's earlier
    recipe). ``pixelbert/soho/mvm.py``."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "objectives", tuple(self.objectives))
        if not self.objectives or set(self.objectives) - set(OBJECTIVES):
            raise VlbenchError(f"objectives must be among {OBJECTIVES}, got {self.objectives}")
        if self.epochs < 1 or self.batch_size < 1 or self.eval_batch_size < 1 or self.grad_accum < 1:
            raise VlbenchError("epochs, batch sizes and gradient accumulation must be at least 1")
        if self.cnn_optimizer not in ("adamw", "sgd"):
            raise VlbenchError(f"cnn optimizer must be adamw or sgd, got {self.cnn_optimizer!r}")
        for name in ("mlm_probability", "mvm_probability", "pixel_sample_fraction"):
            value = getattr(self, name)
            if not 0.0 < value <= 1.0:
                raise VlbenchError(f"{name} must be in (0, 1], got {value}")
        if not 0.0 <= self.itm_swap_negatives <= 1.0:
            raise VlbenchError(f"itm_swap_negatives must be in [0, 1], got {self.itm_swap_negatives}")
        if not 0.0 < self.itm_negative_ratio < 1.0:
            raise VlbenchError(f"itm_negative_ratio must be in (0, 1), got {self.itm_negative_ratio}")
        if self.epoch_pairs not in ("images", "captions"):
            raise VlbenchError(f"epoch_pairs must be images or captions, got {self.epoch_pairs!r}")
        if self.mvm_head not in MVM_HEADS:
            raise VlbenchError(f"mvm_head must be one of {', '.join(MVM_HEADS)}, got {self.mvm_head!r}")
        if self.pixel_sample is not None and self.pixel_sample < 0:
            raise VlbenchError(f"pixel sample must be >= 0 (0 = off), got {self.pixel_sample}")

    def optimizer_config(self) -> TrainConfig:
        """The shared optimiser / schedule settings, as the fine-tuning code takes them."""
        shared = {f.name for f in fields(TrainConfig)} & {f.name for f in fields(self)}
        return TrainConfig(**{name: getattr(self, name) for name in shared})

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PretrainConfig:
        # Pre-trainings recorded before ``mvm_head`` existed used the learned classifier.
        return super().from_dict({"mvm_head": "classifier", **data})

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["objectives"] = list(self.objectives)
        return out



PRETRAIN_PRESETS: dict[str, PretrainConfig] = {
    # CPU minutes on the embedded world (18,000 image-caption rows per epoch; the world pre-training of `run`).
    # 6 epochs, not 3: region's val ITM goes from 59 to 91 and NLVR2 leaves chance only from there
    # (docs/results/discriminate.md, "NLVR2 from a longer world pre-training").
    "tiny": PretrainConfig(epochs=6),
    # Pixel-BERT: AdamW 1e-4 for the transformer, SGD 1e-2 for the CNN, 40 epochs over every caption pair. SOHO's release masks the
    # cells of one entry in 1.5% of the images (it sees millions of images; the tiny world needs more signal).
    "base": PretrainConfig(epochs=40, epoch_pairs="captions", batch_size=256, eval_batch_size=512, lr=1e-4, cnn_lr=1e-2,
                           cnn_optimizer="sgd", warmup_ratio=0.05, num_workers=8, mvm_probability=0.015),
}

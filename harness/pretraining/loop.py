"""The pre-training loop: every chosen objective from one forward pass, summed with equal weights (as in
Pixel-BERT and SOHO), the shared optimisers and schedule, and a validation pass after every epoch.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from harness.batches import to_device
from harness.distributed import is_main
from harness.pretraining.config import PretrainConfig
from harness.pretraining.data import CaptionPairs
from harness.training.loop import NonFiniteLoss
from harness.training.optim import build_optimizers, optimizer_step, warmup_linear_decay
from harness.training.precision import autocast
from harness.training.resume import Position, ResumeFile, RngSnapshot
from pixelbert.pretraining.heads import PretrainingHeads
from pixelbert.pretraining.objective import ObjectiveOutput
from pixelbert.pretraining.step import pretraining_step
from pixelbert.soho.visual_dictionary import VisualDictionary, dictionary_usage


@dataclass
class PretrainResult:
    steps: int = 0
    samples: int = 0
    wall_seconds: float = 0.0
    samples_per_second: float = 0.0
    history: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class ObjectiveMeter:
    """Mean loss (over batches) and accuracy (over predictions) per objective, plus dictionary usage."""

    def __init__(self, dictionary: VisualDictionary | None) -> None:
        self.loss: dict[str, float] = {}
        self.batches: dict[str, int] = {}
        self.correct: dict[str, int] = {}
        self.count: dict[str, int] = {}
        self.codes = torch.zeros(dictionary.size, dtype=torch.long) if dictionary is not None else None

    def add(self, results: dict[str, ObjectiveOutput], visual: Any) -> None:
        for name, out in results.items():
            if out.count:
                self.loss[name] = self.loss.get(name, 0.0) + float(out.loss.detach())
                self.batches[name] = self.batches.get(name, 0) + 1
            self.correct[name] = self.correct.get(name, 0) + out.correct
            self.count[name] = self.count.get(name, 0) + out.count
        if self.codes is not None and visual.codes is not None:
            used = visual.codes[visual.mask].flatten().cpu()
            self.codes += torch.bincount(used, minlength=self.codes.numel())

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in self.count:
            batches = self.batches.get(name, 0)
            out[f"{name}_loss"] = round(self.loss[name] / batches, 4) if batches else None
            out[f"{name}_accuracy"] = round(100 * self.correct[name] / self.count[name], 2) if self.count[name] else None
            out[f"{name}_predictions"] = self.count[name]
        if self.codes is not None:
            usage = dictionary_usage(self.codes)
            out["dictionary_in_use"] = usage["entries_in_use"]
            out["dictionary_perplexity"] = usage["perplexity"]
        return out


def _loader(data: CaptionPairs, split: str, batch_size: int, shuffle: bool, generator: torch.Generator,
            num_workers: int) -> DataLoader:
    # Sampling (ITM negatives, MLM masks) happens in collate with the split's generator; with worker processes
    # each worker would hold its own copy, so the draws stay reproducible but differ from num_workers=0.
    return DataLoader(list(range(len(data.examples(split)))), batch_size=batch_size, shuffle=shuffle,
                      generator=generator, num_workers=num_workers,
                      collate_fn=lambda indices: data.collate(split, indices, generator))


def _generators(model: nn.Module, data_generator: torch.Generator) -> dict[str, torch.Generator]:
    """Every generator pre-training draws from besides the data order's, by name (for resume points)."""
    encoder = model.visual_encoder
    found = {"pixel_sample": getattr(encoder, "sample_generator", None),
             "mvm": getattr(encoder, "mvm_generator", None),
             "dictionary": getattr(getattr(encoder, "dictionary", None), "generator", None)}
    return {name: g for name, g in found.items() if isinstance(g, torch.Generator) and g is not data_generator}


def _dictionary(model: nn.Module) -> VisualDictionary | None:
    found = getattr(model.visual_encoder, "dictionary", None)
    return found if isinstance(found, VisualDictionary) else None


@torch.no_grad()
def evaluate_pretraining(model: nn.Module, heads: PretrainingHeads, data: CaptionPairs, config: PretrainConfig,
                         device: torch.device, seed: int, split: str = "val", progress: bool = True) -> dict[str, Any]:
    """Objective losses and accuracies on ``split``; the same masks and negatives on every call (fixed seed).

    Eval mode: every pixel token enters (no sampling) and the dictionary is not updated; MVM masking stays on
    when the run uses MVM, drawn from the same fixed seed.
    """
    model.eval()
    heads.eval()
    generator = torch.Generator().manual_seed(seed)
    encoder = model.visual_encoder
    saved = getattr(encoder, "mvm_generator", None)
    if hasattr(encoder, "mvm_generator"):
        encoder.mvm_generator = torch.Generator().manual_seed(seed + 1)
    meter = ObjectiveMeter(_dictionary(model))
    try:
        loader = _loader(data, split, config.eval_batch_size, False, generator, 0)
        for batch in tqdm(loader, desc=f"pretrain {split}", disable=not progress, leave=False, unit="batch"):
            batch = to_device(batch, device)
            with autocast(device):
                results, visual = pretraining_step(model, heads, batch)
            meter.add(results, visual)
    finally:
        if hasattr(encoder, "mvm_generator"):
            encoder.mvm_generator = saved
    return meter.summary()


def pretrain(model: nn.Module, heads: PretrainingHeads, data: CaptionPairs, config: PretrainConfig,
             device: torch.device, generator: torch.Generator, seed: int, cnn: nn.Module | None = None,
             on_epoch: Callable[[int, dict[str, Any]], None] | None = None, progress: bool = True,
             resume: ResumeFile | None = None, resuming: bool = False) -> PretrainResult:
    """Pre-train ``model`` with ``heads`` on the train split; validate and call ``on_epoch`` after each epoch.

    ``resume`` keeps a resume point at every epoch's end (pre-training resumes at epoch granularity: a killed
    run loses at most the epoch in progress); with ``resuming`` it first continues from it."""
    loader = _loader(data, "train", config.batch_size, True, generator, config.num_workers)
    steps_per_epoch = math.ceil(len(loader) / config.grad_accum)
    optim_config = config.optimizer_config()
    # One container: the MLM decoder is tied to the word embeddings, and named_parameters() of a single module
    # lists a shared tensor once, so the optimiser never sees it twice.
    both = nn.ModuleDict({"model": model, "heads": heads})
    optimizers = build_optimizers({"pretrain": both}, cnn, optim_config)
    schedulers = [warmup_linear_decay(opt, steps_per_epoch * config.epochs, config.warmup_ratio) for opt in optimizers]
    params = [p for p in both.parameters() if p.requires_grad]
    dictionary = _dictionary(model)

    result = PretrainResult()
    first_epoch = 1
    generators = _generators(model, generator)
    if resuming and resume is not None:
        position = resume.restore(model, heads, optimizers, schedulers)
        first_epoch, result = position.epoch, PretrainResult(**position.result)
        generator.set_state(position.epoch_generator_state)
        for name, state in position.generators.items():
            generators[name].set_state(state)
        if dictionary is not None:
            dictionary.reseeded = int(position.counters.get("dictionary_reseeded", 0))
        position.rng.restore()
    for epoch in range(first_epoch, config.epochs + 1):
        model.train()
        heads.train()
        if dictionary is not None:
            dictionary.set_epoch(epoch)
        meter = ObjectiveMeter(dictionary)
        start = time.perf_counter()
        seen = 0
        bar = tqdm(loader, desc=f"pretrain {epoch}/{config.epochs}", disable=not progress, leave=False, unit="batch")
        for index, batch in enumerate(bar):
            batch = to_device(batch, device)
            with autocast(device):
                results, visual = pretraining_step(model, heads, batch)
            loss = sum(out.loss for out in results.values())
            if not torch.isfinite(loss):
                raise NonFiniteLoss(f"pre-training loss became {loss.item()} at epoch {epoch}, step {result.steps}; "
                                    "stopped (the last epoch's checkpoint is kept). Try a lower --lr.")
            (loss / config.grad_accum).backward()
            if (index + 1) % config.grad_accum == 0 or index + 1 == len(loader):
                optimizer_step(optimizers, schedulers, params, config.grad_clip)
                result.steps += 1
            meter.add(results, visual)
            seen += batch["images"].shape[0]
            bar.set_postfix(loss=f"{loss.item():.3f}", samples_s=f"{seen / max(time.perf_counter() - start, 1e-9):.1f}")
        bar.close()
        seconds = time.perf_counter() - start
        result.wall_seconds += seconds
        result.samples += seen
        record: dict[str, Any] = {"epoch": epoch, "seconds": round(seconds, 3), "samples_per_second":
                                  round(seen / max(seconds, 1e-9), 2), "train": meter.summary()}
        if dictionary is not None:
            record["dictionary_momentum"] = dictionary.momentum
            record["dictionary_reseeded_total"] = dictionary.reseeded
        record["val"] = evaluate_pretraining(model, heads, data, config, device, seed, progress=progress)
        result.history.append(record)
        if on_epoch is not None:
            on_epoch(epoch, record)
        if resume is not None and epoch < config.epochs:
            resume.save(model, heads, optimizers, schedulers, Position(
                epoch=epoch + 1, batches_done=0, epoch_generator_state=generator.get_state(), running_loss=0.0,
                seen=0, epoch_seconds=0.0, train_seconds=result.wall_seconds, result=result.to_dict(),
                rng=RngSnapshot.capture(), generators={name: g.get_state() for name, g in generators.items()},
                counters={"dictionary_reseeded": dictionary.reseeded if dictionary is not None else 0}))
        if is_main():  # also with --no-progress: batch jobs' logs keep one line per epoch
            shown = ", ".join(f"{k} {v}" for k, v in record["val"].items()
                              if k.endswith(("_loss", "_accuracy", "perplexity")) and v is not None)
            tqdm.write(f"epoch {epoch}/{config.epochs}: val {shown} ({seconds:.1f}s, "
                       f"{record['samples_per_second']} samples/s)", file=sys.stderr)
    result.wall_seconds = round(result.wall_seconds, 3)
    result.samples_per_second = round(result.samples / max(result.wall_seconds, 1e-9), 2)
    return result

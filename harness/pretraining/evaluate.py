"""Scoring pre-training: per-objective losses and accuracies (plus SOHO's dictionary usage) on a split.

Validation gives the same numbers whatever the number of processes: the split is cut into the same batches
everywhere, each batch draws its masks and negatives from a seed of its own (the run's seed and the batch
index), each rank scores a contiguous run of batches, and the per-batch numbers are gathered in batch order
and summed in that order, as one process sums them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from harness.assembly import assemble, load_strict, part
from harness.batches import ImageTensors, TextBatcher, to_device
from harness.checkpoints import load_checkpoint
from harness.data.spec import load_spec
from harness.distributed import gather_concat, is_main, shard_range
from harness.errors import VlbenchError
from harness.models import ModelSetup, recipe
from harness.pretraining.config import PretrainConfig
from harness.pretraining.data import CaptionPairs
from harness.runtime import Runtime
from harness.training.seeding import derived_seed
from pixelbert.pretraining.heads import PretrainingHeads
from pixelbert.pretraining.objective import ObjectiveOutput
from pixelbert.pretraining.step import pretraining_step
from pixelbert.soho.visual_dictionary import VisualDictionary, dictionary_usage
from pixelbert.tokenizer import load_tokenizer


class ObjectiveMeter:
    """Mean loss (over batches) and accuracy (over predictions) per objective, plus dictionary usage."""

    def __init__(self, dictionary_size: int | None) -> None:
        self.losses: dict[str, list[float]] = {}
        """Per objective, the loss of every batch that had predictions for it, in batch order."""
        self.correct: dict[str, int] = {}
        self.count: dict[str, int] = {}
        self.codes = torch.zeros(dictionary_size, dtype=torch.long) if dictionary_size is not None else None

    def add(self, results: dict[str, ObjectiveOutput], visual: Any) -> None:
        for name, out in results.items():
            self.losses.setdefault(name, [])
            if out.count:
                self.losses[name].append(float(out.loss.detach()))
            self.correct[name] = self.correct.get(name, 0) + out.correct
            self.count[name] = self.count.get(name, 0) + out.count
        if self.codes is not None and visual.codes is not None:
            used = visual.codes[visual.mask].flatten().cpu()
            self.codes += torch.bincount(used, minlength=self.codes.numel())

    def gathered(self) -> ObjectiveMeter:
        """Every rank's meter merged in rank order (itself for one process); ranks that scored contiguous runs
        of batches give back the single-process batch order."""
        parts = gather_concat([(self.losses, self.correct, self.count, self.codes)])
        if len(parts) == 1:
            return self
        merged = ObjectiveMeter(None)
        for losses, correct, count, _ in parts:
            for name in losses:
                merged.losses.setdefault(name, []).extend(losses[name])
                merged.correct[name] = merged.correct.get(name, 0) + correct[name]
                merged.count[name] = merged.count.get(name, 0) + count[name]
        codes = [part[3] for part in parts if part[3] is not None]
        merged.codes = torch.stack(codes).sum(0) if codes else None
        return merged

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in self.count:
            losses = self.losses.get(name, [])
            total = 0.0
            for value in losses:  # in batch order, so 1 and N processes add the same floats the same way
                total += value
            out[f"{name}_loss"] = round(total / len(losses), 4) if losses else None
            out[f"{name}_accuracy"] = round(100 * self.correct[name] / self.count[name], 2) if self.count[name] else None
            out[f"{name}_predictions"] = self.count[name]
        if self.codes is not None:
            usage = dictionary_usage(self.codes)
            out["dictionary_in_use"] = usage["entries_in_use"]
            out["dictionary_perplexity"] = usage["perplexity"]
        return out


def model_dictionary(model: nn.Module) -> VisualDictionary | None:
    found = getattr(model.visual_encoder, "dictionary", None)
    return found if isinstance(found, VisualDictionary) else None


def _meter(model: nn.Module) -> ObjectiveMeter:
    dictionary = model_dictionary(model)
    return ObjectiveMeter(dictionary.size if dictionary is not None else None)


@torch.no_grad()
def evaluate_pretraining(model: nn.Module, heads: PretrainingHeads, data: CaptionPairs, config: PretrainConfig,
                         runtime: Runtime, seed: int, split: str = "val", progress: bool = True) -> dict[str, Any]:
    """Objective losses and accuracies on ``split``; the same masks and negatives on every call (fixed seed).

    Eval mode: every pixel token enters (no sampling) and the dictionary is not updated; MVM masking stays on
    when the run uses MVM, drawn from the batch's own seed. Under torchrun every rank must call this (it gathers).
    """
    model.eval()
    heads.eval()
    encoder = model.visual_encoder
    saved = getattr(encoder, "mvm_generator", None)
    meter = _meter(model)
    size = config.eval_batch_size
    count = len(data.examples(split))
    batches = [list(range(begin, min(begin + size, count))) for begin in range(0, count, size)]
    try:
        for index in tqdm(shard_range(len(batches)), desc=f"pretrain {split}", disable=not (progress and is_main()),
                          leave=False, unit="batch"):
            generator = torch.Generator().manual_seed(derived_seed(seed, index, 0))
            if hasattr(encoder, "mvm_generator"):
                encoder.mvm_generator = torch.Generator().manual_seed(derived_seed(seed, index, 1))
            batch = to_device(data.collate(split, batches[index], generator), runtime.device)
            with runtime.autocast():
                results, visual = pretraining_step(model, heads, batch)
            meter.add(results, visual)
    finally:
        if hasattr(encoder, "mvm_generator"):
            encoder.mvm_generator = saved
    return meter.gathered().summary()


def evaluate_pretraining_checkpoint(checkpoint: Path, data: Path, *, limit: int | None = None, split: str = "val",
                                    runtime: Runtime | None = None, progress: bool = False) -> dict[str, Any]:
    """Score a ``vlbench pretrain`` checkpoint on ``split`` of a captions spec, exactly as the run's validation
    after its last epoch did (same batches, masks and negatives): the check that N processes validate as one."""
    state, meta = load_checkpoint(checkpoint)
    if meta.get("task") != "pretrain":
        raise VlbenchError(f"{checkpoint}: not a pre-training checkpoint (task {meta.get('task')!r})")
    runtime = runtime or Runtime.start("cpu", join=False)
    setup = ModelSetup.from_dict(meta["model_config"])
    config = PretrainConfig.from_dict(meta["pretrain_config"])
    model = assemble(setup, runtime, load=lambda m: load_strict(m, part(state, "model"), checkpoint, "model")).model
    heads = PretrainingHeads(model, config.objectives, setup.dictionary.size if setup.dictionary else None,
                             config.mvm_head)
    own = part(state, "pretrain")
    differ = set(heads.own_state_dict()) ^ set(own)
    if differ:
        raise VlbenchError(f"{checkpoint}: pre-training heads do not fit (e.g. {sorted(differ)[0]})")
    heads.load_state_dict(own, strict=False)  # the MLM decoder is the word embedding, loaded with the model
    if recipe(setup.name).capabilities.visual_dictionary:
        model.visual_encoder.use_dictionary = True  # as in pre-training
        if "mvm" in config.objectives:
            model.visual_encoder.mvm_probability = config.mvm_probability
    pairs = CaptionPairs(load_spec(data), ImageTensors.for_visual(setup.visual),
                         TextBatcher(load_tokenizer(), config.max_text_len), config,
                         vocab_size=setup.transformer.vocab_size, limit=limit)
    heads.to(runtime.device)
    return evaluate_pretraining(model, heads, pairs, config, runtime, int(meta["seed"]), split, progress)

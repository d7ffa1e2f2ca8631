"""The pre-training loop: every chosen objective from one forward pass, summed with equal weights (as in
Pixel-BERT and SOHO), the shared optimisers and schedule, and a validation pass after every epoch.

Under torchrun the step runs under DistributedDataParallel (model and heads as one module), each rank takes its
share of one shared shuffle (``--batch-size`` per process), SOHO's dictionary averages its update over the ranks
itself, and validation is sharded (see ``evaluate``) so its numbers do not depend on the process count.
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
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from harness.batches import to_device
from harness.data.workers import reported
from harness.distributed import data_parallel, is_main, rank_seed, sync_buffers, world_size
from harness.pretraining.config import PretrainConfig
from harness.pretraining.data import CaptionPairs
from harness.pretraining.evaluate import ObjectiveMeter, evaluate_pretraining, model_dictionary
from harness.pretraining.objective import PretrainingObjective
from harness.runtime import Runtime
from harness.training.cpu_share import CpuClock, overall_cpu_share
from harness.training.loop import NonFiniteLoss, shuffled_sampler
from harness.training.optim import build_optimizers, optimizer_step, warmup_linear_decay
from harness.training.resume import Position, ResumeFile, RngSnapshot
from pixelbert.pretraining.heads import PretrainingHeads


@dataclass
class PretrainResult:
    steps: int = 0
    samples: int = 0
    wall_seconds: float = 0.0
    samples_per_second: float = 0.0
    cpu_share: float | None = None
    """The share of its threads' CPU time the process got while training (harness/training/cpu_share.py)."""
    history: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _generators(model: nn.Module, data_generator: torch.Generator) -> dict[str, torch.Generator]:
    """Every generator pre-training draws from besides the data order's, by name (for resume points)."""
    encoder = model.visual_encoder
    found = {"pixel_sample": getattr(encoder, "sample_generator", None),
             "mvm": getattr(encoder, "mvm_generator", None),
             "dictionary": getattr(getattr(encoder, "dictionary", None), "generator", None)}
    return {name: g for name, g in found.items() if isinstance(g, torch.Generator) and g is not data_generator}


# Streams that differ per rank under torchrun (see _seed_rank_streams); the dictionary's is shared on purpose.
_RANK_STREAMS = ("collate", "pixel_sample", "mvm", "dropout")


def _seed_rank_streams(shared: torch.Generator, collate: torch.Generator,
                       generators: dict[str, torch.Generator]) -> None:
    """Several processes, at every epoch start: from one value drawn from the shared data generator (identical on
    every rank), give each rank its own MLM masks / ITM negatives, pixel samples, MVM masks and dropout, so the
    ranks' different examples are not all masked alike. Re-derived per epoch, a resumed epoch draws the same.
    The dictionary's generator stays shared: its re-seeding must agree on every rank."""
    base = int(torch.randint(2**62, (1,), generator=shared))
    collate.manual_seed(rank_seed(base, _RANK_STREAMS.index("collate")))
    for name in ("pixel_sample", "mvm"):
        if name in generators:
            generators[name].manual_seed(rank_seed(base, _RANK_STREAMS.index(name)))
    torch.manual_seed(rank_seed(base, _RANK_STREAMS.index("dropout")))


def pretrain(model: nn.Module, heads: PretrainingHeads, data: CaptionPairs, config: PretrainConfig,
             runtime: Runtime, generator: torch.Generator, seed: int, cnn: nn.Module | None = None,
             on_epoch: Callable[[int, dict[str, Any]], None] | None = None, progress: bool = True,
             resume: ResumeFile | None = None, resuming: bool = False) -> PretrainResult:
    """Pre-train ``model`` with ``heads`` on the train split; validate and call ``on_epoch`` after each epoch.

    ``resume`` keeps a resume point at every epoch's end (pre-training resumes at epoch granularity: a killed
    run loses at most the epoch in progress); with ``resuming`` it first continues from it. Under torchrun every
    rank calls this; only rank 0 writes the resume point (``on_epoch`` is called on every rank)."""
    several = world_size() > 1
    indices = data.train_rows()
    # One process: shuffle and batch sampling (ITM negatives, MLM masks) draw from one generator, as always.
    # Several: the shuffle is shared (same seed everywhere), the sampling is each rank's own.
    collate_generator = torch.Generator() if several else generator
    sampler = shuffled_sampler(indices, generator)
    # Sampling happens in collate; with worker processes each worker holds its own copy of the generator, so the
    # draws stay reproducible but differ from num_workers=0.
    loader = DataLoader(indices, batch_size=config.batch_size, sampler=sampler, num_workers=config.num_workers,
                        generator=None if several else generator,
                        collate_fn=lambda batch: data.collate("train", batch, collate_generator, rows=True))
    steps_per_epoch = math.ceil(len(loader) / config.grad_accum)
    optim_config = config.optimizer_config()
    # One container: the MLM decoder is tied to the word embeddings, and named_parameters() of a single module
    # lists a shared tensor once, so the optimiser never sees it twice.
    both = nn.ModuleDict({"model": model, "heads": heads})
    optimizers = build_optimizers({"pretrain": both}, cnn, optim_config)
    schedulers = [warmup_linear_decay(opt, steps_per_epoch * config.epochs, config.warmup_ratio) for opt in optimizers]
    params = [p for p in both.parameters() if p.requires_grad]
    dictionary = model_dictionary(model)
    objective: nn.Module = PretrainingObjective(model, heads)
    if several:
        # A batch with no masked token (or no MVM cell) leaves that head without a gradient on this rank only.
        objective = data_parallel(objective, find_unused_parameters=True)
    writes_resume = resume is not None and is_main()

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
        if isinstance(sampler, DistributedSampler):
            sampler.set_epoch(epoch)
        if several:
            _seed_rank_streams(generator, collate_generator, generators)
        if dictionary is not None:
            dictionary.set_epoch(epoch)
        meter = ObjectiveMeter(dictionary.size if dictionary is not None else None)
        start = time.perf_counter()
        clock = CpuClock()
        seen = 0
        bar = tqdm(loader, desc=f"pretrain {epoch}/{config.epochs}", disable=not (progress and is_main()),
                   leave=False, unit="batch")
        for index, batch in enumerate(reported(iter(bar))):
            batch = to_device(batch, runtime.device)
            with runtime.autocast():
                loss, results, visual = objective(batch)
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
        share = clock.share()
        result.wall_seconds += seconds
        seen *= world_size()  # every rank trained on as many (the distributed sampler pads evenly)
        result.samples += seen
        record: dict[str, Any] = {"epoch": epoch, "seconds": round(seconds, 3), "samples_per_second":
                                  round(seen / max(seconds, 1e-9), 2), "cpu_share": share,
                                  "train": meter.gathered().summary()}
        if dictionary is not None:
            record["dictionary_momentum"] = dictionary.momentum
            record["dictionary_reseeded_total"] = dictionary.reseeded
        sync_buffers(both)  # rank 0's BatchNorm statistics everywhere; the dictionary is checked, not copied
        record["val"] = evaluate_pretraining(model, heads, data, config, runtime, seed, progress=progress)
        result.history.append(record)
        if on_epoch is not None:
            on_epoch(epoch, record)
        if writes_resume and epoch < config.epochs:
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
    result.cpu_share = overall_cpu_share(result.history)
    return result

"""The training loop shared by every model and task.

Validation after every ``eval_every`` epochs selects the checkpoint (the task's selection metric, higher
is better); the selected weights are written at once, so a crash or a NaN later keeps the last good ones.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields
from typing import Any

import torch
from torch import nn
from torch.utils.data import BatchSampler, DataLoader, DistributedSampler, RandomSampler, Sampler
from tqdm import tqdm

from harness.batches import to_device
from harness.data.workers import reported
from harness.distributed import data_parallel, is_main, rank, sync_buffers, world_size
from harness.errors import VlbenchError
from harness.runtime import Runtime
from harness.tasks.base import Evaluation, Task
from harness.training.config import TrainConfig
from harness.training.cpu_share import CpuClock, overall_cpu_share
from harness.training.optim import build_optimizers, optimizer_step, warmup_linear_decay
from harness.training.phases import NO_PHASES, NoPhases
from harness.training.resume import Position, ResumeFile, RngSnapshot


@dataclass
class TrainResult:
    steps: int = 0
    samples: int = 0
    wall_seconds: float = 0.0
    samples_per_second: float = 0.0
    cpu_share: float | None = None
    """The share of its threads' CPU time the process got while training (harness/training/cpu_share.py): near 1
    alone on the machine; well below when other jobs shared the cores, and then the seconds say little about speed."""
    best_epoch: int | None = None
    best_val: float | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    best_evaluation: Evaluation | None = field(default=None, repr=False, compare=False)
    """The validation of the selected epoch (its predictions too), so ``run`` need not score val again."""

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "best_evaluation"}


def samples_in(batch: dict[str, Any]) -> int:
    """A training batch's sample count: its texts (``input_ids``: one per VQA question, NLVR2 statement,
    retrieval positive; an NLVR2 batch holds two images per sample), else the length of its first tensor."""
    if isinstance(batch.get("input_ids"), torch.Tensor):
        return len(batch["input_ids"])
    return len(next(v for v in batch.values() if isinstance(v, torch.Tensor)))


class NonFiniteLoss(VlbenchError):
    pass


class TrainingObjective(nn.Module):
    """Model + head + the task's loss as one module, so DistributedDataParallel sees the whole step in forward
    (tasks call several model methods per step, which DDP would not see if it wrapped the model alone)."""

    def __init__(self, model: nn.Module, head: nn.Module, task: Task) -> None:
        super().__init__()
        self.model = model
        self.head = head
        self.task = task

    def forward(self, batch: dict[str, Any]) -> torch.Tensor:
        return self.task.training_loss(self.model, self.head, batch)


class Interrupted(VlbenchError):
    """Ctrl-C during training, after the resume point was saved."""


class SkippingBatchSampler(Sampler[list[int]]):
    """BatchSampler over ``sampler`` (drop_last False) whose next pass can skip its first ``skip`` batches without
    them being loaded: a resumed epoch draws the same shuffle, then continues after the trained batches."""

    def __init__(self, sampler: Sampler[int], batch_size: int) -> None:
        self.batches = BatchSampler(sampler, batch_size, drop_last=False)
        self.skip = 0

    def __iter__(self) -> Iterator[list[int]]:
        skip, self.skip = self.skip, 0
        for index, batch in enumerate(self.batches):
            if index >= skip:
                yield batch

    def __len__(self) -> int:
        return len(self.batches)


@dataclass
class _Boundary:
    """The loop at its last optimiser step: what Ctrl-C saves (a half-accumulated step is dropped)."""

    batches_done: int
    running: float
    seen: int
    rng: RngSnapshot | None


def shuffled_sampler(indices: list[int], generator: torch.Generator) -> Sampler[int]:
    """The training order: one process draws it from ``generator``; under torchrun each rank takes every
    world_size-th example of one shared shuffle (a seed drawn from ``generator``, identical on every rank), so the
    effective batch is batch_size x world_size."""
    if world_size() > 1:
        seed = int(torch.randint(2**31 - 1, (1,), generator=generator))
        return DistributedSampler(indices, num_replicas=world_size(), rank=rank(), shuffle=True, seed=seed)
    return RandomSampler(indices, generator=generator)


def train(
    model: nn.Module,
    head: nn.Module,
    task: Task,
    config: TrainConfig,
    runtime: Runtime,
    generator: torch.Generator,
    on_best: Callable[[int, dict[str, Any]], None],
    cnn: nn.Module | None = None,
    progress: bool = True,
    phases: NoPhases = NO_PHASES,
    resume: ResumeFile | None = None,
    resuming: bool = False,
) -> TrainResult:
    """Train ``model`` + ``head`` on the task's train split; call ``on_best(epoch, val_metrics)`` on improvement.

    ``cnn`` (part of ``model``) gets the CNN learning rate / optimiser of ``config``. ``phases`` times the parts
    of each step (``bench``'s harness-overhead measurement); the default costs nothing. ``resume`` keeps a resume
    point up to date (every ``config.checkpoint_every`` steps, after each epoch, and on Ctrl-C); with
    ``resuming`` training first continues from it.
    """
    indices = list(range(task.train_size()))
    sampler = shuffled_sampler(indices, generator)
    # The order of DataLoader(shuffle=True, generator=generator), with batches a resumed epoch can skip unread.
    batch_sampler = SkippingBatchSampler(sampler, config.batch_size)
    loader = DataLoader(
        indices, batch_sampler=batch_sampler, generator=generator if world_size() == 1 else None,
        collate_fn=task.collate_train, num_workers=config.num_workers, pin_memory=runtime.device.type == "cuda",
        persistent_workers=config.num_workers > 0,
    )
    objective: nn.Module = TrainingObjective(model, head, task)
    if world_size() > 1:
        objective = data_parallel(objective)
    progress = progress and is_main()
    steps_per_epoch = math.ceil(len(loader) / config.grad_accum)
    total_steps = steps_per_epoch * config.epochs
    optimizers = build_optimizers({"model": model, "head": head}, cnn, config)
    schedulers = [warmup_linear_decay(opt, total_steps, config.warmup_ratio, config.lr_decay_epochs, steps_per_epoch)
                  for opt in optimizers]
    params = [p for group in (model.parameters(), head.parameters()) for p in group if p.requires_grad]
    writes_resume = resume is not None and is_main()

    result = TrainResult()
    train_seconds = 0.0
    first_epoch = 1
    position: Position | None = None
    if resuming and resume is not None:
        position = resume.restore(model, head, optimizers, schedulers)
        first_epoch, train_seconds = position.epoch, position.train_seconds
        result = TrainResult(**position.result)
        generator.set_state(position.epoch_generator_state)

    for epoch in range(first_epoch, config.epochs + 1):
        model.train()
        head.train()
        if isinstance(sampler, DistributedSampler):
            sampler.set_epoch(epoch)
        epoch_generator_state = generator.get_state()
        running, seen, done_before, skip = 0.0, 0, 0.0, 0
        if position is not None:  # the epoch we resume in: its first batches are already trained
            running, seen, done_before = position.running_loss, position.seen, position.epoch_seconds
            skip = batch_sampler.skip = position.batches_done
        epoch_start = time.perf_counter() - done_before
        clock = CpuClock()  # this process's stretch of the epoch (a resumed epoch: since the resume)
        bar = tqdm(loader, desc=f"train {epoch}/{config.epochs}", disable=not progress, leave=False, unit="batch",
                   initial=skip)
        batches = reported(iter(bar))  # draws the epoch's shuffle (and skips the batches already trained)
        if position is not None:
            position.rng.restore()  # after the iterator's own draws: exactly where the interrupted run stood
            position = None
        boundary = _Boundary(skip, running, seen, RngSnapshot.capture() if writes_resume else None)

        def resume_point(at: _Boundary, epoch: int = epoch, epoch_start: float = epoch_start,
                         epoch_generator_state: torch.Tensor = epoch_generator_state,
                         trained_before: float = train_seconds) -> Position:
            assert at.rng is not None
            elapsed = time.perf_counter() - epoch_start
            return Position(epoch=epoch, batches_done=at.batches_done, epoch_generator_state=epoch_generator_state,
                            running_loss=at.running, seen=at.seen, epoch_seconds=elapsed,
                            train_seconds=trained_before + elapsed, result=result.to_dict(), rng=at.rng)

        try:
            for index in range(skip, len(loader)):
                with phases("data"):  # collation (image decode/resize, tokenisation, targets), copy to device
                    batch = to_device(next(batches), runtime.device)
                with phases("compute"):
                    with runtime.autocast():
                        loss = objective(batch)
                    if not torch.isfinite(loss):
                        raise NonFiniteLoss(
                            f"training loss became {loss.item()} at epoch {epoch}, step {result.steps}; stopped "
                            "(the last selected checkpoint, if any, is kept). Try a lower --lr."
                        )
                    (loss / config.grad_accum).backward()
                    stepped = (index + 1) % config.grad_accum == 0 or index + 1 == len(loader)
                    if stepped:
                        optimizer_step(optimizers, schedulers, params, config.grad_clip)
                        result.steps += 1
                with phases("logging"):
                    batch_size = samples_in(batch)
                    seen += batch_size
                    running += loss.item() * batch_size
                    elapsed = time.perf_counter() - epoch_start
                    bar.set_postfix(loss=f"{running / seen:.4f}", samples_s=f"{seen / max(elapsed, 1e-9):.1f}")
                if stepped and writes_resume:
                    with phases("checkpoint"):
                        boundary = _Boundary(index + 1, running, seen, RngSnapshot.capture())
                        if resume.due(result.steps) and index + 1 < len(loader):
                            resume.save(model, head, optimizers, schedulers, resume_point(boundary))
        except KeyboardInterrupt:
            if not writes_resume:
                raise
            resume.save(model, head, optimizers, schedulers, resume_point(boundary))
            raise Interrupted(f"interrupted at epoch {epoch}, step {result.steps}; the run can continue from "
                              f"{resume.path}: rerun the same command with --resume") from None
        bar.close()
        epoch_seconds = time.perf_counter() - epoch_start
        train_seconds += epoch_seconds
        result.samples += seen * world_size()  # every rank trained on as many (the sampler pads evenly)
        record: dict[str, Any] = {"epoch": epoch, "loss": running / max(seen, 1), "seconds": round(epoch_seconds, 3),
                                  "cpu_share": clock.share()}

        if epoch % config.eval_every == 0 or epoch == config.epochs:
            sync_buffers(model)  # every rank scores its shard with the BatchNorm statistics the checkpoint keeps
            with phases("evaluate"):
                evaluation = task.evaluate(model, head, "val", runtime, progress=progress)
            value = evaluation.metrics[task.selection_metric] if evaluation.metrics else None
            record["val"] = evaluation.metrics
            if value is not None and (result.best_val is None or value > result.best_val):
                result.best_val, result.best_epoch = value, epoch
                result.best_evaluation = evaluation
                with phases("checkpoint"):
                    on_best(epoch, evaluation.metrics)
        result.history.append(record)
        if writes_resume and epoch < config.epochs:
            # The next epoch from its start: the generator now stands where that epoch's shuffle begins.
            with phases("checkpoint"):
                resume.save(model, head, optimizers, schedulers, Position(
                    epoch=epoch + 1, batches_done=0, epoch_generator_state=generator.get_state(), running_loss=0.0,
                    seen=0, epoch_seconds=0.0, train_seconds=train_seconds, result=result.to_dict(),
                    rng=RngSnapshot.capture()))
        if is_main():  # also with --no-progress: batch jobs' logs keep one line per epoch
            val = record.get("val")
            shown = f", val {task.selection_metric} {val[task.selection_metric]:.2f}" if val else ""
            tqdm.write(f"epoch {epoch}/{config.epochs}: loss {record['loss']:.4f}{shown} ({epoch_seconds:.1f}s)",
                       file=sys.stderr)

    result.wall_seconds = round(train_seconds, 3)
    result.samples_per_second = round(result.samples / max(train_seconds, 1e-9), 2)
    result.cpu_share = overall_cpu_share(result.history)
    return result

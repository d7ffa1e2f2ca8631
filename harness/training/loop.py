"""The training loop shared by every model and task.

Validation after every ``eval_every`` epochs selects the checkpoint (the task's selection metric, higher
is better); the selected weights are written at once, so a crash or a NaN later keeps the last good ones.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from harness.batches import to_device
from harness.distributed import is_main, rank, world_size
from harness.errors import VlbenchError
from harness.tasks.base import Evaluation, Task
from harness.training.config import TrainConfig
from harness.training.optim import build_optimizers, optimizer_step, warmup_linear_decay
from harness.training.phases import NO_PHASES, NoPhases
from harness.training.precision import autocast


@dataclass
class TrainResult:
    steps: int = 0
    samples: int = 0
    wall_seconds: float = 0.0
    samples_per_second: float = 0.0
    best_epoch: int | None = None
    best_val: float | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    best_evaluation: Evaluation | None = field(default=None, repr=False, compare=False)
    """The validation of the selected epoch (its predictions too), so ``run`` need not score val again."""

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "best_evaluation"}


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


def train(
    model: nn.Module,
    head: nn.Module,
    task: Task,
    config: TrainConfig,
    device: torch.device,
    generator: torch.Generator,
    on_best: Callable[[int, dict[str, Any]], None],
    cnn: nn.Module | None = None,
    progress: bool = True,
    phases: NoPhases = NO_PHASES,
) -> TrainResult:
    """Train ``model`` + ``head`` on the task's train split; call ``on_best(epoch, val_metrics)`` on improvement.

    ``cnn`` (part of ``model``) gets the CNN learning rate / optimiser of ``config``. ``phases`` times the parts
    of each step (``bench``'s harness-overhead measurement); the default costs nothing.
    """
    indices = list(range(task.train_size()))
    sampler: DistributedSampler | None = None
    if world_size() > 1:
        # Each rank takes every world_size-th example of one shared shuffle (same seed on every rank); the
        # effective batch is batch_size x world_size.
        seed = int(torch.randint(2**31 - 1, (1,), generator=generator))
        sampler = DistributedSampler(indices, num_replicas=world_size(), rank=rank(), shuffle=True, seed=seed)
    loader = DataLoader(
        indices, batch_size=config.batch_size, shuffle=sampler is None, sampler=sampler,
        generator=generator if sampler is None else None, collate_fn=task.collate_train,
        num_workers=config.num_workers, pin_memory=device.type == "cuda", persistent_workers=config.num_workers > 0,
    )
    objective: nn.Module = TrainingObjective(model, head, task)
    if world_size() > 1:
        objective = DistributedDataParallel(objective)
    progress = progress and is_main()
    steps_per_epoch = math.ceil(len(loader) / config.grad_accum)
    total_steps = steps_per_epoch * config.epochs
    optimizers = build_optimizers({"model": model, "head": head}, cnn, config)
    schedulers = [warmup_linear_decay(opt, total_steps, config.warmup_ratio) for opt in optimizers]
    params = [p for group in (model.parameters(), head.parameters()) for p in group if p.requires_grad]

    result = TrainResult()
    train_seconds = 0.0
    for epoch in range(1, config.epochs + 1):
        model.train()
        head.train()
        if sampler is not None:
            sampler.set_epoch(epoch)
        epoch_start = time.perf_counter()
        running, seen = 0.0, 0
        bar = tqdm(loader, desc=f"train {epoch}/{config.epochs}", disable=not progress, leave=False, unit="batch")
        batches = iter(bar)
        for index in range(len(loader)):
            with phases("data"):  # collation (image decode/resize, tokenisation, targets) and the copy to device
                batch = to_device(next(batches), device)
            with phases("compute"):
                with autocast(device):
                    loss = objective(batch)
                if not torch.isfinite(loss):
                    raise NonFiniteLoss(
                        f"training loss became {loss.item()} at epoch {epoch}, step {result.steps}; stopped "
                        "(the last selected checkpoint, if any, is kept). Try a lower --lr."
                    )
                (loss / config.grad_accum).backward()
                if (index + 1) % config.grad_accum == 0 or index + 1 == len(loader):
                    optimizer_step(optimizers, schedulers, params, config.grad_clip)
                    result.steps += 1
            with phases("logging"):
                batch_size = len(next(v for v in batch.values() if isinstance(v, torch.Tensor)))
                seen += batch_size
                running += loss.item() * batch_size
                elapsed = time.perf_counter() - epoch_start
                bar.set_postfix(loss=f"{running / seen:.4f}", samples_s=f"{seen / max(elapsed, 1e-9):.1f}")
        bar.close()
        epoch_seconds = time.perf_counter() - epoch_start
        train_seconds += epoch_seconds
        result.samples += seen * world_size()  # every rank trained on as many (the sampler pads evenly)
        record: dict[str, Any] = {"epoch": epoch, "loss": running / max(seen, 1), "seconds": round(epoch_seconds, 3)}

        if epoch % config.eval_every == 0 or epoch == config.epochs:
            with phases("evaluate"):
                evaluation = task.evaluate(model, head, "val", device, progress=progress)
            value = evaluation.metrics[task.selection_metric] if evaluation.metrics else None
            record["val"] = evaluation.metrics
            if value is not None and (result.best_val is None or value > result.best_val):
                result.best_val, result.best_epoch = value, epoch
                result.best_evaluation = evaluation
                with phases("checkpoint"):
                    on_best(epoch, evaluation.metrics)
        result.history.append(record)
        if progress:
            val = record.get("val")
            shown = f", val {task.selection_metric} {val[task.selection_metric]}" if val else ""
            tqdm.write(f"epoch {epoch}/{config.epochs}: loss {record['loss']:.4f}{shown} ({epoch_seconds:.1f}s)")

    result.wall_seconds = round(train_seconds, 3)
    result.samples_per_second = round(result.samples / max(train_seconds, 1e-9), 2)
    return result

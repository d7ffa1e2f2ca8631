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
from torch.utils.data import DataLoader
from tqdm import tqdm

from harness.batches import to_device
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
    loader = DataLoader(
        list(range(task.train_size())), batch_size=config.batch_size, shuffle=True, generator=generator,
        collate_fn=task.collate_train, num_workers=config.num_workers, pin_memory=device.type == "cuda",
        persistent_workers=config.num_workers > 0,
    )
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
        epoch_start = time.perf_counter()
        running, seen = 0.0, 0
        bar = tqdm(loader, desc=f"train {epoch}/{config.epochs}", disable=not progress, leave=False, unit="batch")
        batches = iter(bar)
        for index in range(len(loader)):
            with phases("data"):  # collation (image decode/resize, tokenisation, targets) and the copy to device
                batch = to_device(next(batches), device)
            with phases("compute"):
                with autocast(device):
                    loss = task.training_loss(model, head, batch)
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
        result.samples += seen
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

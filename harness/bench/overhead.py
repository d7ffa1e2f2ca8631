"""Harness overhead: the share of training time that is not model compute, measured on the real loop.

``harness.training.loop.train`` runs (the very function ``run`` uses) with a :class:`PhaseTimer`: per step it
times data (DataLoader + ``collate_train``: image decode/resize, tokenisation, targets, copy to device), compute
(forward, backward, clipping, optimizer) and logging (loss read-back, progress bar); per epoch the validation
pass and the checkpoint write. Inside validation, forward hooks on the model's parts and the task head time the
model, so the rest of it (batching, metric computation, prediction formatting) is harness time too.

The loop runs on the first ``steps * batch`` training examples for ``epochs`` epochs (epoch 1 decodes images,
later ones hit the decoded-image cache, as in a real run), validating on the full val split. Per-epoch costs are
then also projected onto a full epoch of the real train split (``projected_full_epoch``), which is what a run
actually pays: validation once per ``train_size / batch`` steps, not once per ``steps``.
"""

from __future__ import annotations

import math
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from harness.assembly import prefixed
from harness.bench.subjects import Subject
from harness.models import trainable_cnn
from harness.training.loop import train
from harness.training.phases import PhaseTimer

TARGET = 0.05
HARNESS_STEP_PHASES = ("data", "logging")


class _Subset:
    """The task with its train split cut to the first ``size`` examples (everything else delegated)."""

    def __init__(self, task: Any, size: int) -> None:
        self._task = task
        self._size = size

    def train_size(self) -> int:
        return self._size

    def __getattr__(self, name: str) -> Any:
        return getattr(self._task, name)


class _ForwardClock:
    """Accumulates the wall time spent inside the given modules' forward calls (not nested in each other)."""

    def __init__(self, modules: list[nn.Module], device: torch.device) -> None:
        self.seconds = 0.0
        self._device = device
        self._start: dict[int, float] = {}
        self._handles = []
        for module in modules:
            self._handles.append(module.register_forward_pre_hook(self._pre))
            self._handles.append(module.register_forward_hook(self._post))

    def _sync(self) -> None:
        if self._device.type == "cuda":
            torch.cuda.synchronize(self._device)

    def _pre(self, module: nn.Module, args: Any) -> None:
        self._sync()
        self._start[id(module)] = time.perf_counter()

    def _post(self, module: nn.Module, args: Any, output: Any) -> None:
        self._sync()
        self.seconds += time.perf_counter() - self._start.pop(id(module))

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()


def measure_overhead(subject: Subject, *, steps: int = 8, epochs: int = 2, progress: bool = False) -> dict[str, Any]:
    """Run the real training loop briefly with phase timers; returns seconds per phase and the harness share."""
    task, model, head, device = subject.task, subject.model, subject.head, subject.device
    config = subject.train_config
    size = min(task.train_size(), steps * config.batch_size)
    config = replace(config, epochs=epochs, eval_every=1)
    timer = PhaseTimer(device)
    parts = [model.visual_encoder, model.text_embeddings, model.transformer, head]
    clock = _ForwardClock(parts, device)
    eval_model_seconds = 0.0

    original_evaluate = task.evaluate

    def evaluate(*args: Any, **kwargs: Any) -> Any:
        nonlocal eval_model_seconds
        before = clock.seconds
        result = original_evaluate(*args, **kwargs)
        eval_model_seconds += clock.seconds - before
        return result

    subset = _Subset(task, size)
    subset.evaluate = evaluate  # type: ignore[attr-defined]
    with tempfile.TemporaryDirectory(prefix="vlbench-bench-") as tmp:
        checkpoint = Path(tmp) / "checkpoint.safetensors"

        def on_best(epoch: int, metrics: dict[str, Any]) -> None:
            # What run's on_best writes: the model + head state dict as safetensors.
            from harness.checkpoints import save_checkpoint

            save_checkpoint(checkpoint, prefixed({"model": model.state_dict(), "head": head.state_dict()}),
                            {"epoch": epoch})

        generator = torch.Generator().manual_seed(0)
        start = time.perf_counter()
        try:
            result = train(model, head, subset, config, subject.runtime, generator, on_best,  # type: ignore[arg-type]
                           cnn=trainable_cnn(model), progress=progress, phases=timer)
        finally:
            clock.remove()
        wall = time.perf_counter() - start
    model.eval()
    head.eval()
    seconds = dict(timer.seconds)
    n_steps = max(1, timer.counts.get("compute", 0))
    evaluate_total = seconds.get("evaluate", 0.0)
    eval_harness = max(0.0, evaluate_total - eval_model_seconds)
    step_harness = sum(seconds.get(p, 0.0) for p in HARNESS_STEP_PHASES)
    compute = seconds.get("compute", 0.0)
    checkpoint_s = seconds.get("checkpoint", 0.0)
    harness = step_harness + eval_harness + checkpoint_s
    total = compute + eval_model_seconds + harness
    # Projection onto a full epoch of the real train split: per-step costs scale with steps, per-epoch ones do not.
    full_steps = math.ceil(task.train_size() / config.batch_size)
    per_step = {k: seconds.get(k, 0.0) / n_steps for k in ("data", "compute", "logging")}
    per_epoch = {"evaluate_model": eval_model_seconds / epochs, "evaluate_harness": eval_harness / epochs,
                 "checkpoint": checkpoint_s / max(1, timer.counts.get("checkpoint", 0)) if checkpoint_s else 0.0}
    full_harness = full_steps * (per_step["data"] + per_step["logging"]) + per_epoch["evaluate_harness"] \
        + per_epoch["checkpoint"]
    full_total = full_harness + full_steps * per_step["compute"] + per_epoch["evaluate_model"]
    return {
        "method": "phase timers in harness.training.loop.train + forward hooks timing the model inside validation",
        "steps": n_steps, "epochs": epochs, "train_examples": size, "batch_size": config.batch_size,
        "wall_seconds": wall,
        "seconds": {"data": seconds.get("data", 0.0), "compute": compute, "logging": seconds.get("logging", 0.0),
                    "evaluate_total": evaluate_total, "evaluate_model": eval_model_seconds,
                    "evaluate_harness": eval_harness, "checkpoint": checkpoint_s},
        "per_step_ms": {k: 1000 * v for k, v in per_step.items()},
        "fraction": harness / total if total else None,
        "step_fraction": step_harness / (step_harness + compute) if compute else None,
        "projected_full_epoch": {"steps": full_steps, "fraction": full_harness / full_total if full_total else None},
        "target": TARGET,
        "meets_target": bool(full_total and full_harness / full_total < TARGET),
        "final_loss": result.history[-1]["loss"] if result.history else None,
    }

"""Resumable training: everything a run needs to continue exactly where it stopped, in one safetensors file.

The file holds the model, head, optimiser and scheduler states, the data-order generator as it was at the
start of the current epoch plus how many batches of that epoch are done, and every random-number state (torch,
Python, NumPy) at that step. It is rewritten atomically every ``checkpoint_every`` optimiser steps and after every
epoch, so a run killed at any moment (even by SIGKILL) continues from its last resume point; on a CPU the
resumed run ends with the same metrics as an uninterrupted one. Nothing in it is pickled: tensors are
safetensors, the rest is a JSON header.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from harness.checkpoints import load_checkpoint, read_checkpoint_meta, save_checkpoint
from harness.errors import VlbenchError

RESUME_NAME = "resume.safetensors"


@dataclass
class RngSnapshot:
    """Every global random-number state at one moment."""

    torch_state: torch.Tensor
    python_state: list[Any]
    numpy_state: list[Any]
    cuda_states: list[torch.Tensor] = field(default_factory=list)

    @classmethod
    def capture(cls) -> RngSnapshot:
        version, internal, gauss = random.getstate()
        kind, keys, pos, has_gauss, cached = np.random.get_state()
        return cls(torch.get_rng_state(), [version, list(internal), gauss],
                   [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)],
                   torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [])

    def restore(self) -> None:
        torch.set_rng_state(self.torch_state)
        version, internal, gauss = self.python_state
        random.setstate((version, tuple(internal), gauss))
        kind, keys, pos, has_gauss, cached = self.numpy_state
        np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
        if self.cuda_states and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(self.cuda_states)


@dataclass
class Position:
    """Where training is: the epoch in progress, the batches of it already trained, and the loop's counters."""

    epoch: int
    batches_done: int
    epoch_generator_state: torch.Tensor
    """The data-order generator at the start of ``epoch`` (it draws the epoch's shuffle)."""
    running_loss: float
    seen: int
    epoch_seconds: float
    train_seconds: float
    result: dict[str, Any]
    rng: RngSnapshot
    generators: dict[str, torch.Tensor] = field(default_factory=dict)
    """States of the run's own generators besides the data order (pixel sampling, dictionary re-seeding, ...)."""
    counters: dict[str, Any] = field(default_factory=dict)
    """Small plain values the loop keeps outside any state dict (e.g. the dictionary's re-seed count)."""


def _optimizer_tensors(prefix: str, optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, Any] = {}
    for param_id, values in state["state"].items():
        for name, value in values.items():
            key = f"{param_id}.{name}"
            if isinstance(value, torch.Tensor):
                tensors[f"{prefix}.{key}"] = value
            else:
                scalars[key] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _optimizer_state(prefix: str, tensors: dict[str, torch.Tensor], meta: dict) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith(prefix + "."):
            param_id, name = key[len(prefix) + 1:].split(".", 1)
            state.setdefault(int(param_id), {})[name] = value
    for key, value in meta["scalars"].items():
        param_id, name = key.split(".", 1)
        state.setdefault(int(param_id), {})[name] = value
    return {"state": state, "param_groups": meta["param_groups"]}


class ResumeFile:
    """The resume point of one run directory. ``run_key`` (model, task, configs, seed, data fingerprints) must
    match on resume, so a run never continues under different settings or data."""

    def __init__(self, run_dir: Path, run_key: dict[str, Any], every: int) -> None:
        self.path = run_dir / RESUME_NAME
        self.run_key = json.loads(json.dumps(run_key))  # as the header will hold it (tuples become lists)
        self.every = every

    def due(self, step: int) -> bool:
        return self.every > 0 and step % self.every == 0

    def save(self, model: nn.Module, head: nn.Module, optimizers: list[torch.optim.Optimizer], schedulers: list,
             position: Position) -> None:
        tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
        tensors.update({f"head.{k}": v for k, v in head.state_dict().items()})
        optimizer_meta = []
        for i, optimizer in enumerate(optimizers):
            extra, meta = _optimizer_tensors(f"optimizer{i}", optimizer)
            tensors.update(extra)
            optimizer_meta.append(meta)
        tensors["rng.torch"] = position.rng.torch_state
        tensors.update({f"rng.cuda{i}": s for i, s in enumerate(position.rng.cuda_states)})
        tensors["rng.epoch_generator"] = position.epoch_generator_state
        tensors.update({f"rng.gen.{name}": state for name, state in position.generators.items()})
        save_checkpoint(self.path, tensors, {
            "kind": "resume", "run_key": self.run_key, "optimizers": optimizer_meta,
            "schedulers": [s.state_dict() for s in schedulers],
            "position": {"epoch": position.epoch, "batches_done": position.batches_done,
                         "running_loss": position.running_loss, "seen": position.seen,
                         "epoch_seconds": position.epoch_seconds, "train_seconds": position.train_seconds,
                         "result": position.result, "counters": position.counters,
                         "generators": sorted(position.generators)},
            "rng": {"python": position.rng.python_state, "numpy": position.rng.numpy_state,
                    "cuda": len(position.rng.cuda_states)},
        })

    def check(self) -> dict[str, Any]:
        """The resume point's header, after checking it belongs to this run."""
        if not self.path.is_file():
            raise VlbenchError(f"{self.path.parent}: nothing to resume (no {RESUME_NAME}); start the run without "
                               "--resume")
        meta = read_checkpoint_meta(self.path)
        if meta.get("kind") != "resume":
            raise VlbenchError(f"{self.path}: not a resume point")
        differs = sorted(k for k in set(meta.get("run_key", {})) | set(self.run_key)
                         if meta.get("run_key", {}).get(k) != self.run_key.get(k))
        if differs:
            raise VlbenchError(f"{self.path}: was written by a run with different {', '.join(differs)}; resume with "
                               "the same command and data, or start a new run")
        return meta

    def restore(self, model: nn.Module, head: nn.Module, optimizers: list[torch.optim.Optimizer],
                schedulers: list) -> Position:
        """Load the states into the given objects; return the position (its RNG is restored by the loop, once
        the epoch's data iterator exists)."""
        self.check()
        tensors, meta = load_checkpoint(self.path)
        model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        head.load_state_dict({k[5:]: v for k, v in tensors.items() if k.startswith("head.")})
        if len(meta["optimizers"]) != len(optimizers):
            raise VlbenchError(f"{self.path}: holds {len(meta['optimizers'])} optimiser states, the run has "
                               f"{len(optimizers)}")
        for i, (optimizer, scheduler) in enumerate(zip(optimizers, schedulers, strict=True)):
            optimizer.load_state_dict(_optimizer_state(f"optimizer{i}", tensors, meta["optimizers"][i]))
            scheduler.load_state_dict(meta["schedulers"][i])
        where, rng = meta["position"], meta["rng"]
        snapshot = RngSnapshot(tensors["rng.torch"], rng["python"], rng["numpy"],
                               [tensors[f"rng.cuda{i}"] for i in range(rng["cuda"])])
        return Position(epoch=where["epoch"], batches_done=where["batches_done"],
                        epoch_generator_state=tensors["rng.epoch_generator"], running_loss=where["running_loss"],
                        seen=where["seen"], epoch_seconds=where["epoch_seconds"],
                        train_seconds=where["train_seconds"], result=where["result"], rng=snapshot,
                        generators={name: tensors[f"rng.gen.{name}"] for name in where.get("generators", [])},
                        counters=where.get("counters", {}))

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)

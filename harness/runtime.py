"""Where and how a command computes: the device, the precision, and this process's place in a torchrun job.

A :class:`Runtime` is made once per command (``Runtime.start``) and passed down as an argument: the training
loops, the tasks' evaluation and ``bench`` ask it for ``autocast()`` instead of reading process-wide state, so two
configurations in one process (a library user, a test) never see each other's choice.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Any

import torch

from harness import distributed
from harness.errors import VlbenchError
from harness.training.precision import autocast, resolve_precision


def resolve_device(name: str) -> torch.device:
    """``auto``: CUDA when available (under torchrun, this process's LOCAL_RANK GPU), else CPU."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")) if distributed.launched() else 0)
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise VlbenchError(f"unknown device {name!r} (use auto, cpu, cuda or cuda:N)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise VlbenchError(f"device {name!r} requested but CUDA is not available")
    if device.type not in ("cpu", "cuda"):
        raise VlbenchError(f"unsupported device {name!r} (use auto, cpu, cuda or cuda:N)")
    return device


@dataclass(frozen=True)
class Runtime:
    """``device`` and the resolved ``precision`` (``bf16`` = bf16 autocast, ``fp32``) of one command."""

    device: torch.device
    precision: str = "fp32"

    @classmethod
    def start(cls, device: str = "auto", precision: str = "auto", join: bool = True) -> Runtime:
        """Resolve ``device`` and ``precision`` (auto, fp32, bf16); with ``join``, join the torchrun process group
        when this process is one of several (a no-op otherwise)."""
        resolved = resolve_device(device)
        runtime = cls(resolved, resolve_precision(precision, resolved))
        if join:
            distributed.setup(resolved)
        return runtime

    @property
    def bf16(self) -> bool:
        return self.precision == "bf16" and self.device.type in ("cuda", "cpu")

    @property
    def precision_name(self) -> str:
        """What run.json records: ``bf16-autocast`` or ``fp32``."""
        return "bf16-autocast" if self.bf16 else "fp32"

    def autocast(self) -> contextlib.AbstractContextManager[object]:
        """The mixed-precision context every forward pass of this command runs under."""
        return autocast(self.device, self.precision)

    @property
    def world_size(self) -> int:
        return distributed.world_size()

    def record(self) -> dict[str, Any]:
        """The runtime's part of a record's ``config``."""
        return {"device": str(self.device), "precision": self.precision_name, "world_size": self.world_size}

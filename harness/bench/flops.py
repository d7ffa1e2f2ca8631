"""FLOPs counted by PyTorch's own flop counter, and the device's matmul peak measured, not looked up.

``count_flops`` runs a function under :class:`torch.utils.flop_counter.FlopCounterMode`: every matmul,
convolution and attention kernel that actually executes is counted (2 FLOPs per multiply-add), at the shapes
it ran with - so a region model is charged for the proposals and boxes its detector really produced.
Element-wise work (norms, activations, RoIAlign, NMS, softmax) has no formula there and is not counted
(:data:`NOT_COUNTED` says so in bench.json); the counted FLOPs are broken down by op.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from harness.bench.timing import TimingStats, time_call
from harness.runtime import Runtime

# What FlopCounterMode has no formula for, and so leaves out of every count here.
NOT_COUNTED = ("element-wise ops (normalisation, activations, softmax, residual adds, dropout), pooling, "
               "RoIAlign, NMS, embedding look-ups, optimizer updates")


@dataclass
class FlopCount:
    total: int
    by_op: dict[str, int] = field(default_factory=dict)
    """FLOPs per counted aten op (mm, addmm, convolution, attention, ...)."""


def count_flops(fn: Callable[[], Any]) -> FlopCount:
    """FLOPs of one call of ``fn`` (forward, or forward + backward if ``fn`` calls backward)."""
    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    counts = counter.get_flop_counts()
    by_op = {str(op).split(".")[-1]: int(f) for op, f in counts.get("Global", {}).items()}
    return FlopCount(total=int(counter.get_total_flops()), by_op=by_op)


class MatmulProbe:
    """A large square matmul on ``device``: the ceiling an achieved FLOP/s is compared with.

    In the precision the pipeline runs (the runtime's): bf16 where autocast is on (CUDA tensor
    cores, CPUs with native bf16), fp32 otherwise. ``bench`` times
    it before the models and once more in every interleaved round, so the peak and the models' rates are
    measured under the same machine load. The best of all its timings is the peak (what the device can do when
    nothing else runs); the median is recorded beside it, and fractions against both are reported.
    """

    def __init__(self, runtime: Runtime, size: int | None = None) -> None:
        device = runtime.device
        self.device = device
        self.size = size or (8192 if device.type == "cuda" else 2048)
        self.dtype = torch.bfloat16 if runtime.bf16 else torch.float32
        self._a = torch.randn(self.size, self.size, device=device, dtype=self.dtype)
        self._b = torch.randn(self.size, self.size, device=device, dtype=self.dtype)
        self._out = torch.empty(self.size, self.size, device=device, dtype=self.dtype)
        self.flops = 2 * self.size**3
        self.samples: list[float] = []

    def __call__(self) -> None:
        torch.mm(self._a, self._b, out=self._out)

    def warm(self, repeats: int = 5) -> None:
        self.samples += time_call(self, self.device, warmup=2, repeats=repeats)

    def record(self) -> dict[str, Any]:
        stats = TimingStats.of(self.samples)
        return {"flops_per_second": self.flops / stats.min, "median_flops_per_second": self.flops / stats.median,
                "dtype": str(self.dtype).replace("torch.", ""), "size": self.size, "repeats": stats.repeats,
                "threads": torch.get_num_threads(), "relative_spread": stats.relative_spread}


def matmul_peak(runtime: Runtime, *, size: int | None = None, repeats: int = 5) -> dict[str, Any]:
    """The measured matmul peak of the runtime's device on its own (see :class:`MatmulProbe`)."""
    probe = MatmulProbe(runtime, size)
    probe.warm(repeats * (4 if runtime.device.type == "cuda" else 1))
    return probe.record()

"""Peak memory: the CUDA allocator's high-water mark on GPU, the process's resident-set high-water on CPU.

The CPU number comes from ``getrusage`` (``ru_maxrss``), which the kernel keeps for the whole process and cannot
be reset: it is an upper bound for any one model measured in the process. ``MemoryProbe`` also records how much
the high-water mark rose while the probe was open, which is a lower bound of what that model needed beyond what
was already resident.
"""

from __future__ import annotations

import resource
import sys
from typing import Any

import torch


def rss_high_water_bytes() -> int:
    """The process's peak resident set size so far (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


class MemoryProbe:
    """``with MemoryProbe(device) as probe: work()`` then ``probe.record()``."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._start_rss = 0
        self._end_rss = 0
        self._cuda_peak = 0

    def __enter__(self) -> MemoryProbe:
        self._start_rss = rss_high_water_bytes()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self._cuda_peak = int(torch.cuda.max_memory_allocated(self.device))
        self._end_rss = rss_high_water_bytes()

    def record(self) -> dict[str, Any]:
        if self.device.type == "cuda":
            return {"kind": "cuda_max_memory_allocated", "peak_bytes": self._cuda_peak,
                    "peak_mib": round(self._cuda_peak / 2**20, 1), "process_rss_high_water_bytes": self._end_rss}
        return {"kind": "cpu_rss_high_water", "peak_bytes": self._end_rss, "peak_mib": round(self._end_rss / 2**20, 1),
                "rise_bytes": self._end_rss - self._start_rss,
                "note": "process-wide high-water mark (all models measured so far); rise_bytes is this one's growth"}

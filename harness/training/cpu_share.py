"""What share of the CPU a timed stretch of training actually got.

Training seconds on a shared machine mix the work with waiting for a core. ``time.process_time()`` counts the CPU
seconds all threads of this process used; divided by wall seconds x torch's threads it is the share of the threads
it asked for that the process received: about 1 alone on the machine, about 0.5 beside another job of the same
size. Run records carry it per epoch and overall, so a reader (and the team) can tell whether a run's seconds
measure speed or contention. DataLoader workers are other processes and are not counted.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import torch


class CpuClock:
    """Started at the beginning of a timed stretch; ``share()`` at its end."""

    def __init__(self) -> None:
        self.wall = time.perf_counter()
        self.cpu = time.process_time()

    def share(self) -> float | None:
        return cpu_share(time.process_time() - self.cpu, time.perf_counter() - self.wall, torch.get_num_threads())


def cpu_share(cpu_seconds: float, wall_seconds: float, threads: int) -> float | None:
    """CPU seconds over wall seconds x threads, rounded to 0.01 (None for a stretch too short to say)."""
    if wall_seconds <= 0 or threads < 1:
        return None
    return round(cpu_seconds / (wall_seconds * threads), 2)


def cpu_share_note(train: dict[str, Any]) -> str:
    """``", CPU share 0.97"`` for a command's result line; empty for records made before it was measured."""
    share = train.get("cpu_share")
    return "" if share is None else f", CPU share {share:.2f}"


def overall_cpu_share(history: Sequence[dict[str, Any]]) -> float | None:
    """The epochs' ``cpu_share`` weighted by their ``seconds`` (epochs without one are left out)."""
    timed = [(e["cpu_share"], e["seconds"]) for e in history if e.get("cpu_share") is not None and e["seconds"] > 0]
    total = sum(seconds for _, seconds in timed)
    return round(sum(share * seconds for share, seconds in timed) / total, 2) if total > 0 else None

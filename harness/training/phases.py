"""Optional per-phase timing of the training loop (data, compute, logging, evaluation, checkpointing).

The loop calls ``phases("data")`` etc. around each part of a step. The default :data:`NO_PHASES` does nothing,
so ``run`` pays nothing; ``bench`` passes a :class:`PhaseTimer` to measure the harness's share of a step.
A PhaseTimer synchronises the device at each boundary (so GPU work is charged to the phase that queued it);
that removes CPU/GPU overlap, which is why it is only used when measuring.
"""

from __future__ import annotations

import contextlib
import time
from collections import defaultdict
from collections.abc import Iterator

import torch


class NoPhases:
    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        yield


NO_PHASES = NoPhases()


class PhaseTimer(NoPhases):
    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.seconds: dict[str, float] = defaultdict(float)
        self.counts: dict[str, int] = defaultdict(int)

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        self._sync()
        start = time.perf_counter()
        try:
            yield
        finally:
            self._sync()
            self.seconds[name] += time.perf_counter() - start
            self.counts[name] += 1

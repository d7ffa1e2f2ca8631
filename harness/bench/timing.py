"""Timing that can be trusted on a noisy machine: warm-up, device synchronisation, many repetitions, medians.

On CUDA a call is timed with CUDA events recorded on the current stream (kernel time of the call, not the
launch time the host sees); on CPU with ``perf_counter`` around the call. Either way the device is synchronised
before the first event so that earlier queued work is not charged to the call.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch


def synchronize(device: torch.device) -> None:
    """Wait for queued work on ``device`` (a no-op on CPU, where every op has finished when it returns)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Stopwatch:
    """Times one call on ``device``: ``with watch: work()`` then ``watch.seconds()``.

    ``seconds()`` synchronises; on CUDA it reads the elapsed time between two events, so back-to-back
    measurements do not include Python's own launch overhead twice.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._cuda = device.type == "cuda"
        self._start_time = 0.0
        self._elapsed: float | None = None
        if self._cuda:
            self._start_event = torch.cuda.Event(enable_timing=True)
            self._end_event = torch.cuda.Event(enable_timing=True)

    def __enter__(self) -> Stopwatch:
        synchronize(self.device)
        self._elapsed = None
        if self._cuda:
            self._start_event.record()
        else:
            self._start_time = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._cuda:
            self._end_event.record()
        else:
            self._elapsed = time.perf_counter() - self._start_time

    def seconds(self) -> float:
        if self._cuda:
            self._end_event.synchronize()
            return self._start_event.elapsed_time(self._end_event) / 1000.0
        assert self._elapsed is not None, "seconds() before the timed block ended"
        return self._elapsed


def time_call(fn: Callable[[], Any], device: torch.device, *, warmup: int = 2, repeats: int = 10) -> list[float]:
    """Seconds of ``repeats`` calls of ``fn`` after ``warmup`` untimed ones (allocator, caches, autotuning)."""
    if repeats < 1:
        raise ValueError("repeats must be at least 1")
    for _ in range(warmup):
        fn()
    watch = Stopwatch(device)
    samples = []
    for _ in range(repeats):
        with watch:
            fn()
        samples.append(watch.seconds())
    return samples


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile (q in [0, 100]) - the same definition as numpy's default."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100.0
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


@dataclass
class TimingStats:
    """Statistics of repeated timings, in seconds. The median is the number to use: on a shared machine
    the mean is pulled up by whatever else ran; p95 shows how bad the tail was."""

    repeats: int
    median: float
    p5: float
    p95: float
    mean: float
    min: float
    max: float
    relative_spread: float
    """(p95 - p5) / median: above ~0.2 the machine was busy and the numbers deserve suspicion."""

    @classmethod
    def of(cls, samples: list[float]) -> TimingStats:
        median = statistics.median(samples)
        p5, p95 = percentile(samples, 5), percentile(samples, 95)
        return cls(repeats=len(samples), median=median, p5=p5, p95=p95, mean=statistics.fmean(samples),
                   min=min(samples), max=max(samples), relative_spread=(p95 - p5) / median if median > 0 else 0.0)

    def to_dict(self, digits: int = 6) -> dict[str, Any]:
        return {k: (round(v, digits) if isinstance(v, float) else v) for k, v in asdict(self).items()}

"""The timed part of ``bench``: inference (end to end, visual encoder, transformer + head), training steps,
counted FLOPs and peak memory of one or several subjects.

Several subjects are measured *interleaved*: every round times each subject once, in turn. Whatever else
the machine does during the run (other users, frequency scaling) then falls on all of them alike, so their
ratios are far steadier than their absolute numbers - the reason ``--compare`` exists.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from tqdm import tqdm

from harness.bench.flops import NOT_COUNTED, MatmulProbe, count_flops
from harness.bench.memory import MemoryProbe
from harness.bench.subjects import Subject
from harness.bench.timing import Stopwatch, TimingStats


@dataclass
class Samples:
    end_to_end: list[float] = field(default_factory=list)
    visual: list[float] = field(default_factory=list)
    fuse_head: list[float] = field(default_factory=list)
    train: list[float] = field(default_factory=list)


def _timed(watch: Stopwatch, fn) -> float:  # noqa: ANN001 - any zero-argument callable
    with watch:
        fn()
    return watch.seconds()


def measure(subjects: list[Subject], probe: MatmulProbe, *, warmup: int = 3, repeats: int = 20,
            train_steps: int = 5, progress: bool = True) -> dict[str, dict[str, Any]]:
    """Time every subject and the matmul ``probe`` (interleaved round-robin); each subject's results by name."""
    device = subjects[0].device
    watch = Stopwatch(device)
    samples = {s.name: Samples() for s in subjects}
    memory: dict[str, dict[str, Any]] = {}

    with torch.inference_mode():
        for s in subjects:  # warm-up (allocator, oneDNN/cuDNN kernel choice), and each one's peak memory
            with MemoryProbe(device) as mem:
                for _ in range(warmup):
                    s.inference.end_to_end()
            memory[s.name] = mem.record()
        # Region models with imported features have no detector: their cost is reading the cache, not detecting.
        live_before = {s.name: getattr(s.model.visual_encoder, "live_images", None)
                       if getattr(s.model.visual_encoder, "detector", None) is not None else None for s in subjects}
        rounds = tqdm(range(repeats), desc="bench inference", disable=not progress, leave=False, unit="round")
        for _ in rounds:
            probe.samples.append(_timed(watch, probe))
            for s in subjects:
                inf = s.inference
                samples[s.name].end_to_end.append(_timed(watch, inf.end_to_end))
                # The split: encoder alone, then transformer + head on tokens made outside the timed block.
                samples[s.name].visual.append(_timed(watch, inf.encode))
                tokens = inf.encode()
                samples[s.name].fuse_head.append(_timed(watch, lambda: inf.fuse_head(tokens)))  # noqa: B023
        live_after = {s.name: getattr(s.model.visual_encoder, "live_images", None) for s in subjects}

    train_memory: dict[str, dict[str, Any]] = {}
    for s in subjects:
        with MemoryProbe(device) as mem:
            for _ in range(max(1, warmup - 1)):
                s.train_step()
        train_memory[s.name] = mem.record()
    steps = tqdm(range(train_steps), desc="bench training", disable=not progress, leave=False, unit="round")
    for _ in steps:
        probe.samples.append(_timed(watch, probe))
        for s in subjects:
            samples[s.name].train.append(_timed(watch, s.train_step))

    peak = probe.record()
    results = {}
    for s in subjects:
        results[s.name] = _result(s, samples[s.name], memory[s.name], train_memory[s.name], peak,
                                  live_before[s.name], live_after[s.name], repeats)
    return results


def _flops(s: Subject) -> dict[str, Any]:
    with torch.inference_mode():
        e2e = count_flops(s.inference.end_to_end)
        visual = count_flops(s.inference.encode)
        tokens = s.inference.encode()
        fuse = count_flops(lambda: s.inference.fuse_head(tokens))
    train = count_flops(s.train_step)  # forward + backward (the optimizer's element-wise update is not counted)
    n = s.inference.samples
    return {"per_sample": e2e.total / n, "visual_per_sample": visual.total / n,
            "transformer_per_sample": fuse.total / n, "train_per_sample": train.total / s.train_samples,
            "per_batch": e2e.total, "counter": "torch.utils.flop_counter.FlopCounterMode",
            "convention": "2 FLOPs per multiply-add; matmul, convolution and attention kernels only",
            "by_op": e2e.by_op, "not_counted": NOT_COUNTED}


def _result(s: Subject, t: Samples, memory: dict[str, Any], train_memory: dict[str, Any], peak: dict[str, Any],
            live_before: int | None, live_after: int | None, repeats: int) -> dict[str, Any]:
    n = s.inference.samples
    e2e, visual, fuse = TimingStats.of(t.end_to_end), TimingStats.of(t.visual), TimingStats.of(t.fuse_head)
    train = TimingStats.of(t.train)
    flops = _flops(s)
    achieved = flops["per_batch"] / e2e.median
    train_achieved = flops["train_per_sample"] * s.train_samples / train.median
    peak_flops, median_matmul = peak["flops_per_second"], peak["median_flops_per_second"]
    split_total = visual.median + fuse.median
    out: dict[str, Any] = {
        "model": s.name,
        "visual_encoder": s.encoder_name,
        "parameters": s.parameters,
        "inference": {
            "batch_size": n,
            "samples_per_second": n / e2e.median,
            # Wall time of one batch: the latency each of its samples sees when served in a batch of n.
            "batch_latency_ms": {"p50": 1000 * e2e.median, "p95": 1000 * e2e.p95},
            # The same divided by n: the amortised cost of one sample at this batch size.
            "latency_ms_per_sample": {"p50": 1000 * e2e.median / n, "p95": 1000 * e2e.p95 / n},
            "batch_seconds": e2e.to_dict(),
        },
        "split": {
            "visual_encoder": {"name": s.encoder_name, "ms_per_batch": 1000 * visual.median,
                               "ms_per_sample": 1000 * visual.median / n,
                               "share": visual.median / split_total if split_total else None,
                               "batch_seconds": visual.to_dict()},
            "transformer": {"name": "text embeddings + cross-modal transformer + head",
                            "ms_per_batch": 1000 * fuse.median, "ms_per_sample": 1000 * fuse.median / n,
                            "share": fuse.median / split_total if split_total else None,
                            "batch_seconds": fuse.to_dict()},
        },
        "train": {"batch_size": s.train_samples, "steps": train.repeats, "samples_per_second": s.train_samples / train.median,
                  "step_seconds": train.to_dict(), "loss": f"{s.task.name} training loss",
                  "note": "forward + backward + optimizer step of the task's training loss on a pre-collated "
                          "real batch; data loading is in harness_overhead"},
        "flops": flops,
        "achieved": {"flops_per_second": achieved,
                     "fraction_of_matmul_peak": achieved / peak_flops,
                     # Against the matmul's median rate in the same interleaved rounds: same machine load.
                     "fraction_of_matmul_median": achieved / median_matmul,
                     "train_flops_per_second": train_achieved,
                     "train_fraction_of_matmul_peak": train_achieved / peak_flops},
        "memory": {"inference": memory, "train": train_memory},
    }
    if live_before is not None and live_after is not None:
        # Proof that the region numbers include the detector: images it processed live during timing.
        out["split"]["visual_encoder"]["detector_live_images"] = live_after - live_before
        out["split"]["visual_encoder"]["detector_live_expected"] = 3 * repeats * s.inference.images.shape[0]
    if s.visual_record is not None:
        out["visual_encoder_record"] = s.visual_record
    return out

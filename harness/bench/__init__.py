"""``vlbench bench``: throughput, latency, FLOPs, memory and harness overhead of the real pipelines.

One concept per file: :mod:`timing` (synchronised, warmed-up repetitions and their statistics), :mod:`flops`
(counted FLOPs and the device's measured matmul peak), :mod:`memory` (peak memory), :mod:`subjects` (a model +
head + real task batch, built the way ``run`` builds them), :mod:`measure` (what is timed for one model),
:mod:`overhead` (harness share of a real training loop) and :mod:`report` (bench.json).
"""

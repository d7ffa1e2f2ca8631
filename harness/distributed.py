"""Several processes, one run: PyTorch's own torch.distributed, set up from torchrun's environment.

``torchrun --nproc_per_node N $(which vlbench) run ...`` (or any launcher that sets RANK / WORLD_SIZE /
LOCAL_RANK / MASTER_ADDR / MASTER_PORT, such as SLURM through torchrun) makes every command below run as one
job: training under DistributedDataParallel, every split evaluated exactly once (each rank scores one contiguous
shard, rank 0 gathers them in order), and files written by rank 0 only. Without those variables everything is a
single process and these helpers cost nothing.
"""

from __future__ import annotations

import atexit
import inspect
import os
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from harness.errors import VlbenchError
from harness.training.seeding import derived_seed

T = TypeVar("T")


def launched() -> bool:
    """True when a launcher (torchrun) started this process as one of several."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def setup(device: torch.device) -> None:
    """Join the process group torchrun describes (gloo on CPU, NCCL on CUDA); no-op for a single process."""
    if not launched() or dist.is_initialized():
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend=backend)
    atexit.register(teardown)


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def is_main() -> bool:
    """Rank 0: the one process that writes records, checkpoints and prediction files, and shows progress."""
    return rank() == 0


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def shard_range(n: int) -> range:
    """This rank's contiguous share of ``n`` items: ranks in order cover 0..n-1 exactly once (sizes differ by
    at most one), so gathering the shards in rank order gives back the single-process order."""
    size, r = world_size(), rank()
    base, extra = divmod(n, size)
    start = r * base + min(r, extra)
    return range(start, start + base + (1 if r < extra else 0))


def shard(items: Sequence[T]) -> Sequence[T]:
    span = shard_range(len(items))
    return items[span.start:span.stop]


def gather_concat(local: list[Any]) -> list[Any]:
    """Every rank's list, concatenated in rank order, on every rank (identity for one process)."""
    if not dist.is_initialized():
        return local
    parts: list[list[Any] | None] = [None] * world_size()
    dist.all_gather_object(parts, local)
    return [item for part in parts for item in (part or [])]


def broadcast_object(value: T) -> T:
    """Rank 0's ``value`` on every rank."""
    if not dist.is_initialized():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def main_first(fn: Callable[[], T]) -> T:
    """Run ``fn`` on rank 0, then on the others: work that fills a shared cache (the embedded world, a detector,
    a region-feature cache) is done once and then found ready by every other rank."""
    if not dist.is_initialized():
        return fn()
    if is_main():
        out = fn()
        barrier()
        return out
    barrier()
    return fn()


def rank_seed(base: int, stream: int = 0) -> int:
    """A seed of this rank's own for random stream ``stream``, derived from ``base`` (a value every rank drew
    identically): ranks then draw different masks, negatives and dropout for their different examples instead
    of one pattern repeated on every rank, and a resumed epoch re-derives exactly the same seeds."""
    return derived_seed(base, rank(), stream)


def data_parallel(module: nn.Module, find_unused_parameters: bool = False) -> DistributedDataParallel:
    """``module`` under DistributedDataParallel, without DDP's buffer broadcast before every forward.

    That broadcast would make rank 0's buffers win silently at every step, hiding any buffer that a module
    means to keep identical on every rank itself (SOHO's visual dictionary averages its update explicitly) but
    does not. Per-rank buffers (BatchNorm running statistics) are made rank 0's by :func:`sync_buffers` before
    they are used (validation) or saved, which is what the default broadcast gives rank 0 anyway.
    """
    # Buffers are still synchronised once at construction (every rank starts from rank 0's), just not per step.
    # torch >= 2.15 names the switch forward_sync_buffers (broadcast_buffers is deprecated there).
    if "forward_sync_buffers" in inspect.signature(DistributedDataParallel.__init__).parameters:
        switch = {"forward_sync_buffers": False}
    else:
        switch = {"broadcast_buffers": False}
    return DistributedDataParallel(module, find_unused_parameters=find_unused_parameters, **switch)


REPLICATED = "replicated_buffers"
"""Attribute a module sets to True when it keeps its own buffers identical on every rank (with collectives)."""


def sync_buffers(module: nn.Module) -> None:
    """Before validation or a checkpoint: every rank takes rank 0's per-rank buffers (BatchNorm statistics), and
    the buffers of modules that keep themselves identical (``replicated_buffers = True``) are checked instead,
    so a rank that drifted is an error rather than something overwritten. No-op for one process."""
    if world_size() < 2:
        return
    replicated: dict[str, torch.Tensor] = {}
    for name, sub in module.named_modules():
        if getattr(sub, REPLICATED, False):
            replicated.update({f"{name}.{n}" if name else n: b for n, b in sub.named_buffers()})
    for name, buffer in module.named_buffers():
        if name not in replicated:
            dist.broadcast(buffer, src=0)
    check_identical(replicated)


def check_identical(tensors: dict[str, torch.Tensor]) -> None:
    """Raise on every rank if any of ``tensors`` differs from rank 0's copy (bit for bit)."""
    if world_size() < 2 or not tensors:
        return
    differ = []
    for name, tensor in tensors.items():
        reference = tensor.detach().clone()
        dist.broadcast(reference, src=0)
        if not torch.equal(reference, tensor):
            differ.append(name)
    flag = torch.tensor([len(differ)], device=next(iter(tensors.values())).device)
    dist.all_reduce(flag)
    if int(flag):
        raise VlbenchError(f"buffers meant to be identical on every process differ from rank 0's "
                           f"({', '.join(differ) or 'on another rank'}): the replicas have diverged")

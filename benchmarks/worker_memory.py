"""Private memory of DataLoader workers reading a VQA v2-sized train split: plain list vs CompactList.

    python benchmarks/worker_memory.py list
    python benchmarks/worker_memory.py compact

Builds 443,757 VqaExample objects (VQA v2 train's question count), runs one shuffled epoch through 4 forked
workers whose collate reads every example of its batches (no images: only the examples' memory is measured),
and prints each worker's private memory (Private_Clean + Private_Dirty of /proc/PID/smaps_rollup, Linux only).
Not a pytest file: it takes a few seconds and most of a GiB.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from harness.data.compact import CompactList
from harness.data.vqa import VqaExample

VQA_V2_TRAIN_QUESTIONS = 443_757


def private_mib(pid: int) -> float:
    total = 0
    with open(f"/proc/{pid}/smaps_rollup") as handle:
        for line in handle:
            if line.startswith(("Private_Clean", "Private_Dirty")):
                total += int(line.split()[1])
    return total / 1024


class Collate:
    def __init__(self, examples: Sequence[VqaExample]) -> None:
        self.examples = examples

    def __call__(self, indices: list[int]) -> torch.Tensor:
        return torch.tensor([len(self.examples[i].question) + len(self.examples[i].answers or ()) for i in indices])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("form", choices=["list", "compact"])
    parser.add_argument("--examples", type=int, default=VQA_V2_TRAIN_QUESTIONS)
    parser.add_argument("--workers", type=int, default=4)
    args = parser.parse_args()
    examples: Sequence[VqaExample] = [
        VqaExample(i, i // 5, f"what color is the object number {i} in the picture?",
                   Path(f"train2014/COCO_train2014_{i // 5:012d}.jpg"), tuple(f"answer {(i + k) % 37}" for k in range(10)),
                   "other", "what color is the", "red")
        for i in range(args.examples)]
    if args.form == "compact":
        examples = CompactList(examples)
    loader = DataLoader(list(range(args.examples)), batch_size=64, shuffle=True, num_workers=args.workers,
                        collate_fn=Collate(examples), persistent_workers=True)
    start = time.perf_counter()
    batches = iter(loader)
    for _ in batches:
        pass
    workers = [w.pid for w in batches._workers]  # type: ignore[attr-defined]
    print(f"{args.form}: {args.examples} examples, private MiB per worker after one epoch "
          f"{[round(private_mib(p)) for p in workers]}, main process {round(private_mib(os.getpid()))}, "
          f"epoch {time.perf_counter() - start:.1f}s")


if __name__ == "__main__":
    main()

"""Assemble and write ``run.json``: the record that ``compare`` and ``check`` trust.

It holds everything needed to rerun (config, seed, data spec), to know the data was the same
(split fingerprints), what came out (metrics per split, with the keys of ``vlbench score``), what it cost
(training steps, wall seconds, samples/s) and where it ran (packages, device, git commit).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import torch

from harness import __version__
from harness.fileio import write_json
from harness.records.environment import environment

RUN_RECORD_VERSION = 1


def build_run_record(
    *,
    kind: str,
    model: str,
    task: str,
    seed: int,
    config: dict[str, Any],
    data: dict[str, Any],
    metrics: dict[str, Any],
    train: dict[str, Any],
    evaluation: dict[str, Any],
    files: dict[str, list[str]],
    device: torch.device,
) -> dict[str, Any]:
    return {
        "record_version": RUN_RECORD_VERSION,
        "vlbench_version": __version__,
        "kind": kind,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": ["vlbench", *sys.argv[1:]],
        "model": model,
        "task": task,
        "seed": seed,
        "config": config,
        "data": data,
        "metrics": metrics,
        "train": train,
        "eval": evaluation,
        "files": files,
        "env": environment(device),
    }


def write_run_record(run_dir: Path, record: dict[str, Any]) -> Path:
    path = run_dir / "run.json"
    write_json(path, record)
    return path

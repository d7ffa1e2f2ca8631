"""The environment block of ``run.json``: package versions, device, git commit and dirty flag."""

from __future__ import annotations

import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

_PACKAGES = ("vlbench", "torch", "torchvision", "transformers", "numpy", "safetensors", "pillow")


def _package_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def git_state(repo: Path | None = None) -> dict[str, Any]:
    """The commit of the checkout vlbench runs from and whether it has uncommitted changes."""
    repo = repo or Path(__file__).resolve().parents[2]

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": None if status is None else bool(status)}


def device_description(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def _threads_reason() -> str:
    """Why torch has the thread count it has (harness.threads), or "torch's default" where nothing chose it."""
    from harness import threads

    choice = threads.current()
    if choice is None or choice.threads != torch.get_num_threads():
        return "torch's default"
    return choice.reason


def environment(device: torch.device) -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": {name: _package_version(name) for name in _PACKAGES},
        "device": device_description(device),
        "device_type": device.type,
        "torch_threads": torch.get_num_threads(),
        "threads_chosen_by": _threads_reason(),
        "git": git_state(),
    }

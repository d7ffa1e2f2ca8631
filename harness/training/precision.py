"""Mixed precision: bf16 autocast where the hardware does bf16 matrix products natively, plain fp32 elsewhere.

``--precision auto`` (the default) means bf16 autocast on CUDA (no loss scaling needed) and on CPUs with native
bf16 matrix instructions (AVX512-BF16 or AMX: about 3x faster cross-encoder passes than fp32 on this project's
2-core EPYC), fp32 on other CPUs, where emulated bf16 would be slower. ``fp32`` / ``bf16`` force a choice. The
choice travels with the command's :class:`harness.runtime.Runtime` and is recorded in ``run.json`` as
``config.precision``.
"""

from __future__ import annotations

import contextlib
import functools
from pathlib import Path

import torch

from harness.errors import VlbenchError

PRECISIONS = ("auto", "fp32", "bf16")
_NATIVE_BF16_FLAGS = {"avx512_bf16", "amx_bf16"}


@functools.cache
def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bf16 matrices in hardware (Linux /proc/cpuinfo flags; False elsewhere)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return bool(_NATIVE_BF16_FLAGS & set(flags))


def resolve_precision(choice: str, device: torch.device) -> str:
    """``bf16`` or ``fp32`` for ``choice`` (auto, fp32, bf16) on ``device``."""
    if choice not in PRECISIONS:
        raise VlbenchError(f"unknown precision {choice!r} (known: {', '.join(PRECISIONS)})")
    if choice != "auto":
        return choice
    if device.type == "cuda" or (device.type == "cpu" and cpu_has_native_bf16()):
        return "bf16"
    return "fp32"


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager[object]:
    """bf16 autocast on ``device`` when ``precision`` (as :func:`resolve_precision` returns it) is ``bf16``."""
    if precision == "bf16" and device.type in ("cuda", "cpu"):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()

"""Mixed precision: bf16 autocast on CUDA (no loss scaling needed), plain fp32 on CPU."""

from __future__ import annotations

import contextlib

import torch


def autocast(device: torch.device):
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def precision_name(device: torch.device) -> str:
    return "bf16-autocast" if device.type == "cuda" else "fp32"

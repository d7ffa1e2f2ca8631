"""Fixed seeds so that a CPU run is repeatable bit for bit."""

from __future__ import annotations

import random

import numpy as np
import torch


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; return a dedicated generator for data order and sampling."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    generator = torch.Generator()
    generator.manual_seed(seed)
    return generator


def derived_seed(*parts: int) -> int:
    """A well-mixed 63-bit seed from integers (a base seed, a rank, a batch index, a stream number): distinct
    tuples give independent streams, where ``seed + i`` would make stream i of one thing stream i - 1 of another."""
    state = np.random.SeedSequence([p % 2**63 for p in parts]).generate_state(1, np.uint64)[0]
    return int(state >> np.uint64(1))

"""Parameter types shared by the commands: numbers a run can use, or a one-line usage error (exit 2).

click's FloatRange lets ``nan`` through (every comparison with NaN is false) and ``inf`` through a bound on one
side only; a NaN learning rate then trains a model of NaNs. Seeds must fit the 64-bit generators they seed.
"""

from __future__ import annotations

import math
from typing import Any

import click


class FiniteFloatRange(click.FloatRange):
    """A FloatRange whose value must also be a finite number."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number


SEED = click.IntRange(min=0, max=2**63 - 1)
"""Seeds: torch, numpy and Python generators all take them (numpy refuses negatives, torch more than 64 bits)."""

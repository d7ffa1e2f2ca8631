"""Optimiser groups: each parameter is updated at the rate its config names, exactly once."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from harness.errors import VlbenchError
from harness.training.config import TrainConfig
from harness.training.optim import build_optimizers


def _rates(optimizers: list[torch.optim.Optimizer]) -> dict[int, float]:
    rates: dict[int, float] = {}
    for optimizer in optimizers:
        for group in optimizer.param_groups:
            for param in group["params"]:
                assert id(param) not in rates, "a parameter is in two groups"
                rates[id(param)] = group["lr"]
    return rates


@pytest.mark.parametrize("cnn_optimizer", ["adamw", "sgd"])
def test_head_learns_at_its_multiple_and_the_rest_at_their_rates(cnn_optimizer: str) -> None:
    cnn = nn.Conv2d(3, 4, 3)
    model = nn.ModuleDict({"cnn": cnn, "transformer": nn.Linear(4, 4), "norm": nn.LayerNorm(4)})
    head = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4), nn.Linear(4, 2))
    config = TrainConfig(lr=1e-4, cnn_lr=2e-3, head_lr_mult=10.0, cnn_optimizer=cnn_optimizer)
    rates = _rates(build_optimizers({"model": model, "head": head}, cnn, config))
    assert len(rates) == sum(1 for _ in model.parameters()) + sum(1 for _ in head.parameters())
    assert all(rates[id(p)] == pytest.approx(1e-3) for p in head.parameters())
    assert all(rates[id(p)] == pytest.approx(2e-3) for p in cnn.parameters())
    others = [*model["transformer"].parameters(), *model["norm"].parameters()]
    assert all(rates[id(p)] == pytest.approx(1e-4) for p in others)


def test_default_head_rate_is_the_model_rate() -> None:
    model, head = nn.Linear(4, 4), nn.Linear(4, 2)
    rates = _rates(build_optimizers({"model": model, "head": head}, None, TrainConfig(lr=3e-4)))
    assert set(rates.values()) == {3e-4}


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf")])
def test_head_lr_mult_must_be_positive_and_finite(bad: float) -> None:
    with pytest.raises(VlbenchError, match="head_lr_mult"):
        TrainConfig(head_lr_mult=bad)

"""Model + pre-training heads + the summed objectives as one module, so DistributedDataParallel sees the whole
step in forward (the step calls several model methods; DDP wrapping the model alone would not see them)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from pixelbert.pretraining.heads import PretrainingHeads
from pixelbert.pretraining.objective import ObjectiveOutput
from pixelbert.pretraining.step import pretraining_step


class PretrainingObjective(nn.Module):
    """``forward(batch) -> (loss, outputs per objective, visual tokens)``; the loss is the objectives' sum with
    equal weights, as in Pixel-BERT and SOHO."""

    def __init__(self, model: nn.Module, heads: PretrainingHeads) -> None:
        super().__init__()
        self.model = model
        self.heads = heads

    def forward(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, ObjectiveOutput], Any]:
        results, visual = pretraining_step(self.model, self.heads, batch)
        loss = sum(out.loss for out in results.values())
        assert isinstance(loss, torch.Tensor)
        return loss, results, visual

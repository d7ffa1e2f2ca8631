"""Learning actually happens: the tiny Pixel-BERT + VQA head memorises 8 random examples in 30 AdamW steps."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pixelbert import PRESETS, VqaHead, build_pixelbert


def test_tiny_model_overfits_eight_examples() -> None:
    torch.manual_seed(0)
    model = build_pixelbert(PRESETS["tiny"]).train()
    head = VqaHead(model.hidden_size, num_answers=12)
    images = torch.rand(8, 3, 64, 64)
    ids = torch.randint(1000, 5000, (8, 8))
    ids[:, 0], ids[:, -1] = 101, 102
    mask = torch.ones_like(ids)
    targets = torch.zeros(8, 12)
    targets[torch.arange(8), torch.randint(0, 12, (8,))] = 1.0  # one answer each; soft scores work the same

    params = list(model.parameters()) + list(head.parameters())
    optimizer = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.0)
    losses = []
    for _ in range(30):
        logits = head(model(ids, mask, images).pooled)
        # VQA convention: BCE summed over answers, averaged over examples.
        loss = F.binary_cross_entropy_with_logits(logits, targets, reduction="sum") / len(targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < 0.2 * losses[0], losses
    # Beating the best input-independent predictor (a constant logit per answer) means the model uses its inputs.
    prior = targets.mean(0).clamp(1e-6, 1 - 1e-6)
    constant_loss = F.binary_cross_entropy(prior.expand_as(targets), targets, reduction="sum") / len(targets)
    assert losses[-1] < 0.5 * constant_loss.item(), (losses, constant_loss.item())

    model.eval()
    with torch.no_grad():
        predicted = head(model(ids, mask, images).pooled).argmax(-1)
    assert (predicted == targets.argmax(-1)).float().mean() >= 0.75

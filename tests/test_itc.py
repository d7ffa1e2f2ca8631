"""The image-text contrastive (ITC) first stage of retrieval (pixelbert/itc.py): its loss on hand-made cases."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from pixelbert.itc import TEMPERATURE_INIT, ItcHead, RetrievalHead, itc_loss


def _unit(rows: list[list[float]]) -> torch.Tensor:
    return F.normalize(torch.tensor(rows), dim=-1)


def test_itc_loss_matches_the_symmetric_infonce_formula() -> None:
    """By hand: -1/2B * sum_i [log softmax_j(s_ij / t)_i + log softmax_j(s_ji / t)_i] with s = image . text."""
    image = _unit([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])
    text = _unit([[0.8, 0.6], [1.0, 0.0], [0.0, 1.0]])
    t = 0.5
    s = [[sum(a * b for a, b in zip(image[i].tolist(), text[j].tolist(), strict=True)) for j in range(3)]
         for i in range(3)]
    image_to_text = sum(-s[i][i] / t + math.log(sum(math.exp(s[i][j] / t) for j in range(3))) for i in range(3))
    text_to_image = sum(-s[i][i] / t + math.log(sum(math.exp(s[j][i] / t) for j in range(3))) for i in range(3))
    expected = (image_to_text + text_to_image) / (2 * 3)
    assert itc_loss(image, text, torch.tensor(t)).item() == pytest.approx(expected, rel=1e-6)
    # Asymmetric similarities (s[0][1] != s[1][0]): a one-directional loss would not match.
    assert s[0][1] != pytest.approx(s[1][0])


def test_aligned_pairs_score_lower_than_shuffled_ones() -> None:
    torch.manual_seed(0)
    embeddings = F.normalize(torch.randn(8, 16), dim=-1)
    t = torch.tensor(TEMPERATURE_INIT)
    aligned = itc_loss(embeddings, embeddings, t)
    shuffled = itc_loss(embeddings, embeddings[torch.roll(torch.arange(8), 1)], t)
    assert aligned.item() < 0.1 < math.log(8) < shuffled.item()
    # Identical embeddings for every pair carry no information: exactly log(batch size).
    same = F.normalize(torch.ones(8, 16), dim=-1)
    assert itc_loss(same, same, t).item() == pytest.approx(math.log(8), rel=1e-5)


def test_itc_head_projects_to_unit_vectors_with_a_clamped_learned_temperature() -> None:
    head = ItcHead(32, dim=8)
    pooled = torch.randn(5, 32)
    for embed in (head.image, head.text):
        out = embed(pooled)
        assert out.shape == (5, 8) and torch.allclose(out.norm(dim=-1), torch.ones(5), atol=1e-5)
    assert head.temperature.item() == pytest.approx(0.07)
    loss = itc_loss(head.image(pooled), head.text(torch.randn(5, 32)), head.temperature)
    loss.backward()
    assert head.temp.grad is not None and head.image_proj.weight.grad is not None
    with torch.no_grad():
        head.temp.fill_(1e-6)
    assert head.temperature.item() == pytest.approx(0.001)  # clamped as ALBEF does: no division blow-up


def test_retrieval_head_is_called_as_its_itm_classifier() -> None:
    head = RetrievalHead(32)
    pooled = torch.randn(3, 32)
    assert torch.equal(head(pooled), head.itm(pooled))
    assert {name.split(".")[0] for name in head.state_dict()} == {"itm", "itc"}

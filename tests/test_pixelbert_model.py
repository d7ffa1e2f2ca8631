"""Shapes, the text-only path, padding masks and random pixel sampling of the shared model parts."""

from __future__ import annotations

import pytest
import torch

from harness.errors import VlbenchError
from pixelbert import (
    PRESETS,
    CrossModalTransformer,
    ItmHead,
    MlmHead,
    Nlvr2Head,
    TransformerConfig,
    VisualTokens,
    VqaHead,
    build_pixelbert,
    build_text_only,
    sample_pixels,
)
from pixelbert.config import ModelConfig, VisualConfig

TINY = PRESETS["tiny"]
H = TINY.transformer.hidden_size


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    return build_pixelbert(TINY).eval()


def _text(batch: int, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.randint(1000, 5000, (batch, length))
    ids[:, 0], ids[:, -1] = 101, 102
    return ids, torch.ones(batch, length, dtype=torch.long)


def test_pixel_encoder_gives_16_tokens_for_64px(tiny_model) -> None:
    tokens = tiny_model.encode_images(torch.rand(2, 3, 64, 64))
    assert tokens.features.shape == (2, 16, H)
    assert tokens.mask.shape == (2, 16) and tokens.mask.all()
    assert tokens.positions.tolist() == [list(range(16))] * 2
    assert tiny_model.visual_encoder.cost_name == "cnn" and tiny_model.visual_encoder.cnn is tiny_model.visual_encoder.backbone


def test_fusion_shapes(tiny_model) -> None:
    ids, mask = _text(2, 7)
    out = tiny_model(ids, mask, torch.rand(2, 3, 64, 64))
    assert out.sequence.shape == (2, 7 + 16, H)
    assert out.pooled.shape == (2, H)
    assert out.text_length == 7


def test_text_only_path_has_zero_visual_tokens() -> None:
    model = build_text_only(TINY.transformer).eval()
    ids, mask = _text(3, 5)
    tokens = model.encode_images(torch.rand(3, 3, 64, 64))
    assert tokens.features.shape == (3, 0, H)
    out = model(ids, mask, torch.rand(3, 3, 64, 64))
    assert out.sequence.shape == (3, 5, H) and torch.isfinite(out.sequence).all()
    # fuse(visual=None) is the same computation
    assert torch.allclose(model.fuse(ids, mask, None).pooled, out.pooled)


def test_heads_output_shapes() -> None:
    pooled = torch.randn(4, H)
    assert VqaHead(H, 37)(pooled).shape == (4, 37)
    assert Nlvr2Head(H)(pooled, pooled.flip(0)).shape == (4, 2)
    itm = ItmHead(H)
    assert itm(pooled).shape == (4, 2) and itm.match_score(pooled).shape == (4,)
    model = build_text_only(TINY.transformer)
    mlm = MlmHead(TINY.transformer, model.text_embeddings.word_embeddings)
    assert mlm(torch.randn(2, 5, H)).shape == (2, 5, TINY.transformer.vocab_size)
    assert mlm.decoder.weight is model.text_embeddings.word_embeddings.weight  # tied


def test_visual_tokens_helpers(tiny_model) -> None:
    tokens = tiny_model.encode_images(torch.rand(2, 3, 64, 64))
    rep = tokens.repeat_interleave(3)
    assert rep.features.shape == (6, 16, H) and torch.equal(rep.features[2], tokens.features[0])
    picked = tokens.index([1, 1, 0])
    assert torch.equal(picked.features[0], tokens.features[1]) and picked.positions.shape == (3, 16)
    one = tokens.index(slice(0, 1)).expand_to(4)
    ids, mask = _text(4, 6)
    out = tiny_model.fuse(ids, mask, one)
    assert out.pooled.shape == (4, H)
    with pytest.raises(ValueError, match="line them up"):
        tiny_model.fuse(ids, mask, tokens)


def test_padded_batch_matches_unpadded_examples(tiny_model) -> None:
    """Key-padding mask: padding in text and visual tokens must not change the real tokens' outputs."""
    torch.manual_seed(1)
    images = torch.rand(2, 3, 64, 64)
    lengths = [4, 9]
    ids, _ = _text(2, 9)
    mask = torch.zeros(2, 9, dtype=torch.long)
    for i, n in enumerate(lengths):
        mask[i, :n] = 1
        ids[i, n:] = 0
    with torch.no_grad():
        visual = tiny_model.encode_images(images)
        visual.mask[0, 10:] = False  # image 0 has only 10 real visual tokens
        padded = tiny_model.fuse(ids, mask, visual)
        for i, n in enumerate(lengths):
            real_v = int(visual.mask[i].sum())
            single_visual = VisualTokens(visual.features[i : i + 1, :real_v], visual.mask[i : i + 1, :real_v])
            single = tiny_model.fuse(ids[i : i + 1, :n], mask[i : i + 1, :n], single_visual)
            real_positions = list(range(n)) + [9 + j for j in range(real_v)]
            torch.testing.assert_close(padded.sequence[i, real_positions], single.sequence[0], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(padded.pooled[i], single.pooled[0], atol=1e-5, rtol=1e-5)


def test_fully_masked_row_stays_finite() -> None:
    config = TransformerConfig(hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64)
    transformer = CrossModalTransformer(config).eval()
    text = torch.randn(2, 5, 32)
    text_mask = torch.tensor([[1, 1, 1, 0, 0], [0, 0, 0, 0, 0]])
    out = transformer(text, text_mask, torch.randn(2, 0, 32), torch.zeros(2, 0, dtype=torch.bool))
    assert out.sequence.shape == (2, 5, 32) and torch.isfinite(out.sequence).all()


def test_sample_pixels_distinct_and_fresh() -> None:
    features = torch.randn(3, 50, 8)
    tokens = VisualTokens(features, torch.ones(3, 50, dtype=torch.bool), positions=torch.arange(50).expand(3, -1))
    generator = torch.Generator().manual_seed(0)
    first = sample_pixels(tokens, 10, generator)
    second = sample_pixels(tokens, 10, generator)
    assert first.features.shape == (3, 10, 8) and first.mask.all()
    for row in range(3):
        kept = first.positions[row]
        assert len(set(kept.tolist())) == 10  # distinct
        assert torch.equal(first.features[row], features[row, kept])  # features follow their positions
    assert not torch.equal(first.positions, second.positions)  # a fresh subset per call
    assert not torch.equal(first.positions[0], first.positions[1])  # and per image
    assert sample_pixels(tokens, 50) is tokens  # nothing to drop
    with pytest.raises(VlbenchError):
        sample_pixels(tokens, 0)


def test_sample_pixels_prefers_real_tokens() -> None:
    mask = torch.zeros(2, 20, dtype=torch.bool)
    mask[:, :6] = True
    tokens = VisualTokens(torch.randn(2, 20, 4), mask, positions=torch.arange(20).expand(2, -1))
    sampled = sample_pixels(tokens, 5)
    assert sampled.mask.all() and (sampled.positions < 6).all()


def test_encoder_samples_only_in_training() -> None:
    config = ModelConfig(transformer=TINY.transformer, visual=VisualConfig(pixel_sample=5))
    model = build_pixelbert(config)
    images = torch.rand(2, 3, 64, 64)
    model.train()
    assert model.encode_images(images).features.shape == (2, 5, H)
    model.eval()
    assert model.encode_images(images).features.shape == (2, 16, H)
    model.train()
    model.visual_encoder.pixel_sample = None  # fine-tuning: all pixels
    assert model.encode_images(images).features.shape == (2, 16, H)


def test_position_embedding_ablation() -> None:
    config = ModelConfig(transformer=TINY.transformer, visual=VisualConfig(position_embedding=True))
    model = build_pixelbert(config).eval()
    assert model.encode_images(torch.rand(1, 3, 64, 64)).features.shape == (1, 16, H)
    assert model.visual_encoder.row_embedding is not None


def test_hidden_size_mismatch_is_rejected() -> None:
    from pixelbert import NoVisualEncoder, VisionLanguageModel

    with pytest.raises(VlbenchError, match="hidden size"):
        VisionLanguageModel(NoVisualEncoder(64), TINY.transformer)

"""Pre-training objectives: BERT masking rules, ITM negative sampling, random pixel sampling, SOHO's MVM masks."""

from __future__ import annotations

import pytest
import torch

from pixelbert.config import PRESETS
from pixelbert.heads import MlmHead
from pixelbert.model import build_pixelbert
from pixelbert.pretraining.itm import sample_itm_pairs, swap_vocabulary, swap_word_negative
from pixelbert.pretraining.mlm import mask_tokens, mlm_loss
from pixelbert.pretraining.objective import IGNORE_INDEX
from pixelbert.soho.mvm import mvm_mask

CLS, SEP, PAD, MASK = 101, 102, 0, 103
VOCAB = 30522


def _texts(batch: int = 400, length: int = 30) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.randint(1000, 2000, (batch, length))
    ids[:, 0] = CLS
    lengths = torch.randint(5, length, (batch,))
    mask = torch.arange(length)[None, :] < lengths[:, None]
    ids[torch.arange(batch), lengths - 1] = SEP
    ids[~mask] = PAD
    return ids, mask


def _mask(ids, mask, seed=0, probability=0.15):
    return mask_tokens(ids, mask, vocab_size=VOCAB, mask_token_id=MASK, special_token_ids=(CLS, SEP, PAD, MASK),
                       probability=probability, generator=torch.Generator().manual_seed(seed))


def test_mlm_masks_15_percent_of_real_tokens_with_80_10_10() -> None:
    ids, mask = _texts()
    masked, labels = _mask(ids, mask)
    chosen = labels != IGNORE_INDEX
    candidates = mask & (ids != CLS) & (ids != SEP)
    assert not chosen[~candidates].any(), "specials and padding are never chosen"
    assert 0.13 < chosen.sum() / candidates.sum() < 0.17
    assert torch.equal(labels[chosen], ids[chosen]), "labels hold the original ids"
    assert torch.equal(masked[~chosen], ids[~chosen]), "unchosen tokens are untouched"
    n = chosen.sum().item()
    to_mask = (masked[chosen] == MASK).sum().item() / n
    kept = (masked[chosen] == ids[chosen]).sum().item() / n
    assert 0.75 < to_mask < 0.85
    assert 0.06 < kept < 0.14  # 10% kept (+ a random id that happens to equal the original: negligible)
    assert 0.06 < 1 - to_mask - kept < 0.14  # 10% random ids


def test_mlm_masking_is_fresh_per_draw_and_reproducible_per_seed() -> None:
    ids, mask = _texts(50)
    a, _ = _mask(ids, mask, seed=1)
    b, _ = _mask(ids, mask, seed=1)
    c, _ = _mask(ids, mask, seed=2)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_mlm_loss_reads_only_masked_positions_through_the_tied_head() -> None:
    model = build_pixelbert(PRESETS["tiny"])
    head = MlmHead(model.config, model.text_embeddings.word_embeddings)
    hidden = torch.randn(2, 5, model.hidden_size, requires_grad=True)
    labels = torch.full((2, 5), IGNORE_INDEX)
    labels[0, 2] = 1234
    out = mlm_loss(head, hidden, labels)
    assert out.count == 1 and out.loss.item() > 0
    out.loss.backward()
    assert hidden.grad[0, 2].abs().sum() > 0 and hidden.grad[1].abs().sum() == 0
    assert model.text_embeddings.word_embeddings.weight.grad is not None  # decoder is the embedding matrix
    empty = mlm_loss(head, hidden, torch.full((2, 5), IGNORE_INDEX))
    assert empty.count == 0 and empty.loss.item() == 0.0


def test_itm_negatives_never_use_the_images_own_caption() -> None:
    index = torch.arange(10).repeat(200)
    caption_image, labels = sample_itm_pairs(index, 10, 0.5, torch.Generator().manual_seed(0))
    negative = labels == 0
    assert 0.45 < negative.float().mean() < 0.55
    assert torch.equal(caption_image[~negative], index[~negative])
    assert (caption_image[negative] != index[negative]).all()
    # every other image is drawn (uniform over the others), including the first and the last
    assert set(caption_image[negative & (index == 0)].tolist()) == set(range(1, 10))
    assert set(caption_image[negative & (index == 9)].tolist()) == set(range(9))


def test_itm_needs_two_images() -> None:
    with pytest.raises(ValueError):
        sample_itm_pairs(torch.tensor([0]), 1, 0.5)


def test_pixel_sampling_fresh_per_step_in_training_only() -> None:
    model = build_pixelbert(PRESETS["tiny"])
    encoder = model.visual_encoder
    encoder.pixel_sample = 6
    encoder.sample_generator = torch.Generator().manual_seed(0)
    images = torch.rand(3, 3, 64, 64)
    encoder.train()
    first, second = encoder(images), encoder(images)
    assert first.features.shape == (3, 6, model.hidden_size) and first.positions.shape == (3, 6)
    assert not torch.equal(first.positions, second.positions), "a fresh subset every step"
    assert not torch.equal(first.positions[0], first.positions[1]), "each image draws its own subset"
    assert (first.positions.diff(dim=1) > 0).all(), "kept tokens stay in raster order, without repeats"
    encoder.eval()
    assert encoder(images).num_tokens == 16, "evaluation / fine-tuning sees every pixel"


def test_mvm_masks_every_cell_of_the_anchor_entry() -> None:
    codes = torch.tensor([[3, 1, 3, 2, 3, 1], [5, 5, 5, 5, 0, 0]])
    mask = torch.tensor([[True] * 6, [True, True, True, True, False, False]])
    seen_anchors = set()
    for seed in range(40):
        masked = mvm_mask(codes, mask, 1.0, torch.Generator().manual_seed(seed))
        for row in range(2):
            chosen = codes[row][masked[row]]
            assert chosen.numel() > 0 and (chosen == chosen[0]).all(), "one entry per image"
            entry = chosen[0].item()
            assert torch.equal(masked[row], (codes[row] == entry) & mask[row]), "all its real cells, nothing else"
            seen_anchors.add((row, entry))
        assert not masked[1, 4:].any(), "padding is never masked"
    assert {(0, 1), (0, 2), (0, 3), (1, 5)} == seen_anchors, "the anchor cell is drawn among real cells"


def test_mvm_probability_is_per_image() -> None:
    codes = torch.randint(0, 8, (2000, 16))
    mask = torch.ones_like(codes, dtype=torch.bool)
    masked = mvm_mask(codes, mask, 0.3, torch.Generator().manual_seed(0))
    assert 0.26 < masked.any(dim=1).float().mean() < 0.34


# --- word-swap ITM negatives --------------------------------------------------------------------------------------

def test_swap_negative_replaces_one_colour_with_one_no_caption_names() -> None:
    captions = ["A red circle above a blue square.", "Red and blue shapes on a gray background.", "Two shapes."]
    vocabulary = swap_vocabulary(captions + ["a green cross", "a yellow triangle", "a purple diamond"])
    assert vocabulary == {"red", "blue", "green", "yellow", "purple"}  # achromatic "gray" is never swapped
    seen = set()
    for seed in range(60):
        swapped = swap_word_negative(captions, vocabulary, torch.Generator().manual_seed(seed))
        source = next(c for c in captions if len(c.split()) == len(swapped.split())
                      and sum(a != b for a, b in zip(c.split(), swapped.split())) == 1)
        old, new = next((a, b) for a, b in zip(source.split(), swapped.split()) if a != b)
        assert old.strip(".").lower() in {"red", "blue"} and new.strip(".").lower() in {"green", "yellow", "purple"}
        assert old[0].isupper() == new[0].isupper()  # "Red and blue ..." -> "Green and blue ..."
        seen.add(new.strip(".").lower())
    assert seen == {"green", "yellow", "purple"}  # every absent colour is used
    again = swap_word_negative(captions, vocabulary, torch.Generator().manual_seed(3))
    assert again == swap_word_negative(captions, vocabulary, torch.Generator().manual_seed(3))


def test_swap_negative_is_none_when_nothing_can_be_swapped() -> None:
    assert swap_word_negative(["Two shapes.", "A square."], {"red", "blue"}) is None
    assert swap_word_negative(["A red and a blue square."], {"red", "blue"}) is None  # no colour left to put in


def test_swap_negatives_replace_the_share_of_itm_negatives_asked_for(world) -> None:
    """Through the pre-training batches: with itm_swap_negatives 1 every negative whose image names a colour is
    its own caption with one colour swapped; positives and the other negatives are untouched."""
    from harness.data.spec import load_spec
    from harness.pretraining.config import PretrainConfig
    from harness.pretraining.data import CaptionPairs

    class Recorder:
        tokenizer = type("T", (), {"mask_token_id": MASK, "all_special_ids": [CLS, SEP, PAD, MASK],
                                   "__len__": lambda self: 10})()

        def __call__(self, texts):
            self.texts = list(texts)
            return {"input_ids": torch.zeros(len(texts), 4, dtype=torch.long),
                    "attention_mask": torch.ones(len(texts), 4, dtype=torch.long)}

    class NoImages:
        def inputs(self, paths):
            return {"images": torch.zeros(len(paths), 3, 2, 2)}

    text = Recorder()
    config = PretrainConfig(objectives=("itm",), itm_swap_negatives=1.0)
    data = CaptionPairs(load_spec(world / "captions.yaml"), NoImages(), text, config, vocab_size=10)
    images = data.examples("train")
    indices = list(range(min(64, len(images))))
    batch = data.collate("train", indices, torch.Generator().manual_seed(0))
    swapped = 0
    for row, i in enumerate(indices):
        own = images[i].captions
        if batch["itm_labels"][row] == 1:
            assert text.texts[row] in own
        elif swap_word_negative(own, data.swap_words) is not None:
            assert text.texts[row] not in own
            assert any(sum(a != b for a, b in zip(c.split(), text.texts[row].split())) == 1 for c in own)
            swapped += 1
    assert swapped > 10


def test_mvm_scores_against_the_dictionary_entries_as_released() -> None:
    # researchmm/soho: logits = normalize(fused output) @ normalize(embed.data).T, cross-entropy on the code.
    from pixelbert.soho.mvm import mvm_loss

    generator = torch.Generator().manual_seed(0)
    entries = torch.randn(5, 4, generator=generator, requires_grad=True)
    hidden = torch.randn(2, 3, 4, generator=generator, requires_grad=True)
    codes = torch.tensor([[0, 4, 2], [1, 1, 3]])
    masked = torch.tensor([[True, False, True], [False, True, False]])
    out = mvm_loss(None, hidden, codes, masked, entries)
    chosen = hidden[masked]
    logits = torch.stack([torch.stack([torch.dot(h, e) / (h.norm() * e.norm()) for e in entries]) for h in chosen])
    expected = torch.nn.functional.cross_entropy(logits, codes[masked])
    assert torch.allclose(out.loss, expected, atol=1e-6)
    assert out.count == 3 and out.correct == int((logits.argmax(1) == codes[masked]).sum())
    out.loss.backward()
    assert hidden.grad is not None and hidden.grad.abs().sum() > 0
    assert entries.grad is None, "the entries move by moving average only, never by MVM's gradient"


def test_pretraining_heads_have_no_mvm_parameters_when_scoring_the_dictionary() -> None:
    from harness.assembly import ModelRequest, assemble, resolve_setup
    from harness.runtime import Runtime
    from pixelbert.pretraining.heads import PretrainingHeads

    setup = resolve_setup(ModelRequest("soho", "tiny"))
    model = assemble(setup, Runtime.start("cpu", join=False)).model
    released = PretrainingHeads(model, ("mlm", "itm", "mvm"), setup.dictionary.size)
    classifier = PretrainingHeads(model, ("mlm", "itm", "mvm"), setup.dictionary.size, "classifier")
    assert released.use_mvm and released.mvm is None
    assert not any(k.startswith("mvm.") for k in released.own_state_dict())
    assert any(k.startswith("mvm.") for k in classifier.own_state_dict())

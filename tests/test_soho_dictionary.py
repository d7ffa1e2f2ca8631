"""SOHO's visual dictionary: straight-through gradient, moving-average update and schedule, dead entries, usage,
and the SOHO encoder (dictionary kept at fine-tuning, MVM only when pre-training switches it on)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from harness.errors import VlbenchError
from harness.models import build_model, model_setup
from pixelbert.config import DictionaryConfig
from pixelbert.soho.encoder import SohoEncoder
from pixelbert.soho.visual_dictionary import VisualDictionary, dictionary_usage


def _dictionary(size: int = 4, dim: int = 3, **kw) -> VisualDictionary:
    vd = VisualDictionary(DictionaryConfig(size=size, **kw), dim)
    vd.embed.copy_(torch.eye(size, dim) * 10)  # well-separated entries
    vd.idle_updates.zero_()  # not dead: keep the test about the moving average
    return vd


def test_lookup_is_nearest_entry_with_straight_through_gradient() -> None:
    vd = _dictionary()
    vd.eval()
    x = torch.tensor([[9.0, 1.0, 0.0], [0.5, 8.0, 0.0]], requires_grad=True)
    quantized, codes = vd(x)
    assert codes.tolist() == [0, 1]
    assert torch.allclose(quantized, vd.embed[codes]), "forward value is the entry"
    weights = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    (quantized * weights).sum().backward()
    assert torch.equal(x.grad, weights), "gradient passes to the feature unchanged"


def test_momentum_is_constant_by_default_as_released() -> None:
    # researchmm/soho never calls set_decay_updates: its EMA runs at the config's constant decay 0.4.
    config = DictionaryConfig()
    assert (config.schedule, config.momentum) == ("constant", 0.4)
    vd = VisualDictionary(config, 3)
    for epoch in (1, 3, 50):
        vd.set_epoch(epoch)
        assert vd.momentum == 0.4


def test_old_dictionary_configs_keep_their_annealed_schedule() -> None:
    old = {k: v for k, v in DictionaryConfig(momentum=0.99).to_dict().items() if k != "schedule"}
    assert DictionaryConfig.from_dict(old).schedule == "annealed"
    assert DictionaryConfig.from_dict(DictionaryConfig().to_dict()).schedule == "constant"


def test_moving_average_update_and_schedule() -> None:
    vd = _dictionary(momentum=0.99, momentum_start=0.1, schedule="annealed")
    vd.set_epoch(3)
    assert vd.momentum == pytest.approx(0.3)
    vd.set_epoch(50)
    assert vd.momentum == pytest.approx(0.99), "capped"
    vd.momentum = 0.5
    vd.cluster_size.fill_(2.0)
    vd.embed_sum.copy_(vd.embed * 2.0)
    vd.train()
    x = torch.tensor([[8.0, 0.0, 0.0], [10.0, 2.0, 0.0]])  # both nearest to entry 0
    before = vd.embed.clone()
    vd(x)
    # counts: 0.5 * 2 + 0.5 * 2 = 2; sums: 0.5 * (20, 0, 0) + 0.5 * (18, 2, 0) = (19, 1, 0) -> mean (9.5, .5, 0)
    assert vd.cluster_size[0].item() == pytest.approx(2.0)
    assert torch.allclose(vd.embed[0], torch.tensor([9.5, 0.5, 0.0]), atol=1e-3)
    # entries nobody chose keep their mean (their count and sum decay together)
    assert torch.allclose(vd.embed[1:], before[1:], atol=1e-3)
    vd.eval()
    snapshot = vd.embed.clone()
    vd(x)
    assert torch.equal(vd.embed, snapshot), "no update in eval mode"


def test_dead_entries_are_reseeded_from_current_features() -> None:
    vd = _dictionary(size=4, dead_after=2)
    vd.train()
    x = torch.tensor([[9.0, 0.0, 0.0]] * 5)
    vd(x)
    assert vd.reseeded == 0
    vd(x)  # entries 1..3 unused for 2 updates -> dead -> re-seeded from the batch's features
    assert vd.reseeded == 3
    assert torch.allclose(vd.embed[1:], x[:3])
    assert (vd.idle_updates == 0).all()


def test_fresh_dictionary_seeds_unused_entries_at_first_update() -> None:
    vd = VisualDictionary(DictionaryConfig(size=8), 4)
    vd.train()
    x = torch.randn(64, 4) * 0.01 + 5
    vd(x)
    assert vd.reseeded >= 1
    _, codes = vd(x)
    assert codes.unique().numel() > 1, "the random init does not leave one entry taking everything"


def test_usage_counts_entries_and_perplexity() -> None:
    assert dictionary_usage(torch.tensor([5, 5, 5, 5])) == {"entries_in_use": 4, "perplexity": 4.0, "size": 4}
    collapsed = dictionary_usage(torch.tensor([0, 12, 0, 0]))
    assert collapsed["entries_in_use"] == 1 and collapsed["perplexity"] == 1.0


def test_single_process_group_path(tmp_path) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        vd = _dictionary()
        vd.train()
        vd(torch.tensor([[9.0, 0.0, 0.0]]))
        assert torch.isfinite(vd.embed).all()
    finally:
        dist.destroy_process_group()


def _features(seed: int) -> list[torch.Tensor]:
    """Three updates' worth of global-batch features: 2 clusters, then 3, then a batch far from everything (so
    entries die and are re-seeded at every step, the part that must not depend on the rank)."""
    g = torch.Generator().manual_seed(seed)
    centres = [torch.tensor([[5.0, 0, 0, 0], [-5.0, 0, 0, 0]]), torch.tensor([[0, 5.0, 0, 0], [0, -5.0, 0, 0],
                                                                               [0, 0, 5.0, 0]]),
               torch.tensor([[0, 0, 0, 40.0]])]
    return [c[torch.randint(len(c), (12,), generator=g)] + 0.1 * torch.randn(12, 4, generator=g) for c in centres]


def _replay(vd: VisualDictionary, batches: list[torch.Tensor], share: slice) -> list[dict[str, torch.Tensor]]:
    vd.train()
    states = []
    for x in batches:
        vd(x[share])
        states.append({k: v.clone() for k, v in vd.state_dict().items()} | {"reseeded": torch.tensor(vd.reseeded)})
    return states


def _fresh_dictionary() -> VisualDictionary:
    torch.manual_seed(0)  # the random init every rank starts from (DDP would broadcast it)
    vd = VisualDictionary(DictionaryConfig(size=8, dead_after=1, momentum=0.5), 4)
    vd.generator = torch.Generator().manual_seed(7)
    return vd


def _rank_update(rank: int, world: int, init: str, out: str) -> None:
    import torch.distributed as dist

    from harness.distributed import sync_buffers

    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        # Ranks hold unequal shares (5 and 7 of 12 features), as a last partial batch would.
        share = slice(0, 5) if rank == 0 else slice(5, 12)
        vd = _fresh_dictionary()
        states = _replay(vd, _features(3), share)
        sync_buffers(vd)  # the training loop's check before validation: identical, so it passes
        if rank == 1:
            vd.embed[0, 0] += 1e-3  # a replica drifting...
        try:
            sync_buffers(vd)
            caught = ""
        except VlbenchError as exc:  # ...is an error on every rank, not overwritten with rank 0's copy
            caught = str(exc)
        torch.save({"states": states, "caught": caught}, f"{out}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_update_over_two_processes_equals_one_process_on_all_features(tmp_path: Path) -> None:
    """Each rank feeds different features; after every update both ranks hold the same dictionary, equal to the
    1-process update on the concatenated features (bit for bit for re-seeded entries and counters)."""
    mp.spawn(_rank_update, args=(2, f"file://{tmp_path / 'pg'}", str(tmp_path)), nprocs=2, join=True)
    saved = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    assert all("differ from rank 0" in part["caught"] for part in saved), "a drifted replica is reported"
    ranks = [part["states"] for part in saved]
    single = _replay(_fresh_dictionary(), _features(3), slice(None))
    assert single[-1]["reseeded"] > 8, "the test re-seeds entries (all at first, more on the far batch)"
    for step, (zero, one, alone) in enumerate(zip(*ranks, single, strict=True)):
        for key in zero:
            assert torch.equal(zero[key], one[key]), f"update {step}: {key} differs between the ranks"
            assert torch.allclose(zero[key].float(), alone[key].float(), atol=1e-5), \
                f"update {step}: {key} differs from the 1-process update"
        assert torch.equal(zero["idle_updates"], alone["idle_updates"])


def test_soho_encoder_in_fine_tuning_and_pretraining() -> None:
    setup = model_setup("soho", "tiny")
    assert setup.dictionary is not None and setup.dictionary.size == 256 and setup.visual.position_embedding
    model = build_model(setup)
    encoder = model.visual_encoder
    assert isinstance(encoder, SohoEncoder)
    images = torch.rand(2, 3, 64, 64)
    encoder.train()
    # Fine-tuning, as released: the dictionary is bypassed, neither read nor updated.
    before = {k: v.clone() for k, v in encoder.dictionary.state_dict().items()}
    tokens = encoder(images)
    assert tokens.codes is None and tokens.features.shape == (2, 16, setup.transformer.hidden_size)
    assert all(torch.equal(before[k], v) for k, v in encoder.dictionary.state_dict().items())
    encoder.eval()
    with torch.no_grad():
        expected = encoder.output_norm(encoder.projection.norm(encoder.projection.proj(
            encoder.feature_map(images).flatten(2).transpose(1, 2))))
    bypass = encoder(images).features
    assert torch.allclose(bypass, expected + encoder.projection.type_embedding
                          + encoder._position_embedding(4, 4, images.device), atol=1e-5)
    # Pre-training (and --keep-dictionary) quantise.
    encoder.train()
    encoder.use_dictionary = True
    tokens = encoder(images)
    assert tokens.codes.shape == (2, 16) and tokens.masked is None, "no MVM unless pre-training sets it"
    tokens.features.sum().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in encoder.backbone.parameters()), \
        "the CNN trains through the dictionary (straight-through)"
    encoder.eval()  # no dropout: masked cells must carry exactly the [MASK] vector (+ type + position)
    encoder.mvm_probability = 1.0
    tokens = encoder(images)
    assert tokens.masked.any(dim=1).all()
    with torch.no_grad():
        expected = encoder.output_norm(encoder.mask_embedding) + encoder.projection.type_embedding
        position = encoder._position_embedding(4, 4, images.device)
        b, n = tokens.masked.nonzero()[0].tolist()
        assert torch.allclose(tokens.features[b, n], expected + position[n], atol=1e-5)
    state = model.state_dict()
    assert "visual_encoder.dictionary.embed" in state, "the dictionary is saved with the model"


def test_keep_dictionary_is_the_runs_choice_not_the_checkpoints(tmp_path: Path) -> None:
    from dataclasses import replace

    from harness.assembly import ModelRequest, resolve_setup
    from harness.checkpoints import save_checkpoint
    from harness.errors import VlbenchError as Error

    setup = model_setup("soho", "tiny")
    assert setup.dictionary is not None and not setup.dictionary.fine_tune  # as released
    kept = replace(setup, config=replace(setup.config, dictionary=replace(setup.dictionary, fine_tune=True)))
    path = tmp_path / "soho.safetensors"
    save_checkpoint(path, {"x": torch.zeros(1)}, {"model": "soho", "model_config": kept.to_dict()})
    assert not resolve_setup(ModelRequest("soho", init=path)).dictionary.fine_tune
    assert resolve_setup(ModelRequest("soho", init=path, options={"keep_dictionary": True})).dictionary.fine_tune
    old = kept.to_dict()
    del old["dictionary"]["fine_tune"]  # a checkpoint fine-tuned before the option: with the dictionary
    assert DictionaryConfig.from_dict(old["dictionary"]).fine_tune
    with pytest.raises(Error, match="--keep-dictionary applies only to --model soho"):
        resolve_setup(ModelRequest("pixelbert", options={"keep_dictionary": True}))


def test_dictionary_config_checks() -> None:
    with pytest.raises(VlbenchError):
        DictionaryConfig(size=1)
    with pytest.raises(VlbenchError):
        DictionaryConfig(momentum=1.0)
    with pytest.raises(VlbenchError):
        DictionaryConfig(schedule="cosine")
    with pytest.raises(VlbenchError):
        DictionaryConfig(schedule="annealed", momentum=0.3, momentum_start=0.5)

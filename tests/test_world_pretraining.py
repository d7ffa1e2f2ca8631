"""The world pre-training stage of `vlbench run`: made once per model and configuration, cached, reused, recorded.

The real stage is 6 epochs over 18,000 captioned scenes (minutes); these tests shrink the pre-training itself
(1 epoch on 16 images) and exercise everything around it for real: the cache key, the lock, the staging
folder, reuse, and what `run` records and refuses."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import harness.pretraining.experiment as pretraining_experiment
from harness.errors import VlbenchError
from harness.experiment import RunOptions, run_experiment
from harness.pretraining.world import WorldPretraining, world_objectives, world_pretrained


@pytest.fixture
def small_pretraining(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Pre-training shrunk to 1 epoch on 16 images; returns the models pre-trained, in order."""
    real = pretraining_experiment.run_pretraining
    calls: list[str] = []

    def shrunk(options):
        calls.append(options.model)
        options.limit = 16
        options.overrides = {**options.overrides, "epochs": 1}
        return real(options)

    monkeypatch.setattr(pretraining_experiment, "run_pretraining", shrunk)
    return calls


def test_objectives_follow_each_paper() -> None:
    assert world_objectives("pixelbert") == ("mlm", "itm")
    assert world_objectives("region") == ("mlm", "itm")
    assert world_objectives("soho") == ("mlm", "itm", "mvm")
    assert world_objectives("textonly") == ("mlm",)


def test_made_once_then_reused(world: Path, tmp_path: Path, small_pretraining: list[str]) -> None:
    request = WorldPretraining(model="pixelbert", preset="tiny", world=world, precision="fp32", progress=False)
    first, made = world_pretrained(request, cache=tmp_path)
    assert first.is_file() and made["record"]["trained_now"] and made["record"]["checkpoint"] == str(first)
    assert made["config"]["objectives"] == ["mlm", "itm"] and made["record"]["data"].endswith("captions.yaml")
    again, reused = world_pretrained(request, cache=tmp_path)
    assert again == first and not reused["record"]["trained_now"]
    assert reused["config"] == made["config"]  # what run.json's config records: the same for every run
    assert small_pretraining == ["pixelbert"], "the second call must reuse the cached checkpoint"
    # Anything that changes the weights is a different entry; no staging folder is left behind.
    other = WorldPretraining(model="pixelbert", preset="tiny", world=world, precision="bf16", progress=False)
    assert other.key() != request.key()
    assert [p.name for p in (tmp_path / "pretrained").iterdir() if p.name.startswith(".") and "new" in p.name] == []


def test_a_model_config_change_is_another_entry(world: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The region selection changes the features pre-training sees: a checkpoint made under the old selection
    must not be served to runs under the new one (the key once named only model, preset and options)."""
    from dataclasses import replace

    import harness.models.region as region_recipe

    request = WorldPretraining(model="region", preset="tiny", world=world, precision="fp32", progress=False)
    assert request.identity()["model_config"]["region"]["selection"] == "bottom_up"
    before = request.key()
    preset = region_recipe.region_preset
    monkeypatch.setattr(region_recipe, "region_preset", lambda config: replace(preset(config), selection="regressed"))
    assert request.key() != before


def test_interrupted_pretraining_leaves_no_entry(world: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(options):
        options.run_dir.mkdir(parents=True)
        (options.run_dir / "half-written").write_text("x")
        raise KeyboardInterrupt

    monkeypatch.setattr(pretraining_experiment, "run_pretraining", broken)
    request = WorldPretraining(model="textonly", preset="tiny", world=world, precision="fp32", progress=False)
    with pytest.raises(KeyboardInterrupt):
        world_pretrained(request, cache=tmp_path)
    assert not (tmp_path / "pretrained" / request.key()).exists()
    assert not any("new" in p.name for p in (tmp_path / "pretrained").iterdir())
    # A process killed outright leaves its staging folder; the next pre-training of that entry removes it.
    stale = tmp_path / "pretrained" / f".{request.key()}.new-0123"
    stale.mkdir()
    with pytest.raises(KeyboardInterrupt):
        world_pretrained(request, cache=tmp_path)
    assert not stale.exists()


def test_run_on_the_default_world_starts_from_it(world: Path, tmp_path: Path, small_pretraining: list[str],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    # The default world is the session's world (the cache already holds it under its name).
    import harness.assembly as assembly

    monkeypatch.setattr(assembly, "default_world", lambda progress=True: world)
    monkeypatch.setenv("VLBENCH_CACHE", str(tmp_path / "cache"))
    record = run_experiment(RunOptions(model="textonly", task="vqa", run_dir=tmp_path / "run", limit=40,
                                       train_overrides={"epochs": 1}, progress=False))
    stage = record["config"]["pretraining"]
    assert small_pretraining == ["textonly"]
    assert stage["source"] == "world-pretraining" and stage["objectives"] == ["mlm"]
    assert record["config"]["init"] is None and record["pretraining"]["trained_now"]
    written = json.loads((tmp_path / "run" / "run.json").read_text())
    assert Path(written["pretraining"]["checkpoint"]).is_file() and written["config"]["pretraining"] == stage
    # A second run reuses the checkpoint; its configuration is the same, so `compare` counts them as seeds.
    again = run_experiment(RunOptions(model="textonly", task="vqa", run_dir=tmp_path / "again", limit=40, seed=1,
                                      train_overrides={"epochs": 1}, progress=False))
    assert not again["pretraining"]["trained_now"] and small_pretraining == ["textonly"]
    from harness.reports.collect import config_key
    assert config_key(again["config"], "vqa") == config_key(record["config"], "vqa")
    # --pretraining none: random weights, nothing pre-trained or recorded.
    record = run_experiment(RunOptions(model="textonly", task="vqa", run_dir=tmp_path / "scratch", limit=40,
                                       train_overrides={"epochs": 1}, progress=False, pretraining="none"))
    assert record["config"]["pretraining"] is None and record["config"]["init"] is None
    assert small_pretraining == ["textonly"]


def test_a_per_seed_draw_pretrains_each_seed_and_keeps_them_one_configuration(
        world: Path, tmp_path: Path, small_pretraining: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """--pretraining-draw per-seed: each run seed pre-trains with that seed (its own cache entry, reused by a
    second run of the seed); the seeds are one `compare` configuration, apart from the shared draw's."""
    import harness.assembly as assembly
    from harness.reports.collect import config_key

    monkeypatch.setattr(assembly, "default_world", lambda progress=True: world)
    monkeypatch.setenv("VLBENCH_CACHE", str(tmp_path / "cache"))

    def run(seed: int, draw: str, name: str) -> dict:
        return run_experiment(RunOptions(model="textonly", task="vqa", run_dir=tmp_path / name, limit=40, seed=seed,
                                         train_overrides={"epochs": 1}, progress=False, pretraining_draw=draw))

    one, two = run(1, "per-seed", "one"), run(2, "per-seed", "two")
    assert small_pretraining == ["textonly", "textonly"]
    keys = [one["pretraining"]["key"], two["pretraining"]["key"]]
    assert keys[0] != keys[1] and [one["pretraining"]["seed"], two["pretraining"]["seed"]] == [1, 2]
    made = json.loads((tmp_path / "cache" / "pretrained" / keys[1] / "run.json").read_text())
    assert made["seed"] == 2, "the checkpoint must be pre-trained with the run's seed"
    assert one["config"]["pretraining"]["draw"] == "per-seed"
    assert config_key(one["config"], "vqa") == config_key(two["config"], "vqa")
    # The same seed again reuses its draw; the shared draw (seed 0 for every run) is another configuration.
    assert not run(1, "per-seed", "again")["pretraining"]["trained_now"] and len(small_pretraining) == 2
    shared = run(1, "shared", "shared")
    assert small_pretraining[2:] == ["textonly"] and shared["pretraining"]["seed"] == 0
    assert shared["pretraining"]["key"] not in keys and "draw" not in shared["config"]["pretraining"]
    assert shared["config"]["pretraining"]["key"] == one["config"]["pretraining"]["key"]
    assert config_key(shared["config"], "vqa") != config_key(one["config"], "vqa")
    with pytest.raises(VlbenchError, match="needs the world pre-training"):
        run_experiment(RunOptions(model="textonly", task="vqa", run_dir=tmp_path / "none", pretraining="none",
                                  pretraining_draw="per-seed", progress=False))


def test_given_data_trains_from_scratch_unless_told(world: Path, tmp_path: Path, small_pretraining: list[str]) -> None:
    record = run_experiment(RunOptions(model="textonly", task="vqa", run_dir=tmp_path / "run",
                                       data=world / "vqa.yaml", limit=40, train_overrides={"epochs": 1},
                                       progress=False))
    assert record["config"]["pretraining"] is None and small_pretraining == []
    with pytest.raises(VlbenchError, match="needs the embedded world"):
        run_experiment(RunOptions(model="textonly", task="vqa", run_dir=tmp_path / "w", data=world / "vqa.yaml",
                                  pretraining="world", progress=False))
    checkpoint = tmp_path / "run" / "checkpoint.safetensors"
    with pytest.raises(VlbenchError, match="give one"):
        run_experiment(RunOptions(model="textonly", task="vqa", run_dir=tmp_path / "both", init=checkpoint,
                                  pretraining="world", progress=False))


def test_a_models_tasks_share_one_compare_row() -> None:
    """Retrieval continues the pre-trained ITM head and VQA starts a fresh one (head_init follows the task):
    the same model and protocol on both tasks is one configuration in `compare`."""
    from harness.reports.collect import config_key

    base = {"preset": "tiny", "init": None, "pretraining": {"source": "world-pretraining", "key": "k"}}
    assert config_key({**base, "head_init": "pretrain.itm"}, "retrieval") == config_key({**base, "head_init": None},
                                                                                       "vqa")
    assert config_key({**base, "pretraining": None}, "vqa") != config_key(base, "vqa")

"""`vlbench pretrain` end to end on the embedded world's captions, then `vlbench run --init` from its checkpoint.

Runs use `--limit` and one or two epochs so the file stays within a CPU minute or so.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from safetensors import safe_open

from harness.checkpoints import load_checkpoint
from harness.cli.main import cli
from harness.models import build_model, model_setup


def invoke(*args) -> tuple[int, str]:
    result = CliRunner().invoke(cli, [str(a) for a in args])
    return result.exit_code, result.output


def pretrain(world: Path, out: Path, model: str, *extra) -> dict:
    code, output = invoke("pretrain", "--model", model, "--data", world / "captions.yaml", "--run-dir", out,
                          "--limit", 48, "--no-progress", *extra)
    assert code == 0, output
    return json.loads((out / "run.json").read_text())


@pytest.fixture(scope="module")
def pixelbert_pretrained(world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("pretrain") / "pixelbert"
    pretrain(world, out, "pixelbert", "--epochs", 2, "--batch-size", 16)
    return out


@pytest.fixture(scope="module")
def soho_pretrained(world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("pretrain") / "soho"
    pretrain(world, out, "soho", "--objectives", "mlm,itm,mvm", "--epochs", 1, "--dictionary-size", 32,
             "--batch-size", 16)
    return out


def test_pixelbert_record_and_checkpoint(pixelbert_pretrained: Path) -> None:
    record = json.loads((pixelbert_pretrained / "run.json").read_text())
    assert record["kind"] == "pretrain" and record["model"] == "pixelbert" and record["seed"] == 0
    assert record["config"]["objectives"] == ["mlm", "itm"]
    assert record["config"]["pixel_sample"] == 6, "Pixel-BERT's 100-of-273 share of the tiny 4x4 grid"
    for split in ("train", "val"):
        assert record["data"]["splits"][split]["fingerprint"].startswith("sha256:")
    val = record["metrics"]["val"]
    assert val["mlm_predictions"] > 0 and val["itm_predictions"] == 48
    assert 0 <= val["itm_accuracy"] <= 100 and val["mlm_loss"] > 0
    train = record["train"]
    assert train["steps"] == 6 and train["samples"] == 96 and train["samples_per_second"] > 0
    assert all(0 < epoch["cpu_share"] <= 1.5 for epoch in train["history"]) and 0 < train["cpu_share"] <= 1.5
    assert len(train["history"]) == 2 and record["env"]["packages"]["torch"]
    state, meta = load_checkpoint(pixelbert_pretrained / "checkpoint.safetensors")
    assert meta["task"] == "pretrain" and meta["epoch"] == 2
    model_keys = {k[len("model."):] for k in state if k.startswith("model.")}
    assert model_keys == set(build_model(model_setup("pixelbert", "tiny")).state_dict())
    assert {k.split(".")[1] for k in state if k.startswith("pretrain.")} == {"mlm", "itm"}
    assert "pretrain.mlm.decoder.weight" not in state, "the tied decoder is the word embedding, saved once"
    assert meta["model_config"]["visual"]["pixel_sample"] is None, "sampling never reaches fine-tuning"


def test_pretraining_is_repeatable(world: Path, pixelbert_pretrained: Path, tmp_path: Path) -> None:
    again = pretrain(world, tmp_path / "again", "pixelbert", "--epochs", 2, "--batch-size", 16)
    first = json.loads((pixelbert_pretrained / "run.json").read_text())
    assert again["metrics"]["val"] == first["metrics"]["val"]


def test_run_init_fine_tunes_the_pretrained_model(world: Path, pixelbert_pretrained: Path, tmp_path: Path) -> None:
    code, output = invoke("run", "--model", "pixelbert", "--task", "retrieval", "--data", world / "retrieval.yaml",
                          "--init", pixelbert_pretrained / "checkpoint.safetensors", "--run-dir", tmp_path / "ft",
                          "--epochs", 1, "--limit", 8, "--no-progress")
    assert code == 0, output
    record = json.loads((tmp_path / "ft" / "run.json").read_text())
    assert record["config"]["init"].endswith("checkpoint.safetensors")
    assert record["config"]["head_init"] == "pretrain.itm", "retrieval continues the pre-trained ITM classifier"


def test_retrieval_head_starts_from_the_pretrained_itm_head(world: Path, pixelbert_pretrained: Path) -> None:
    from harness.assembly import load_init_head as _load_init_head
    from harness.tasks.nlvr2 import Nlvr2Task
    from harness.tasks.retrieval import RetrievalTask
    from pixelbert.heads import ItmHead
    from pixelbert.itc import RetrievalHead

    checkpoint = pixelbert_pretrained / "checkpoint.safetensors"
    state, _ = load_checkpoint(checkpoint)
    head = ItmHead(256)  # retrieval without ITC
    assert _load_init_head(head, RetrievalTask, checkpoint) == "pretrain.itm"
    for name, tensor in head.state_dict().items():
        assert (tensor == state[f"pretrain.itm.{name}"]).all(), name
    # With ITC (the default): the ITM part continues the pre-trained classifier, the ITC part starts fresh.
    head = RetrievalHead(256)
    fresh = {k: v.clone() for k, v in head.itc.state_dict().items()}
    assert _load_init_head(head, RetrievalTask, checkpoint) == "pretrain.itm"
    for name, tensor in head.itm.state_dict().items():
        assert (tensor == state[f"pretrain.itm.{name}"]).all(), name
    assert all(torch.equal(fresh[k], v) for k, v in head.itc.state_dict().items())
    assert _load_init_head(Nlvr2Task.build_head(None, 256), Nlvr2Task, checkpoint) is None  # type: ignore[arg-type]


def test_soho_pretrains_with_mvm_and_fine_tunes(world: Path, soho_pretrained: Path, tmp_path: Path) -> None:
    record = json.loads((soho_pretrained / "run.json").read_text())
    val = record["metrics"]["val"]
    assert val["mvm_predictions"] > 0 and 0 <= val["mvm_accuracy"] <= 100
    assert 1 <= val["dictionary_in_use"] <= 32 and 1.0 <= val["dictionary_perplexity"] <= 32
    assert record["config"]["model"]["dictionary"]["size"] == 32
    # As released: constant momentum 0.4, MVM scored against the entries (no MVM parameters saved).
    assert record["train"]["history"][0]["dictionary_momentum"] == pytest.approx(0.4)
    assert record["config"]["model"]["dictionary"]["schedule"] == "constant"
    assert record["config"]["pretrain"]["mvm_head"] == "dictionary"
    with safe_open(str(soho_pretrained / "checkpoint.safetensors"), framework="pt") as handle:
        assert handle.get_slice("model.visual_encoder.dictionary.embed").get_shape() == [32, 256]
        assert not any(key.startswith("pretrain.mvm.") for key in handle.keys())
    # --dictionary-size 32 differs from the tiny preset's 256: run --init takes the checkpoint's shape.
    code, output = invoke("run", "--model", "soho", "--task", "nlvr2", "--data", world / "nlvr2.yaml",
                          "--init", soho_pretrained / "checkpoint.safetensors", "--run-dir", tmp_path / "ft",
                          "--epochs", 1, "--limit", 32, "--no-progress")
    assert code == 0, output
    ft = json.loads((tmp_path / "ft" / "run.json").read_text())
    assert ft["config"]["model"]["dictionary"]["size"] == 32


def test_soho_earlier_recipe_stays_selectable(world: Path, tmp_path: Path) -> None:
    # The learned MVM classifier and the annealed momentum (vlbench's recipe before following the release).
    out = tmp_path / "old"
    pretrain(world, out, "soho", "--objectives", "mlm,itm,mvm", "--epochs", 2, "--dictionary-size", 32,
             "--batch-size", 16, "--limit", 16, "--mvm-head", "classifier", "--dictionary-schedule", "annealed",
             "--dictionary-momentum", 0.99)
    record = json.loads((out / "run.json").read_text())
    assert record["config"]["pretrain"]["mvm_head"] == "classifier"
    assert record["config"]["model"]["dictionary"]["schedule"] == "annealed"
    assert [e["dictionary_momentum"] for e in record["train"]["history"]] == pytest.approx([0.1, 0.2])
    with safe_open(str(out / "checkpoint.safetensors"), framework="pt") as handle:
        assert handle.get_slice("pretrain.mvm.decoder.weight").get_shape() == [32, 256]


@pytest.mark.parametrize("args, message", [
    (("--model", "pixelbert", "--objectives", "mlm,mvm"), "needs a visual dictionary"),
    (("--model", "pixelbert", "--objectives", "mlm,foo"), "objectives must be"),
    (("--model", "textonly", "--objectives", "mlm", "--pixel-sample", "4"), "not pixels"),
    (("--model", "textonly"), "no visual tokens"),
    (("--model", "pixelbert", "--dictionary-size", "16"), "no visual dictionary"),
])
def test_bad_input_is_a_one_line_error(world: Path, tmp_path: Path, args, message) -> None:
    code, output = invoke("pretrain", *args, "--data", world / "captions.yaml", "--run-dir", tmp_path / "x",
                          "--limit", 4, "--no-progress")
    assert code == 2 and message in output and "Traceback" not in output, output


def test_wrong_spec_task_is_an_error(world: Path, tmp_path: Path) -> None:
    code, output = invoke("pretrain", "--model", "pixelbert", "--data", world / "vqa.yaml", "--run-dir", tmp_path,
                          "--no-progress")
    assert code == 2 and "captions" in output


def test_ablation_writes_the_table_and_reuses_finished_runs(world: Path, tmp_path: Path) -> None:
    args = ("pretrain-ablation", "--out", tmp_path, "--world", world, "--variant", "scratch", "--variant", "mlm",
            "--task", "nlvr2", "--limit", 8, "--epochs", 1, "--pretrain-epochs", 1, "--pretrain-limit", 16,
            "--no-progress")
    code, output = invoke(*args)
    assert code == 0, output
    table = (tmp_path / "ablation.md").read_text()
    assert "| pixelbert, no pre-training |" in table and "| pixelbert, MLM |" in table and "nlvr2 accuracy" in table
    result = json.loads((tmp_path / "ablation.json").read_text())
    assert result["rows"][1]["pretrain"]["samples_per_second"] > 0
    assert (tmp_path / "mlm" / "nlvr2" / "run.json").is_file()
    stamp = (tmp_path / "mlm" / "nlvr2" / "run.json").stat().st_mtime_ns
    code, output = invoke(*args)
    assert code == 0 and (tmp_path / "mlm" / "nlvr2" / "run.json").stat().st_mtime_ns == stamp, "reused"


@pytest.mark.parametrize("model", ["region", "grid"])
def test_region_and_grid_pretrain_with_their_detector_then_fine_tune(world: Path, detector_file, tmp_path: Path,
                                                                      model: str, monkeypatch) -> None:
    """The region side pre-trains with the same MLM + ITM (the fairness rule) through the same prepare step as
    `run` (detector, feature cache), and `run --init` fine-tunes the result."""
    # A feature cache of its own: tests elsewhere assert what a fresh cache extracts.
    monkeypatch.setenv("VLBENCH_CACHE", str(tmp_path / "cache"))
    record = pretrain(world, tmp_path / "pt", model, "--epochs", 1, "--detector", detector_file[0])
    assert record["config"]["objectives"] == ["mlm", "itm"]
    # Region tokens are boxes, never pixel-sampled; grid tokens are frozen-CNN pixels, sampled as in Pixel-BERT.
    assert (record["config"]["pixel_sample"] is None) == (model == "region")
    assert record["visual_encoder"]["detector"]["path"] == str(detector_file[0])
    code, output = invoke("run", "--model", model, "--task", "vqa", "--data", world / "vqa.yaml",
                          "--init", tmp_path / "pt" / "checkpoint.safetensors", "--detector", detector_file[0],
                          "--limit", 32, "--epochs", 1, "--run-dir", tmp_path / "ft", "--no-progress")
    assert code == 0, output
    assert json.loads((tmp_path / "ft" / "run.json").read_text())["config"]["init"].endswith("checkpoint.safetensors")


def test_a_captions_epoch_visits_every_caption_pair_once(world: Path) -> None:
    # The base preset counts epochs as the papers do: every (image, caption) pair, not one caption per image.
    from harness.batches import ImageTensors, TextBatcher
    from harness.data.spec import load_spec
    from harness.errors import VlbenchError
    from harness.pretraining.config import PRETRAIN_PRESETS, PretrainConfig
    from harness.pretraining.data import CaptionPairs
    from pixelbert.tokenizer import load_tokenizer

    assert PRETRAIN_PRESETS["base"].epoch_pairs == "captions" and PRETRAIN_PRESETS["tiny"].epoch_pairs == "images"
    tokenizer = load_tokenizer()

    def pairs(epoch_pairs: str) -> CaptionPairs:
        config = PretrainConfig(objectives=("mlm",), epoch_pairs=epoch_pairs, mlm_probability=1e-9)
        return CaptionPairs(load_spec(world / "captions.yaml"), ImageTensors(64), TextBatcher(tokenizer, 40), config,
                            vocab_size=len(tokenizer), limit=6)

    per_image, per_caption = pairs("images"), pairs("captions")
    images = per_caption.examples("train")
    assert len(per_image.train_rows()) == 6
    assert len(per_caption.train_rows()) == sum(len(i.captions) for i in images) > 6
    batch = per_caption.collate("train", per_caption.train_rows(), torch.Generator().manual_seed(0), rows=True)
    texts = tokenizer.batch_decode(batch["input_ids"], skip_special_tokens=True)
    expected = [c for image in images for c in image.captions]
    assert [t.lower() for t in texts] == [tokenizer.decode(tokenizer(c)["input_ids"], skip_special_tokens=True)
                                         for c in expected]
    with pytest.raises(VlbenchError):
        PretrainConfig(epoch_pairs="pairs")

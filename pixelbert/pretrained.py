"""Initialise the text embeddings and the cross-modal transformer from a LOCAL BERT-family checkpoint.

A checkpoint folder is what Hugging Face writes: ``config.json`` plus ``model.safetensors`` (or
``pytorch_model.bin``). Nothing here touches the network or needs transformers: the config is plain JSON and the
weights are mapped to our module names by the table below. Keys may carry a ``bert.`` prefix (BertFor... models)
or none (BertModel); old TF conversions name LayerNorm parameters gamma/beta, which is handled too.

Typical use::

    config = transformer_config_from_folder(folder, num_layers=2)     # shape the model like the checkpoint
    model = VisionLanguageModel(PixelEncoder(visual_cfg, config.hidden_size), config)
    load_bert_weights(model, folder, num_layers=2)                    # then copy the weights in
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from harness.errors import VlbenchError
from harness.fileio import read_json
from pixelbert.config import TransformerConfig
from pixelbert.heads import MlmHead
from pixelbert.text_embeddings import TextEmbeddings
from pixelbert.transformer import CrossModalTransformer

log = logging.getLogger(__name__)

# Hugging Face BERT layer names (after "encoder.layer.{i}.") -> ours (after "layers.{i}.").
LAYER_KEYS = {
    "attention.self.query": "attention.query",
    "attention.self.key": "attention.key",
    "attention.self.value": "attention.value",
    "attention.output.dense": "attention.output",
    "attention.output.LayerNorm": "attention_norm",
    "intermediate.dense": "ffn_in",
    "output.dense": "ffn_out",
    "output.LayerNorm": "ffn_norm",
}
# Fields that must agree between the checkpoint and the model (dropout may differ freely).
ARCHITECTURE_FIELDS = ("vocab_size", "hidden_size", "num_layers", "num_heads", "intermediate_size",
                       "max_position_embeddings", "type_vocab_size", "hidden_act", "layer_norm_eps")


def _folder(folder: str | Path) -> Path:
    folder = Path(folder)
    if not folder.is_dir():
        raise VlbenchError(f"{folder}: BERT checkpoint folder not found")
    return folder


def _read_config(folder: Path) -> dict[str, Any]:
    path = folder / "config.json"
    if not path.is_file():
        raise VlbenchError(f"{path}: not found (a BERT checkpoint folder needs config.json)")
    raw = read_json(path)
    if not isinstance(raw, dict):
        raise VlbenchError(f"{path}: expected a JSON object (a BERT config)")
    if raw.get("model_type", "bert") != "bert":
        raise VlbenchError(f"{path}: model_type {raw.get('model_type')!r} is not a BERT checkpoint")
    if raw.get("position_embedding_type", "absolute") != "absolute":
        raise VlbenchError(f"{path}: position_embedding_type {raw['position_embedding_type']!r} is not supported")
    return raw


def transformer_config_from_folder(folder: str | Path, num_layers: int | None = None) -> TransformerConfig:
    """The TransformerConfig matching the checkpoint in ``folder``, keeping only its first ``num_layers``."""
    folder = _folder(folder)
    raw = _read_config(folder)
    try:
        available = int(raw["num_hidden_layers"])
        config = TransformerConfig(
            vocab_size=int(raw["vocab_size"]),
            hidden_size=int(raw["hidden_size"]),
            num_layers=available if num_layers is None else num_layers,
            num_heads=int(raw["num_attention_heads"]),
            intermediate_size=int(raw["intermediate_size"]),
            max_position_embeddings=int(raw.get("max_position_embeddings", 512)),
            type_vocab_size=int(raw.get("type_vocab_size", 2)),
            dropout=float(raw.get("hidden_dropout_prob", 0.1)),
            attention_dropout=float(raw.get("attention_probs_dropout_prob", 0.1)),
            layer_norm_eps=float(raw.get("layer_norm_eps", 1e-12)),
            hidden_act=str(raw.get("hidden_act", "gelu")),
            pad_token_id=int(raw.get("pad_token_id") or 0),
        )
    except KeyError as exc:
        raise VlbenchError(f"{folder / 'config.json'}: missing {exc.args[0]!r}") from None
    if num_layers is not None and not 0 <= num_layers <= available:
        raise VlbenchError(f"{folder}: num_layers={num_layers} but the checkpoint has {available} layers")
    return config


def _read_weights(folder: Path) -> dict[str, Tensor]:
    safetensors_file, bin_file = folder / "model.safetensors", folder / "pytorch_model.bin"
    if safetensors_file.is_file():
        from safetensors.torch import load_file

        return load_file(str(safetensors_file), device="cpu")
    if bin_file.is_file():
        try:
            return torch.load(bin_file, map_location="cpu", weights_only=True)
        except Exception as exc:  # any unpickling failure means the same thing to the user
            raise VlbenchError(f"{bin_file}: cannot read ({str(exc).splitlines()[0]})") from None
    raise VlbenchError(f"{folder}: no model.safetensors or pytorch_model.bin")


def _normalise_keys(state: dict[str, Tensor], source: Path) -> dict[str, Tensor]:
    """Strip the model prefix ("bert." etc.) and rename gamma/beta; "cls.*" (MLM head) keys are kept as they are."""
    anchor = "embeddings.word_embeddings.weight"
    prefix = next((k[: -len(anchor)] for k in state if k.endswith(anchor)), None)
    if prefix is None:
        raise VlbenchError(f"{source}: no '{anchor}' key; not a BERT checkpoint")
    out = {}
    for key, value in state.items():
        if key.startswith(prefix):
            key = key[len(prefix):]
        elif not key.startswith("cls."):
            continue
        key = re.sub(r"LayerNorm\.gamma$", "LayerNorm.weight", re.sub(r"LayerNorm\.beta$", "LayerNorm.bias", key))
        out[key] = value
    return out


def _mapping(num_layers: int, has_pooler: bool, has_mlm: bool) -> dict[str, str]:
    """checkpoint key -> our key (relative to the parts dict below)."""
    mapping = {}
    for name in ("word_embeddings", "position_embeddings", "token_type_embeddings"):
        mapping[f"embeddings.{name}.weight"] = f"text_embeddings.{name}.weight"
    for param in ("weight", "bias"):
        mapping[f"embeddings.LayerNorm.{param}"] = f"text_embeddings.LayerNorm.{param}"
        for i in range(num_layers):
            for theirs, ours in LAYER_KEYS.items():
                mapping[f"encoder.layer.{i}.{theirs}.{param}"] = f"transformer.layers.{i}.{ours}.{param}"
        if has_pooler:
            mapping[f"pooler.dense.{param}"] = f"transformer.pooler.dense.{param}"
        if has_mlm:
            mapping[f"cls.predictions.transform.dense.{param}"] = f"mlm_head.transform.dense.{param}"
            mapping[f"cls.predictions.transform.LayerNorm.{param}"] = f"mlm_head.transform.LayerNorm.{param}"
    if has_mlm:
        mapping["cls.predictions.bias"] = "mlm_head.bias"
    return mapping


def load_bert_weights(
    model_or_parts: nn.Module | tuple[TextEmbeddings, CrossModalTransformer],
    folder: str | Path,
    num_layers: int | None = None,
    mlm_head: MlmHead | None = None,
) -> TransformerConfig:
    """Copy a local BERT checkpoint into a model's text embeddings and transformer (and pooler, MLM head).

    ``model_or_parts``: anything with ``.text_embeddings`` and ``.transformer`` (a VisionLanguageModel), or the
    pair itself. The model must already have the checkpoint's shape with ``num_layers`` layers (build it from
    :func:`transformer_config_from_folder`); any difference is a VlbenchError naming the field or tensor.
    Returns the checkpoint's (truncated) TransformerConfig.
    """
    if isinstance(model_or_parts, tuple):
        text_embeddings, transformer = model_or_parts
    else:
        text_embeddings, transformer = model_or_parts.text_embeddings, model_or_parts.transformer
    folder = _folder(folder)
    config = transformer_config_from_folder(folder, num_layers)

    ours = transformer.config
    if ours.num_layers != config.num_layers:
        raise VlbenchError(
            f"{folder}: the model has {ours.num_layers} transformer layers, the checkpoint gives {config.num_layers}; "
            f"pass num_layers={ours.num_layers} to keep only the first {ours.num_layers}"
        )
    for name in ARCHITECTURE_FIELDS:
        for what, cfg in (("transformer", ours), ("text embeddings", text_embeddings.config)):
            if name != "num_layers" and getattr(cfg, name) != getattr(config, name):
                raise VlbenchError(
                    f"{folder}: {name} is {getattr(config, name)!r} in the checkpoint but "
                    f"{getattr(cfg, name)!r} in the model's {what}"
                )

    state = _normalise_keys(_read_weights(folder), folder)
    has_pooler = "pooler.dense.weight" in state
    has_mlm = mlm_head is not None and "cls.predictions.transform.dense.weight" in state
    parts = nn.ModuleDict({"text_embeddings": text_embeddings, "transformer": transformer})
    if has_mlm:
        parts["mlm_head"] = mlm_head
    targets = parts.state_dict()
    mapping = _mapping(config.num_layers, has_pooler, has_mlm)

    missing = [k for k in mapping if k not in state]
    if missing:
        raise VlbenchError(f"{folder}: checkpoint lacks {', '.join(missing[:3])}" +
                           (f" ... ({len(missing)} in all)" if len(missing) > 3 else ""))
    with torch.no_grad():
        for theirs, ours_key in mapping.items():
            source, target = state[theirs], targets[ours_key]
            if source.shape != target.shape:
                raise VlbenchError(
                    f"{folder}: {theirs} has shape {tuple(source.shape)}, the model's {ours_key} "
                    f"{tuple(target.shape)}"
                )
            target.copy_(source.to(target.dtype))
    if not has_pooler:
        log.info("%s has no pooler weights; the pooler keeps its random initialisation", folder)
    if mlm_head is not None and not has_mlm:
        log.info("%s has no MLM head weights; the MLM head keeps its random initialisation", folder)
    return config

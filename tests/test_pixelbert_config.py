"""Config dataclasses round-trip through dicts/JSON (they are stored in run.json and checkpoints)."""

from __future__ import annotations

import json

import pytest

from harness.errors import VlbenchError
from pixelbert.config import PRESETS, ModelConfig, TransformerConfig, VisualConfig, get_preset


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_round_trip_through_json(name: str) -> None:
    config = PRESETS[name]
    assert ModelConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


def test_tiny_preset_shape() -> None:
    tiny = get_preset("tiny")
    assert (tiny.transformer.hidden_size, tiny.transformer.num_layers, tiny.transformer.num_heads) == (256, 4, 4)
    assert tiny.visual.image_size == 64 and tiny.visual.cnn_stride == 8 and tiny.visual.pixel_pool == 2


def test_bad_configs_are_vlbench_errors() -> None:
    with pytest.raises(VlbenchError, match="multiple of num_heads"):
        TransformerConfig(hidden_size=100, num_heads=3)
    with pytest.raises(VlbenchError, match="unknown backbone"):
        VisualConfig(backbone="vgg")
    with pytest.raises(VlbenchError, match="cnn_stride"):
        VisualConfig(cnn_channels=(8, 16), cnn_stride=8)
    with pytest.raises(VlbenchError, match="unknown keys"):
        TransformerConfig.from_dict({"hidden": 3})
    with pytest.raises(VlbenchError, match="unknown model preset"):
        get_preset("huge")

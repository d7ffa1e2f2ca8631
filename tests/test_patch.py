"""``--model patch`` (ViLT's patch embeddings): what the encoder claims, checked against hand-cut patches.

End to end on every task, pre-training, bench and compare: tests/test_registry.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from harness.cli.main import cli
from harness.models import build_model, model_setup
from harness.models.patch import VILT_PATCH, patch_size


def _encoder(preset: str = "tiny"):
    torch.manual_seed(0)
    setup = model_setup("patch", preset)
    return setup, build_model(setup).visual_encoder.eval()


def test_each_token_is_a_linear_map_of_its_flattened_patch_plus_its_position() -> None:
    setup, encoder = _encoder()
    size = encoder.patch_size
    assert size == 16 and encoder.grid == 4  # the tiny pixel model's 4 x 4 cells
    images = torch.rand(2, 3, 64, 64)
    tokens = encoder(images)
    assert tokens.features.shape == (2, 16, setup.transformer.hidden_size) and tokens.mask.all()
    projection = encoder.projection
    for b in range(2):
        for row in range(4):
            for col in range(4):
                patch = images[b, :, row * size:(row + 1) * size, col * size:(col + 1) * size] * 2 - 1
                expected = projection.norm(projection.proj(patch.reshape(-1))) + projection.type_embedding
                expected = expected + encoder.position[0, :, row, col]
                got = tokens.features[b, row * 4 + col]
                assert torch.allclose(got, expected, atol=1e-5), (b, row, col)
    assert tokens.positions[0].tolist() == list(range(16))


def test_base_preset_uses_vilts_32_pixel_patches() -> None:
    setup = model_setup("patch", "base")
    assert patch_size(setup.visual) == VILT_PATCH
    assert setup.visual.image_size // VILT_PATCH == 25  # the shared 800 px short side: a 25 x 25 table


def test_another_image_size_gets_the_position_table_resized() -> None:
    _, encoder = _encoder()
    tokens = encoder(torch.rand(1, 3, 96, 72))  # 6 x 4 full patches (the last 8 px column is left out)
    assert tokens.features.shape[1] == 24
    table = F.interpolate(encoder.position, size=(6, 4), mode="bilinear", align_corners=False)
    assert torch.allclose(encoder._positions(6, 4), table.flatten(2).transpose(1, 2)[0])


def test_random_patch_sampling_only_in_training_mode() -> None:
    _, encoder = _encoder()
    encoder.pixel_sample = 5
    encoder.sample_generator = torch.Generator().manual_seed(0)
    images = torch.rand(3, 3, 64, 64)
    assert encoder(images).num_tokens == 16  # eval: every patch
    encoder.train()
    sampled = encoder(images)
    assert sampled.num_tokens == 5 and sampled.positions.unique().numel() > 5  # each image its own subset


def test_patch_model_has_no_cnn(world: Path, tmp_path: Path) -> None:
    _, encoder = _encoder()
    assert encoder.cnn is None and encoder.cost_name == "patch"
    weights = tmp_path / "cnn.pt"
    weights.write_bytes(b"")
    result = CliRunner().invoke(cli, ["run", "--model", "patch", "--task", "vqa", "--data", str(world / "vqa.yaml"),
                                      "--cnn-init", str(weights), "--run-dir", str(tmp_path / "r"), "--limit", "4",
                                      "--no-progress"])
    assert result.exit_code == 2 and "no CNN" in result.output and "Traceback" not in result.output


@pytest.mark.parametrize("option", [["--boxes", "gt"], ["--detector-data", "vqa.yaml"]])
def test_region_options_are_refused(world: Path, tmp_path: Path, option: list[str]) -> None:
    args = [str(world / a) if a.endswith(".yaml") else a for a in option]
    result = CliRunner().invoke(cli, ["run", "--model", "patch", "--task", "vqa", "--data", str(world / "vqa.yaml"),
                                      *args, "--run-dir", str(tmp_path), "--no-progress"])
    assert result.exit_code == 2 and "applies only to --model" in result.output

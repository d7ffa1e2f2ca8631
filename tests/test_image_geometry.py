"""Image geometry: the papers' aspect-kept resizing (``--image-size`` short side, ``--max-size`` long side),
padded batches whose padding never reaches a prediction, and the square default unchanged."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from harness.batches import ImageTensors, resized_size
from harness.cli.main import cli
from harness.errors import VlbenchError
from harness.models import build_model, load_all_models, model_setup
from pixelbert.config import DictionaryConfig, VisualConfig, get_preset
from pixelbert.pixel_encoder import sample_pixels
from pixelbert.soho.visual_dictionary import VisualDictionary

load_all_models()


def test_resize_rule_is_pixelberts_short_side_with_a_long_side_cap() -> None:
    assert resized_size(640, 480, 800, 1333) == (1067, 800)  # short side 800
    assert resized_size(2000, 400, 800, 1333) == (1333, 267)  # the long side would pass 1333: capped
    assert resized_size(480, 640, 800, 1333) == (800, 1067)  # portrait
    assert resized_size(640, 480, 64) == (64, 64)  # max_size 0: the square


def test_square_geometry_is_recorded_as_before_and_validated() -> None:
    assert "max_size" not in VisualConfig().to_dict()  # pre-training cache keys of square runs stay the same
    assert VisualConfig(image_size=800, max_size=1333).to_dict()["max_size"] == 1333
    with pytest.raises(VlbenchError, match="max_size"):
        VisualConfig(image_size=800, max_size=600)
    base = get_preset("base").visual
    assert (base.image_size, base.max_size) == (800, 1333)  # the paper's geometry is the base default


def test_image_size_alone_sets_the_short_side_with_the_aspect_kept() -> None:
    assert model_setup("pixelbert", "tiny", image_size=96).visual.max_size == 160  # 1333/800 of 96
    assert model_setup("pixelbert", "base", image_size=384).visual.max_size == 1333  # the preset's cap
    assert model_setup("pixelbert", "tiny", image_size=96, max_size=0).visual.max_size == 0  # squares


def _picture(path: Path, width: int, height: int, seed: int) -> Path:
    generator = torch.Generator().manual_seed(seed)
    pixels = torch.randint(0, 256, (height, width, 3), generator=generator, dtype=torch.uint8).numpy()
    Image.fromarray(pixels).save(path)
    return path


def test_inputs_pad_to_the_largest_image_and_say_where_each_ends(tmp_path: Path) -> None:
    wide = _picture(tmp_path / "wide.png", 200, 50, 0)
    tall = _picture(tmp_path / "tall.png", 60, 120, 1)
    images = ImageTensors(40, max_size=96)
    batch = images.inputs([wide, tall])
    assert batch["image_sizes"].tolist() == [[24, 96], [80, 40]]  # wide: capped by 96; tall: short side 40
    assert batch["images"].shape == (2, 3, 80, 96)
    assert batch["images"][0, :, 24:].abs().sum() == 0 and batch["images"][1, :, :, 40:].abs().sum() == 0
    square = ImageTensors(40).inputs([wide, tall])
    assert set(square) == {"images"} and square["images"].shape == (2, 3, 40, 40)  # the default, unchanged
    with pytest.raises(VlbenchError, match="image_sizes"):
        images.batch([wide])


def test_a_reduced_scale_jpeg_decode_keeps_the_files_aspect_ratio(tmp_path: Path) -> None:
    photo = tmp_path / "photo.jpg"
    Image.fromarray(torch.randint(0, 256, (483, 641, 3), dtype=torch.uint8).numpy()).save(photo, quality=90)
    # 641x483 decodes at 1/4 scale (161x121) for a 100 px short side; the target comes from the file's size.
    assert ImageTensors(100, max_size=1000).uint8(photo).shape == (3, 100, 133)


@pytest.mark.parametrize("name", ["pixelbert", "soho", "patch", "grid"])
def test_padding_never_reaches_the_prediction(name: str) -> None:
    torch.manual_seed(0)
    model = build_model(model_setup(name, "tiny", image_size=64, max_size=112)).eval()
    # Sizes that are no multiple of a token's 16 px: partial cells at the edge belong to the image, never to padding.
    first, second = torch.rand(3, 60, 107), torch.rand(3, 90, 64)
    batch = torch.zeros(2, 3, 90, 107)
    batch[0, :, :60], batch[1, :, :, :64] = first, second
    sizes = torch.tensor([[60, 107], [90, 64]])
    noisy = batch.clone()
    noisy[0, :, 60:], noisy[1, :, :, 64:] = 5.0, -3.0  # anything in the padding
    ids = torch.tensor([[101, 2003, 102]] * 2)
    mask = torch.ones_like(ids, dtype=torch.bool)
    with torch.no_grad():
        clean = model(ids, mask, batch, image_sizes=sizes).pooled
        assert torch.allclose(clean, model(ids, mask, noisy, image_sizes=sizes).pooled, atol=1e-5)
        tokens = model.encode_images(batch, sizes)
        alone = [model.encode_images(x[None]) for x in (first, second)]
        # Each image keeps exactly the tokens it has alone (CNN: ceil(60/16) x ceil(107/16) = 4 x 7 and 6 x 4 cells,
        # though 64 px are 64/107 of the padded batch's 7 columns, 4.2; patches: whole 16 px patches, 3 x 6, 5 x 4).
        assert tokens.mask.sum(dim=1).tolist() == [a.num_tokens for a in alone]
        assert [a.num_tokens for a in alone] == ([18, 20] if name == "patch" else [28, 24])
        if name == "patch":  # patches are local and each image's positions are its own: identical to alone
            for row, a in enumerate(alone):
                assert torch.allclose(tokens.features[row][tokens.mask[row]], a.features[0], atol=1e-6)


def test_pixel_sampling_and_the_dictionary_skip_padding() -> None:
    encoder = build_model(model_setup("pixelbert", "tiny", image_size=64, max_size=128)).visual_encoder.eval()
    tokens = encoder(torch.rand(2, 3, 64, 128), torch.tensor([[64, 128], [64, 64]]))  # 4x8 cells; 4x4 real
    sampled = sample_pixels(tokens, 10, torch.Generator().manual_seed(0))
    assert sampled.mask.all()  # 10 <= 16 real cells: no padding cell is drawn
    torch.manual_seed(0)
    twins = [VisualDictionary(DictionaryConfig(size=4), 8).train() for _ in range(2)]
    twins[1].load_state_dict(twins[0].state_dict())
    x, valid = torch.randn(6, 8), torch.tensor([True, True, False, False, False, False])
    torch.manual_seed(1)  # dead entries are re-seeded from random rows: the same draws for both
    twins[0](x, valid=valid)
    torch.manual_seed(1)
    twins[1](x[valid])  # the padding rows have no effect on the entries
    assert torch.equal(twins[0].embed, twins[1].embed) and torch.equal(twins[0].cluster_size, twins[1].cluster_size)


def _stretched_vqa(world: Path, root: Path) -> Path:
    """The world's VQA spec with every image stretched to another aspect ratio (wide or tall by image id)."""
    spec = (world / "vqa.yaml").read_text()
    (root / "images").mkdir(parents=True)
    for split in ("train", "val", "test"):
        questions = json.loads((world / "vqa" / f"v2_OpenEnded_world_{split}_questions.json").read_text())
        for image_id in {q["image_id"] for q in questions["questions"][:40]}:
            name = f"world_{image_id:06d}.png"
            size = (96, 64) if image_id % 2 else (64, 80)
            Image.open(world / "images" / name).resize(size).save(root / "images" / name)
    for folder in ("vqa", "coco"):
        (root / folder).symlink_to(world / folder)
    (root / "vqa.yaml").write_text(spec)
    return root / "vqa.yaml"


def test_run_and_eval_keep_the_aspect_ratio_end_to_end(world: Path, tmp_path: Path) -> None:
    data = _stretched_vqa(world, tmp_path / "data")
    run_dir = tmp_path / "run"
    result = CliRunner().invoke(cli, ["run", "--model", "pixelbert", "--task", "vqa", "--data", str(data),
                                      "--run-dir", str(run_dir), "--image-size", "48", "--max-size", "80",
                                      "--epochs", "1", "--limit", "40", "--pretraining", "none", "--no-progress"])
    assert result.exit_code == 0, result.output
    record = json.loads((run_dir / "run.json").read_text())
    visual = record["config"]["model"]["visual"]
    assert (visual["image_size"], visual["max_size"]) == (48, 80)
    assert record["train"]["samples"] == 40
    evaluated = tmp_path / "eval"
    result = CliRunner().invoke(cli, ["eval", "--checkpoint", str(run_dir / "checkpoint.safetensors"), "--task", "vqa", "--data",
                                      str(data), "--run-dir", str(evaluated), "--split", "test", "--limit", "40",
                                      "--max-size", "0", "--no-progress"])  # the same model on square images
    assert result.exit_code == 0, result.output
    config = json.loads((evaluated / "run.json").read_text())["config"]
    assert config["image_geometry"] == {"image_size": 48, "max_size": 0}


def test_bad_geometry_is_one_line(world: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["run", "--model", "pixelbert", "--task", "vqa", "--run-dir", str(tmp_path),
                                      "--image-size", "64", "--max-size", "32", "--no-progress"])
    assert result.exit_code != 0 and "max_size (32) must be 0" in result.output


def test_the_detector_sees_each_image_of_a_padded_batch_alone(detector_file, world: Path) -> None:
    from dataclasses import replace

    from baselines.detector import inference_state, load_detector
    from baselines.region_encoder import RegionEncoder
    from pixelbert.config import RegionConfig

    tiny = get_preset("tiny")
    region = RegionConfig(detector_epochs=2, detector_batch_size=8, min_boxes=3, max_boxes=8)
    detector, _ = load_detector(detector_file[0], tiny.visual, region)
    encoder = RegionEncoder(replace(tiny, region=replace(region, num_classes=5)), tiny.transformer.hidden_size)
    encoder.detector.load_state_dict(inference_state(detector))
    encoder.eval()
    square = ImageTensors(64).batch([world / "images" / f"world_{i:06d}.png" for i in (1, 2)])
    wide = torch.nn.functional.interpolate(square[1:], size=(64, 96), mode="bilinear")[0]
    batch = torch.zeros(2, 3, 64, 96)
    batch[0, :, :, :64], batch[1] = square[0], wide
    padded = encoder.regions(batch, torch.tensor([[64, 64], [64, 96]]))
    alone = [encoder.regions(square[:1])[0], encoder.regions(wide[None])[0]]
    for got, want in zip(padded, alone):
        assert torch.equal(got.boxes, want.boxes) and torch.equal(got.features, want.features)


def test_the_torchvision_resampler_is_within_a_grey_level_of_pils(tmp_path: Path) -> None:
    photo = tmp_path / "photo.jpg"
    Image.fromarray(torch.randint(0, 256, (120, 160, 3), dtype=torch.uint8).numpy()).save(photo, quality=90)
    for size, max_size in ((64, 0), (200, 320)):  # shrink to a square; enlarge with the aspect kept
        pil = ImageTensors(size, max_size=max_size).uint8(photo).int()
        fast = ImageTensors(size, max_size=max_size, resampler="torchvision").uint8(photo).int()
        assert pil.shape == fast.shape and (pil - fast).abs().max() <= 1
    assert "resampler" not in VisualConfig().to_dict()  # the default leaves cache keys as they were
    with pytest.raises(VlbenchError, match="resampler"):
        VisualConfig(resampler="cv2")

"""Region baseline: detector, region extraction, feature cache, importers, grid encoder, bad inputs.

A small detector is trained once per session on the first images of the tiny world (seconds); the quality
of a fully trained detector is measured by `vlbench detector train` (README), not here.
"""

from __future__ import annotations

import base64
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from baselines.coco_boxes import load_coco_boxes
from baselines.detector import build_detector, evaluate_map, inference_state, load_detector
from baselines.feature_cache import open_cache
from baselines.grid_encoder import GridEncoder
from baselines.importers import import_tsv
from baselines.region_encoder import RegionEncoder
from baselines.region_setup import extraction_stamp, fill_cache, image_id_of
from baselines.regions import box_geometry, extract_regions
from harness.batches import ImageTensors
from harness.cli.main import cli
from harness.data.spec import load_spec
from harness.errors import VlbenchError
from pixelbert.config import ModelConfig, RegionConfig, get_preset

TINY = get_preset("tiny")
REGION = RegionConfig(detector_epochs=2, detector_batch_size=8, min_boxes=3, max_boxes=8)


def _encoder(detector_file: tuple[Path, dict], **region: object) -> RegionEncoder:
    detector, _ = load_detector(detector_file[0], TINY.visual, REGION)
    config = replace(TINY, region=replace(REGION, num_classes=5, **region))
    encoder = RegionEncoder(config, TINY.transformer.hidden_size)
    encoder.detector.load_state_dict(inference_state(detector))
    return encoder.eval()


def _images(world: Path, n: int, start: int = 1) -> tuple[list[Path], torch.Tensor]:
    paths = [world / "images" / f"world_{i:06d}.png" for i in range(start, start + n)]
    return paths, ImageTensors(64).batch(paths)


# ---------------------------------------------------------------------------------------------- detector


def test_detector_trains_on_the_world_boxes_and_is_scored_with_pycocotools(detector_file, world: Path) -> None:
    path, training = detector_file
    losses = [h["loss"] for h in training["history"]]
    assert training["images"] == 48 and losses[-1] < losses[0]
    detector, meta = load_detector(path, TINY.visual, REGION)
    assert len(meta["hash"]) == 16 and detector.roi_heads.box_predictor.cls_score.out_features == 6
    val = load_coco_boxes(load_spec(world / "vqa.yaml"), "val")
    quality = evaluate_map(detector, replace(val, images=val.images[:16]), progress=False)
    assert set(quality) >= {"map", "map50", "map75"} and 0.0 <= quality["map"] <= quality["map50"] <= 100.0
    assert quality["detections"] > 0


def test_detector_cli_trains_and_reports_map(world: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["detector", "train", "--data", str(world / "vqa.yaml"), "--run-dir",
                                      str(tmp_path), "--limit", "16", "--epochs", "1", "--no-progress"])
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "detector.json").read_text())
    assert record["map_split"] == "test" and "map" in record["mAP"] and record["training"]["steps"] == 1
    assert (tmp_path / "detector.safetensors").is_file()


def test_detector_from_another_config_is_refused(detector_file) -> None:
    with pytest.raises(VlbenchError, match="another backbone or region config"):
        load_detector(detector_file[0], TINY.visual, replace(REGION, representation_size=128))


def test_torchvision_state_dict_loads(detector_file, tmp_path: Path) -> None:
    detector, meta = load_detector(detector_file[0], TINY.visual, REGION)
    torch.save(detector.state_dict(), tmp_path / "frcnn.pth")
    again, again_meta = load_detector(tmp_path / "frcnn.pth", TINY.visual, REGION)
    assert again_meta["hash"] == meta["hash"]


def test_detectron2_backend_is_a_clear_error_when_missing() -> None:
    with pytest.raises(VlbenchError, match="detectron2"):
        build_detector(TINY.visual, replace(REGION, backend="detectron2"), 5)


def test_boxes_without_annotations_file_is_a_clear_error(world: Path) -> None:
    with pytest.raises(VlbenchError, match="no 'boxes:'"):
        load_coco_boxes(load_spec(world / "nlvr2.yaml"), "train")


# ---------------------------------------------------------------------------------------------- regions


def test_regions_follow_the_bottom_up_selection(detector_file, world: Path) -> None:
    encoder = _encoder(detector_file)
    _, images = _images(world, 4)
    regions = extract_regions(encoder.detector, images, encoder.region)
    for r in regions:
        assert REGION.min_boxes <= len(r.boxes) <= REGION.max_boxes
        assert r.features.shape == (len(r.boxes), REGION.representation_size)
        assert (r.boxes >= 0).all() and (r.boxes <= 1).all() and (r.boxes[:, 2:] >= r.boxes[:, :2]).all()
        assert (r.scores[:-1] >= r.scores[1:]).all()  # best first


def test_gt_boxes_are_pooled_as_given(detector_file, world: Path) -> None:
    encoder = _encoder(detector_file)
    _, images = _images(world, 1)
    truth = torch.tensor([[10.0, 20.0, 30.0, 40.0], [0.0, 0.0, 64.0, 32.0]])
    (r,) = extract_regions(encoder.detector, images, encoder.region, boxes=[truth])
    assert torch.allclose(r.boxes, truth / 64)


def test_zero_detections_fall_back_to_the_whole_image(detector_file, world: Path) -> None:
    encoder = _encoder(detector_file)
    encoder.detector.rpn._post_nms_top_n = {"training": 0, "testing": 0}  # the RPN proposes nothing
    _, images = _images(world, 2)
    tokens = encoder(images)
    assert tokens.mask.sum(1).tolist() == [1, 1] and encoder.fallback_images == 2
    assert torch.allclose(tokens.boxes[:, 0], torch.tensor([0.0, 0.0, 1.0, 1.0]))
    assert torch.isfinite(tokens.features).all()


def test_geometry_is_normalised_corners_size_and_area() -> None:
    g = box_geometry(torch.tensor([[0.25, 0.5, 0.75, 1.0]]))
    assert torch.allclose(g, torch.tensor([[0.25, 0.5, 0.75, 1.0, 0.5, 0.5, 0.25]]))


def test_region_tokens_have_padding_masks_and_train_only_the_projection(detector_file, world: Path) -> None:
    encoder = _encoder(detector_file)
    encoder.train()
    assert not encoder.detector.training  # frozen detector stays in inference mode
    _, images = _images(world, 3)
    tokens = encoder(images)
    assert tokens.features.shape[:2] == tokens.mask.shape and tokens.features.shape[2] == 256
    tokens.features.sum().backward()
    assert all(p.grad is None for p in encoder.detector.parameters())
    assert encoder.projection.proj.weight.grad is not None and encoder.geometry[0].weight.grad is not None
    assert encoder.cnn is None


# ---------------------------------------------------------------------------------------------- cache


def test_cache_serves_the_same_tokens_and_is_keyed_by_image_id(detector_file, world: Path, tmp_path: Path) -> None:
    encoder = _encoder(detector_file)
    spec = load_spec(world / "vqa.yaml")
    paths, images = _images(world, 6)
    live = encoder.eval()(images)
    stamp = extraction_stamp("abc", TINY.visual, encoder.region)
    stats = fill_cache(encoder, spec, paths, ImageTensors(64), tmp_path / "cache", stamp, progress=False)
    assert stats["extracted"] == 6 and stats["extraction_ms_per_image"] > 0
    cache = open_cache(tmp_path / "cache", expect=stamp)
    assert cache.ids == [image_id_of(p) for p in paths] == ["1", "2", "3", "4", "5", "6"]
    assert isinstance(cache.features, np.memmap)
    assert [p.name for p in tmp_path.iterdir()] == ["cache"]  # the extraction's staging shards are gone
    before = encoder.live_images
    cached = encoder(images)
    assert encoder.live_images == before  # every image came from the cache
    assert torch.equal(cached.mask, live.mask)
    assert torch.allclose(cached.features, live.features, atol=1e-5)
    again = fill_cache(encoder, spec, paths, ImageTensors(64), tmp_path / "cache", stamp, progress=False)
    assert again["extracted"] == 0  # nothing re-extracted


def test_cache_from_another_detector_or_config_is_never_used(detector_file, world: Path, tmp_path: Path) -> None:
    encoder = _encoder(detector_file)
    spec = load_spec(world / "vqa.yaml")
    paths, _ = _images(world, 3)
    stamp = extraction_stamp("detector-a", TINY.visual, encoder.region)
    fill_cache(encoder, spec, paths, ImageTensors(64), tmp_path / "c", stamp, progress=False)
    other = extraction_stamp("detector-b", TINY.visual, encoder.region)
    with pytest.raises(VlbenchError, match="another detector or config.*detector"):
        open_cache(tmp_path / "c", expect=other)
    with pytest.raises(VlbenchError, match="another detector or config"):
        fill_cache(encoder, spec, paths, ImageTensors(64), tmp_path / "c", other, progress=False,
                   rebuild_stale=False)
    rebuilt = fill_cache(encoder, spec, paths, ImageTensors(64), tmp_path / "c", other, progress=False)
    assert rebuilt["rebuilt_stale"] and rebuilt["extracted"] == 3
    assert open_cache(tmp_path / "c").stamp == other


def test_gt_mode_caches_the_annotated_boxes(detector_file, world: Path, tmp_path: Path) -> None:
    encoder = _encoder(detector_file, boxes="gt")
    spec = load_spec(world / "vqa.yaml")
    paths, _ = _images(world, 2)
    stamp = extraction_stamp("x", TINY.visual, encoder.region)
    fill_cache(encoder, spec, paths, ImageTensors(64), tmp_path / "gt", stamp, progress=False)
    truth = load_coco_boxes(spec, "train").images[0]
    cached = open_cache(tmp_path / "gt").get("1")
    assert np.allclose(cached.boxes, truth.boxes.numpy() / 64, atol=1e-6)


def test_gt_mode_refuses_an_image_without_annotations_and_leaves_nothing_behind(detector_file, world: Path,
                                                                                 tmp_path: Path) -> None:
    encoder = _encoder(detector_file, boxes="gt")
    spec = load_spec(world / "nlvr2.yaml")  # NLVR2 pair images have no box annotations
    paths = [world / "nlvr2/images/val/val-0-0-img0.png"]
    stamp = extraction_stamp("x", TINY.visual, encoder.region)
    with pytest.raises(VlbenchError, match="no entry in the spec's boxes files"):
        fill_cache(encoder, spec, paths, ImageTensors(64), tmp_path / "cache", stamp, progress=False)
    assert list(tmp_path.iterdir()) == []  # neither a cache nor the extraction's staging folder


def test_feature_dimension_mismatch_is_refused(detector_file, world: Path, tmp_path: Path) -> None:
    _write_tsv(tmp_path / "f.tsv", [("1", 64, 64, np.zeros((2, 4)), np.ones((2, 32)))])
    cache = import_tsv(tmp_path / "f.tsv", tmp_path / "imported", progress=False)
    with pytest.raises(VlbenchError, match="dimension 32.*expects 256"):
        _encoder(detector_file).attach(cache, {})
    with pytest.raises(VlbenchError, match="dimension 32 but the model expects 256"):
        open_cache(tmp_path / "imported", feature_dim=256)


# ---------------------------------------------------------------------------------------------- importers


def _b64(a: np.ndarray) -> str:
    return base64.b64encode(np.asarray(a, np.float32).tobytes()).decode()


def _write_tsv(path: Path, rows: list[tuple]) -> None:
    lines = [f"{i}\t{w}\t{h}\t{len(b)}\t{_b64(b)}\t{_b64(f)}" for i, w, h, b, f in rows]
    path.write_text("\n".join(lines) + "\n")


def test_tsv_import_round_trips(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    boxes = np.array([[0, 0, 320, 240], [64, 48, 128, 96], [10, 20, 30, 40]], np.float32)
    feats = rng.standard_normal((3, 16)).astype(np.float32)
    _write_tsv(tmp_path / "f.tsv", [("42", 640, 480, boxes, feats), ("7", 100, 100, boxes[:1] / 10, feats[:1])])
    cache = import_tsv(tmp_path / "f.tsv", tmp_path / "out", progress=False)
    assert cache.ids == ["42", "7"] and cache.feature_dim == 16 and cache.stamp["extractor"] == "import-tsv"
    got = cache.get("42")
    assert np.allclose(got.features, feats, atol=1e-2)
    assert np.allclose(got.boxes[1], [0.1, 0.1, 0.2, 0.2])


def test_truncated_tsv_row_is_a_clear_error(tmp_path: Path) -> None:
    feats = np.ones((2, 8))
    _write_tsv(tmp_path / "f.tsv", [("1", 64, 64, np.zeros((2, 4)), feats), ("2", 64, 64, np.zeros((2, 4)), feats)])
    text = (tmp_path / "f.tsv").read_text()
    (tmp_path / "f.tsv").write_text(text[: len(text) - 20])  # cut the last row's features short
    with pytest.raises(VlbenchError, match="row 2"):
        import_tsv(tmp_path / "f.tsv", tmp_path / "out", progress=False)
    (tmp_path / "g.tsv").write_text("1\t64\t64\t2\n")
    with pytest.raises(VlbenchError, match="row 1: expected 6 tab-separated fields"):
        import_tsv(tmp_path / "g.tsv", tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()  # nothing half-written


def test_npz_import_and_cli(tmp_path: Path) -> None:
    folder = tmp_path / "npz"
    folder.mkdir()
    for image_id in (3, 12):
        np.savez(folder / f"COCO_val2014_{image_id:012d}.npz", x=np.full((4, 8), image_id, np.float32),
                 bbox=np.tile(np.array([[0, 0, 50, 100]], np.float32), (4, 1)), num_bbox=4, image_h=200, image_w=100)
    result = CliRunner().invoke(cli, ["features", "import", "--npz-dir", str(folder), "--out", str(tmp_path / "c"),
                                      "--no-progress"])
    assert result.exit_code == 0, result.output
    cache = open_cache(tmp_path / "c")
    assert cache.ids == ["3", "12"] and np.allclose(cache.get("12").features, 12)
    assert np.allclose(cache.get("3").boxes, [[0, 0, 0.5, 0.5]] * 4)
    np.savez(folder / "bad.npz", x=np.zeros((2, 8), np.float32))
    result = CliRunner().invoke(cli, ["features", "import", "--npz-dir", str(folder), "--out", str(tmp_path / "d")])
    assert result.exit_code == 2 and "missing array" in result.output and "Traceback" not in result.output


# ---------------------------------------------------------------------------------------------- grid


def test_grid_encoder_is_frozen_and_gives_pixelbert_tokens(detector_file, world: Path) -> None:
    detector, _ = load_detector(detector_file[0], TINY.visual, REGION)
    grid = GridEncoder(TINY.visual, 256)
    grid.load_backbone_from_detector(detector)
    grid.train()
    assert grid.cnn is None and not grid.backbone.training
    _, images = _images(world, 2)
    tokens = grid(images)
    assert tokens.features.shape == (2, 16, 256)  # 64 px -> 8x8 map -> 2x2 pool -> 16 tokens
    tokens.features.sum().backward()
    assert all(p.grad is None for p in grid.backbone.parameters())


def test_region_config_round_trips_and_old_configs_still_load() -> None:
    config = replace(TINY, region=REGION)
    assert ModelConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    assert "region" not in TINY.to_dict() and ModelConfig.from_dict(TINY.to_dict()) == TINY
    with pytest.raises(VlbenchError, match="unknown keys"):
        ModelConfig.from_dict({**config.to_dict(), "region": {**REGION.to_dict(), "typo": 1}})


def _small_boxes_spec(world: Path, folder: Path, n: int = 16) -> Path:
    """The world's VQA spec with box files cut to the first ``n`` images (a detector trains in seconds)."""
    folder.mkdir(parents=True, exist_ok=True)
    spec_text = (world / "vqa.yaml").read_text()
    for split in ("train", "val", "test"):
        data = json.loads((world / "coco" / f"instances_{split}.json").read_text())
        keep = {img["id"] for img in data["images"][:n]}
        data["images"] = [img for img in data["images"] if img["id"] in keep]
        data["annotations"] = [a for a in data["annotations"] if a["image_id"] in keep]
        (folder / f"boxes_{split}.json").write_text(json.dumps(data))
        spec_text = spec_text.replace(f"boxes: coco/instances_{split}.json", f"boxes: {folder}/boxes_{split}.json")
    spec_text = spec_text.replace(": vqa/", f": {world}/vqa/").replace("images: images/", f"images: {world}/images/")
    (folder / "vqa.yaml").write_text(spec_text)
    return folder / "vqa.yaml"


def test_first_run_trains_the_detector_and_later_runs_reuse_it(world: Path, tmp_path: Path) -> None:
    from baselines.region_setup import DetectorSource, resolve_detector

    spec = load_spec(_small_boxes_spec(world, tmp_path / "spec"))
    region = replace(REGION, detector_epochs=1)
    first, info = resolve_detector(TINY.visual, region, spec, DetectorSource(progress=False))
    assert info["trained_now"] and info["map_split"] == "test" and "map" in info["mAP"]
    again, info2 = resolve_detector(TINY.visual, region, spec, DetectorSource(progress=False))
    assert not info2["trained_now"] and info2["hash"] == info["hash"] and info2["path"] == info["path"]
    # Another detector setting is another detector, never the cached one.
    _, info3 = resolve_detector(TINY.visual, replace(region, detector_lr=0.01), spec, DetectorSource(progress=False))
    assert info3["trained_now"] and info3["path"] != info["path"]

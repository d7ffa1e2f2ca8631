"""Bottom-up attention's attribute head on the region detector: the boxes file's attributes are read, the head
trains on foreground RoIs only and shapes the box features, and it never reaches the extracted regions."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import yaml

from baselines.attribute_head import attribute_loss
from baselines.coco_boxes import load_coco_boxes
from baselines.detector import (
    build_detector,
    evaluate_attributes,
    has_attribute_head,
    inference_state,
    load_detector,
    num_attributes_of,
)
from harness.data.spec import load_spec
from harness.errors import DataError
from pixelbert.config import RegionConfig, get_preset

TINY = get_preset("tiny")
REGION = RegionConfig(detector_epochs=2, detector_batch_size=8, min_boxes=3, max_boxes=8)


def test_boxes_file_attributes_are_read_as_each_boxs_first_attribute(world: Path) -> None:
    data = load_coco_boxes(load_spec(world / "vqa.yaml"), "train")
    assert data.attributes is not None and sorted(data.attributes.values()) == sorted(
        ["red", "orange", "yellow", "green", "blue", "purple"])
    item = data.images[0]
    raw = json.loads((world / "coco" / "instances_train.json").read_text())
    expected = [a["attribute_ids"][0] for a in raw["annotations"] if a["image_id"] == item.image_id]
    assert item.attributes is not None and item.attributes.tolist() == expected


def test_an_unknown_attribute_id_is_a_one_line_data_error(world: Path, tmp_path: Path) -> None:
    raw = json.loads((world / "coco" / "instances_val.json").read_text())
    raw["annotations"][0]["attribute_ids"] = [99]
    (tmp_path / "boxes.json").write_text(json.dumps(raw))
    spec = yaml.safe_load((world / "vqa.yaml").read_text())
    spec["splits"] = {"val": {k: str(world / v) for k, v in spec["splits"]["val"].items()}}
    spec["splits"]["val"]["boxes"] = str(tmp_path / "boxes.json")
    (tmp_path / "vqa.yaml").write_text(yaml.safe_dump(spec))
    with pytest.raises(DataError, match="unknown attribute id"):
        load_coco_boxes(load_spec(tmp_path / "vqa.yaml"), "val")


def test_attribute_loss_counts_only_labelled_rois() -> None:
    logits = torch.tensor([[0.0, 5.0, 0.0], [9.0, 0.0, 0.0]])
    assert attribute_loss(logits, torch.tensor([1, -1])).item() == pytest.approx(
        torch.nn.functional.cross_entropy(logits[:1], torch.tensor([1])).item())
    assert attribute_loss(logits, torch.tensor([-1, -1])).item() == 0.0


def test_the_attribute_loss_trains_the_box_features(world: Path) -> None:
    data = load_coco_boxes(load_spec(world / "vqa.yaml"), "train")
    torch.manual_seed(0)
    detector = build_detector(TINY.visual, REGION, len(data.categories), len(data.attributes or ())).train()
    items = data.images[:4]
    images = [torch.rand(3, 64, 64) for _ in items]
    targets = [{"boxes": i.boxes, "labels": torch.ones_like(i.labels), "attributes": i.attributes} for i in items]
    losses = detector(images, targets)
    assert set(losses) >= {"loss_classifier", "loss_attribute"} and losses["loss_attribute"].item() > 0
    losses["loss_attribute"].backward()
    # The gradient reaches the box head, whose output is the region feature: that is the head's whole point.
    assert detector.roi_heads.box_head.fc7.weight.grad.abs().sum() > 0


def test_a_detector_with_the_head_saves_loads_and_feeds_the_region_encoder_without_it(detector_file,
                                                                                     world: Path) -> None:
    from baselines.region_encoder import RegionEncoder

    detector, meta = load_detector(detector_file[0], TINY.visual, REGION)
    assert has_attribute_head(detector) and num_attributes_of(detector.state_dict()) == 6
    held = load_coco_boxes(load_spec(world / "vqa.yaml"), "val")
    quality = evaluate_attributes(detector, replace(held, images=held.images[:16]), progress=False)
    assert quality is not None and quality["attributes"] == 6 and 0 <= quality["accuracy"] <= 100
    assert quality["boxes"] == sum(len(i.boxes) for i in held.images[:16])
    encoder = RegionEncoder(replace(TINY, region=replace(REGION, num_classes=5)), TINY.transformer.hidden_size)
    encoder.detector.load_state_dict(inference_state(detector))  # strict: exactly the inference weights
    assert not has_attribute_head(encoder.detector)


def test_a_detector_without_the_head_still_loads(tmp_path: Path) -> None:
    plain = build_detector(TINY.visual, REGION, 5)
    torch.save(plain.state_dict(), tmp_path / "frcnn.pth")
    loaded, _ = load_detector(tmp_path / "frcnn.pth", TINY.visual, REGION)
    assert not has_attribute_head(loaded)
    assert RegionConfig.from_dict({"num_classes": 5}).attribute_loss_weight == 0.0, \
        "configs recorded before the head existed had none"

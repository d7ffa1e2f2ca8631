"""Bottom-up attention's region selection (peteanderson80/bottom-up-attention, tools/generate_tsv.py), checked
against an independent loop-by-loop restatement of ``get_detections_from_im``'s rule on hand-made and random
detector outputs, and the
features of an extraction checked to be the box head's output for the kept proposals."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from baselines.detector import build_detector
from baselines.regions import bottom_up_keep, extract_regions
from pixelbert.config import RegionConfig, get_preset


def _greedy_nms(boxes: np.ndarray, scores: np.ndarray, threshold: float) -> list[int]:
    """Plain greedy NMS, written independently of torchvision: visit by decreasing score (ties: later index
    first, as a reversed stable sort), drop every box overlapping a kept one by IoU > threshold."""
    order = list(np.argsort(scores, kind="stable")[::-1])
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    kept: list[int] = []
    while order:
        best, order = order[0], order[1:]
        kept.append(int(best))
        survivors = []
        for other in order:
            iw = max(0.0, min(boxes[best, 2], boxes[other, 2]) - max(boxes[best, 0], boxes[other, 0]))
            ih = max(0.0, min(boxes[best, 3], boxes[other, 3]) - max(boxes[best, 1], boxes[other, 1]))
            if iw * ih / (area[best] + area[other] - iw * ih) <= threshold:
                survivors.append(other)
        order = survivors
    return kept


def _reference(probs: np.ndarray, proposals: np.ndarray, conf_thresh: float, nms: float,
               min_boxes: int, max_boxes: int) -> list[int]:
    """The selection as generate_tsv.py describes it, restated with explicit loops."""
    confidence = np.zeros(len(proposals))
    for cls in range(1, probs.shape[1]):  # column 0 is the background
        for index in _greedy_nms(proposals, probs[:, cls], nms):
            confidence[index] = max(confidence[index], probs[index, cls])
    passing = [i for i in range(len(proposals)) if confidence[i] >= conf_thresh]
    if min_boxes <= len(passing) <= max_boxes:
        return passing
    by_confidence = list(np.argsort(confidence, kind="stable")[::-1])
    return [int(i) for i in by_confidence[: min_boxes if len(passing) < min_boxes else max_boxes]]


def _outputs(seed: int, proposals: int, classes: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    corner = rng.uniform(0, 40, (proposals, 2))
    size = rng.uniform(4, 24, (proposals, 2))
    boxes = np.hstack([corner, corner + size]).astype(np.float32)
    logits = rng.normal(0, 2.5, (proposals, classes + 1))
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return probs.astype(np.float32), boxes


def test_a_hand_made_case() -> None:
    # Proposals 0 and 1 overlap (IoU 0.9), and so do 2 and 3. Class 1's NMS keeps 0 (0.60) and 2 (0.45); class
    # 2's keeps 1 (0.65) and 3 (0.10). Confidences: 0.60, 0.65, 0.45, 0.10; 3 is below the 0.2 threshold.
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 9], [30, 30, 40, 40], [31, 30, 40, 40]], np.float32)
    probs = np.array([[0.10, 0.60, 0.30], [0.10, 0.25, 0.65], [0.50, 0.45, 0.05], [0.70, 0.20, 0.10]],
                     np.float32)
    region = RegionConfig(score_threshold=0.2, nms_iou=0.3, min_boxes=1, max_boxes=10)
    keep, conf = bottom_up_keep(torch.from_numpy(probs), torch.from_numpy(boxes), region)
    assert keep.tolist() == [0, 1, 2]  # proposal order, as np.where gives it
    assert conf.tolist() == pytest.approx([0.60, 0.65, 0.45])
    keep, _ = bottom_up_keep(torch.from_numpy(probs), torch.from_numpy(boxes), replace(region, max_boxes=2))
    assert keep.tolist() == [1, 0]  # more than max_boxes passed: the top 2 by confidence, best first
    keep, _ = bottom_up_keep(torch.from_numpy(probs), torch.from_numpy(boxes),
                             replace(region, score_threshold=0.62, min_boxes=3, max_boxes=3))
    assert keep.tolist() == [1, 0, 2]  # fewer than min_boxes passed: the top 3


@pytest.mark.parametrize("seed", range(12))
def test_matches_generate_tsv_on_random_detector_outputs(seed: int) -> None:
    probs, boxes = _outputs(seed, proposals=60, classes=5)
    for conf_thresh, low, high in ((0.2, 10, 36), (0.5, 10, 100), (0.05, 3, 8)):
        region = RegionConfig(score_threshold=conf_thresh, nms_iou=0.3, min_boxes=low, max_boxes=high)
        keep, conf = bottom_up_keep(torch.from_numpy(probs), torch.from_numpy(boxes), region)
        expected = _reference(probs, boxes, conf_thresh, 0.3, low, high)
        assert keep.tolist() == expected, (conf_thresh, low, high)


def test_features_are_those_of_the_kept_proposals() -> None:
    torch.manual_seed(0)
    tiny = get_preset("tiny")
    region = RegionConfig(num_classes=4, min_boxes=3, max_boxes=8)
    detector = build_detector(tiny.visual, region, num_classes=4).eval()
    images = torch.rand(2, 3, 64, 64)
    regions = extract_regions(detector, images, region)
    # Recompute the proposals and their pooled features by hand: each region's feature must be one of them,
    # at the same box (a proposal, not a regressed box).
    image_list, _ = detector.transform(list(images))
    feats = detector.backbone(image_list.tensors)
    feats = {"0": feats} if isinstance(feats, torch.Tensor) else feats
    proposals, _ = detector.rpn(image_list, feats)
    heads = detector.roi_heads
    pooled = heads.box_head(heads.box_roi_pool(feats, proposals, image_list.image_sizes))
    size_h, size_w = image_list.image_sizes[0]
    norm = torch.tensor([size_w, size_h, size_w, size_h], dtype=torch.float32)
    for r, image_proposals, image_pooled in zip(regions, proposals, pooled.split([len(p) for p in proposals])):
        assert not r.fallback and region.min_boxes <= len(r.boxes) <= region.max_boxes
        for box, feature in zip(r.boxes, r.features):
            match = torch.nonzero(torch.isclose((image_proposals / norm).clamp(0, 1), box, atol=1e-6).all(1))
            assert len(match) >= 1
            assert torch.allclose(image_pooled[match[0, 0]], feature, atol=1e-5)

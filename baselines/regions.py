"""Detector output -> region features, the bottom-up-attention way.

For every image the RPN's proposals go through the box head, and ``RegionConfig.selection`` picks regions:

- ``bottom_up`` (default): bottom-up attention's ``tools/generate_tsv.py`` exactly. For each class (background
  excluded) NMS over the *proposal* boxes by that class's probability; a proposal's confidence is its best
  probability among the classes whose NMS kept it (0 if none did); proposals with confidence at least
  ``score_threshold`` are kept in proposal order, or, when fewer than ``min_boxes`` / more than ``max_boxes``
  pass, the top ``min_boxes`` / ``max_boxes`` by confidence. Boxes are the kept proposals and features the box
  head's output *for those proposals* (generate_tsv.py's ``pool5_flat`` of ``rois``): no regression, no
  re-pooling. One difference: IoU here has no "+1 pixel" in widths (torchvision, not Caffe).
- ``regressed`` (vlbench before): each proposal's best-class regressed box, class-agnostic NMS, the same
  threshold and bounds, features re-pooled on the final boxes.

``boxes=`` skips the detection and pools given boxes (``--boxes gt``).

An image with no box at all (no proposal survived, or no annotation in gt mode) gets one whole-image box:
the transformer always sees at least one visual token, and the count is reported.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import batched_nms, box_iou, clip_boxes_to_image, remove_small_boxes

from pixelbert.config import RegionConfig

GEOMETRY_DIM = 7  # x1, y1, x2, y2, w, h, area (all normalised by the image size)


@dataclass
class Regions:
    """One image's regions: ``boxes`` [K, 4] normalised (x1, y1, x2, y2) in [0, 1], ``features`` [K, D]."""

    boxes: Tensor
    features: Tensor
    scores: Tensor
    fallback: bool = False  # True when no box was found and the whole image stands in


def box_geometry(boxes: Tensor) -> Tensor:
    """Normalised [..., 4] (x1, y1, x2, y2) -> [..., 7] (x1, y1, x2, y2, w, h, area), the geometry input."""
    w = boxes[..., 2] - boxes[..., 0]
    h = boxes[..., 3] - boxes[..., 1]
    return torch.cat([boxes, w[..., None], h[..., None], (w * h)[..., None]], dim=-1)


def select_boxes(probs: Tensor, decoded: Tensor, proposals: list[Tensor], image_size: tuple[int, int],
                 region: RegionConfig) -> tuple[list[Tensor], list[Tensor]]:
    """Every image's kept boxes and scores from the box head's class probabilities [P, C + 1] and per-class
    boxes [P, C + 1, 4] of all images' proposals (concatenated, image by image; all images one size).

    Vectorised over the whole batch: best class, clipping and the small-box filter run once on all
    proposals, and one ``batched_nms`` (keyed by image, so class-agnostic within each image) replaces a
    Python loop of per-image NMS calls. Only the final threshold / min / max cut is per image, on indices.
    """
    counts = [len(p) for p in proposals]
    if sum(counts) == 0:  # the RPN proposed nothing anywhere (decoded boxes then lose their shape)
        return [p.new_zeros(0, 4) for p in proposals], [p.new_zeros(0) for p in proposals]
    owner = torch.repeat_interleave(torch.arange(len(counts), device=probs.device),
                                    torch.tensor(counts, device=probs.device))
    score, cls = probs[:, 1:].max(dim=1)
    chosen = clip_boxes_to_image(decoded[torch.arange(len(score), device=probs.device), cls + 1], image_size)
    valid = remove_small_boxes(chosen, 1e-2)
    chosen, score, owner = chosen[valid], score[valid], owner[valid]
    keep = batched_nms(chosen, score, owner, region.nms_iou)  # by decreasing score, all images mixed
    # Stable sort by image keeps each image's survivors in decreasing-score order.
    keep = keep[torch.sort(owner[keep], stable=True).indices]
    per_image = torch.bincount(owner[keep], minlength=len(counts)).tolist()
    final, final_scores = [], []
    for kept in keep.split(per_image):
        above = kept[score[kept] >= region.score_threshold]
        if len(above) < region.min_boxes:
            above = kept[: region.min_boxes]
        above = above[: region.max_boxes]
        final.append(chosen[above])
        final_scores.append(score[above])
    return final, final_scores


def bottom_up_keep(probs: Tensor, proposals: Tensor, region: RegionConfig) -> tuple[Tensor, Tensor]:
    """One image's kept proposal indices and their confidences, as generate_tsv.py's
    ``get_detections_from_im`` chooses them. ``probs`` [P, C + 1] (column 0 background), ``proposals`` [P, 4]."""
    count, classes = probs.shape[0], probs.shape[1] - 1
    if count == 0:
        return torch.zeros(0, dtype=torch.long, device=probs.device), probs.new_zeros(0)
    # All classes' NMS in one call: every proposal once per class, keyed by class (what the per-class loop does).
    cls_scores = probs[:, 1:].t().reshape(-1)  # class-major: [C * P]
    boxes = proposals.repeat(classes, 1)
    cls_index = torch.arange(classes, device=probs.device).repeat_interleave(count)
    kept = batched_nms(boxes, cls_scores, cls_index, region.nms_iou)
    max_conf = probs.new_zeros(count).scatter_reduce(0, kept % count, cls_scores[kept], reduce="amax")
    keep = torch.nonzero(max_conf >= region.score_threshold).flatten()  # np.where: proposal order
    if len(keep) < region.min_boxes or len(keep) > region.max_boxes:
        # np.argsort(max_conf)[::-1][:n]: ascending (ties in index order), reversed
        order = torch.sort(max_conf, stable=True).indices.flip(0)
        keep = order[: region.min_boxes if len(keep) < region.min_boxes else region.max_boxes]
    return keep, max_conf[keep]


@torch.no_grad()
def extract_regions(detector: nn.Module, images: Tensor, region: RegionConfig,
                    boxes: list[Tensor] | None = None) -> list[Regions]:
    """Region features of ``images`` [B, 3, H, W] float in [0, 1] (all the same size).

    ``boxes``: optional per-image [K, 4] absolute boxes in the images' pixels (the oracle mode).
    """
    detector.eval()
    height, width = images.shape[-2:]
    image_list, _ = detector.transform(list(images))
    feats = detector.backbone(image_list.tensors)
    if isinstance(feats, Tensor):
        feats = OrderedDict([("0", feats)])
    size_h, size_w = image_list.image_sizes[0]
    scale = images.new_tensor([size_w / width, size_h / height, size_w / width, size_h / height])
    heads = detector.roi_heads
    pooled_final: list[Tensor] | None = None
    if boxes is None:
        proposals, _ = detector.rpn(image_list, feats)
        pooled = heads.box_head(heads.box_roi_pool(feats, proposals, image_list.image_sizes))
        logits, deltas = heads.box_predictor(pooled)
        probs = F.softmax(logits, dim=-1)
        if region.selection == "bottom_up":
            final, final_scores, pooled_final = [], [], []
            for image_probs, image_pooled, image_proposals in zip(probs.split([len(p) for p in proposals]),
                                                                   pooled.split([len(p) for p in proposals]),
                                                                   proposals):
                keep, conf = bottom_up_keep(image_probs, image_proposals, region)
                final.append(image_proposals[keep])
                final_scores.append(conf)
                pooled_final.append(image_pooled[keep])
        elif region.selection == "regressed":
            decoded = heads.box_coder.decode(deltas, proposals)  # [P, C + 1, 4]
            final, final_scores = select_boxes(probs, decoded, proposals, image_list.image_sizes[0], region)
        else:
            raise ValueError(f"unknown region selection {region.selection!r} (bottom_up or regressed)")
    else:
        final = [b.to(images.device, torch.float32).reshape(-1, 4) * scale for b in boxes]
        final_scores = [torch.ones(len(b), device=images.device) for b in final]
    fallback = [len(b) == 0 for b in final]
    whole = images.new_tensor([[0.0, 0.0, float(size_w), float(size_h)]])
    final = [whole if empty else b for b, empty in zip(final, fallback)]
    final_scores = [images.new_zeros(1) if empty else s for s, empty in zip(final_scores, fallback)]
    if pooled_final is None or any(fallback):  # pool the final boxes (regressed, gt, or a whole-image stand-in)
        features = heads.box_head(heads.box_roi_pool(feats, final, image_list.image_sizes))
        per_image = list(features.split([len(b) for b in final]))
        if pooled_final is not None:  # bottom-up: the kept proposals' own features wherever there were some
            per_image = [p if not empty else f for p, f, empty in zip(pooled_final, per_image, fallback)]
    else:
        per_image = pooled_final
    norm = images.new_tensor([size_w, size_h, size_w, size_h])
    return [Regions(boxes=(b / norm).clamp(0, 1), features=f, scores=s, fallback=empty)
            for b, f, s, empty in zip(final, per_image, final_scores, fallback)]


def recall_at_iou(found: Tensor, truth: Tensor, threshold: float = 0.5) -> float:
    """Fraction of ``truth`` boxes covered by some ``found`` box at IoU >= threshold (diagnostics, tests)."""
    if len(truth) == 0:
        return 1.0
    if len(found) == 0:
        return 0.0
    return float((box_iou(truth, found).max(dim=1).values >= threshold).float().mean())

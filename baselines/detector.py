"""The region baseline's detector: torchvision's Faster R-CNN on the same CNN family as the pixel model.

- :func:`build_detector` makes the Faster R-CNN (backbone from ``VisualConfig``, anchors/RoI/head from
  ``RegionConfig``: anchor sizes suited to the image size, a small box head for the tiny preset).
- :func:`train_detector` trains it on COCO-format boxes (SGD, momentum, linear warm-up), the box-annotation
  cost that Pixel-BERT avoids.
- :func:`evaluate_map` scores it with pycocotools' box mAP on a held-out split, :func:`evaluate_attributes` its
  attribute head (bottom-up attention's, ``baselines/attribute_head.py``) on the held-out annotated boxes.
- :func:`save_detector` / :func:`load_detector`: safetensors with a JSON header (configs, categories, mAP), or a
  plain torchvision ``state_dict`` saved with ``torch.save``.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from tqdm import tqdm

from baselines.coco_boxes import BoxedImage, CocoBoxes
from harness.checkpoints import load_checkpoint, save_checkpoint
from harness.data.images import load_image
from harness.errors import VlbenchError
from pixelbert.backbones import build_backbone
from pixelbert.config import RegionConfig, VisualConfig
from pixelbert.pixel_encoder import IMAGENET_MEAN, IMAGENET_STD

DETECTOR_FORMAT = "vlbench-detector-v1"


def detector_input_size(visual: VisualConfig, region: RegionConfig) -> int:
    return region.detector_size or visual.image_size


def build_detector(visual: VisualConfig, region: RegionConfig, num_classes: int, num_attributes: int = 0) -> nn.Module:
    """A torchvision FasterRCNN with ``num_classes`` object classes (+ background) and no downloaded weights;
    with ``num_attributes`` > 0, bottom-up attention's attribute head over them (+ "no attribute")."""
    from torchvision.models.detection import FasterRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
    from torchvision.ops import MultiScaleRoIAlign

    if num_classes < 1:
        raise VlbenchError(f"a detector needs at least one object class, got {num_classes}")
    if region.backend != "torchvision":
        require_detectron2()
    backbone = build_backbone(visual)
    size = detector_input_size(visual, region)
    anchors = AnchorGenerator(sizes=(region.anchor_sizes,), aspect_ratios=(region.aspect_ratios,))
    roi_pool = MultiScaleRoIAlign(featmap_names=["0"], output_size=region.roi_size, sampling_ratio=1)
    box_head = TwoMLPHead(backbone.out_channels * region.roi_size**2, region.representation_size)
    # The transform resizes every image to ``size`` (square inputs; with the aspect ratio kept, short side ``size``
    # and long side at most the visual config's max_size) and normalises like PixelEncoder.
    # Proposal and sampling counts are scaled down from the 800 px defaults: a 64 px scene has a handful of
    # objects, and the defaults (2000 proposals, 512 RoIs per image) would only cost CPU time.
    detector = FasterRCNN(
        backbone, num_classes=None, min_size=size, max_size=visual.max_size if visual.keeps_aspect else size,
        image_mean=list(IMAGENET_MEAN), image_std=list(IMAGENET_STD),
        rpn_anchor_generator=anchors, box_roi_pool=roi_pool, box_head=box_head,
        box_predictor=FastRCNNPredictor(region.representation_size, num_classes + 1),
        rpn_pre_nms_top_n_train=600, rpn_pre_nms_top_n_test=300,
        rpn_post_nms_top_n_train=300, rpn_post_nms_top_n_test=150,
        rpn_batch_size_per_image=128, box_batch_size_per_image=64,
        box_score_thresh=0.01, box_detections_per_img=100,
    )
    if num_attributes > 0:
        from baselines.attribute_head import AttributeHead, AttributeRoIHeads

        head = AttributeHead(region.representation_size, num_classes, num_attributes)
        detector.roi_heads = AttributeRoIHeads(detector.roi_heads, head, region.attribute_loss_weight)
    return detector


def require_detectron2() -> None:
    """The detectron2 backend is optional: a clear error where it is not installed (it is not on PyPI).

    Where it is installed, a detectron2 extractor plugs in behind ``extract_regions``'s contract (boxes
    normalised, features [K, D]); this build ships the interface and the check, not that adapter."""
    try:
        import detectron2  # noqa: F401
    except ImportError:
        raise VlbenchError("region backend 'detectron2' selected but detectron2 is not installed (it is not on "
                           "PyPI; build it from source) - use the default backend 'torchvision'") from None
    raise VlbenchError("region backend 'detectron2': the detectron2 extractor adapter is not part of this build; "
                       "use backend 'torchvision', or import its features with `vlbench features import`")


def num_classes_of(state: dict[str, Tensor]) -> int:
    """Object classes (without background) of a Faster R-CNN state dict."""
    key = "roi_heads.box_predictor.cls_score.weight"
    if key not in state:
        raise VlbenchError(f"not a Faster R-CNN state dict (no {key})")
    return int(state[key].shape[0]) - 1


def num_attributes_of(state: dict[str, Tensor]) -> int:
    """Attributes (without "no attribute") of a detector state dict's attribute head; 0 without one."""
    key = "roi_heads.attribute.score.weight"
    return int(state[key].shape[0]) - 1 if key in state else 0


def has_attribute_head(detector: nn.Module) -> bool:
    return hasattr(detector.roi_heads, "attribute")


def inference_state(detector: nn.Module) -> dict[str, Tensor]:
    """The weights detection and region features use: all but the attribute head, which only trains them."""
    return {k: v for k, v in detector.state_dict().items() if not k.startswith("roi_heads.attribute.")}


def state_hash(module: nn.Module) -> str:
    """A content hash of the weights: what feature caches are stamped with (names, shapes and values)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


# --------------------------------------------------------------------------------------------- training


def _targets(item: BoxedImage, label_index: dict[int, int],
             attribute_index: dict[int, int] | None) -> dict[str, Tensor]:
    labels = torch.tensor([label_index[int(c)] for c in item.labels.tolist()], dtype=torch.long)
    out = {"boxes": item.boxes.clone(), "labels": labels}
    if attribute_index is not None:
        ids = item.attributes.tolist() if item.attributes is not None else [0] * len(labels)
        out["attributes"] = torch.tensor([attribute_index.get(int(a), 0) for a in ids], dtype=torch.long)
    return out


def _attribute_index(data: CocoBoxes) -> dict[int, int]:
    """Attribute id -> the head's output (1..A in id order; 0 = no attribute)."""
    return {a: i + 1 for i, a in enumerate(sorted(data.attributes or {}))}


def _read_uint8(path: Path) -> Tensor:
    """[3, H, W] uint8 at the file's own size: the detector's transform resizes, and maps boxes back."""
    image = load_image(path)
    return torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1)


def train_detector(detector: nn.Module, data: CocoBoxes, region: RegionConfig, *, seed: int = 0,
                   progress: bool = True) -> dict[str, Any]:
    """Train ``detector`` on ``data`` in place; returns steps, wall seconds and the per-epoch mean loss."""
    label_index = {cat: i + 1 for i, cat in enumerate(sorted(data.categories))}  # 0 is background
    items = [item for item in data.images if len(item.boxes)]
    if not items:
        raise VlbenchError(f"{data.file}: no image has a box to train the detector on")
    pixels = [_read_uint8(item.path) for item in tqdm(items, desc="load detector images", disable=not progress,
                                                        leave=False, unit="img")]
    attribute_index = None
    if has_attribute_head(detector):
        if data.attributes is None:
            raise VlbenchError(f"{data.file}: the detector has an attribute head but the file names no attributes")
        attribute_index = _attribute_index(data)
    targets = [_targets(item, label_index, attribute_index) for item in items]
    generator = torch.Generator().manual_seed(seed)
    params = [p for p in detector.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=region.detector_lr, momentum=0.9, weight_decay=1e-4)
    steps_per_epoch = math.ceil(len(items) / region.detector_batch_size)
    total = steps_per_epoch * region.detector_epochs
    warmup = max(1, total // 20)
    # Warm-up, then cosine decay: Faster R-CNN diverges easily with a cold start at a high SGD rate.
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: (s + 1) / warmup if s < warmup else 0.5 * (1 + math.cos(math.pi * (s - warmup) / max(1, total - warmup))))
    detector.train()
    history, step, start = [], 0, time.perf_counter()
    for epoch in range(1, region.detector_epochs + 1):
        order = torch.randperm(len(items), generator=generator).tolist()
        running = 0.0
        bar = tqdm(range(0, len(order), region.detector_batch_size), desc=f"detector {epoch}/{region.detector_epochs}",
                   disable=not progress, leave=False, unit="batch")
        for begin in bar:
            chunk = order[begin:begin + region.detector_batch_size]
            images = [pixels[i].float().div(255.0) for i in chunk]
            batch_targets = [targets[i] for i in chunk]
            # Horizontal flip half of the images: cheap augmentation the detector benefits from.
            flips = torch.rand(len(chunk), generator=generator) < 0.5
            for j in range(len(chunk)):
                if flips[j]:
                    width = images[j].shape[-1]
                    images[j] = images[j].flip(-1)
                    boxes = batch_targets[j]["boxes"].clone()
                    boxes[:, [0, 2]] = width - boxes[:, [2, 0]]
                    batch_targets[j] = {**batch_targets[j], "boxes": boxes}
            losses = detector(images, batch_targets)
            loss = sum(losses.values())
            if not torch.isfinite(loss):
                raise VlbenchError(f"detector loss became {loss.item()} at step {step}; lower detector_lr")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 10.0)
            optimizer.step()
            schedule.step()
            step += 1
            running += loss.item() * len(chunk)
            bar.set_postfix(loss=f"{loss.item():.3f}")
        bar.close()
        history.append({"epoch": epoch, "loss": round(running / len(order), 4)})
        if progress:
            tqdm.write(f"detector epoch {epoch}/{region.detector_epochs}: loss {history[-1]['loss']:.4f}")
    detector.eval()
    return {"steps": step, "wall_seconds": round(time.perf_counter() - start, 2), "images": len(items),
            "history": history}


# --------------------------------------------------------------------------------------------- evaluation


@torch.no_grad()
def evaluate_map(detector: nn.Module, data: CocoBoxes, *, batch_size: int = 32, progress: bool = True) -> dict[str, Any]:
    """pycocotools box mAP of ``detector`` on ``data`` (its own detections, per class, as in COCO)."""
    try:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError:  # pragma: no cover - a declared dependency
        raise VlbenchError("box mAP needs pycocotools (pip install pycocotools)") from None
    categories = sorted(data.categories)
    detector.eval()
    results = []
    for begin in tqdm(range(0, len(data.images), batch_size), desc="detector mAP", disable=not progress,
                      leave=False, unit="batch"):
        chunk = data.images[begin:begin + batch_size]
        outputs = detector([_read_uint8(item.path).float().div(255.0) for item in chunk])
        for item, out in zip(chunk, outputs):
            for box, score, label in zip(out["boxes"].tolist(), out["scores"].tolist(), out["labels"].tolist()):
                results.append({"image_id": item.image_id, "category_id": categories[label - 1],
                                "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]], "score": score})
    gt = COCO()
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        gt.dataset = _gt_dataset(data)
        gt.createIndex()
        if not results:
            return {"map": 0.0, "map50": 0.0, "map75": 0.0, "detections": 0, "images": len(data.images)}
        dt = gt.loadRes(results)
        evaluator = COCOeval(gt, dt, "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    stats = evaluator.stats
    return {"map": round(float(stats[0]) * 100, 2), "map50": round(float(stats[1]) * 100, 2),
            "map75": round(float(stats[2]) * 100, 2), "detections": len(results), "images": len(data.images)}


@torch.no_grad()
def evaluate_attributes(detector: nn.Module, data: CocoBoxes, *, batch_size: int = 32,
                        progress: bool = True) -> dict[str, Any] | None:
    """Accuracy of the attribute head on ``data``'s annotated boxes, each given its true class (how bottom-up
    attention's head is fed in training); None without a head or attributes."""
    if not has_attribute_head(detector) or data.attributes is None:
        return None
    label_index = {cat: i + 1 for i, cat in enumerate(sorted(data.categories))}
    attribute_index = _attribute_index(data)
    items = [item for item in data.images if len(item.boxes)]
    detector.eval()
    right = total = 0
    for begin in tqdm(range(0, len(items), batch_size), desc="detector attributes", disable=not progress,
                      leave=False, unit="batch"):
        chunk = items[begin:begin + batch_size]
        targets = [_targets(item, label_index, attribute_index) for item in chunk]
        image_list, scaled = detector.transform([_read_uint8(item.path).float().div(255.0) for item in chunk],
                                                targets)
        features = detector.backbone(image_list.tensors)
        features = features if isinstance(features, dict) else {"0": features}
        heads = detector.roi_heads
        box_features = heads.box_head(heads.box_roi_pool(features, [t["boxes"] for t in scaled],
                                                         image_list.image_sizes))
        predicted = heads.predict(box_features, torch.cat([t["labels"] for t in scaled]))
        truth = torch.cat([t["attributes"] for t in scaled])
        right += int((predicted == truth).sum())
        total += len(truth)
    return {"accuracy": round(100.0 * right / max(1, total), 2), "boxes": total,
            "attributes": len(data.attributes)}


def _gt_dataset(data: CocoBoxes) -> dict[str, Any]:
    images, annotations = [], []
    for item in data.images:
        images.append({"id": item.image_id, "width": item.width, "height": item.height})
        for box, label in zip(item.boxes.tolist(), item.labels.tolist()):
            w, h = box[2] - box[0], box[3] - box[1]
            annotations.append({"id": len(annotations) + 1, "image_id": item.image_id, "category_id": int(label),
                                "bbox": [box[0], box[1], w, h], "area": w * h, "iscrowd": 0})
    categories = [{"id": c, "name": n} for c, n in sorted(data.categories.items())]
    return {"images": images, "annotations": annotations, "categories": categories}


# --------------------------------------------------------------------------------------------- files


def save_detector(path: Path, detector: nn.Module, meta: dict[str, Any]) -> str:
    """Write the detector (safetensors + JSON header); returns its weight hash."""
    digest = state_hash(detector)
    save_checkpoint(path, dict(detector.state_dict()), {"kind": DETECTOR_FORMAT, "hash": digest, **meta})
    return digest


def load_detector(path: Path, visual: VisualConfig, region: RegionConfig) -> tuple[nn.Module, dict[str, Any]]:
    """A detector from a vlbench detector file or a torchvision ``state_dict`` (``torch.save``) of the same
    architecture. A detectron2 checkpoint (.pkl / detectron2 key names) needs the detectron2 backend."""
    path = Path(path)
    if not path.is_file():
        raise VlbenchError(f"{path}: detector file not found")
    if path.suffix == ".safetensors":
        state, meta = load_checkpoint(path)
        if meta.get("kind") != DETECTOR_FORMAT:
            raise VlbenchError(f"{path}: not a vlbench detector (kind {meta.get('kind')!r}); "
                               "`vlbench detector train` writes one")
        if VisualConfig.from_dict(meta.get("visual") or {}) != visual or \
                _arch(meta.get("region")) != _arch(region.to_dict()):
            raise VlbenchError(f"{path}: the detector was built with another backbone or region config than "
                               "this model's; retrain it or use matching settings")
    elif path.suffix == ".pkl":
        raise VlbenchError(f"{path}: a detectron2 checkpoint; it needs the detectron2 backend "
                           "(region backend 'detectron2', which requires detectron2 installed)")
    else:
        try:
            loaded = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any unreadable file is one user error
            raise VlbenchError(f"{path}: cannot read a torchvision state dict ({type(exc).__name__})") from None
        state = loaded.get("model", loaded) if isinstance(loaded, dict) else None
        if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
            raise VlbenchError(f"{path}: expected a state dict of tensors")
        if any(k.startswith(("proposal_generator.", "roi_heads.box_head.fc1.")) for k in state):
            raise VlbenchError(f"{path}: detectron2 key names; use the detectron2 backend")
        meta = {"source": str(path)}
    detector = build_detector(visual, region, num_classes_of(state), num_attributes_of(state))
    own = detector.state_dict()
    bad = sorted(set(own) ^ set(state)) or sorted(k for k in own if own[k].shape != state[k].shape)
    if bad:
        raise VlbenchError(f"{path}: does not fit the Faster R-CNN of this config (e.g. {bad[0]})")
    detector.load_state_dict(state)
    detector.eval()
    meta = {**meta, "hash": state_hash(detector), "path": str(path)}
    return detector, meta


# Settings that change the network's shape or input (the rest only change how its output is used).
_ARCH_KEYS = ("detector_size", "anchor_sizes", "aspect_ratios", "roi_size", "representation_size", "backend")


def _arch(region: dict[str, Any] | None) -> dict[str, Any]:
    region = region or {}
    return {k: list(region[k]) if isinstance(region.get(k), (list, tuple)) else region.get(k) for k in _ARCH_KEYS}

"""COCO-format box annotations (``instances_*.json``) of a dataset split, matched to the split's image files.

The detector trains and is scored on these; ``--boxes gt`` uses them as the oracle detector. An annotation
file names images by ``file_name`` and ``id``. Optional Visual Genome-style attributes: a top-level
``attributes`` list (``id``, ``name``; ids from 1, 0 meaning "no attribute") and ``attribute_ids`` per
annotation, which bottom-up attention's attribute head trains on (its softmax takes one label per box: the
first id). The spec's image template the spec's image template (VQA: over ``image_id``) or image
root (Karpathy: ``root/file_name``) says where the files are, exactly as the task's own loader resolves them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from harness.data.spec import DatasetSpec, KarpathySplitSpec, VqaSplitSpec
from harness.errors import DataError
from harness.fileio import read_json


@dataclass(frozen=True)
class BoxedImage:
    image_id: int
    path: Path
    width: int
    height: int
    boxes: torch.Tensor  # [N, 4] float, absolute (x1, y1, x2, y2) in the image's own pixels
    labels: torch.Tensor  # [N] long, COCO category ids
    attributes: torch.Tensor | None = None  # [N] long, each box's first attribute id (0: none); None: no attributes


@dataclass(frozen=True)
class CocoBoxes:
    file: Path
    categories: dict[int, str]  # COCO category id -> name
    images: list[BoxedImage]
    attributes: dict[int, str] | None = None  # attribute id -> name, where the file has attributes


def split_boxes_file(spec: DatasetSpec, split: str) -> Path | None:
    entry = spec.split(split)
    return getattr(entry, "boxes", None)


def load_coco_boxes(spec: DatasetSpec, split: str) -> CocoBoxes:
    """The split's boxes with the image file each belongs to; a clear error when the spec has none."""
    path = split_boxes_file(spec, split)
    if path is None:
        raise DataError(f"{spec.path}: split {split!r} has no 'boxes:' (COCO instances) file; the detector needs "
                        "box annotations (pass --detector CK to use a trained one)")
    data = read_json(path)
    if not isinstance(data, dict) or not all(isinstance(data.get(k), list) for k in ("images", "annotations",
                                                                                       "categories")):
        raise DataError(f"{path}: expected COCO instances JSON with images, annotations and categories lists")
    try:
        categories = {int(c["id"]): str(c["name"]) for c in data["categories"]}
        attributes = _attributes(data, path)
        per_image: dict[int, list[dict]] = {}
        for ann in data["annotations"]:
            if not ann.get("iscrowd", 0):
                per_image.setdefault(int(ann["image_id"]), []).append(ann)
        images = []
        locate = _locator(spec, split, path)
        for info in data["images"]:
            image_id = int(info["id"])
            anns = [a for a in per_image.get(image_id, []) if a["bbox"][2] > 0 and a["bbox"][3] > 0]
            if any(int(a["category_id"]) not in categories for a in anns):
                raise DataError(f"{path}: image {image_id} has an annotation with an unknown category_id")
            boxes = torch.tensor([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2],
                                   a["bbox"][1] + a["bbox"][3]] for a in anns], dtype=torch.float32).reshape(-1, 4)
            labels = torch.tensor([int(a["category_id"]) for a in anns], dtype=torch.long)
            file = locate(info)
            if file is None:
                continue  # boxed, but not in this split (COCO's val2014 file also covers Karpathy restval)
            firsts = None
            if attributes is not None:
                firsts = torch.tensor([_first_attribute(a, attributes, path) for a in anns], dtype=torch.long)
            images.append(BoxedImage(image_id, file, int(info["width"]), int(info["height"]), boxes, labels, firsts))
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise DataError(f"{path}: malformed COCO instances entry ({type(exc).__name__}: {exc})") from None
    return CocoBoxes(path, categories, images, attributes)


def _attributes(data: dict, path: Path) -> dict[int, str] | None:
    if "attributes" not in data:
        return None
    if not isinstance(data["attributes"], list) or not data["attributes"]:
        raise DataError(f"{path}: 'attributes' must be a non-empty list of {{id, name}}")
    attributes = {int(a["id"]): str(a["name"]) for a in data["attributes"]}
    if min(attributes) < 1:
        raise DataError(f"{path}: attribute ids start at 1 (0 means 'no attribute')")
    return attributes


def _first_attribute(annotation: dict, attributes: dict[int, str], path: Path) -> int:
    ids = annotation.get("attribute_ids") or []
    if not isinstance(ids, list) or any(int(i) not in attributes for i in ids):
        raise DataError(f"{path}: annotation {annotation.get('id')} has an unknown attribute id")
    return int(ids[0]) if ids else 0


def _locator(spec: DatasetSpec, split: str, path: Path):
    """COCO image record -> file, resolved the way the task's loader resolves it (None: not in the split)."""
    entry = spec.split(split)
    if isinstance(entry, VqaSplitSpec):
        return lambda info: entry.images.fill(image_id=int(info["id"]))
    if isinstance(entry, KarpathySplitSpec):
        from harness.data.karpathy import load_karpathy_split

        by_name = {image.path.name: image.path for image in load_karpathy_split(spec, split)}
        # A COCO instances file covers more images than one Karpathy split (instances_val2014 holds Karpathy val,
        # test and restval): images of other splits are skipped, not errors.
        return lambda info: by_name.get(str(info["file_name"]))
    raise DataError(f"{path}: boxes can be matched to images only in VQA and Karpathy specs")

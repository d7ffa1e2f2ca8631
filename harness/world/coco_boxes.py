"""COCO instances JSON for the shared scenes: one category per shape, boxes = visible extent of each object.

This is the supervision a region detector needs and Pixel-BERT does not; writing it in the real COCO format
lets the region baseline train its detector the honest way. Each annotation also names its object's colour as
an attribute (``attribute_ids``, ids into a top-level ``attributes`` list), as Visual Genome annotates objects
with attributes: bottom-up attention's detector trains an attribute head on them beside the object classes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from harness.world.render import Rendered
from harness.world.scene import COLOR_NAMES, SHAPES, Scene
from harness.world.sizes import GENERATOR_VERSION

CATEGORIES: list[dict[str, Any]] = [
    {"id": i, "name": shape, "supercategory": "shape"} for i, shape in enumerate(SHAPES, start=1)
]
CATEGORY_ID = {c["name"]: c["id"] for c in CATEGORIES}
# Visual Genome-style attributes (its most frequent are colours); id 0 is left for "no attribute".
ATTRIBUTES: list[dict[str, Any]] = [{"id": i, "name": color} for i, color in enumerate(COLOR_NAMES, start=1)]
ATTRIBUTE_ID = {a["name"]: a["id"] for a in ATTRIBUTES}


@dataclass
class CocoBuilder:
    """Accumulates one split's images and annotations; annotation ids continue across splits."""

    next_annotation_id: int = 1
    images: list[dict[str, Any]] = field(default_factory=list)
    annotations: list[dict[str, Any]] = field(default_factory=list)

    def add(self, image_id: int, file_name: str, size: int, scene: Scene, rendered: Rendered) -> None:
        self.images.append({"id": image_id, "file_name": file_name, "width": size, "height": size})
        for obj, box, area, polygon in zip(scene.objects, rendered.boxes, rendered.areas, rendered.polygons,
                                           strict=True):
            if box is None:  # fully hidden: nothing a detector could see (the sampler makes this very rare)
                continue
            self.annotations.append({
                "id": self.next_annotation_id,
                "image_id": image_id,
                "category_id": CATEGORY_ID[obj.shape],
                "bbox": list(box),
                "area": area,
                "iscrowd": 0,
                "attribute_ids": [ATTRIBUTE_ID[obj.color]],
                # The unoccluded outline; the box and area are what stays visible.
                "segmentation": [polygon],
            })
            self.next_annotation_id += 1

    def to_json(self, split: str) -> dict[str, Any]:
        images, annotations = self.images, self.annotations
        self.images, self.annotations = [], []  # ready for the next split
        return {
            "info": {"description": f"vlbench embedded world, {split} boxes", "version": GENERATOR_VERSION,
                     "year": 2024, "contributor": "vlbench", "date_created": "2024-01-01"},
            "licenses": [{"id": 1, "name": "CC0 1.0", "url": "https://creativecommons.org/publicdomain/zero/1.0/"}],
            "images": images,
            "annotations": annotations,
            "categories": CATEGORIES,
            "attributes": ATTRIBUTES,
        }

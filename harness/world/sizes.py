"""How big each world is: one dataclass per size, so the numbers are easy to read and change.

``GENERATOR_VERSION`` names the generator's output format *and* its sampling logic: bump it whenever a change
makes the same seed produce different files, so cached worlds (``cache.py``) are not silently reused.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.errors import VlbenchError

GENERATOR_VERSION = "v2"
SPLITS: tuple[str, ...] = ("train", "val", "test")


@dataclass(frozen=True)
class WorldSize:
    name: str
    image_px: int  # images are square, image_px x image_px
    images: dict[str, int]  # shared scenes (VQA, captions, retrieval, COCO boxes) per split
    nlvr2_sets: dict[str, int]  # one sentence per set
    questions_per_image: int = 4
    nlvr2_pairs_per_set: int = 4  # several pairs per sentence, so NLVR2 consistency means something
    captions_per_image: int = 5
    supersample: int = 2  # draw at this multiple and downscale: cheap anti-aliasing

    def nlvr2_pairs(self, split: str) -> int:
        return self.nlvr2_sets[split] * self.nlvr2_pairs_per_set

    def total_images(self) -> int:
        """Every PNG the world writes: shared scenes plus two per NLVR2 pair."""
        return sum(self.images.values()) + sum(2 * self.nlvr2_pairs(s) for s in SPLITS)


# v2: 640 training scenes were too few: a CNN learning shapes from scratch memorised them (train F1 1.0,
# test F1 0.55 on a shape-presence probe); 2000 scenes with fewer questions each generalise better for the
# same number of training steps.
TINY = WorldSize(
    name="tiny",
    image_px=64,
    images={"train": 2000, "val": 100, "test": 100},
    nlvr2_sets={"train": 600, "val": 75, "test": 75},
    questions_per_image=3,
)

SMALL = WorldSize(
    name="small",
    image_px=128,
    images={"train": 4000, "val": 500, "test": 500},
    nlvr2_sets={"train": 1500, "val": 250, "test": 250},
)

SIZES: dict[str, WorldSize] = {"tiny": TINY, "small": SMALL}


def get_size(name: str) -> WorldSize:
    try:
        return SIZES[name]
    except KeyError:
        raise VlbenchError(f"unknown world size {name!r} (choose from {', '.join(SIZES)})") from None

"""How big each world is: one dataclass per size, so the numbers are easy to read and change.

``GENERATOR_VERSION`` names the generator's output format *and* its sampling logic: bump it whenever a change
makes the same seed produce different files, so cached worlds (``cache.py``) are not silently reused.
``SAMPLING_STREAMS`` salts the random streams (``synth._rng``): bump it too when the sampling logic changes; a
version that only writes more of the same draws (v4: captions for every test scene) keeps the old salt, so every
file the previous version wrote keeps its content but for the version strings in headers (same images, same
VQA / NLVR2 / COCO / caption data and fingerprints; pre-training on v4 gave a byte-identical checkpoint). v5 only
adds each object's colour as an attribute to the COCO box files (the region detector's attribute head); every
other file is v4's.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.errors import VlbenchError
from harness.world.nlvr2_statements import TEMPLATES as NLVR2_TEMPLATES

GENERATOR_VERSION = "v5"
SAMPLING_STREAMS = "v3"
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
    karpathy_train_images: int = 0
    """0: every train scene is a Karpathy ``train`` image; N: only the first N are, the rest are ``restval``
    (as in the real file, where restval comes from COCO val2014). Only the first N carry COCO boxes in
    ``instances_train.json``, so the region detector trains on as many images as before; restval is in the
    Karpathy file (pre-training's captions spec reads train + restval) but not in retrieval's train split, so
    retrieval's fine-tuning budget stays fixed."""
    karpathy_test_images: int = 0
    """0: every test scene is captioned (a Karpathy ``test`` image); N: only the first N are. Scoring every
    (image, caption) pair with the cross-encoder costs n x 5n passes (100 images about a minute on the 2-core
    CPU, 700 about 45), so retrieval evaluates splits of more than 100 images with its ITC first stage and
    re-ranks the top k with the cross-encoder (harness/tasks/retrieval.py)."""
    nlvr2_templates: tuple[str, ...] = NLVR2_TEMPLATES  # the statement mix; a template listed twice gets twice the sets

    def nlvr2_pairs(self, split: str) -> int:
        return self.nlvr2_sets[split] * self.nlvr2_pairs_per_set

    def total_images(self) -> int:
        """Every PNG the world writes: shared scenes plus two per NLVR2 pair."""
        return sum(self.images.values()) + sum(2 * self.nlvr2_pairs(s) for s in SPLITS)


# v2: 640 training scenes were too few: a CNN learning shapes from scratch memorised them (train F1 1.0,
# test F1 0.55 on a shape-presence probe); 2000 scenes with fewer questions each generalise better for the
# same number of training steps.
# v3 (docs/results/discriminate.md): scenes hold 1-3 objects (scene.py); VQA trains once over 18,000 scenes
# (54,000 questions), after the world pre-training on their captions (harness/pretraining/world.py): that is
# what lifts yes/no questions off the language prior. Only the first 2000 train scenes are Karpathy "train" with
# COCO boxes (the rest "restval"), so retrieval fine-tuning and the detector keep v2's budgets. Test splits
# separate models by a few points: 700 scenes (2100 VQA questions) and 500 NLVR2 sentences (2000 pairs), one
# standard error about 1.1 points. About 30 s to generate.
# v4: all 700 test scenes are captioned (v3 captioned the first 100): retrieval is scored on 700 images (3500
# captions) through an ITC first stage and cross-encoder re-ranking. Same random streams as v3 (SAMPLING_STREAMS),
# so every v3 file keeps its content (version strings aside); only the Karpathy file gains the 600 test images.
TINY = WorldSize(
    name="tiny",
    image_px=64,
    images={"train": 18000, "val": 100, "test": 700},
    nlvr2_sets={"train": 600, "val": 150, "test": 500},
    questions_per_image=3,
    karpathy_train_images=2000,
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

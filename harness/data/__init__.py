"""Dataset specs and loaders for the official VQA v2, NLVR2 and Karpathy caption files (docs/dataset-spec.md).

Examples are plain frozen dataclasses; torch datasets wrap them elsewhere. Loaders raise DataError naming
the file and the item at fault; ``check_dataset`` runs the same loaders collecting every problem instead.
"""

from __future__ import annotations

from harness.data.images import load_image, probe_image
from harness.data.karpathy import RetrievalImage, load_karpathy_split, read_karpathy
from harness.data.nlvr2 import Nlvr2Example, load_nlvr2_split
from harness.data.spec import DatasetSpec, load_spec
from harness.data.vqa import VqaExample, load_vqa_split

__all__ = [
    "DatasetSpec",
    "Nlvr2Example",
    "RetrievalImage",
    "VqaExample",
    "load_image",
    "load_karpathy_split",
    "load_nlvr2_split",
    "load_spec",
    "load_vqa_split",
    "probe_image",
    "read_karpathy",
]

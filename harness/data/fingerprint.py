"""Split fingerprints for ``run.json``: a hash of a split's example ids and labels.

Two runs are comparable only on the same examples with the same labels; the hash ignores order (a shuffled
file is the same split) but changes with any id or label.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable

from harness.data.karpathy import RetrievalImage
from harness.data.nlvr2 import Nlvr2Example
from harness.data.vqa import VqaExample


def split_fingerprint(items: Iterable[tuple[str, str]]) -> str:
    """``sha256:<hex>`` over the sorted (id, label) pairs, one canonical JSON array per line."""
    digest = hashlib.sha256()
    for item_id, label in sorted((str(i), str(label)) for i, label in items):
        # JSON escaping makes the encoding unambiguous whatever characters ids and labels contain.
        digest.update(json.dumps([item_id, label], ensure_ascii=False, separators=(",", ":")).encode("utf-8"))
        digest.update(b"\n")
    return "sha256:" + digest.hexdigest()


def vqa_fingerprint(examples: Iterable[VqaExample]) -> str:
    """question_id + its sorted raw answers (empty label when the split has no annotations)."""
    return split_fingerprint(
        (str(e.question_id), "" if e.answers is None else json.dumps(sorted(e.answers), ensure_ascii=False))
        for e in examples
    )


def nlvr2_fingerprint(examples: Iterable[Nlvr2Example]) -> str:
    """identifier + "True"/"False" (empty when unlabelled)."""
    return split_fingerprint((e.identifier, e.label_text or "") for e in examples)


def retrieval_fingerprint(images: Iterable[RetrievalImage]) -> str:
    """image key + its captions in order (the caption order fixes the score matrix's columns)."""
    return split_fingerprint((i.image_key, json.dumps(list(i.captions), ensure_ascii=False)) for i in images)

"""``vlbench data check``: load every split of a spec, collecting every problem instead of stopping at one.

The loaders run in collecting mode (the same code path as training), then every distinct image is probed.
An unreadable or invalid spec itself is still a DataError (exit 2): there is nothing to check without it.
"""

from __future__ import annotations

import os
import sys
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from harness.data.images import probe_image
from harness.data.karpathy import read_karpathy_split
from harness.data.nlvr2 import read_nlvr2_split
from harness.data.spec import KarpathySplitSpec, Nlvr2SplitSpec, Problems, VqaSplitSpec, load_spec
from harness.data.vqa import VqaSplitStats, read_vqa_split
from harness.errors import DataError
from harness.metrics.vqa import below_full_credit, below_full_credit_note


@dataclass
class CheckReport:
    spec: Path
    task: str
    name: str
    splits: dict[str, dict[str, int]] = field(default_factory=dict)  # split -> {count name: value}
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # shown, but not problems (exit 0)

    @property
    def ok(self) -> bool:
        return not self.problems

    def table(self) -> str:
        """The counts as a small fixed-width table, one row per split."""
        columns: list[str] = []
        for counts in self.splits.values():
            columns += [c for c in counts if c not in columns]
        rows = [["split", *columns]] + [
            [split, *(str(counts.get(c, "")) for c in columns)] for split, counts in self.splits.items()
        ]
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        lines = ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in
                           enumerate(zip(row, widths, strict=True))).rstrip() for row in rows]
        return "\n".join(lines)


def check_dataset(spec_path: str | Path, probe_images: bool = True, progress: bool = False) -> CheckReport:
    """Counts per split and every problem found; raises DataError only for an unreadable/invalid spec."""
    spec = load_spec(spec_path)
    report = CheckReport(spec=spec.path, task=spec.task, name=spec.name)
    probed: dict[Path, str | None] = {}  # image -> problem (splits may share images: probe each once)
    for split, entry in spec.splits.items():
        problems = Problems(collect=True)
        images: list[Path]
        if isinstance(entry, VqaSplitSpec):
            stats = VqaSplitStats()
            examples = read_vqa_split(entry, problems, stats)
            images = [e.image_path for e in examples]
            counts = {"examples": len(examples), "questions": stats.questions}
            if entry.annotations is not None:
                counts.update(annotations=stats.annotations, answers=stats.answers)
                for kind in sorted(stats.answer_types):
                    counts[kind] = stats.answer_types[kind]
                few = below_full_credit(stats.answer_counts)
                if few:
                    note = below_full_credit_note(few, stats.annotations)
                    if 1 in few:  # a single answer scores 0 whatever is predicted: no score means anything
                        problems.add(note)
                    else:
                        report.warnings.append(f"{split}: {note}")
        elif isinstance(entry, Nlvr2SplitSpec):
            nlvr2 = read_nlvr2_split(entry, problems)
            images = [p for e in nlvr2 for p in (e.left_image, e.right_image)]
            counts = {"examples": len(nlvr2), "True": sum(e.label is True for e in nlvr2),
                      "False": sum(e.label is False for e in nlvr2)}
            unlabelled = sum(e.label is None for e in nlvr2)
            if unlabelled:
                counts["unlabelled"] = unlabelled
        else:
            assert isinstance(entry, KarpathySplitSpec)
            karpathy = read_karpathy_split(entry, problems)
            images = [i.path for i in karpathy]
            counts = {"examples": len(karpathy), "captions": sum(len(i.captions) for i in karpathy)}
        unique = list(dict.fromkeys(images))
        counts["images"] = len(unique)
        for boxes in [entry.boxes] if entry.boxes is not None else []:
            if not boxes.is_file():
                problems.add(f"{boxes}: boxes file not found")
        if probe_images:
            _probe(unique, probed, problems, desc=f"{split} images", progress=progress)
        report.splits[split] = counts
        report.problems += [f"{split}: {message}" for message in problems.messages]
    return report


def _probe_one(path: Path) -> str | None:
    try:
        probe_image(path)
    except DataError as exc:
        return str(exc)
    return None


def _probe(paths: list[Path], probed: dict[Path, str | None], problems: Problems, desc: str,
           progress: bool) -> None:
    todo = [p for p in paths if p not in probed]
    if todo:
        # Probing is I/O and C decoding (PIL releases the GIL): threads give a large speed-up on big splits.
        workers = min(16, (os.cpu_count() or 1) * 2, len(todo))
        # Warnings (palette transparency, odd EXIF) are not problems; filters are process-wide, so they are
        # set here once, never inside the worker threads.
        with warnings.catch_warnings(), ThreadPoolExecutor(max_workers=workers) as pool, \
                tqdm(total=len(todo), desc=desc, unit="img", disable=None if progress else True, leave=False,
                     file=sys.stderr) as bar:
            warnings.simplefilter("ignore")
            for path, result in zip(todo, pool.map(_probe_one, todo), strict=True):
                probed[path] = result
                bar.update()
    for path in paths:
        if probed[path] is not None:
            problems.add(str(probed[path]))

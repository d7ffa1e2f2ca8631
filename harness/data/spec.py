"""Dataset specs (docs/dataset-spec.md): a YAML file naming, per split, official files and their images.

``load_spec(path)`` validates the whole file up front (task, keys, templates) so that a typo fails in one
line naming the spec and the key, before any data is read. Relative paths resolve against the spec's folder.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from harness.data.templates import PathTemplate
from harness.errors import DataError
from harness.fileio import MAX_SPEC_FILE_BYTES, read_untrusted_text

TASKS = ("vqa", "nlvr2", "retrieval", "captions")

VQA_TEMPLATE_FIELDS = frozenset({"image_id"})
NLVR2_TEMPLATE_FIELDS = frozenset({"split", "set", "pair", "sentence", "identifier", "img", "directory"})

# Keys each task's split entry takes: (required, optional). Unknown keys are errors: a misspelt
# "annotation:" must not silently turn a scored split into a predictions-only one.
_SPLIT_KEYS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "vqa": (frozenset({"questions", "images"}), frozenset({"annotations", "boxes"})),
    "nlvr2": (frozenset({"file", "images"}), frozenset({"boxes"})),
    "retrieval": (frozenset({"karpathy", "split", "images"}), frozenset({"boxes"})),
    "captions": (frozenset({"karpathy", "split", "images"}), frozenset({"boxes"})),
}


@dataclass(frozen=True)
class VqaSplitSpec:
    name: str
    questions: Path
    annotations: Path | None  # None: predictions only (e.g. test-dev)
    images: PathTemplate  # over image_id
    boxes: Path | None = None


@dataclass(frozen=True)
class Nlvr2SplitSpec:
    name: str
    file: Path
    images: PathTemplate  # over the identifier's fields, img, directory
    boxes: Path | None = None


@dataclass(frozen=True)
class KarpathySplitSpec:
    name: str
    karpathy: Path
    splits: tuple[str, ...]  # Karpathy split names (``[train, restval]``)
    images: Path  # image root: an image is images/filepath/filename
    boxes: Path | None = None


SplitSpec = VqaSplitSpec | Nlvr2SplitSpec | KarpathySplitSpec


@dataclass(frozen=True)
class DatasetSpec:
    path: Path  # the spec file itself (absolute)
    task: str
    name: str
    splits: Mapping[str, SplitSpec]

    @property
    def folder(self) -> Path:
        return self.path.parent

    def split(self, name: str) -> SplitSpec:
        try:
            return self.splits[name]
        except KeyError:
            raise DataError(f"{self.path}: splits: no split {name!r} "
                            f"(available: {', '.join(self.splits) or 'none'})") from None

    def require_task(self, *tasks: str) -> None:
        if self.task not in tasks:
            raise DataError(f"{self.path}: task is {self.task!r}, expected {' or '.join(map(repr, tasks))}")


class Problems:
    """Where loaders report a bad item: raise at once (loading) or collect and go on (``data check``).

    Loaders call ``add(message)`` and then skip the item, so one code path serves both uses.
    """

    def __init__(self, collect: bool = False) -> None:
        self.collect = collect
        self.messages: list[str] = []

    def add(self, message: str) -> None:
        if not self.collect:
            raise DataError(message)
        self.messages.append(message)

    def __len__(self) -> int:
        return len(self.messages)


@contextmanager
def paused_gc() -> Iterator[None]:
    """Pause the cyclic garbage collector while building millions of small acyclic objects.

    Parsing VQA v2 train (443k questions, 4.4M answers) otherwise triggers repeated full collections that
    roughly double the load time; nothing built here has cycles, so nothing is left for the GC to find.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def as_spec(spec: DatasetSpec | str | Path) -> DatasetSpec:
    return spec if isinstance(spec, DatasetSpec) else load_spec(spec)


def load_spec(path: str | Path) -> DatasetSpec:
    """Read and validate a dataset spec; every problem is a DataError naming the file and the key."""
    path = Path(path).absolute()
    if not path.exists() and not path.is_symlink():
        raise DataError(f"{path}: dataset spec not found")
    text = read_untrusted_text(path, MAX_SPEC_FILE_BYTES, what="dataset spec")
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        reason = " ".join(str(getattr(exc, "problem", None) or exc).split())  # one line, however YAML words it
        raise DataError(f"{path}: malformed YAML{at}: {reason}") from None
    except RecursionError:
        raise DataError(f"{path}: malformed YAML (nested too deeply)") from None
    if not isinstance(raw, dict):
        raise DataError(f"{path}: expected a mapping with keys task, name, splits")
    unknown = sorted(set(map(str, raw)) - {"task", "name", "splits"})
    if unknown:
        raise DataError(f"{path}: unknown key(s) {', '.join(unknown)} (expected task, name, splits)")
    if "task" not in raw:
        raise DataError(f"{path}: missing key 'task' (one of {', '.join(TASKS)})")
    task = raw["task"]
    if task not in TASKS:
        raise DataError(f"{path}: task: unknown task {task!r} (known: {', '.join(TASKS)})")
    name = raw.get("name", path.stem)
    if isinstance(name, (int, float)) and not isinstance(name, bool):
        name = str(name)  # "name: 2014" is free text too
    if not isinstance(name, str) or not name.strip():
        raise DataError(f"{path}: name: expected a non-empty string")
    if "splits" not in raw:
        raise DataError(f"{path}: missing key 'splits'")
    splits_raw = raw["splits"]
    if not isinstance(splits_raw, dict) or not splits_raw:
        raise DataError(f"{path}: splits: expected a non-empty mapping of split name to entry")
    splits: dict[str, SplitSpec] = {}
    for split_name, entry in splits_raw.items():
        split_name = str(split_name)
        splits[split_name] = _parse_split(path, task, split_name, entry)
    return DatasetSpec(path=path, task=task, name=name, splits=MappingProxyType(splits))


def _parse_split(path: Path, task: str, split: str, entry: Any) -> SplitSpec:
    where = f"{path}: splits.{split}"
    if not isinstance(entry, dict):
        raise DataError(f"{where}: expected a mapping")
    required, optional = _SPLIT_KEYS[task]
    keys = set(map(str, entry))
    missing = sorted(required - keys)
    if missing:
        raise DataError(f"{where}: missing key(s) {', '.join(missing)}")
    unknown = sorted(keys - required - optional)
    if unknown:
        raise DataError(f"{where}: unknown key(s) {', '.join(unknown)} for task {task} "
                        f"(allowed: {', '.join(sorted(required | optional))})")
    base = path.parent

    def file_key(key: str) -> Path | None:
        value = entry.get(key)
        if value is None:
            if key in required:
                raise DataError(f"{where}.{key}: expected a path, got nothing")
            return None
        if not isinstance(value, str) or not value.strip():
            raise DataError(f"{where}.{key}: expected a path string, got {value!r}")
        return base / value

    boxes = file_key("boxes")
    if task == "vqa":
        questions = file_key("questions")
        assert questions is not None
        return VqaSplitSpec(
            name=split,
            questions=questions,
            annotations=file_key("annotations"),
            images=PathTemplate.parse(entry["images"], base, VQA_TEMPLATE_FIELDS, f"{where}.images"),
            boxes=boxes,
        )
    if task == "nlvr2":
        file = file_key("file")
        assert file is not None
        return Nlvr2SplitSpec(
            name=split,
            file=file,
            images=PathTemplate.parse(entry["images"], base, NLVR2_TEMPLATE_FIELDS, f"{where}.images"),
            boxes=boxes,
        )
    karpathy = file_key("karpathy")
    images = file_key("images")
    assert karpathy is not None and images is not None
    ksplit = entry["split"]
    names = [ksplit] if isinstance(ksplit, str) else ksplit
    if not isinstance(names, list) or not names or not all(isinstance(n, str) and n.strip() for n in names):
        raise DataError(f"{where}.split: expected a Karpathy split name or a non-empty list of them, got {ksplit!r}")
    if len(set(names)) != len(names):
        raise DataError(f"{where}.split: repeated split name in {names!r}")
    return KarpathySplitSpec(name=split, karpathy=karpathy, splits=tuple(names), images=images, boxes=boxes)

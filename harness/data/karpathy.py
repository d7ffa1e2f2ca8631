"""Karpathy-split caption JSON (``dataset_coco.json``, ``dataset_flickr30k.json``) for retrieval and captions.

Images keep the file's order and captions keep each image's order: the retrieval score matrix's rows and
columns (and ``vlbench score retrieval --folds``) rely on exactly that order.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.data.spec import DatasetSpec, KarpathySplitSpec, Problems, as_spec, paused_gc
from harness.data.streamed import StreamedRecords
from harness.data.text import text_problem
from harness.errors import DataError, PathEscapeError
from harness.fileio import resolve_inside


@dataclass(frozen=True)
class RetrievalImage:
    image_key: str  # the file name (unique in the COCO and Flickr30k Karpathy files)
    path: Path
    captions: tuple[str, ...]  # the ``raw`` sentences, unchanged, in file order
    split: str = ""  # this image's Karpathy split ("train", "restval", ...)
    imgid: int | None = None
    cocoid: int | None = None


def load_karpathy_split(spec: DatasetSpec | str | Path, split: str) -> list[RetrievalImage]:
    """The images of a retrieval or captions spec's ``split``, in file order."""
    spec = as_spec(spec)
    spec.require_task("retrieval", "captions")
    entry = spec.split(split)
    assert isinstance(entry, KarpathySplitSpec)
    return read_karpathy_split(entry, Problems(collect=False))


def read_karpathy(
    path: str | Path, splits: str | Iterable[str], images_root: str | Path | None = None
) -> list[RetrievalImage]:
    """Read a Karpathy JSON without a spec (e.g. for ``vlbench score retrieval``).

    ``images_root`` defaults to the JSON's folder; only the order, keys and captions matter to scoring.
    """
    path = Path(path)
    names = (splits,) if isinstance(splits, str) else tuple(splits)
    entry = KarpathySplitSpec(
        name="+".join(names), karpathy=path, splits=names,
        images=Path(images_root) if images_root is not None else path.parent,
    )
    return read_karpathy_split(entry, Problems(collect=False))


def _optional_int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def read_karpathy_split(entry: KarpathySplitSpec, problems: Problems) -> list[RetrievalImage]:
    """Read one split, reporting each bad image to ``problems`` (which raises or collects) and skipping it."""
    with paused_gc():
        return _read_karpathy_split(entry, problems)


def _read_karpathy_split(entry: KarpathySplitSpec, problems: Problems) -> list[RetrievalImage]:
    path = entry.karpathy
    records = StreamedRecords(path, "images", problems, "Karpathy split format")
    wanted = set(entry.splits)
    found: dict[str, int] = {name: 0 for name in entry.splits}
    present: set[str] = set()
    seen: dict[str, int] = {}
    images: list[RetrievalImage] = []
    for index, item in records:
        where = f"{path}: images[{index}]"
        if not isinstance(item, dict):
            problems.add(f"{where}: expected an object")
            continue
        ksplit = item.get("split")
        if not isinstance(ksplit, str):
            problems.add(f"{where}: missing or non-string 'split'")
            continue
        present.add(ksplit)
        if ksplit not in wanted:
            continue
        found[ksplit] += 1
        filename, filepath = item.get("filename"), item.get("filepath")
        if not isinstance(filename, str) or not filename.strip():
            problems.add(f"{where}: missing or empty 'filename'")
            continue
        where = f"{path}: images[{index}] ({filename})"
        if filepath is not None and not isinstance(filepath, str):
            problems.add(f"{where}: 'filepath' must be a string, got {filepath!r}")
            continue
        if filename in seen:
            problems.add(f"{where}: duplicate image (also images[{seen[filename]}])")
            continue
        seen[filename] = index
        sentences = item.get("sentences")
        if not isinstance(sentences, list) or not sentences:
            problems.add(f"{where}: no captions ('sentences' missing or empty)")
            continue
        captions: list[str] = []
        for number, sentence in enumerate(sentences):
            raw = sentence.get("raw") if isinstance(sentence, dict) else None
            problem = text_problem(raw, "'raw' caption")
            if problem:
                problems.add(f"{where}: sentences[{number}]: {problem}")
                break
            captions.append(raw)
        else:
            relative = Path(filepath, filename) if filepath else Path(filename)
            try:
                image_path = resolve_inside(entry.images, relative)
            except PathEscapeError:
                problems.add(f"{where}: image path {str(relative)!r} points outside the image root {entry.images}")
                continue
            except DataError as exc:  # a symlink loop
                problems.add(f"{where}: {exc}")
                continue
            images.append(
                RetrievalImage(
                    image_key=filename,
                    path=image_path,
                    captions=tuple(captions),
                    split=ksplit,
                    imgid=_optional_int(item.get("imgid")),
                    cocoid=_optional_int(item.get("cocoid")),
                )
            )
    if records.failed:
        return []
    for name, count in found.items():
        if count == 0:
            problems.add(f"{path}: no images with split {name!r} "
                         f"(splits in the file: {', '.join(sorted(present)) or 'none'})")
    return images

"""NLVR2: the official JSON-lines files (``train.json``, ``dev.json``, ``test1.json``), read unchanged.

An identifier is ``{split}-{set}-{pair}-{sentence}``; the two images of a line are
``{split}-{set}-{pair}-img0`` / ``-img1`` (plus the line's ``directory`` for train). Labels are the strings
"True"/"False" in any case; test files without labels give ``label=None`` (predictions only).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.data.spec import DatasetSpec, Nlvr2SplitSpec, Problems, as_spec, paused_gc
from harness.data.text import text_problem
from harness.errors import DataError
from harness.fileio import parse_json, read_untrusted_text

_IDENTIFIER = re.compile(r"^(?P<split>[A-Za-z0-9_]+)-(?P<set>\d+)-(?P<pair>\d+)-(?P<sentence>\d+)$")


@dataclass(frozen=True)
class Nlvr2Example:
    identifier: str
    sentence: str
    label: bool | None
    left_image: Path
    right_image: Path
    split: str  # the identifier's split part ("dev", "test1", ...)
    set_id: int
    pair_id: int
    sentence_id: int
    directory: str | None = None

    @property
    def label_text(self) -> str | None:
        """The label as the official predictions file writes it."""
        return None if self.label is None else ("True" if self.label else "False")


@dataclass(frozen=True)
class Nlvr2Identifier:
    split: str
    set_id: int
    pair_id: int
    sentence_id: int
    parts: tuple[str, str, str, str]  # as written, so a template fills exactly the file's text


def parse_identifier(identifier: str) -> Nlvr2Identifier:
    """Split ``dev-850-0-0`` into its fields; anything else is a DataError."""
    match = _IDENTIFIER.match(identifier) if isinstance(identifier, str) else None
    if match is None:
        raise DataError(f"malformed identifier {identifier!r} (expected split-set-pair-sentence, e.g. dev-850-0-0)")
    split, set_, pair, sentence = match.group("split", "set", "pair", "sentence")
    return Nlvr2Identifier(split, int(set_), int(pair), int(sentence), (split, set_, pair, sentence))


def parse_label(value: Any) -> bool:
    """ "True"/"False" in any case (the official files use both "True" and "true" across versions)."""
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered == "true":
            return True
        if lowered == "false":
            return False
    raise DataError(f"unknown label {value!r} (expected \"True\" or \"False\")")


def load_nlvr2_split(spec: DatasetSpec | str | Path, split: str) -> list[Nlvr2Example]:
    """The examples of ``split`` in file order; any bad line is a DataError naming the file and line."""
    spec = as_spec(spec)
    spec.require_task("nlvr2")
    entry = spec.split(split)
    assert isinstance(entry, Nlvr2SplitSpec)
    return read_nlvr2_split(entry, Problems(collect=False))


def _jsonl_lines(path: Path, problems: Problems) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each good line; every malformed line is reported (not just the first)."""
    try:
        text = read_untrusted_text(path)
    except DataError as exc:
        problems.add(str(exc))
        return
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = parse_json(line)
        except json.JSONDecodeError as exc:
            problems.add(f"{path}: line {number}: malformed JSON ({exc.msg})")
            continue
        except ValueError as exc:
            problems.add(f"{path}: line {number}: malformed JSON ({exc})")
            continue
        if not isinstance(record, dict):
            problems.add(f"{path}: line {number}: expected a JSON object, got {type(record).__name__}")
            continue
        yield number, record


def read_nlvr2_split(entry: Nlvr2SplitSpec, problems: Problems) -> list[Nlvr2Example]:
    """Read one split, reporting each bad line to ``problems`` (which raises or collects) and skipping it."""
    with paused_gc():
        return _read_nlvr2_split(entry, problems)


def _read_nlvr2_split(entry: Nlvr2SplitSpec, problems: Problems) -> list[Nlvr2Example]:
    path = entry.file
    examples: list[Nlvr2Example] = []
    first_line: dict[str, int] = {}
    lines = 0
    for number, record in _jsonl_lines(path, problems):
        lines += 1
        where = f"{path}: line {number}"
        identifier = record.get("identifier")
        try:
            ident = parse_identifier(identifier)
        except DataError as exc:
            problems.add(f"{where}: {exc}")
            continue
        where = f"{path}: line {number} ({identifier})"
        if identifier in first_line:
            problems.add(f"{where}: duplicate identifier (first on line {first_line[identifier]})")
            continue
        first_line[identifier] = number
        sentence = record.get("sentence")
        problem = text_problem(sentence, "sentence")
        if problem:
            problems.add(f"{where}: {problem}")
            continue
        label: bool | None = None
        if "label" in record:  # unlabelled test lines: predictions only
            try:
                label = parse_label(record["label"])
            except DataError as exc:
                problems.add(f"{where}: {exc}")
                continue
        directory = record.get("directory")
        if directory is not None:
            if isinstance(directory, bool) or not isinstance(directory, (str, int)):
                problems.add(f"{where}: directory must be a string or integer, got {directory!r}")
                continue
            directory = str(directory)
        split, set_, pair, sentence_part = ident.parts
        fields = {"split": split, "set": set_, "pair": pair, "sentence": sentence_part,
                  "identifier": identifier, "directory": directory}
        try:
            left = entry.images.fill(img="img0", **fields)
            right = entry.images.fill(img="img1", **fields)
        except DataError as exc:
            problems.add(f"{where}: {exc}")
            continue
        examples.append(
            Nlvr2Example(
                identifier=identifier,
                sentence=sentence,
                label=label,
                left_image=left,
                right_image=right,
                split=ident.split,
                set_id=ident.set_id,
                pair_id=ident.pair_id,
                sentence_id=ident.sentence_id,
                directory=directory,
            )
        )
    if lines == 0 and path.is_file():
        problems.add(f"{path}: no examples")
    return examples

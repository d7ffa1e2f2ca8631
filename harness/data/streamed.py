"""The records of an official JSON file's top-level list, streamed, with the file's problems reported once."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from harness.data.spec import Problems
from harness.errors import DataError
from harness.fileio import NotAListFile, iter_json_list


class StreamedRecords:
    """(index, record) of ``path``'s ``key`` list, parsed one at a time (``iter_json_list``).

    A file that is not in the official shape, or is unreadable or malformed, is one problem and sets ``failed``;
    the records before a syntax error were already yielded, so the caller drops what it read, as if the file had
    been rejected whole. Problems the caller reports for a record never pass through here (an exception in a
    for-loop's body does not enter its generator).
    """

    def __init__(self, path: Path, key: str, problems: Problems, format_name: str) -> None:
        self.path, self.key, self.problems, self.format_name = path, key, problems, format_name
        self.failed = False

    def __iter__(self) -> Iterator[tuple[int, Any]]:
        try:
            yield from enumerate(iter_json_list(self.path, self.key))
        except NotAListFile:
            self.failed = True
            self.problems.add(f"{self.path}: expected a JSON object with {_article(self.key)} {self.key!r} list "
                              f"({self.format_name})")
        except DataError as exc:
            self.failed = True
            self.problems.add(str(exc))


def _article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"

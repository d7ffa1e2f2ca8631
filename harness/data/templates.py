"""Image-path templates (``"train2014/COCO_train2014_{image_id:012d}.jpg"``) filled safely from data.

A template may only use the named fields its task allows (no ``{}``/``{0}``, no ``{x.attr}``/``{x[0]}``,
no nested ``{x:{y}}``), so a spec cannot reach into Python objects, and a filled path must stay inside
the template's *root*: the folder named by the literal text before the first field (``train2014/`` above,
resolved against the spec's folder). A value like ``directory: "../../etc"`` in a data file is an error.
"""

from __future__ import annotations

import os
import re
import string
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import DataError, PathEscapeError
from harness.fileio import resolve_inside, safe_resolve

_FORMATTER = string.Formatter()
# Widths and precisions in a format spec: "{image_id:012d}" needs 12; "{image_id:0999999999d}" would build a
# gigabyte-long path name (a hang, then a MemoryError). Anything above a file name's length is refused.
_MAX_FORMAT_NUMBER = 255


@dataclass(frozen=True)
class PathTemplate:
    """A validated template: ``text`` as written, ``base`` (the spec's folder), ``root`` (no fill may escape it)."""

    text: str
    base: Path
    root: Path
    fields: frozenset[str]
    # Resolved parent folders (a cache; not part of equality). Folders are not expected to move mid-run.
    _parents: dict[str, Path] = field(default_factory=dict, init=False, repr=False, compare=False, hash=False)

    @classmethod
    def parse(cls, text: str, base: str | Path, allowed: Iterable[str], where: str) -> PathTemplate:
        """Validate ``text``; ``where`` names the spec file and key for error messages."""
        allowed = frozenset(allowed)
        if not isinstance(text, str) or not text.strip():
            raise DataError(f"{where}: expected a non-empty path template string")
        try:
            parsed = list(_FORMATTER.parse(text))
        except ValueError as exc:
            raise DataError(f"{where}: malformed template {text!r} ({exc})") from None
        fields: set[str] = set()
        for _literal, name, spec, conversion in parsed:
            if name is None:
                continue
            if name == "" or name.isdigit():
                raise DataError(f"{where}: template {text!r} uses a positional field; use named fields "
                                f"({', '.join(sorted(allowed))})")
            if not name.isidentifier():  # "x.attr" or "x[0]": would reach into the value object
                raise DataError(f"{where}: template {text!r}: field {{{name}}} is not a plain field name")
            if name not in allowed:
                raise DataError(f"{where}: template {text!r}: unknown field {{{name}}} "
                                f"(allowed: {', '.join(sorted(allowed))})")
            if spec and ("{" in spec or "}" in spec):
                raise DataError(f"{where}: template {text!r}: nested fields in a format spec are not allowed")
            too_big = [n for n in re.findall(r"\d+", spec or "") if int(n) > _MAX_FORMAT_NUMBER]
            if too_big:
                raise DataError(f"{where}: template {text!r}: format width/precision {int(too_big[0])} is larger than "
                                f"a file name can be ({_MAX_FORMAT_NUMBER})")
            if conversion not in (None, "s"):
                raise DataError(f"{where}: template {text!r}: conversion !{conversion} is not allowed")
            fields.add(name)
        # The root is the folder part of the literal prefix, so "dev/{split}-..." keeps every image in dev/.
        prefix = ""
        for literal, name, _spec, _conversion in parsed:
            prefix += literal
            if name is not None:
                break
        prefix_dir = os.path.dirname(prefix)
        base = Path(base).absolute()  # fills join onto it and are resolved: it must not depend on the cwd
        root = safe_resolve(base / prefix_dir) if prefix_dir else safe_resolve(base)
        return cls(text=text, base=base, root=root, fields=frozenset(fields))

    def fill(self, **values: Any) -> Path:
        """The path for ``values``; a field without a value, a bad format or an escaping path is a DataError."""
        missing = sorted(name for name in self.fields if values.get(name) is None)
        if missing:
            raise DataError(f"template {self.text!r} needs field(s) {', '.join(missing)}, which this item lacks")
        try:
            filled = self.text.format_map({name: values[name] for name in self.fields})
        except (ValueError, TypeError, KeyError) as exc:
            raise DataError(f"template {self.text!r} cannot be filled with "
                            f"{ {k: values[k] for k in sorted(self.fields)} } ({exc})") from None
        try:
            return self._inside(os.path.normpath(os.path.join(self.base, filled)))
        except PathEscapeError:
            raise DataError(f"template {self.text!r} filled as {filled!r} points outside its root "
                            f"{self.root}") from None

    def _inside(self, path: str) -> Path:
        """``resolve_inside(root, path)``, resolving each parent folder once (VQA train: 443k questions in
        one folder; a full realpath per question costs tens of seconds) and only the last component per path.
        """
        parent, name = os.path.split(path)
        if not name or name in (".", ".."):
            return resolve_inside(self.root, path)
        resolved_parent = self._parents.get(parent)
        if resolved_parent is None:
            resolved_parent = self._parents[parent] = resolve_inside(self.root, parent)
        candidate = resolved_parent / name
        if os.path.islink(candidate):  # a linked file: resolve it fully, as resolve_inside would
            return resolve_inside(self.root, candidate)
        return candidate  # resolve_inside put resolved_parent at or under the root

"""Small file helpers used everywhere: atomic writes, strict JSON reading, paths that stay inside a root.

Files named by users or by data (specs, official JSON, images, features) are read through
``read_untrusted``: only regular files (a FIFO or a device would block or never end), at most a size bound,
and every way that reading or parsing can fail (symlink loops, nesting that exhausts the stack, integers of
thousands of digits) becomes a one-line DataError naming the file.
"""

from __future__ import annotations

import errno
import io
import json
import os
import re
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, BinaryIO

import numpy as np

from harness.errors import DataError, PathEscapeError


def _default_mode() -> int:
    """Permissions a plain ``open()`` would give a new file (mkstemp makes owner-only files)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextmanager
def atomic_open(path: str | Path, mode: str = "w", **kwargs: Any) -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path``; rename it over ``path`` only if the block succeeds.

    A reader never sees a half-written file, and a crash leaves the previous version intact.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, **kwargs) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, _default_mode())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def write_json(path: str | Path, obj: Any, *, indent: int | None = 2, sort_keys: bool = False) -> None:
    """Write JSON atomically, UTF-8, with a trailing newline."""
    with atomic_open(path, "w", encoding="utf-8") as handle:
        json.dump(obj, handle, indent=indent, sort_keys=sort_keys, ensure_ascii=False)
        handle.write("\n")


def write_text(path: str | Path, text: str) -> None:
    with atomic_open(path, "w", encoding="utf-8") as handle:
        handle.write(text)


def write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_open(path, "wb") as handle:
        handle.write(data)


# Size bounds for files read from outside. The largest official files are far below them (VQA v2's train
# annotations: 332 MB; COCO's instances_train2014.json: 470 MB; one NLVR2 image: a few MB).
MAX_DATA_FILE_BYTES = 4 << 30
MAX_IMAGE_FILE_BYTES = 256 << 20
MAX_SPEC_FILE_BYTES = 1 << 20


def open_untrusted(path: str | Path, what: str = "file") -> BinaryIO:
    """``path`` opened for binary reading if it is a regular file; otherwise a DataError naming it.

    The file is opened non-blocking and checked with ``fstat`` on the open descriptor, so a FIFO, a device or
    a socket is refused at once instead of blocking forever, and a file swapped after the check cannot slip
    through. Symlink loops and other unopenable paths are one-line errors too.
    """
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise DataError(f"{path}: {what} not found") from None
    except OSError as exc:
        reason = "symlink loop" if exc.errno == errno.ELOOP else (exc.strerror or str(exc)).lower()
        raise DataError(f"{path}: cannot read {what} ({reason})") from None
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise DataError(f"{path}: expected a {what}, found a directory")
        if not stat.S_ISREG(mode):
            raise DataError(f"{path}: not a regular file (a FIFO, device or socket)")
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


_READ_CHUNK = 1 << 20


def read_untrusted(path: str | Path, limit: int = MAX_DATA_FILE_BYTES, what: str = "file") -> bytes:
    """The bytes of the regular file ``path`` (``open_untrusted``), at most ``limit`` of them."""
    with open_untrusted(path, what) as handle:
        size = os.fstat(handle.fileno()).st_size
        if size > limit:
            raise DataError(f"{path}: {what} of {size:,} bytes is larger than vlbench reads ({limit:,} bytes)")
        # Read what fstat announced (+1 to see growth), then in chunks while more comes: never ``read(limit)``,
        # which makes Python allocate the whole limit (4 GiB for data files) up front, whatever the file's size.
        chunks: list[bytes] = []
        total = 0
        want = size + 1
        try:
            while total <= limit:
                request = min(want, limit + 1 - total)
                chunk = handle.read(request)
                chunks.append(chunk)
                total += len(chunk)
                if len(chunk) < request:  # end of file (a regular file returns short reads only there)
                    break
                want = _READ_CHUNK
        except OSError as exc:
            raise DataError(f"{path}: cannot read {what} ({exc.strerror or exc})") from None
    if total > limit:  # grew after the check (or st_size lied, as on some virtual file systems)
        raise DataError(f"{path}: {what} is larger than vlbench reads ({limit:,} bytes)")
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def read_untrusted_npy(path: str | Path, what: str = ".npy array") -> np.ndarray:
    """One ``.npy`` array from outside: no pickle (object arrays are refused), regular files only."""
    data = read_untrusted(path, what=what)
    try:
        array = np.load(io.BytesIO(data), allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise DataError(f"{path}: not a readable {what} ({_first(exc)})") from None
    if not isinstance(array, np.ndarray):  # np.load gives an NpzFile for .npz archives
        raise DataError(f"{path}: expected a single {what}, got {type(array).__name__}")
    return array


def _first(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def _decode_text(path: Path, data: bytes, what: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: {what} is not UTF-8 text (byte {exc.start})") from None


def read_untrusted_text(path: str | Path, limit: int = MAX_DATA_FILE_BYTES, what: str = "file") -> str:
    """``read_untrusted`` decoded as UTF-8 (a bad byte is a DataError naming its offset)."""
    return _decode_text(Path(path), read_untrusted(path, limit, what), what)


def parse_json(text: str) -> Any:
    """``json.loads`` whose resource failures are JSONDecodeError-like ValueErrors: nesting deeper than the
    stack (RecursionError) and integers of more digits than Python converts (ValueError)."""
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("nested too deeply") from None


def read_json(path: str | Path) -> Any:
    """Read a JSON file; a missing or malformed file is a DataError naming it (and the line for bad JSON)."""
    path = Path(path)
    return _parse_whole(path, read_untrusted(path))


_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
_MAX_JSON_DEPTH = 1000  # what json.loads reaches before RecursionError; records nested deeper are refused


class NotAListFile(DataError):
    """A JSON file that is not an object holding a list under the expected key."""


def iter_json_list(path: str | Path, key: str) -> Iterator[Any]:
    """The items of the list under the top-level ``key`` of the JSON object in ``path``, parsed one at a time.

    For the official annotation files (VQA v2's train annotations: 4.4 million answer objects): ``read_json``
    holds the whole parse tree at once, gigabytes at real size; this holds one record. Errors are ``read_json``'s
    (a malformed file is re-parsed with ``json`` on failure, for its line and column; a file ``json`` accepts but
    the streaming parser does not, such as a NaN, is read whole instead). A file that is not an object with a
    ``key`` list raises :class:`NotAListFile` once the stream has shown it.
    """
    import ijson  # here: only the readers of large official files need it

    path = Path(path)
    data = read_untrusted(path)
    state = {"shape": None, "depth": 0}

    def watched(events: Iterator[tuple[str, str, Any]]) -> Iterator[tuple[str, str, Any]]:
        for prefix, event, value in events:
            if event in ("start_map", "start_array"):
                state["depth"] += 1
                if state["depth"] > _MAX_JSON_DEPTH:
                    raise ValueError("nested too deeply")
            elif event in ("end_map", "end_array"):
                state["depth"] -= 1
            if state["shape"] is None:
                state["shape"] = event  # the top-level value's first event
            if prefix == key and event == "start_array" and state["depth"] == 2:
                state["shape"] = "list"
            yield prefix, event, value

    yielded = 0
    try:
        if _SURROGATE_ESCAPE.search(data):  # yajl turns a lone "\ud800" into "?" where json keeps it
            raise ValueError("surrogate escapes: read whole")
        for item in ijson.items(watched(ijson.parse(io.BytesIO(data), use_float=True)), f"{key}.item"):
            yield item
            yielded += 1
    except (ijson.JSONError, ValueError, RecursionError):
        # The exact error (line, column, UTF-8 offset) from the whole-file reader, or, where that reader accepts
        # what the streaming one refused, the rest of the records from it.
        whole = _parse_whole(path, data)
        records = whole.get(key) if isinstance(whole, dict) else None
        if not isinstance(records, list):
            raise NotAListFile(f"{path}: expected a JSON object with a {key!r} list") from None
        yield from records[yielded:]
        return
    if state["shape"] != "list":
        raise NotAListFile(f"{path}: expected a JSON object with a {key!r} list")


def _parse_whole(path: Path, data: bytes) -> Any:
    text = _decode_text(path, data, "file")
    try:
        return parse_json(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    except ValueError as exc:
        raise DataError(f"{path}: malformed JSON ({exc})") from None


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Read a JSON-lines file (blank lines skipped); a malformed line is a DataError naming its number."""
    path = Path(path)
    lines = read_untrusted_text(path).splitlines()
    records: list[dict[str, Any]] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = parse_json(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}: line {number}: malformed JSON ({exc.msg})") from None
        except ValueError as exc:
            raise DataError(f"{path}: line {number}: malformed JSON ({exc})") from None
        if not isinstance(record, dict):
            raise DataError(f"{path}: line {number}: expected a JSON object, got {type(record).__name__}")
        records.append(record)
    return records


def safe_resolve(path: str | Path) -> Path:
    """``Path.resolve()``, with a symlink loop (RuntimeError on Python 3.11, OSError later) as a DataError."""
    try:
        return Path(path).resolve()
    except (RuntimeError, OSError) as exc:
        loop = isinstance(exc, RuntimeError) or getattr(exc, "errno", None) == errno.ELOOP
        reason = "symlink loop" if loop else (getattr(exc, "strerror", None) or str(exc))
        raise DataError(f"{path}: cannot resolve the path ({reason})") from None


def resolve_inside(root: str | Path, relative: str | Path) -> Path:
    """Join ``relative`` to ``root`` and refuse a result outside ``root`` (``..``, absolute paths, links).

    Paths built from data (identifiers, file names, templates) go through here so that a crafted
    dataset cannot make vlbench read or write outside the folder it was pointed at.
    """
    root_resolved = safe_resolve(root)
    candidate = safe_resolve(root_resolved / relative)
    if candidate != root_resolved and root_resolved not in candidate.parents:
        raise PathEscapeError(f"path {str(relative)!r} points outside its root {root_resolved}")
    return candidate


def cache_root() -> Path:
    """Where vlbench keeps what it makes once and reuses (the embedded world, detectors, region features):
    ``$VLBENCH_CACHE`` or ``~/.cache/vlbench``."""
    return Path(os.environ.get("VLBENCH_CACHE") or "~/.cache/vlbench").expanduser()

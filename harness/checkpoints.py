"""Checkpoints in safetensors: tensors plus a JSON header (model/task config, answer vocabulary, ...).

safetensors cannot run code when loaded, so a checkpoint from a stranger is data, never a program.
Files are written beside their destination and renamed into place, so a crash never leaves half a file.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from harness.errors import VlbenchError
from harness.fileio import _default_mode, parse_json

FORMAT = "vlbench-checkpoint-v1"
_META_KEY = "vlbench"


def save_checkpoint(path: str | Path, state: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Write ``state`` (name -> tensor) and ``meta`` (JSON-serialisable) to ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Tied weights share storage, which safetensors refuses; contiguous copies load back identically.
    tensors = {name: t.detach().to("cpu").contiguous().clone() for name, t in state.items()}
    _require_finite(tensors, path, "not saved: ", "; training diverged (try a lower --lr)")
    header = {_META_KEY: json.dumps({"format": FORMAT, **meta}, sort_keys=True)}
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=header)
        os.chmod(tmp, _default_mode())
        os.replace(tmp, path)
    except SafetensorError as exc:  # e.g. a full disk: safetensors reports it as its own error, not an OSError
        Path(tmp).unlink(missing_ok=True)
        raise VlbenchError(f"{path}: cannot write the checkpoint ({_first_line(exc)})") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _require_finite(tensors: dict[str, torch.Tensor], path: Path, lead: str, hint: str) -> None:
    """NaN or infinite weights are an error wherever they appear: a model of NaNs still 'predicts' something."""
    bad = [name for name, t in tensors.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        raise VlbenchError(f"{path}: {lead}{len(bad)} tensor(s) hold NaN or infinite values (e.g. {bad[0]}){hint}")


def read_checkpoint_meta(path: str | Path) -> dict[str, Any]:
    """Only the JSON header (cheap: no tensors are read)."""
    from safetensors import safe_open

    path = _existing(path)
    try:
        with safe_open(str(path), framework="pt") as handle:
            raw = (handle.metadata() or {}).get(_META_KEY)
    except (SafetensorError, OSError, ValueError) as exc:
        raise VlbenchError(f"{path}: not a safetensors checkpoint ({_first_line(exc)})") from None
    if raw is None:
        raise VlbenchError(f"{path}: a safetensors file but not a vlbench checkpoint (no '{_META_KEY}' header)")
    try:
        meta = parse_json(raw)
    except ValueError:  # malformed, nested past the stack, or an integer of thousands of digits
        raise VlbenchError(f"{path}: the '{_META_KEY}' header is not JSON") from None
    if not isinstance(meta, dict):
        raise VlbenchError(f"{path}: the '{_META_KEY}' header is not a JSON object")
    if meta.get("format") != FORMAT:
        raise VlbenchError(f"{path}: unsupported checkpoint format {meta.get('format')!r} (expected {FORMAT})")
    return meta


def load_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a checkpoint written by :func:`save_checkpoint`; anything else is a one-line VlbenchError."""
    meta = read_checkpoint_meta(path)
    try:
        state = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise VlbenchError(f"{path}: corrupted checkpoint ({_first_line(exc)})") from None
    _require_finite(state, Path(path), "", "; the checkpoint is broken")
    return state, meta


def _existing(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise VlbenchError(f"{path}: checkpoint not found")
    with path.open("rb") as handle:
        start = handle.read(9)
    if not _safetensors_start(start, path.stat().st_size) and start[:2] in _PICKLE_MAGIC:
        raise VlbenchError(
            f"{path}: looks like a pickle/torch.save file; vlbench only loads safetensors checkpoints "
            "(pickle can run arbitrary code when loaded)"
        )
    return path


# torch.save's zip archive, then pickle protocols 2-5.
_PICKLE_MAGIC = (b"PK", b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05")


def _safetensors_start(start: bytes, size: int) -> bool:
    """A safetensors file opens with its JSON header's length (u64, little-endian), then ``{``. Checked before the
    pickle magic because a header of 640, 896, 1152, 1408 or 19,280 bytes (mod 65,536) begins with the same two
    bytes as a pickle or a zip archive: a valid checkpoint was refused for its header size."""
    if len(start) < 9:
        return False
    header = int.from_bytes(start[:8], "little")
    return start[8:9] == b"{" and 8 + header <= size


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__

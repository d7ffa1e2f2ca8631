"""Image decoding by content, not by suffix, with one set of rules for ``run`` and ``data check``.

Real NLVR2 ``.png`` files are often JPEGs (and COCO has a few CMYK or greyscale JPEGs), so the format is
whatever ``PIL.Image.open`` sniffs from the header. Every failure is a DataError naming the file.
EXIF orientation is deliberately not applied: the official pipelines of the compared models do not.

Files are read through ``read_untrusted`` (regular files only, size-bounded), so a FIFO cannot block. Pixel
modes that ``convert("RGB")`` would silently clip are handled here: 16-bit images are scaled to 8 bits
(``>> 8``); 32-bit integer and floating-point images have no defined range and are refused. A PNG whose
compressed data ends early but cleanly (valid CRCs, too few rows) decodes in PIL as if complete, with the
missing rows black; its pixel data is measured against the header's size and refused.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from harness.errors import DataError
from harness.fileio import MAX_IMAGE_FILE_BYTES, read_untrusted

# What PIL raises for broken files varies by plugin: OSError ("image file is truncated"), SyntaxError (some
# parsers), ValueError/EOFError (bad headers), and TypeError/struct.error/IndexError from a few malformed headers.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, TypeError, IndexError, struct.error,
                  Image.DecompressionBombError)

AtLeast = tuple[int, int] | Callable[[int, int], tuple[int, int]]
"""Pixels per side the caller needs: fixed (width, height), or a function of the file's (width, height)."""

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # colour type -> samples per pixel
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))


def _describe(path: Path, exc: BaseException) -> DataError:
    if isinstance(exc, UnidentifiedImageError):
        return DataError(f"{path}: not a recognised image format")
    return DataError(f"{path}: cannot decode image ({type(exc).__name__}: {exc})")


def png_pixel_data_problem(data: bytes) -> str | None:
    """Why the PNG ``data`` holds less pixel data than its header promises, or None when it is complete.

    The expected size of the decompressed IDAT stream follows from IHDR (one filter byte per row, Adam7
    passes for interlaced images); decompression stops one byte past it, so a crafted stream costs no more.
    """
    if not data.startswith(_PNG_SIGNATURE):
        return None
    position, header, idat = len(_PNG_SIGNATURE), None, []
    while position + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[position:position + 8])
        body = data[position + 8:position + 8 + length]
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
        position += 12 + length
    if header is None or len(header) < 13:
        return "PNG without a valid IHDR header"
    width, height, depth, colour, _compression, _filter, interlace = struct.unpack(">IIBBBBB", header[:13])
    if colour not in _PNG_CHANNELS or depth not in (1, 2, 4, 8, 16):
        return f"PNG with colour type {colour} and bit depth {depth}, which no PNG may have"
    bits = depth * _PNG_CHANNELS[colour]
    passes = _ADAM7 if interlace else ((0, 0, 1, 1),)
    expected = 0
    for x0, y0, dx, dy in passes:
        columns, rows = -(-max(0, width - x0) // dx), -(-max(0, height - y0) // dy)
        if columns and rows:
            expected += rows * (1 + (columns * bits + 7) // 8)
    try:
        inflated = zlib.decompressobj().decompress(b"".join(idat), expected + 1)
    except zlib.error as exc:
        return f"PNG pixel data does not decompress ({exc})"
    if len(inflated) < expected:
        return (f"PNG pixel data ends early: {len(inflated):,} of the {expected:,} bytes its "
                f"{width}x{height} header needs")
    return None


def _to_rgb(image: Image.Image, path: Path) -> Image.Image:
    """RGB from any mode PIL decodes, without the clipping ``convert("RGB")`` does to 16/32-bit modes."""
    mode = image.mode
    if mode.startswith("I;16") or (mode == "I" and image.format == "PNG"):  # PNG has no 32-bit modes
        image = Image.fromarray((np.asarray(image).astype(np.uint32) >> 8).astype(np.uint8), mode="L")
    elif mode in ("I", "F"):
        kind = "32-bit integer" if mode == "I" else "floating-point"
        raise DataError(f"{path}: {kind} pixels (PIL mode {mode}) have no defined range; vlbench reads 8- and "
                        "16-bit images only (convert it to 8-bit)")
    if image.mode in ("P", "PA") and "transparency" in image.info:
        # Going through RGBA gives the same RGB values and avoids PIL's palette-transparency warning.
        image = image.convert("RGBA")
    return image.convert("RGB") if image.mode != "RGB" else image.copy()


def _decode(path: Path, at_least: AtLeast | None = None) -> tuple[Image.Image, tuple[int, int]]:
    """(RGB image, size in the file) under the rules above. ``at_least``: the caller only needs this many pixels
    per side, so a JPEG may decode at a reduced DCT scale (1/2, 1/4, 1/8) whose result is still at least that
    large (libjpeg's scaling: several times faster, and it still reads every scan, so truncation still fails)."""
    data = read_untrusted(path, MAX_IMAGE_FILE_BYTES, what="image")
    try:
        with Image.open(io.BytesIO(data)) as image:
            fmt, size = image.format, image.size
            if fmt == "PNG":
                image.verify()  # every chunk's CRC; PIL's decode alone does not check them
        if size[0] <= 0 or size[1] <= 0:
            raise DataError(f"{path}: image has an empty size {size}")
        with Image.open(io.BytesIO(data)) as image:
            if at_least is not None and fmt == "JPEG":
                image.draft(image.mode, at_least(*size) if callable(at_least) else at_least)
            image.load()  # decode now, inside the try, so truncation is reported here with the file name
            if fmt == "PNG":
                problem = png_pixel_data_problem(data)
                if problem:
                    raise DataError(f"{path}: {problem}")
            return _to_rgb(image, path), size
    except _DECODE_ERRORS as exc:
        raise _describe(path, exc) from None


def load_image(path: str | Path, at_least: AtLeast | None = None) -> Image.Image:
    """Decode ``path`` and return an RGB image (alpha dropped, as ``convert("RGB")`` does): full size, or with
    ``at_least`` (width, height) a JPEG may come back smaller than its file, but never below that. ``at_least``
    may be a function of the file's (width, height), for targets that depend on the aspect ratio."""
    return _decode(Path(path), at_least)[0]


def decode_image(path: str | Path, at_least: AtLeast | None = None) -> tuple[Image.Image, tuple[int, int]]:
    """``load_image`` and the (width, height) stored in the file (the decoded image may be smaller)."""
    return _decode(Path(path), at_least)


def probe_image(path: str | Path) -> tuple[int, int]:
    """Check that ``path`` is an image ``load_image`` accepts; return its (width, height).

    The same rules as ``load_image`` (so ``data check`` passes exactly what ``run`` can read), with one saving:
    JPEGs decode in draft mode at 1/8 scale (DCT scaling: cheap, but it reads every scan, so a truncated file
    still fails).
    """
    return _decode(Path(path), at_least=(1, 1))[1]

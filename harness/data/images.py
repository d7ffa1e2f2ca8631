"""Image decoding by content, not by suffix.

Real NLVR2 ``.png`` files are often JPEGs (and COCO has a few CMYK or greyscale JPEGs), so the format is
whatever ``PIL.Image.open`` sniffs from the header. Every failure is a DataError naming the file.
EXIF orientation is deliberately not applied: the official pipelines of the compared models do not.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image, UnidentifiedImageError

from harness.errors import DataError

# What PIL raises for broken files varies by plugin: OSError ("image file is truncated", also
# FileNotFoundError/IsADirectoryError), SyntaxError (some parsers), ValueError/EOFError (bad headers).
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError)


def _describe(path: Path, exc: BaseException) -> DataError:
    if isinstance(exc, FileNotFoundError):
        return DataError(f"{path}: image not found")
    if isinstance(exc, PermissionError):
        return DataError(f"{path}: cannot read image (permission denied)")
    if isinstance(exc, IsADirectoryError):
        return DataError(f"{path}: expected an image file, found a directory")
    if isinstance(exc, UnidentifiedImageError):
        return DataError(f"{path}: not a recognised image format")
    return DataError(f"{path}: cannot decode image ({type(exc).__name__}: {exc})")


def load_image(path: str | Path) -> Image.Image:
    """Decode ``path`` fully and return an RGB image (alpha dropped, as ``convert("RGB")`` does)."""
    path = Path(path)
    try:
        with Image.open(path) as image:
            image.load()  # decode now, inside the try, so truncation is reported here with the file name
            if image.mode in ("P", "PA") and "transparency" in image.info:
                # Going through RGBA gives the same RGB values and avoids PIL's palette-transparency warning.
                image = image.convert("RGBA")
            return image.convert("RGB") if image.mode != "RGB" else image.copy()
    except _DECODE_ERRORS as exc:
        raise _describe(path, exc) from None


def probe_image(path: str | Path) -> tuple[int, int]:
    """Check that ``path`` is a complete, decodable image without a full decode; return (width, height).

    PNG: ``verify()`` walks every chunk and checks its CRC (a truncated file has no IEND). JPEG: ``verify()``
    checks nothing useful, so decode in draft mode at 1/8 scale (DCT scaling: cheap, but reads every scan,
    so a truncated file still fails). Other formats: a full decode (they are rare in these datasets).
    """
    path = Path(path)
    try:
        with Image.open(path) as image:
            fmt, size = image.format, image.size
            image.verify()
        if fmt != "PNG":
            with Image.open(path) as image:
                if fmt == "JPEG":
                    image.draft("RGB", (max(1, size[0] // 8), max(1, size[1] // 8)))
                image.load()
    except _DECODE_ERRORS as exc:
        raise _describe(path, exc) from None
    if size[0] <= 0 or size[1] <= 0:
        raise DataError(f"{path}: image has an empty size {size}")
    return size

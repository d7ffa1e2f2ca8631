"""Images per second per core for decode + resize of COCO-like JPEGs, the candidate paths side by side in one run.

    python benchmarks/decode.py [--images 200] [--geometry 64] [--geometry 512] [--geometry 800/1333]

Writes N 640x480 JPEGs (quality 90, smooth gradients plus noise: COCO-like entropy) to a temporary folder, then
times, on one thread, each way of turning a file into the uint8 tensor the models read, per geometry: ``S`` an
S x S square, ``S/L`` the aspect kept with short side S and long side at most L (Pixel-BERT's 800/1333: a
640x480 file becomes 1067x800):

- ``bare-pil`` / ``bare-torchvision``: decode only, no resize (the limit of each decoder);
- ``pil-full``: a full decode (``harness.data.images.load_image``) + PIL bilinear resize (vlbench before);
- ``vlbench-pil``: ``ImageTensors.uint8`` without its cache, resampler ``pil`` (the tiny preset's): PIL's JPEG
  draft mode first (libjpeg's DCT scaling decodes at 1/2, 1/4 or 1/8 scale, the smallest whose result is still at
  least the target size), then PIL's bilinear resize;
- ``vlbench-torchvision``: the same with resampler ``torchvision`` (the base preset's): torchvision's AVX2 uint8
  antialiased bilinear kernel on the decoded pixels;
- ``torchvision``: ``torchvision.io.decode_jpeg`` + antialiased bilinear ``resize``.

Not a pytest file. Each path runs ``--repeats`` times over all images and the best round is kept (these machines
are shared: the best round is the least disturbed). torchvision's PNG decoder is left out on purpose: it
crashed the process (SIGSEGV) on a PNG whose pixel data ends early (issue 21), which vlbench must survive.
"""

from __future__ import annotations

import argparse
import io
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def write_jpegs(folder: Path, count: int, seed: int = 0) -> list[Path]:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:480, 0:640].astype(np.float32)
    paths = []
    for i in range(count):
        phase = rng.uniform(0, 6.28, 3)
        base = np.stack([127 + 100 * np.sin(x / rng.uniform(20, 90) + phase[c]) * np.cos(y / rng.uniform(20, 90))
                         for c in range(3)], axis=-1)
        pixels = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
        path = folder / f"{i:06d}.jpg"
        path.write_bytes(buffer.getvalue())
        paths.append(path)
    return paths


def paths_for(size: int, max_size: int = 0) -> dict[str, Callable[[Path], object]]:
    import torchvision.io as tvio
    from torchvision.transforms.v2.functional import resize

    from harness.batches import ImageTensors, resized_size
    from harness.data.images import load_image

    def pil_full(path: Path) -> torch.Tensor:
        image = load_image(path)
        image = image.resize(resized_size(*image.size, size, max_size), resample=Image.BILINEAR)
        return torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1)

    def torchvision(path: Path) -> torch.Tensor:
        data = tvio.decode_jpeg(tvio.read_file(str(path)), mode=tvio.ImageReadMode.RGB)
        width, height = resized_size(data.shape[2], data.shape[1], size, max_size)
        return resize(data, [height, width], antialias=True)

    def bare_pil(path: Path) -> object:
        with Image.open(path) as image:
            image.load()
            return image

    def bare_torchvision(path: Path) -> object:
        return tvio.decode_jpeg(tvio.read_file(str(path)), mode=tvio.ImageReadMode.RGB)

    return {"bare-pil": bare_pil, "bare-torchvision": bare_torchvision, "pil-full": pil_full,
            **{f"vlbench-{r}": ImageTensors(size, cache_bytes=0, max_size=max_size, resampler=r).uint8
               for r in ("pil", "torchvision")},
            "torchvision": torchvision}


def measure(paths: list[Path], read: Callable[[Path], object], repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for path in paths:
            read(path)
        best = min(best, time.perf_counter() - start)
    return len(paths) / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--geometry", action="append",
                        help="S (an S x S square) or S/L (short side S, long side <= L); repeatable; default 64, 512 "
                             "and 800/1333")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_jpegs(Path(tmp), args.images)
        for geometry in args.geometry or ["64", "512", "800/1333"]:
            size, _, long_side = geometry.partition("/")
            rates = {name: measure(paths, read, args.repeats)
                     for name, read in paths_for(int(size), int(long_side or 0)).items()}
            limit = max(rates["bare-pil"], rates["bare-torchvision"])
            print(f"geometry {geometry}, {args.images} JPEGs 640x480, one thread: images/s (share of the fastest "
                  "bare decode)")
            for name, rate in rates.items():
                print(f"  {name:17s} {rate:8.1f}  ({100 * rate / limit:5.1f}%)")


if __name__ == "__main__":
    main()

"""Turning examples into tensors: decoded-image cache, resizing, tokenisation, text-issue counts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from harness.data.images import decode_image
from harness.errors import VlbenchError
from pixelbert.config import VisualConfig

# Decoded images kept in memory, over all processes that decode (the main one and each DataLoader worker fill
# their own copies). The embedded world at 64x64 (12 KB an image, about 240 MB for all 19,400 scenes) fits
# whole, so each file is decoded once per run; VQA v2's 82,783 training images at 512x512 (65 GB) do not, and
# past the budget images are decoded each time they are used instead of growing memory with the dataset.
IMAGE_CACHE_BYTES = 2 << 30


def resized_size(width: int, height: int, size: int, max_size: int = 0) -> tuple[int, int]:
    """The (width, height) an image of ``width`` x ``height`` is resized to: ``size`` x ``size`` when
    ``max_size`` is 0; otherwise the aspect ratio kept, the short side ``size`` unless the long side would then
    pass ``max_size`` (Pixel-BERT's 800 / 1333; the same rule as torchvision's detection transform)."""
    if not max_size:
        return size, size
    scale = size / min(width, height)
    if max(width, height) * scale > max_size:
        scale = max_size / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


class ImageTensors:
    """Load, resize and normalise images; keep decoded uint8 copies up to a byte budget (``IMAGE_CACHE_BYTES``
    shared out over ``processes``), so memory does not grow with the dataset. Caching changes no result.

    ``max_size`` 0: every image becomes an ``image_size`` square. Otherwise the aspect ratio is kept (see
    ``resized_size``) and ``inputs`` pads a batch to its largest image, saying where each image ends."""

    def __init__(self, image_size: int, cache_bytes: int = IMAGE_CACHE_BYTES, processes: int = 1,
                 max_size: int = 0, resampler: str = "pil") -> None:
        self.image_size = image_size
        self.max_size = max_size
        self.resampler = resampler
        self.budget = max(0, cache_bytes) // max(1, processes)
        self._cache: dict[Path, torch.Tensor] = {}
        self.cached_bytes = 0

    @classmethod
    def for_visual(cls, visual: VisualConfig, processes: int = 1) -> ImageTensors:
        """The pipeline of a model's visual config (its image size and geometry)."""
        return cls(visual.image_size, processes=processes, max_size=visual.max_size, resampler=visual.resampler)

    def target_size(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) in pixels that an image of this size in the file becomes."""
        return resized_size(width, height, self.image_size, self.max_size)

    def uint8(self, path: Path) -> torch.Tensor:
        """The resized image as uint8 [3, h, w]."""
        hit = self._cache.get(path)
        if hit is not None:
            return hit
        # JPEGs much larger than the target decode at a reduced DCT scale (never below the target): decode + resize
        # of a 640x480 COCO JPEG to 64x64 went from 93 to 192 images/s on one core (benchmarks/decode.py).
        image, file_size = decode_image(path, at_least=self.target_size)
        target = self.target_size(*file_size)  # the file's size: a draft decode may round the aspect ratio
        if image.size != target and self.resampler == "pil":
            image = image.resize(target, resample=2)  # bilinear (antialiased when shrinking)
        tensor = torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1)
        if image.size != target:  # torchvision's uint8 kernel on the decoded pixels
            from torchvision.transforms.v2.functional import resize  # imported only where it is used

            # Left channels-last as the kernel writes it: a contiguous copy of an 800x1067 image cost a third
            # of the throughput (benchmarks/decode.py), and batching reads any layout.
            return self._keep(path, resize(tensor, [target[1], target[0]], antialias=True))
        return self._keep(path, tensor.contiguous())

    def _keep(self, path: Path, tensor: torch.Tensor) -> torch.Tensor:
        size = tensor.numel()  # uint8: one byte per value
        if self.cached_bytes + size <= self.budget:  # fill until the budget, then stop (no eviction churn)
            self._cache[path] = tensor
            self.cached_bytes += size
        return tensor

    def inputs(self, paths: list[Path]) -> dict[str, torch.Tensor]:
        """A model's image inputs: ``images`` float RGB [B, 3, H, W] in [0, 1] (each visual encoder normalises
        for its own backbone); with the aspect ratio kept, also ``image_sizes`` long [B, 2], each image's
        (height, width) in the top-left corner of a batch zero-padded to its largest image."""
        pixels = [self.uint8(p) for p in paths]
        if not self.max_size:
            return {"images": torch.stack(pixels).float().div_(255.0)}
        sizes = torch.tensor([list(p.shape[1:]) for p in pixels], dtype=torch.long).view(len(pixels), 2)
        height, width = (int(v) for v in sizes.max(dim=0).values) if pixels else (0, 0)
        images = torch.zeros(len(pixels), 3, height, width)
        for row, p in enumerate(pixels):
            images[row, :, :p.shape[1], :p.shape[2]] = p.float().div_(255.0)
        return {"images": images, "image_sizes": sizes}

    def batch(self, paths: list[Path]) -> torch.Tensor:
        """Square geometry only: the float RGB batch [B, 3, S, S] in [0, 1] (``inputs`` in general)."""
        if self.max_size:
            raise VlbenchError("images keep their aspect ratio here (max_size is set): a batch needs its "
                               "image_sizes, so use ImageTensors.inputs")
        return self.inputs(paths)["images"]


def images_of(batch: dict[str, Any]) -> dict[str, torch.Tensor | None]:
    """A batch's image inputs as keyword arguments of ``model(...)`` / ``model.encode_images(...)``."""
    return {"images": batch["images"], "image_sizes": batch.get("image_sizes")}


def text_issues(tokenizer, texts: list[str], max_length: int) -> dict[str, int]:
    """Count texts that the model will not see whole: empty ones and ones cut at ``max_length`` tokens."""
    lengths = tokenizer(texts, add_special_tokens=True, truncation=False, return_length=True)["length"]
    return {
        "empty": sum(1 for t in texts if not t.strip()),
        "truncated": sum(1 for n in lengths if n > max_length),
        "max_length": max_length,
    }


class TextBatcher:
    """BERT WordPiece tokenisation to padded tensors, truncated at ``max_length`` tokens."""

    def __init__(self, tokenizer, max_length: int) -> None:
        self.tokenizer = tokenizer
        self.max_length = max_length

    def __call__(self, texts: list[str]) -> dict[str, torch.Tensor]:
        encoded = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length,
                                 return_tensors="pt")
        return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"].bool()}


def to_device(batch: dict, device: torch.device) -> dict:
    return {k: (v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}


def soft_target_tensor(targets: list[dict[int, float]], size: int) -> torch.Tensor:
    out = torch.zeros(len(targets), size)
    for row, target in enumerate(targets):
        for index, score in target.items():
            out[row, index] = score
    return out

"""Turning examples into tensors: decoded-image cache, resizing, tokenisation, text-issue counts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from harness.data.images import load_image

# Decoded images kept in memory, over all processes that decode (the main one and each DataLoader worker fill
# their own copies). The embedded world at 64x64 (12 KB an image, about 240 MB for all 19,400 scenes) fits
# whole, so each file is decoded once per run; VQA v2's 82,783 training images at 512x512 (65 GB) do not, and
# past the budget images are decoded each time they are used instead of growing memory with the dataset.
IMAGE_CACHE_BYTES = 2 << 30


class ImageTensors:
    """Load, resize and normalise images; keep decoded uint8 copies up to a byte budget (``IMAGE_CACHE_BYTES``
    shared out over ``processes``), so memory does not grow with the dataset. Caching changes no result."""

    def __init__(self, image_size: int, cache_bytes: int = IMAGE_CACHE_BYTES, processes: int = 1) -> None:
        self.image_size = image_size
        self.budget = max(0, cache_bytes) // max(1, processes)
        self._cache: dict[Path, torch.Tensor] = {}
        self.cached_bytes = 0

    def uint8(self, path: Path) -> torch.Tensor:
        hit = self._cache.get(path)
        if hit is not None:
            return hit
        # JPEGs much larger than the target decode at a reduced DCT scale (never below the target): decode + resize
        # of a 640x480 COCO JPEG to 64x64 went from 93 to 192 images/s on one core (benchmarks/decode.py).
        image = load_image(path, at_least=(self.image_size, self.image_size))
        if image.size != (self.image_size, self.image_size):
            image = image.resize((self.image_size, self.image_size), resample=2)  # bilinear
        tensor = torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1).contiguous()
        size = tensor.numel()  # uint8: one byte per value
        if self.cached_bytes + size <= self.budget:  # fill until the budget, then stop (no eviction churn)
            self._cache[path] = tensor
            self.cached_bytes += size
        return tensor

    def batch(self, paths: list[Path]) -> torch.Tensor:
        """A float RGB batch [B, 3, S, S] in [0, 1]; each visual encoder normalises for its own backbone."""
        return torch.stack([self.uint8(p) for p in paths]).float().div_(255.0)


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

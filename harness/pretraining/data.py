"""Pre-training batches from a captions (or retrieval) spec: image-caption rows, ITM negatives, MLM masks.

An epoch visits every image once with one of its captions drawn at random (as retrieval training does), so an
epoch costs the same whatever the number of captions per image; with ``epoch_pairs="captions"`` (base) it visits
every (image, caption) pair once instead, as the papers count epochs. Validation always takes one row per image. All randomness comes from one torch generator
per split: training draws continue across epochs; validation restarts from a fixed seed on every pass so each
epoch is scored on the same masks and the same negatives.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from harness.batches import ImageTensors, TextBatcher
from harness.data.compact import worker_shared
from harness.data.fingerprint import retrieval_fingerprint
from harness.data.karpathy import RetrievalImage, load_karpathy_split
from harness.data.spec import DatasetSpec
from harness.errors import VlbenchError
from harness.pretraining.config import PretrainConfig
from pixelbert.pretraining.itm import sample_itm_pairs, swap_vocabulary, swap_word_negative
from pixelbert.pretraining.mlm import mask_tokens


class CaptionPairs:
    def __init__(self, spec: DatasetSpec, images: ImageTensors, text: TextBatcher, config: PretrainConfig,
                 vocab_size: int, limit: int | None = None) -> None:
        spec.require_task("captions", "retrieval")
        self.spec = spec
        self.images = images
        self.text = text
        self.config = config
        self.vocab_size = vocab_size
        self.limit = limit
        tokenizer = text.tokenizer
        self.mask_token_id = tokenizer.mask_token_id
        self.special_ids = tuple(tokenizer.all_special_ids)
        if len(tokenizer) > vocab_size:
            raise VlbenchError(f"the tokenizer has {len(tokenizer)} tokens but the model's vocabulary only "
                               f"{vocab_size}")
        self._splits: dict[str, Sequence[RetrievalImage]] = {}
        self._swap_words: frozenset[str] | None = None

    @property
    def swap_words(self) -> frozenset[str]:
        """The colour words of the training captions: what a word-swap negative may put in (``itm_swap_negatives``)."""
        if self._swap_words is None:
            self._swap_words = swap_vocabulary(c for image in self.examples("train") for c in image.captions)
        return self._swap_words

    def examples(self, split: str) -> Sequence[RetrievalImage]:
        if split not in self._splits:
            if split not in self.spec.splits:
                raise VlbenchError(f"{self.spec.path}: no split {split!r} (has: {', '.join(self.spec.splits)})")
            images = load_karpathy_split(self.spec, split)
            images = images[: self.limit] if self.limit else images
            if len(images) < 2:
                raise VlbenchError(f"{self.spec.path}: split {split!r} needs at least two images for pre-training")
            self._splits[split] = worker_shared(images, split, self.config.num_workers)
        return self._splits[split]

    def image_paths(self, split: str) -> list:
        """Every image of the split, in order (a region model's prepare hook extracts their features)."""
        return [image.path for image in self.examples(split)]

    def fingerprint(self, split: str) -> str:
        return retrieval_fingerprint(self.examples(split))

    def train_rows(self) -> list[int]:
        """The rows an epoch visits (what the loader shuffles): one per image, or one per caption pair (row ``r``
        of image ``i``'s ``k``-th caption is ``r = offset[i] + k``, see :meth:`_row_source`)."""
        if self.config.epoch_pairs == "images":
            return list(range(len(self.examples("train"))))
        return list(range(sum(len(image.captions) for image in self.examples("train"))))

    def _row_source(self, rows: list[int]) -> tuple[list[int], list[int | None]]:
        """Training rows -> (image index, caption index or None = draw one)."""
        if self.config.epoch_pairs == "images":
            return list(rows), [None] * len(rows)
        if not hasattr(self, "_offsets"):
            counts = torch.tensor([len(image.captions) for image in self.examples("train")])
            self._offsets = torch.cumsum(counts, 0) - counts
        table = torch.as_tensor(rows, dtype=torch.long)
        image = torch.searchsorted(self._offsets, table, right=True) - 1
        return image.tolist(), (table - self._offsets[image]).tolist()

    def summary(self, split: str) -> dict[str, Any]:
        images = self.examples(split)
        return {"images": len(images), "captions": sum(len(i.captions) for i in images)}

    def collate(self, split: str, indices: list[int], generator: torch.Generator, rows: bool = False
                ) -> dict[str, Any]:
        """One batch: the images at ``indices`` of ``split`` (``rows``: the training loop's rows of
        :meth:`train_rows` instead), each with its own caption (the row's, or one drawn) or, as an ITM negative,
        another image's."""
        images = self.examples(split)
        chosen: list[int | None] = [None] * len(indices)
        if rows:
            if split != "train":
                raise ValueError("rows index the training split only")
            indices, chosen = self._row_source(indices)
        index = torch.as_tensor(indices, dtype=torch.long)
        batch: dict[str, Any] = self.images.inputs([images[i].path for i in indices])
        if "itm" in self.config.objectives:
            caption_image, labels = sample_itm_pairs(index, len(images), self.config.itm_negative_ratio, generator)
            batch["itm_labels"] = labels
        else:
            caption_image = index
        choice = torch.rand(len(indices), generator=generator)
        captions = []
        for row, source in enumerate(caption_image.tolist()):
            own = images[source].captions
            fixed = chosen[row] if source == indices[row] else None  # a positive row keeps its caption pair
            captions.append(own[fixed] if fixed is not None else own[min(int(choice[row] * len(own)), len(own) - 1)])
        swap = self.config.itm_swap_negatives
        if swap > 0 and "itm" in self.config.objectives:
            # Some negatives become the image's own caption with one colour swapped (falls back to the random
            # caption when the image's captions name no colour).
            draws = torch.rand(len(indices), generator=generator)
            for row, image_index in enumerate(indices):
                if batch["itm_labels"][row] == 0 and draws[row] < swap:
                    swapped = swap_word_negative(images[image_index].captions, self.swap_words, generator)
                    captions[row] = swapped if swapped is not None else captions[row]
        tokens = self.text(captions)
        ids, mask = tokens["input_ids"], tokens["attention_mask"]
        if "mlm" in self.config.objectives:
            ids, batch["mlm_labels"] = mask_tokens(
                ids, mask, vocab_size=self.vocab_size, mask_token_id=self.mask_token_id,
                special_token_ids=self.special_ids, probability=self.config.mlm_probability, generator=generator)
        batch["input_ids"], batch["attention_mask"] = ids, mask
        return batch

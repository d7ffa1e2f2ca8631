"""Image-text matching: is this caption the image's own, or one sampled from another image?"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from pixelbert.heads import ItmHead
from pixelbert.pretraining.objective import ObjectiveOutput


def sample_itm_pairs(image_index: Tensor, num_images: int, negative_ratio: float = 0.5,
                     generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """Whose caption each image is shown with: ``(caption_image [B], labels [B])``.

    ``image_index`` [B] are the batch's images (indices into a collection of ``num_images``). Each row becomes
    a mismatched pair with probability ``negative_ratio``: its caption then comes from a uniformly drawn
    *other* image of the collection (never its own). ``labels`` is 1 for matched rows, 0 for mismatched ones.
    """
    if num_images < 2 and negative_ratio > 0:
        raise ValueError("ITM needs at least two images to sample a mismatched caption")
    batch = image_index.shape[0]
    negative = torch.rand(batch, generator=generator) < negative_ratio
    other = torch.randint(max(num_images - 1, 1), (batch,), generator=generator)
    other = other + (other >= image_index.cpu()).long()  # skip the image itself: uniform over the others
    caption_image = torch.where(negative, other, image_index.cpu())
    return caption_image.to(image_index.device), (~negative).long().to(image_index.device)


# The chromatic basic colour terms (Berlin & Kay): words a caption commits to that a swap makes false. The
# achromatic ones (black, white, gray) name backgrounds and lighting as often as objects, so swapping them in or
# out would make phrases no positive caption has ("a gray square" here), a shortcut that needs no image.
COLOUR_WORDS: frozenset[str] = frozenset(("red", "green", "yellow", "blue", "brown", "orange", "pink", "purple"))
_WORD = re.compile(r"[A-Za-z]+")


def swap_vocabulary(captions: Iterable[str], words: Collection[str] = COLOUR_WORDS) -> frozenset[str]:
    """The ``words`` that occur in ``captions`` (lower case): the replacements a swap may use, so a swapped
    caption never contains a word the positives never do (a text-only shortcut)."""
    return frozenset(w for c in captions for w in (m.lower() for m in _WORD.findall(c)) if w in words)


def swap_word_negative(captions: Sequence[str], vocabulary: Collection[str],
                       generator: torch.Generator | None = None) -> str | None:
    """A hard ITM negative: one of an image's ``captions`` with one ``vocabulary`` word (a colour) replaced by a
    vocabulary word that none of its captions uses, so the result is false of the image while every other word
    still fits it (the word-swap negatives of NegCLIP and SVLC). None when no caption names a vocabulary word or
    every vocabulary word is named. Case of the first letter is kept."""
    named = {w.lower() for c in captions for w in _WORD.findall(c)} & set(vocabulary)
    absent = sorted(set(vocabulary) - named)
    candidates = [c for c in captions if any(w.lower() in named for w in _WORD.findall(c))]
    if not candidates or not absent:
        return None

    def pick(n: int) -> int:
        return int(torch.randint(n, (1,), generator=generator))

    caption = candidates[pick(len(candidates))]
    spans = [m for m in _WORD.finditer(caption) if m.group().lower() in named]
    span = spans[pick(len(spans))]
    new = absent[pick(len(absent))]
    new = new.capitalize() if span.group()[0].isupper() else new
    return caption[:span.start()] + new + caption[span.end():]


def itm_loss(head: ItmHead, pooled: Tensor, labels: Tensor) -> ObjectiveOutput:
    """Cross-entropy of the match / no-match logits on pooled [CLS] [B, H]; labels [B] (1 = match)."""
    logits = head(pooled).float()
    loss = F.cross_entropy(logits, labels)
    return ObjectiveOutput(loss=loss, correct=int((logits.argmax(-1) == labels).sum()), count=int(labels.numel()))

"""Image-text matching: is this caption the image's own, or one sampled from another image?"""

from __future__ import annotations

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


def itm_loss(head: ItmHead, pooled: Tensor, labels: Tensor) -> ObjectiveOutput:
    """Cross-entropy of the match / no-match logits on pooled [CLS] [B, H]; labels [B] (1 = match)."""
    logits = head(pooled).float()
    loss = F.cross_entropy(logits, labels)
    return ObjectiveOutput(loss=loss, correct=int((logits.argmax(-1) == labels).sum()), count=int(labels.numel()))

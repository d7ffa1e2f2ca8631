"""All chosen pre-training objectives from one forward pass over a batch of (image, caption) rows.

A batch row is an image with a caption that is its own (ITM label 1) or another image's (label 0). The text is
MLM-masked and the image MVM-masked in *every* row, so the presence of masks tells ITM nothing; MLM and MVM are
scored only on matched rows, so they are conditioned on the right image / caption (as in UNITER).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from pixelbert.pretraining.heads import PretrainingHeads
from pixelbert.pretraining.itm import itm_loss
from pixelbert.pretraining.mlm import mlm_loss
from pixelbert.pretraining.objective import IGNORE_INDEX, ObjectiveOutput
from pixelbert.soho.mvm import mvm_loss


def pretraining_step(model: nn.Module, heads: PretrainingHeads, batch: dict[str, Any]
                     ) -> tuple[dict[str, ObjectiveOutput], Any]:
    """Outputs per objective (keys: the heads present), and the visual tokens (for dictionary statistics).

    batch: ``images`` [B, 3, H, W] (+ ``image_sizes`` [B, 2] when padded), ``input_ids`` / ``attention_mask`` [B, T] (already MLM-masked when MLM is
    on), ``mlm_labels`` [B, T] (MLM only), ``itm_labels`` [B] (ITM only; absent = every row matched).
    """
    visual = model.encode_images(batch["images"], batch.get("image_sizes"))
    out = model.fuse(batch["input_ids"], batch["attention_mask"], visual)
    batch_size = batch["input_ids"].shape[0]
    itm_labels = batch.get("itm_labels")
    matched = itm_labels == 1 if itm_labels is not None else torch.ones(batch_size, dtype=torch.bool,
                                                                          device=out.pooled.device)
    results: dict[str, ObjectiveOutput] = {}
    if heads.mlm is not None:
        labels = batch["mlm_labels"].masked_fill(~matched[:, None], IGNORE_INDEX)
        results["mlm"] = mlm_loss(heads.mlm, out.sequence[:, :out.text_length], labels)
    if heads.itm is not None:
        if itm_labels is None:
            raise ValueError("ITM needs itm_labels in the batch")
        results["itm"] = itm_loss(heads.itm, out.pooled, itm_labels)
    if heads.use_mvm:
        dictionary = getattr(getattr(model, "visual_encoder", None), "dictionary", None)
        if visual.codes is None or visual.masked is None or dictionary is None:
            raise ValueError("MVM needs a visual encoder with a visual dictionary and MVM masking switched on")
        masked = visual.masked & matched[:, None] & visual.mask
        results["mvm"] = mvm_loss(heads.mvm, out.sequence[:, out.text_length:], visual.codes, masked,
                                  dictionary.embed)
    return results, visual

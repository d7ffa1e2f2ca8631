"""What ``bench`` measures for one model: the model, its task head and real batches, built as ``run`` builds them.

The model comes from the assembly ``run`` uses (harness/assembly.py: the recipe's ``prepare`` hook, so the
region model gets the detector ``run`` would use) and the inputs from the task's own data: inference batches from
the spec's val split (test if there is no val), training batches from ``collate_train`` on the train split.

The region model is built with ``feature_cache=False``: no feature cache is attached, so every timed forward runs
the detector and RoI pooling live. Its ``live_images`` counter is checked after timing to prove it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from harness.assembly import (
    Data,
    ModelRequest,
    assemble,
    parameter_count,
    require_splits,
    resolve_setup,
    restore,
)
from harness.batches import ImageTensors, TextBatcher, to_device
from harness.checkpoints import read_checkpoint_meta
from harness.errors import VlbenchError
from harness.models import PrepareContext, trainable_cnn
from harness.runtime import Runtime
from harness.tasks import TASKS
from harness.tasks.base import Task
from harness.training.config import TrainConfig
from harness.training.optim import build_optimizers
from pixelbert.model import VisionLanguageModel
from pixelbert.tokenizer import load_tokenizer
from pixelbert.visual import VisualTokens


@dataclass
class Inference:
    """One inference batch split at the visual encoder: ``encode()`` gives the visual tokens of ``images``,
    ``fuse_head(tokens)`` runs text embeddings + cross-modal transformer + task head on them."""

    samples: int
    """Task examples in the batch (VQA questions, NLVR2 pairs, retrieval image-caption pairs)."""
    images: Tensor
    encode: Callable[[], VisualTokens]
    fuse_head: Callable[[VisualTokens], Tensor]

    def end_to_end(self) -> Tensor:
        return self.fuse_head(self.encode())


@dataclass
class Subject:
    name: str
    task: Task
    model: VisionLanguageModel
    head: nn.Module
    runtime: Runtime
    train_config: TrainConfig
    inference: Inference
    train_step: Callable[[], Tensor]
    """One real optimizer step of the task's training loss on a pre-collated train batch (returns the loss)."""
    train_samples: int
    visual_record: dict[str, Any] | None = None
    parameters: int = 0
    setup: dict[str, Any] = field(default_factory=dict)

    @property
    def device(self) -> torch.device:
        return self.runtime.device

    @property
    def encoder_name(self) -> str:
        return self.model.visual_encoder.cost_name


def _inference_batch(task: Task, model: VisionLanguageModel, head: nn.Module, split: str, size: int,
                     runtime: Runtime, channels_last: bool) -> Inference:
    """The task's own evaluation input for the first ``size`` examples of ``split``, split at the encoder."""
    examples = task.examples(split)
    # Repeat the split to fill the batch when it is smaller (a tiny spec); shapes are what matters.
    chunk = [examples[i % len(examples)] for i in range(size)]
    paths, texts = task.inference_inputs(chunk)
    inputs = to_device(task.images.inputs(paths), runtime.device)
    images, image_sizes = inputs["images"], inputs.get("image_sizes")
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    text = {k: v.to(runtime.device) for k, v in task.text(texts).items()}

    def encode() -> VisualTokens:
        with runtime.autocast():
            return model.encode_images(images, image_sizes)

    def fuse_head(visual: VisualTokens) -> Tensor:
        with runtime.autocast():
            pooled = model.fuse(text["input_ids"], text["attention_mask"], visual).pooled
            return task.inference_logits(head, pooled, size)

    return Inference(samples=size, images=images, encode=encode, fuse_head=fuse_head)


def _train_step(task: Task, model: nn.Module, head: nn.Module, config: TrainConfig, runtime: Runtime,
                size: int) -> Callable[[], Tensor]:
    """An optimizer step exactly as harness.training.loop does it, on one real, pre-collated train batch
    (data loading is measured separately, in the harness-overhead run)."""
    n = min(size, task.train_size())
    batch = to_device(task.collate_train(list(range(n))), runtime.device)
    optimizers = build_optimizers({"model": model, "head": head}, trainable_cnn(model), config)  # type: ignore[arg-type]
    params = [p for group in (model.parameters(), head.parameters()) for p in group if p.requires_grad]

    def step() -> Tensor:
        model.train()
        head.train()
        with runtime.autocast():
            loss = task.training_loss(model, head, batch)
        loss.backward()
        if config.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
        for opt in optimizers:
            opt.step()
            opt.zero_grad(set_to_none=True)
        return loss.detach()

    return step


def build_subject(request: ModelRequest, task_name: str, data: Data, runtime: Runtime, *, batch_size: int,
                  train_config: TrainConfig, checkpoint: Path | None = None, channels_last: bool = False,
                  compile_model: bool = False, progress: bool = True) -> Subject:
    """Model + head + batches for ``request`` on ``task_name``, assembled exactly as ``run`` assembles them;
    ``checkpoint`` loads trained weights (its model and task must match). Weights do not change the cost of a
    pixel model; for a region model they decide how many boxes survive, so a trained detector is always used."""
    spec = data.spec
    require_splits(spec, ("train",), "bench (for the training step)")
    split = "val" if "val" in spec.splits else "test" if "test" in spec.splits else "train"
    setup = resolve_setup(request)
    task: Task = TASKS.get(task_name)(spec, ImageTensors.for_visual(setup.visual),
                                      TextBatcher(load_tokenizer(), train_config.max_text_len), train_config)
    task.prepare_training()
    head = task.build_head(setup.transformer.hidden_size)
    if checkpoint is not None:
        meta = read_checkpoint_meta(checkpoint)
        if meta.get("model") != request.name or meta.get("task") != task_name:
            raise VlbenchError(f"{checkpoint}: a {meta.get('model')!r}/{meta.get('task')!r} checkpoint, not "
                               f"{request.name}/{task_name}")
    # No feature cache: the region model's detector and RoI pooling run live in every timed call.
    assembled = assemble(setup, runtime, channels_last=channels_last,
                         load=None if checkpoint is None else lambda m: restore(m, head, checkpoint),
                         # train too: the timed training step and overhead run show train images (imported region
                         # features are attached for both; a detector needs neither).
                         context=PrepareContext(spec=spec, task=task, images=task.images,
                                                splits=list(dict.fromkeys(["train", split])),
                                                options=request.given_options(), progress=progress,
                                                detector_boxes=data.detector_boxes, feature_cache=False))
    model = assembled.model
    head.to(runtime.device)
    if compile_model:
        _compile(model)
    model.eval()
    head.eval()
    inference = _inference_batch(task, model, head, split, batch_size, runtime, channels_last)
    train_step = _train_step(task, model, head, train_config, runtime, batch_size)
    return Subject(name=request.name, task=task, model=model, head=head, runtime=runtime, train_config=train_config,
                   inference=inference, train_step=train_step, train_samples=min(batch_size, task.train_size()),
                   visual_record=assembled.visual_record, parameters=parameter_count(model, head),
                   setup={"preset": request.preset, "split": split, "model": assembled.setup.to_dict()})


def _compile(model: VisionLanguageModel) -> None:
    """``torch.compile`` the CNN/detector-free parts that are shape-stable: the pixel backbone and transformer
    layers. The detector's data-dependent box counts would recompile per batch, so it is left eager."""
    encoder = model.visual_encoder
    try:
        if hasattr(encoder, "backbone"):
            encoder.backbone = torch.compile(encoder.backbone)  # type: ignore[assignment]
        model.transformer.layers = nn.ModuleList(torch.compile(layer) for layer in model.transformer.layers)  # type: ignore[misc]
    except Exception as exc:  # noqa: BLE001 - any backend failure is one user-facing line
        raise VlbenchError(f"--compile failed: {type(exc).__name__}: {str(exc).splitlines()[0]}") from None

"""``pretrain`` as a function: build the model and heads, pre-train, write the checkpoint and run.json.

The checkpoint holds the model under ``model.`` (exactly what ``vlbench run --init`` loads) and the pre-training
heads under ``pretrain.``; its header carries the model config, so ``run --init`` rebuilds the same shape.
Under torchrun every rank runs this; rank 0 alone writes run.json, the checkpoint and the resume point.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from harness import distributed
from harness.batches import ImageTensors, TextBatcher, text_issues
from harness.checkpoints import save_checkpoint
from harness.data.spec import load_spec
from harness.errors import VlbenchError
from harness.experiment import prepare_run_dir, resolve_device
from harness.models import (
    MODELS,
    PrepareContext,
    build_model,
    load_pretrained_parts,
    model_setup,
    trainable_cnn,
)
from harness.pretraining.config import PRETRAIN_PRESETS, PretrainConfig
from harness.pretraining.data import CaptionPairs
from harness.pretraining.loop import pretrain
from harness.records.run_record import build_run_record, write_run_record
from harness.training.precision import precision_name, use_precision
from harness.training.resume import ResumeFile
from harness.training.seeding import seed_everything
from harness.world.cache import default_world
from pixelbert.pixel_encoder import PixelEncoder
from pixelbert.pretraining.heads import PretrainingHeads
from pixelbert.soho.encoder import SohoEncoder
from pixelbert.tokenizer import load_tokenizer
from pixelbert.visual import NoVisualEncoder

CHECKPOINT_NAME = "checkpoint.safetensors"


@dataclass
class PretrainOptions:
    model: str
    run_dir: Path
    data: Path | None = None
    preset: str = "tiny"
    seed: int = 0
    dictionary_size: int | None = None
    text_init: Path | None = None
    text_init_layers: int | None = None
    cnn_init: Path | None = None
    detector: Path | None = None
    """region/grid: a trained detector; without it the one `run` would use is found or trained."""
    device: str = "auto"
    precision: str = "auto"
    """auto (bf16 autocast on CUDA and on CPUs with native bf16, else fp32), fp32 or bf16."""
    overwrite: bool = False
    progress: bool = True
    limit: int | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    resume: bool = False
    """Continue an interrupted pre-training from ``run_dir/resume.safetensors`` (from its last finished epoch)."""


def resolve_pixel_sample(encoder: nn.Module, config: PretrainConfig, image_size: int) -> int | None:
    """Pixel tokens to keep per image in pre-training (None = all): ``--pixel-sample``, or the paper's share of
    this encoder's grid; an explicit request on a model without pixel tokens (region features) is an error."""
    if config.pixel_sample == 0:
        return None
    if not isinstance(encoder, PixelEncoder):
        if config.pixel_sample is not None:
            raise VlbenchError(f"--pixel-sample: this model's visual tokens ({type(encoder).__name__}) are not "
                               "pixels; random pixel sampling applies to pixel models only")
        return None
    if config.pixel_sample is not None:
        return config.pixel_sample
    was_training = encoder.training
    encoder.eval()
    with torch.no_grad():
        cells = encoder(torch.zeros(1, 3, image_size, image_size)).num_tokens
    encoder.train(was_training)
    return max(1, round(cells * config.pixel_sample_fraction))


def _check_objectives(encoder: nn.Module, config: PretrainConfig, model: str) -> None:
    if "mvm" in config.objectives and not isinstance(encoder, SohoEncoder):
        raise VlbenchError(f"--objectives mvm needs a visual dictionary (--model soho); {model!r} has none")
    if isinstance(encoder, NoVisualEncoder) and "itm" in config.objectives:
        raise VlbenchError(f"{model!r} has no visual tokens, so image-text matching is meaningless; use mlm only")


def run_pretraining(options: PretrainOptions) -> dict[str, Any]:
    """Pre-train ``options.model`` on image-caption pairs; writes DIR/checkpoint.safetensors and DIR/run.json."""
    if options.preset not in PRETRAIN_PRESETS:
        raise VlbenchError(f"unknown preset {options.preset!r} (known: {', '.join(PRETRAIN_PRESETS)})")
    config = PRETRAIN_PRESETS[options.preset].with_overrides(**options.overrides)
    device = resolve_device(options.device)
    use_precision(options.precision, device)
    distributed.setup(device)
    spec = distributed.main_first(lambda: load_spec(
        options.data or default_world(progress=options.progress) / "captions.yaml"))
    for split in ("train", "val"):
        if split not in spec.splits:
            raise VlbenchError(f"{spec.path}: pre-training needs a {split!r} split (has: {', '.join(spec.splits)})")
    setup = model_setup(options.model, options.preset, text_init=options.text_init,
                        text_init_layers=options.text_init_layers, cnn_init=options.cnn_init)
    if options.dictionary_size is not None:
        if setup.dictionary is None:
            raise VlbenchError(f"--dictionary-size: {options.model!r} has no visual dictionary (use --model soho)")
        setup = replace(setup, config=replace(setup.config, dictionary=replace(setup.dictionary,
                                                                               size=options.dictionary_size)))
    prepare_run_dir(options.run_dir, options.overwrite, options.resume)

    generator = seed_everything(options.seed)
    tokenizer = load_tokenizer()
    data = CaptionPairs(spec, ImageTensors(setup.visual.image_size), TextBatcher(tokenizer, config.max_text_len),
                        config, vocab_size=setup.transformer.vocab_size, limit=options.limit)
    splits = ["train", "val"]
    data_record: dict[str, Any] = {"spec": str(spec.path), "name": spec.name, "task": spec.task, "splits": {}}
    for split in splits:
        texts = [c for image in data.examples(split) for c in image.captions]
        data_record["splits"][split] = {"fingerprint": data.fingerprint(split), **data.summary(split),
                                        "text": text_issues(tokenizer, texts, config.max_text_len)}

    # Model-specific work before training, exactly as `run` does it (region: detector + feature cache). Under
    # torchrun rank 0 trains or finds the detector first; the feature extraction in finish() is sharded.
    prepared = distributed.main_first(lambda: MODELS.get(options.model)().prepare(setup, PrepareContext(
        spec=spec, task=data, images=data.images, splits=splits, progress=options.progress, seed=options.seed,
        options={"detector": options.detector, "detector_data": None, "embedded_world": options.data is None})))
    if prepared is not None:
        setup = prepared.setup
    model = build_model(setup)
    load_pretrained_parts(model, setup)
    visual_record = prepared.finish(model) if prepared is not None else None
    encoder = model.visual_encoder
    _check_objectives(encoder, config, options.model)
    pixel_sample = resolve_pixel_sample(encoder, config, setup.visual.image_size)
    # Sampling and masking switches live on the encoder object, never in the saved config: a checkpoint
    # fine-tuned with `run --init` sees every pixel and no MVM masks.
    if pixel_sample is not None:
        encoder.pixel_sample = pixel_sample
        encoder.sample_generator = torch.Generator().manual_seed(options.seed + 1)
    if isinstance(encoder, SohoEncoder):
        encoder.dictionary.generator = torch.Generator().manual_seed(options.seed + 2)
        if "mvm" in config.objectives:
            encoder.mvm_probability = config.mvm_probability
            encoder.mvm_generator = torch.Generator().manual_seed(options.seed + 3)
    heads = PretrainingHeads(model, config.objectives,
                             setup.dictionary.size if setup.dictionary is not None else None)
    model.to(device)
    heads.to(device)

    checkpoint_path = options.run_dir / CHECKPOINT_NAME
    meta_base = {"model": options.model, "task": "pretrain", "model_config": setup.to_dict(),
                 "pretrain_config": config.to_dict(), "pixel_sample": pixel_sample, "seed": options.seed,
                 "data_fingerprints": {s: data_record["splits"][s]["fingerprint"] for s in splits}}

    def on_epoch(epoch: int, record: dict[str, Any]) -> None:
        # Every epoch replaces the checkpoint, so a crash later keeps the last complete epoch.
        if not distributed.is_main():
            return
        state = {f"model.{k}": v for k, v in model.state_dict().items()}
        state.update({f"pretrain.{k}": v for k, v in heads.own_state_dict().items()})
        save_checkpoint(checkpoint_path, state, {**meta_base, "epoch": epoch, "val": record["val"]})

    run_key = {**meta_base, "init": None}
    if distributed.world_size() > 1:
        # Data order and per-rank sampling depend on the process count: resume with the same one. (Absent for
        # one process, so resume points written before torchrun support stay valid.)
        run_key["world_size"] = distributed.world_size()
    resume = ResumeFile(options.run_dir, run_key, every=0)
    if options.resume:
        resume.check()
    elif distributed.is_main():
        resume.remove()  # never continue a stale point of an earlier run in this directory
    result = pretrain(model, heads, data, config, device, generator, options.seed, cnn=trainable_cnn(model),
                      on_epoch=on_epoch, progress=options.progress, resume=resume, resuming=options.resume)
    # Leave the encoder as fine-tuning expects it (matters to callers that keep using this model object).
    if isinstance(encoder, PixelEncoder):
        encoder.pixel_sample = setup.visual.pixel_sample
    if isinstance(encoder, SohoEncoder):
        encoder.mvm_probability = None
    final = result.history[-1]
    train_record = {**result.to_dict(), "resumed": options.resume, "parameters": sum(p.numel() for p in model.parameters()),
                    "head_parameters": sum(p.numel() for p in heads.parameters()) - (
                        heads.mlm.decoder.weight.numel() if heads.mlm is not None else 0)}
    record = build_run_record(
        kind="pretrain", model=options.model, task="pretrain", seed=options.seed,
        config={"preset": options.preset, "model": setup.to_dict(), "pretrain": config.to_dict(),
                "objectives": list(config.objectives), "pixel_sample": pixel_sample, "data": str(spec.path),
                "limit": options.limit, "device": str(device), "precision": precision_name(device),
                "world_size": distributed.world_size(),
                "effective_batch_size": config.batch_size * config.grad_accum * distributed.world_size()},
        data=data_record, metrics={"val": final["val"]}, train=train_record, evaluation={},
        files={"checkpoint": [CHECKPOINT_NAME]}, device=device,
    )
    if visual_record is not None:
        record["visual_encoder"] = visual_record
    if distributed.is_main():
        write_run_record(options.run_dir, record)
        resume.remove()
    return record

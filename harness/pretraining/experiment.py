"""``pretrain`` as a function: build the model and heads, pre-train, write the checkpoint and run.json.

The checkpoint holds the model under ``model.`` (exactly what ``vlbench run --init`` loads) and the pre-training
heads under ``pretrain.``; its header carries the model config, so ``run --init`` rebuilds the same shape.
Under torchrun every rank runs this; rank 0 alone writes run.json, the checkpoint and the resume point.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from harness import distributed
from harness.assembly import (
    ModelRequest,
    assemble,
    open_data,
    parameter_count,
    prefixed,
    require_splits,
    resolve_setup,
    run_directory,
)
from harness.batches import ImageTensors, TextBatcher, text_issues
from harness.checkpoints import save_checkpoint
from harness.errors import VlbenchError
from harness.models import PrepareContext, models_with, recipe, trainable_cnn
from harness.pretraining.config import PRETRAIN_PRESETS, PretrainConfig
from harness.pretraining.data import CaptionPairs
from harness.pretraining.loop import pretrain
from harness.records.run_record import build_run_record, write_run_record
from harness.runtime import Runtime
from harness.training.resume import ResumeFile
from harness.training.seeding import seed_everything
from pixelbert.config import VisualConfig
from pixelbert.pretraining.heads import PretrainingHeads
from pixelbert.tokenizer import load_tokenizer

CHECKPOINT_NAME = "checkpoint.safetensors"


@dataclass
class PretrainOptions:
    model: str
    run_dir: Path
    data: Path | None = None
    preset: str = "tiny"
    seed: int = 0
    dictionary_size: int | None = None
    dictionary_momentum: float | None = None
    dictionary_schedule: str | None = None
    text_init: Path | None = None
    text_init_layers: int | None = None
    cnn_init: Path | None = None
    detector: Path | None = None
    """region/grid: a trained detector; without it the one `run` would use is found or trained."""
    image_size: int | None = None
    max_size: int | None = None
    """Image geometry (``--image-size`` / ``--max-size``); None keeps the preset's."""
    device: str = "auto"
    precision: str = "auto"
    """auto (bf16 autocast on CUDA and on CPUs with native bf16, else fp32), fp32 or bf16."""
    overwrite: bool = False
    progress: bool = True
    limit: int | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    resume: bool = False
    """Continue an interrupted pre-training from ``run_dir/resume.safetensors`` (from its last finished epoch)."""


def resolve_pixel_sample(model: str, encoder: nn.Module, config: PretrainConfig, visual: VisualConfig) -> int | None:
    """Visual tokens to keep per image in pre-training (None = all): ``--pixel-sample``, or the paper's share of
    this encoder's tokens at the geometry's largest image (short side x long-side cap: Pixel-BERT's 800 x 1333
    gives its 273 tokens, of which it keeps 100); an explicit request on a model whose tokens are not sampled
    (regions) is an error."""
    if config.pixel_sample == 0 or not recipe(model).capabilities.token_sampling:
        return None
    if config.pixel_sample is not None:
        return config.pixel_sample
    was_training = encoder.training
    encoder.eval()
    with torch.no_grad():
        long_side = visual.max_size if visual.keeps_aspect else visual.image_size
        cells = encoder(torch.zeros(1, 3, visual.image_size, long_side)).num_tokens
    encoder.train(was_training)
    return max(1, round(cells * config.pixel_sample_fraction))


def _check_objectives(config: PretrainConfig, model: str) -> None:
    capabilities = recipe(model).capabilities
    if "mvm" in config.objectives and not capabilities.visual_dictionary:
        takers = ", ".join(models_with(lambda r: r.capabilities.visual_dictionary))
        raise VlbenchError(f"--objectives mvm needs a visual dictionary (--model {takers}); {model!r} has none")
    if not capabilities.visual_tokens and "itm" in config.objectives:
        raise VlbenchError(f"{model!r} has no visual tokens, so image-text matching is meaningless; use mlm only")
    if config.pixel_sample not in (None, 0) and not capabilities.token_sampling:
        takers = ", ".join(models_with(lambda r: r.capabilities.token_sampling))
        raise VlbenchError(f"--pixel-sample: {model!r}'s visual tokens are not pixels or patches; random token "
                           f"sampling applies to --model {takers}")


def _switch_on(model: str, encoder: nn.Module, config: PretrainConfig, pixel_sample: int | None, seed: int) -> None:
    """Pre-training's switches on the encoder: token sampling, the dictionary's and MVM's generators. They live on
    the encoder object, never in the saved config: a checkpoint fine-tuned with `run --init` sees every token and
    no MVM masks."""
    if pixel_sample is not None:
        encoder.pixel_sample = pixel_sample
        encoder.sample_generator = torch.Generator().manual_seed(seed + 1)
    if recipe(model).capabilities.visual_dictionary:
        encoder.use_dictionary = True  # pre-training always quantises (fine-tuning may bypass the dictionary)
        encoder.dictionary.generator = torch.Generator().manual_seed(seed + 2)
        if "mvm" in config.objectives:
            encoder.mvm_probability = config.mvm_probability
            encoder.mvm_generator = torch.Generator().manual_seed(seed + 3)


def _switch_off(model: str, encoder: nn.Module, pixel_sample: int | None) -> None:
    """Leave the encoder as fine-tuning expects it (matters to callers that keep using this model object)."""
    capabilities = recipe(model).capabilities
    if capabilities.token_sampling:
        encoder.pixel_sample = pixel_sample
    if capabilities.visual_dictionary:
        encoder.mvm_probability = None
        encoder.use_dictionary = encoder.fine_tune_dictionary


def run_pretraining(options: PretrainOptions) -> dict[str, Any]:
    """Pre-train ``options.model`` on image-caption pairs; writes DIR/checkpoint.safetensors and DIR/run.json."""
    if options.preset not in PRETRAIN_PRESETS:
        raise VlbenchError(f"unknown preset {options.preset!r} (known: {', '.join(PRETRAIN_PRESETS)})")
    config = PRETRAIN_PRESETS[options.preset].with_overrides(**options.overrides)
    runtime = Runtime.start(options.device, options.precision)
    with run_directory(options.run_dir, options.overwrite, options.resume):  # before any slow work: fail fast
        request = ModelRequest(options.model, options.preset, text_init=options.text_init,
                               text_init_layers=options.text_init_layers, cnn_init=options.cnn_init,
                               options={"detector": options.detector, "dictionary_size": options.dictionary_size,
                                        "dictionary_momentum": options.dictionary_momentum,
                                        "dictionary_schedule": options.dictionary_schedule},
                               image_size=options.image_size, max_size=options.max_size)
        setup = resolve_setup(request)
        _check_objectives(config, options.model)
        data_source = open_data(options.data, "captions", options.progress)
        spec = data_source.spec
        require_splits(spec, ("train", "val"), "pre-training")

        generator = seed_everything(options.seed)
        tokenizer = load_tokenizer()
        data = CaptionPairs(spec, ImageTensors.for_visual(setup.visual, processes=1 + config.num_workers),
                            TextBatcher(tokenizer, config.max_text_len),
                            config, vocab_size=setup.transformer.vocab_size, limit=options.limit)
        splits = ["train", "val"]
        data_record: dict[str, Any] = {"spec": str(spec.path), "name": spec.name, "task": spec.task, "splits": {}}
        for split in splits:
            texts = [c for image in data.examples(split) for c in image.captions]
            data_record["splits"][split] = {"fingerprint": data.fingerprint(split), **data.summary(split),
                                            "text": text_issues(tokenizer, texts, config.max_text_len)}

        # Exactly the assembly `run` uses (region: detector + feature cache, extracted on the run's device).
        assembled = assemble(setup, runtime, context=PrepareContext(
            spec=spec, task=data, images=data.images, splits=splits, options=request.given_options(),
            progress=options.progress, seed=options.seed, detector_boxes=data_source.detector_boxes))
        setup, model = assembled.setup, assembled.model
        pixel_sample = resolve_pixel_sample(options.model, model.visual_encoder, config, setup.visual)
        _switch_on(options.model, model.visual_encoder, config, pixel_sample, options.seed)
        heads = PretrainingHeads(model, config.objectives,
                                 setup.dictionary.size if setup.dictionary is not None else None, config.mvm_head)
        heads.to(runtime.device)

        checkpoint_path = options.run_dir / CHECKPOINT_NAME
        meta_base = {"model": options.model, "task": "pretrain", "model_config": setup.to_dict(),
                     "pretrain_config": config.to_dict(), "pixel_sample": pixel_sample, "seed": options.seed,
                     "data_fingerprints": {s: data_record["splits"][s]["fingerprint"] for s in splits}}

        def on_epoch(epoch: int, record: dict[str, Any]) -> None:
            # Every epoch replaces the checkpoint, so a crash later keeps the last complete epoch.
            if distributed.is_main():
                state = prefixed({"model": model.state_dict(), "pretrain": heads.own_state_dict()})
                save_checkpoint(checkpoint_path, state, {**meta_base, "epoch": epoch, "val": record["val"]})

        run_key = {**meta_base, "init": None}
        if runtime.world_size > 1:
            # Data order and per-rank sampling depend on the process count: resume with the same one. (Absent for
            # one process, so resume points written before torchrun support stay valid.)
            run_key["world_size"] = runtime.world_size
        resume = ResumeFile(options.run_dir, run_key, every=0)
        if options.resume:
            resume.check()
        elif distributed.is_main():
            resume.remove()  # never continue a stale point of an earlier run in this directory
        result = pretrain(model, heads, data, config, runtime, generator, options.seed, cnn=trainable_cnn(model),
                          on_epoch=on_epoch, progress=options.progress, resume=resume, resuming=options.resume)
        _switch_off(options.model, model.visual_encoder, setup.visual.pixel_sample)
        final = result.history[-1]
        train_record = {**result.to_dict(), "resumed": options.resume, "parameters": parameter_count(model),
                        "head_parameters": parameter_count(heads) - (
                            heads.mlm.decoder.weight.numel() if heads.mlm is not None else 0)}
        record = build_run_record(
            kind="pretrain", model=options.model, task="pretrain", seed=options.seed,
            config={"preset": options.preset, "model": setup.to_dict(), "pretrain": config.to_dict(),
                    "objectives": list(config.objectives), "pixel_sample": pixel_sample, "data": str(spec.path),
                    "limit": options.limit, **runtime.record(),
                    "effective_batch_size": config.batch_size * config.grad_accum * runtime.world_size},
            data=data_record, metrics={"val": final["val"]}, train=train_record, evaluation={},
            files={"checkpoint": [CHECKPOINT_NAME]}, device=runtime.device,
        )
        if assembled.visual_record is not None:
            record["visual_encoder"] = assembled.visual_record
        if distributed.is_main():
            write_run_record(options.run_dir, record)
            resume.remove()
        return record

"""``run`` and ``eval`` as functions: build the task and model, train, select, predict, record.

The CLI only parses options into :class:`RunOptions` and calls :func:`run_experiment`; tests call it
directly. Every model goes through the same code with the same :class:`TrainConfig`, which is what makes
a comparison between visual encoders fair.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn
from tqdm import tqdm

from harness import distributed
from harness.assembly import (
    ModelRequest,
    assemble,
    load_init,
    load_init_head,
    open_data,
    parameter_count,
    prefixed,
    require_splits,
    resolve_setup,
    restore,
    run_directory,
)
from harness.batches import ImageTensors, TextBatcher, text_issues
from harness.checkpoints import read_checkpoint_meta, save_checkpoint
from harness.data.spec import DatasetSpec
from harness.errors import VlbenchError
from harness.fileio import write_json
from harness.models import ModelSetup, PrepareContext, recipe, trainable_cnn, with_geometry
from harness.records.run_record import build_run_record, write_run_record
from harness.runtime import Runtime
from harness.tasks import TASKS
from harness.tasks.base import Evaluation, Task
from harness.tasks.rerank import Rerank
from harness.training.config import TrainConfig, train_preset
from harness.training.loop import train
from harness.training.resume import ResumeFile
from harness.training.seeding import seed_everything
from pixelbert.tokenizer import load_tokenizer

CHECKPOINT_NAME = "checkpoint.safetensors"
EVAL_SPLITS = ("val", "test")


@dataclass
class RunOptions:
    model: str
    task: str
    run_dir: Path
    data: Path | None = None
    preset: str = "tiny"
    seed: int = 0
    init: Path | None = None
    text_init: Path | None = None
    text_init_layers: int | None = None
    cnn_init: Path | None = None
    device: str = "auto"
    precision: str = "auto"
    """auto (bf16 autocast on CUDA and on CPUs with native bf16, else fp32), fp32 or bf16."""
    overwrite: bool = False
    progress: bool = True
    limit: int | None = None
    train_overrides: dict[str, Any] = field(default_factory=dict)
    detector: Path | None = None
    """Region/grid models: a trained detector file (else one is trained on the boxes, or found cached)."""
    detector_data: Path | None = None
    """Region/grid models: a spec whose train split has COCO boxes to train the detector on."""
    boxes: str | None = None
    """Region model: ``detector`` (default) or ``gt`` (annotated boxes, the oracle upper bound)."""
    features: Path | None = None
    """Region model: a cache written by ``vlbench features import``; its regions replace the detector's."""
    image_size: int | None = None
    max_size: int | None = None
    """Image geometry (``--image-size`` / ``--max-size``); None keeps the preset's."""
    keep_dictionary: bool | None = None
    """SOHO: keep the visual dictionary at fine-tuning (None: bypass it, as released)."""
    resume: bool = False
    """Continue an interrupted run from ``run_dir/resume.safetensors`` (same options and data required)."""
    pretraining: str = "auto"
    """Where the weights start when ``init`` is not given: ``world`` (the cached world pre-training,
    harness/pretraining/world.py), ``none`` (random), ``auto`` (world on the embedded world, else none)."""
    pretraining_draw: str = "shared"
    """World pre-training: ``shared`` (one checkpoint, seed 0, fine-tuned by every seed) or ``per-seed`` (this
    run's seed pre-trains a checkpoint of its own, so a comparison over seeds covers the pre-training's variance)."""


def _data_record(task: Task, splits: list[str], max_text_len: int) -> dict[str, Any]:
    record: dict[str, Any] = {"spec": str(task.spec.path), "name": task.spec.name, "task": task.spec.task,
                              "splits": {}}
    for split in splits:
        entry = {"fingerprint": task.fingerprint(split), **task.summary(split)}
        for warning in entry.get("warnings", ()) if distributed.is_main() else ():  # also in run.json
            tqdm.write(f"warning: {split}: {warning}", file=sys.stderr)
        entry["text"] = text_issues(task.text.tokenizer, task.texts(split), max_text_len)
        record["splits"][split] = entry
    return record


def _evaluate_splits(task: Task, model: nn.Module, head: nn.Module, splits: list[str], run_dir: Path,
                     runtime: Runtime, progress: bool,
                     done: dict[str, Evaluation] | None = None) -> tuple[dict, dict, dict]:
    """Predict and score ``splits``; ``done`` holds evaluations already made with exactly these weights
    (the selected epoch's validation), which are written as they are instead of computed again."""
    done = done or {}
    metrics: dict[str, Any] = {}
    files: dict[str, list[str]] = {}
    timing: dict[str, float] = {}
    details: dict[str, dict[str, Any]] = {}
    for split in splits:
        start = time.perf_counter()
        evaluation = done[split] if split in done else task.evaluate(model, head, split, runtime, progress=progress)
        timing[split] = round(time.perf_counter() - start, 3)
        files[split] = evaluation.write(run_dir) if distributed.is_main() else []
        if evaluation.per_example and distributed.is_main():
            name = f"per_example_{split}.json"
            write_json(run_dir / name, evaluation.per_example, indent=None)
            files[split].append(name)
        if evaluation.metrics is not None:
            metrics[split] = evaluation.metrics
        for key, value in evaluation.info.items():
            details.setdefault(key, {})[split] = value
    return metrics, files, {"seconds": timing, **details}


def _present(spec: DatasetSpec, splits: tuple[str, ...]) -> list[str]:
    return [s for s in splits if s in spec.splits]


PRETRAINING_CHOICES = ("auto", "world", "none")
DRAW_CHOICES = ("shared", "per-seed")


def _initial_weights(options: RunOptions, world: Path | None,
                     runtime: Runtime) -> tuple[Path | None, dict[str, Any] | None]:
    """The checkpoint the run starts from and, when it is the world pre-training, that stage's record."""
    from harness.pretraining.world import WorldPretraining, supported, world_pretrained

    if options.pretraining not in PRETRAINING_CHOICES:
        raise VlbenchError(f"pretraining must be one of {PRETRAINING_CHOICES}, got {options.pretraining!r}")
    if options.pretraining_draw not in DRAW_CHOICES:
        raise VlbenchError(f"pretraining_draw must be one of {DRAW_CHOICES}, got {options.pretraining_draw!r}")
    if options.init is not None:
        if options.pretraining == "world":
            raise VlbenchError("--init and --pretraining world both say where the weights start; give one")
        return options.init, None
    if options.features is not None and options.pretraining == "world":
        raise VlbenchError("--features covers your images only; the world pre-training needs a detector on the "
                           "world's scenes: use --pretraining none, or --init a checkpoint")
    wanted = options.pretraining == "world" or (options.pretraining == "auto" and world is not None
                                                and supported(options.preset) and options.features is None)
    if not wanted:
        if options.pretraining_draw != "shared":
            raise VlbenchError("--pretraining-draw per-seed needs the world pre-training (this run has none)")
        return None, None
    if world is None:
        raise VlbenchError("--pretraining world needs the embedded world (omit --data)")
    request = WorldPretraining(
        model=options.model, preset=options.preset, world=world, precision=runtime.precision, device=options.device,
        progress=options.progress, per_seed=options.pretraining_draw == "per-seed",
        seed=options.seed if options.pretraining_draw == "per-seed" else 0,
        options={"detector": options.detector, "text_init": options.text_init,
                 "text_init_layers": options.text_init_layers, "cnn_init": options.cnn_init,
                 "image_size": options.image_size, "max_size": options.max_size})
    return world_pretrained(request)


def run_experiment(options: RunOptions) -> dict[str, Any]:
    """Train ``options.model`` on ``options.task``, keep the best validation checkpoint, predict val/test."""
    task_cls = TASKS.get(options.task)
    train_config = train_preset(options.preset, options.task).with_overrides(**options.train_overrides)
    runtime = Runtime.start(options.device, options.precision)
    with run_directory(options.run_dir, options.overwrite, options.resume):  # before any slow work: fail fast
        request = ModelRequest(options.model, options.preset, text_init=options.text_init,
                               text_init_layers=options.text_init_layers, cnn_init=options.cnn_init, init=options.init,
                               options={"detector": options.detector, "detector_data": options.detector_data,
                                        "boxes": options.boxes, "keep_dictionary": options.keep_dictionary,
                                        "features": options.features},
                               image_size=options.image_size, max_size=options.max_size)
        setup = resolve_setup(request)
        if train_config.freeze_cnn and not recipe(options.model).capabilities.trainable_cnn:
            raise VlbenchError(f"--freeze-cnn: {options.model} has no trainable CNN to freeze")
        data = open_data(options.data, options.task, options.progress)
        spec = data.spec
        require_splits(spec, ("train", "val"), "training")
        init, pretraining = _initial_weights(options, data.world, runtime)

        generator = seed_everything(options.seed)
        images = ImageTensors.for_visual(setup.visual, processes=1 + train_config.num_workers)
        task: Task = task_cls(spec, images, TextBatcher(load_tokenizer(), train_config.max_text_len), train_config,
                              limit=options.limit)
        task.prepare_training()
        splits = ["train", *_present(spec, EVAL_SPLITS)]
        data_record = _data_record(task, splits, train_config.max_text_len)

        init_state: dict[str, Any] = {}

        def load(model: nn.Module) -> None:
            if init is not None:
                init_state.update(load_init(model, init))

        assembled = assemble(setup, runtime, load=load, context=PrepareContext(
            spec=spec, task=task, images=images, splits=splits, options=request.given_options(),
            progress=options.progress, seed=options.seed, detector_boxes=data.detector_boxes))
        setup, model = assembled.setup, assembled.model
        if train_config.freeze_cnn:
            model.visual_encoder.freeze_cnn()  # type: ignore[operator]
        head = task.build_head(setup.transformer.hidden_size)
        head_init = load_init_head(head, task, init, init_state) if init is not None else None
        head.to(runtime.device)

        checkpoint_path = options.run_dir / CHECKPOINT_NAME
        meta_base = {"model": options.model, "task": options.task, "model_config": setup.to_dict(),
                     "task_state": task.state(), "train_config": train_config.to_dict(), "seed": options.seed,
                     "data_fingerprints": {s: data_record["splits"][s]["fingerprint"] for s in splits}}

        def on_best(epoch: int, val_metrics: dict[str, Any]) -> None:
            if distributed.is_main():
                state = prefixed({"model": model.state_dict(), "head": head.state_dict()})
                save_checkpoint(checkpoint_path, state, {**meta_base, "epoch": epoch, "val": val_metrics})

        # Everything a resumed run must share with the interrupted one; anything else differing is refused.
        run_key = {k: meta_base[k] for k in ("model", "task", "model_config", "train_config", "seed",
                                              "data_fingerprints")}
        run_key["init"] = _str(init)
        resume = ResumeFile(options.run_dir, run_key, train_config.checkpoint_every)
        if options.resume:
            resume.check()
        elif distributed.is_main():
            resume.remove()  # a stale point from an earlier run in this directory must never be continued
        result = train(model, head, task, train_config, runtime, generator, on_best, cnn=trainable_cnn(model),
                       progress=options.progress, resume=resume, resuming=options.resume)
        if result.best_epoch is None:
            raise VlbenchError("validation produced no metric, so no checkpoint was selected (does val have labels?)")
        distributed.barrier()  # rank 0 has written the selected checkpoint
        restore(model, head, checkpoint_path)
        # The selected epoch's validation was made with the weights just restored: reuse it (on retrieval, scoring
        # every val pair again would cost about as much as an epoch of training).
        done = {"val": result.best_evaluation} if result.best_evaluation is not None else {}
        metrics, files, eval_record = _evaluate_splits(task, model, head, _present(spec, EVAL_SPLITS), options.run_dir,
                                                       runtime, options.progress, done=done)
        eval_record["reused"] = sorted(done)
        files["checkpoint"] = [CHECKPOINT_NAME]
        record = build_run_record(
            kind="run", model=options.model, task=options.task, seed=options.seed,
            config={"preset": options.preset, "model": setup.to_dict(), "train": train_config.to_dict(),
                    # What was asked beyond the task's preset: one model with the same overrides on several
                    # tasks is one configuration, whatever each task's preset budget is.
                    "overrides": {k: v for k, v in sorted(options.train_overrides.items()) if v is not None},
                    "data": str(spec.path), "limit": options.limit,
                    # The world pre-training is named by its cache key (same on every machine), not its path.
                    "init": _str(init) if pretraining is None else None, "head_init": head_init,
                    "pretraining": pretraining["config"] if pretraining is not None else None,
                    **runtime.record(),
                    "effective_batch_size": train_config.batch_size * train_config.grad_accum * runtime.world_size},
            data=data_record, metrics=metrics,
            train={**result.to_dict(), "selected_checkpoint": CHECKPOINT_NAME, "resumed": options.resume,
                   "parameters": parameter_count(model, head)},
            evaluation=eval_record, files=files, device=runtime.device,
        )
        if assembled.visual_record is not None:
            record["visual_encoder"] = assembled.visual_record
        if pretraining is not None:
            record["pretraining"] = pretraining["record"]
        if distributed.is_main():
            write_run_record(options.run_dir, record)
            resume.remove()  # the run is complete; its record and selected checkpoint are what remain
        return record


def evaluate_checkpoint(checkpoint: Path, task_name: str, run_dir: Path, data: Path | None = None,
                        splits: tuple[str, ...] | None = None, device_name: str = "auto", overwrite: bool = False,
                        progress: bool = True, limit: int | None = None, rerank: Rerank | None = None,
                        precision: str = "auto", features: Path | None = None,
                        workers: int | None = None, image_size: int | None = None,
                        max_size: int | None = None) -> dict[str, Any]:
    """Score a saved checkpoint on a dataset without training; writes the same files as ``run``.

    ``rerank`` (retrieval only): score just the top-k candidates of a first-stage score matrix. ``features``:
    the imported region features a region checkpoint trained on them reads (``run --features``). ``workers``:
    DataLoader workers that decode the evaluation batches (default: the checkpoint's training config's).
    ``image_size`` / ``max_size``: the images at another geometry than the checkpoint's (the model keeps its
    own config: only the pixels it is given change)."""
    meta = read_checkpoint_meta(checkpoint)
    if meta.get("task") != task_name:
        raise VlbenchError(f"{checkpoint}: a {meta.get('task')!r} checkpoint cannot be evaluated on task {task_name!r} "
                           "(its head belongs to that task)")
    task_cls = TASKS.get(task_name)
    runtime = Runtime.start(device_name, precision)
    with run_directory(run_dir, overwrite):  # before any slow work (generating the embedded world): fail fast
        spec = open_data(data, task_name, progress).spec
        wanted = list(splits) if splits else _present(spec, EVAL_SPLITS)
        if not wanted:
            raise VlbenchError(f"{spec.path}: no val or test split to evaluate (name one with --split)")
        seed_everything(int(meta.get("seed", 0)))
        setup = ModelSetup.from_dict(meta["model_config"])
        train_config = TrainConfig.from_dict(meta["train_config"])
        if workers is not None:
            train_config = train_config.with_overrides(num_workers=workers)
        pixels = with_geometry(setup.config, image_size, max_size).visual
        task: Task = task_cls(spec, ImageTensors.for_visual(pixels, processes=1 + train_config.num_workers),
                              TextBatcher(load_tokenizer(), train_config.max_text_len), train_config,
                              state=meta.get("task_state"), limit=limit)
        if rerank is not None:
            task.use_rerank(rerank)
        data_record = _data_record(task, wanted, train_config.max_text_len)
        head = task.build_head(setup.transformer.hidden_size)
        # Every weight, the detector's included, comes from the checkpoint: no prepare step; only inputs that
        # live outside it (imported region features) are attached.
        model = assemble(setup, runtime, load=lambda m: restore(m, head, checkpoint)).model
        visual_record = recipe(setup.name).attach_inputs(setup, model, PrepareContext(
            spec=spec, task=task, images=task.images, splits=wanted,
            options={"features": features} if features is not None else {}, progress=progress))
        head.to(runtime.device)
        metrics, files, eval_record = _evaluate_splits(task, model, head, wanted, run_dir, runtime, progress)
        record = build_run_record(
            kind="eval", model=meta["model"], task=task_name, seed=int(meta.get("seed", 0)),
            config={"checkpoint": str(checkpoint), "model": setup.to_dict(), "train": train_config.to_dict(),
                    "data": str(spec.path), "limit": limit, "features": _str(features), **runtime.record(),
                    **({"image_geometry": {"image_size": pixels.image_size, "max_size": pixels.max_size}}
                       if pixels != setup.visual else {})},
            data=data_record, metrics=metrics,
            train={"steps": 0, "wall_seconds": 0.0, "samples_per_second": None, "checkpoint_epoch": meta.get("epoch"),
                   "checkpoint_fingerprints": meta.get("data_fingerprints")},
            evaluation=eval_record, files=files, device=runtime.device,
        )
        if visual_record is not None:
            record["visual_encoder"] = visual_record
        if distributed.is_main():
            write_run_record(run_dir, record)
        return record


def _str(path: Path | None) -> str | None:
    return None if path is None else str(path)

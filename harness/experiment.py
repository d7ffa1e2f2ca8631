"""``run`` and ``eval`` as functions: build the task and model, train, select, predict, record.

The CLI only parses options into :class:`RunOptions` and calls :func:`run_experiment`; tests call it
directly. Every model goes through the same code with the same :class:`TrainConfig`, which is what makes
a comparison between visual encoders fair.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from harness import distributed
from harness.batches import ImageTensors, TextBatcher, text_issues
from harness.checkpoints import load_checkpoint, read_checkpoint_meta, save_checkpoint
from harness.data.spec import DatasetSpec, load_spec
from harness.errors import VlbenchError
from harness.fileio import write_json
from harness.models import (
    MODELS,
    ModelSetup,
    PrepareContext,
    build_model,
    load_pretrained_parts,
    model_setup,
    trainable_cnn,
)
from harness.records.run_record import build_run_record, write_run_record
from harness.tasks import TASKS, load_all
from harness.tasks.base import Evaluation, Task
from harness.tasks.rerank import Rerank
from harness.tasks.retrieval import RetrievalTask
from harness.training.config import TrainConfig, train_preset
from harness.training.loop import train
from harness.training.precision import precision_name, use_precision
from harness.training.resume import ResumeFile
from harness.training.seeding import seed_everything
from harness.world.cache import default_world
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
    resume: bool = False
    """Continue an interrupted run from ``run_dir/resume.safetensors`` (same options and data required)."""


def resolve_device(name: str) -> torch.device:
    """``auto``: CUDA when available (under torchrun, this process's LOCAL_RANK GPU), else CPU."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")) if distributed.launched() else 0)
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise VlbenchError(f"device {name!r} requested but CUDA is not available")
    return torch.device(name)


def resolve_spec(data: Path | None, task: str, progress: bool = True) -> DatasetSpec:
    """The user's spec, or the embedded world's spec for the task (generated once and cached)."""
    if data is None:
        data = default_world(progress=progress) / f"{task}.yaml"
    return load_spec(data)


def prepare_run_dir(run_dir: Path, overwrite: bool, resume: bool = False) -> None:
    if resume and (run_dir / "run.json").exists():
        raise VlbenchError(f"{run_dir} holds a finished run (run.json); there is nothing to resume")
    if (run_dir / "run.json").exists() and not overwrite:
        raise VlbenchError(f"{run_dir} already holds a run (run.json); choose another --run-dir or pass --overwrite")
    run_dir.mkdir(parents=True, exist_ok=True)


def _data_record(task: Task, splits: list[str], max_text_len: int) -> dict[str, Any]:
    record: dict[str, Any] = {"spec": str(task.spec.path), "name": task.spec.name, "task": task.spec.task,
                              "splits": {}}
    for split in splits:
        entry = {"fingerprint": task.fingerprint(split), **task.summary(split)}
        entry["text"] = text_issues(task.text.tokenizer, task.texts(split), max_text_len)
        record["splits"][split] = entry
    return record


def _evaluate_splits(task: Task, model: nn.Module, head: nn.Module, splits: list[str], run_dir: Path,
                     device: torch.device, progress: bool,
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
        evaluation = done[split] if split in done else task.evaluate(model, head, split, device, progress=progress)
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


def run_experiment(options: RunOptions) -> dict[str, Any]:
    """Train ``options.model`` on ``options.task``, keep the best validation checkpoint, predict val/test."""
    load_all()
    task_cls = TASKS.get(options.task)
    train_config = train_preset(options.preset, options.task).with_overrides(**options.train_overrides)
    device = resolve_device(options.device)
    use_precision(options.precision, device)
    distributed.setup(device)
    prepare_run_dir(options.run_dir, options.overwrite, options.resume)  # before any slow work: fail fast
    spec = distributed.main_first(lambda: resolve_spec(options.data, options.task, options.progress))
    for split in ("train", "val"):
        if split not in spec.splits:
            raise VlbenchError(f"{spec.path}: training needs a {split!r} split (has: {', '.join(spec.splits)})")

    generator = seed_everything(options.seed)
    config = model_setup(options.model, options.preset, text_init=options.text_init,
                          text_init_layers=options.text_init_layers, cnn_init=options.cnn_init)
    if options.init is not None:
        config = _init_setup(config, options.init)
    if options.boxes is not None:
        if config.config.region is None or options.model != "region":
            raise VlbenchError("--boxes applies only to --model region")
        config = replace(config, config=replace(config.config, region=replace(config.config.region,
                                                                               boxes=options.boxes)))
    tokenizer = load_tokenizer()
    images = ImageTensors(config.visual.image_size)
    task: Task = task_cls(spec, images, TextBatcher(tokenizer, train_config.max_text_len), train_config,
                          limit=options.limit)
    task.prepare_training()
    splits = ["train", *_present(spec, EVAL_SPLITS)]
    data_record = _data_record(task, splits, train_config.max_text_len)

    # Model-specific work before training (region: detector + feature cache); may refine the setup.
    # Under torchrun rank 0 trains or finds the detector first and the others then read it; the feature
    # extraction (in finish, below) is sharded over the ranks.
    prepared = distributed.main_first(lambda: MODELS.get(options.model)().prepare(config, PrepareContext(
        spec=spec, task=task, images=images, splits=splits, progress=options.progress, seed=options.seed,
        options={"detector": options.detector, "detector_data": options.detector_data,
                 "embedded_world": options.data is None})))
    if prepared is not None:
        config = prepared.setup
    model = build_model(config)
    load_pretrained_parts(model, config)
    init_state = _load_init(model, options.init) if options.init is not None else None
    head = task.build_head(config.transformer.hidden_size)
    head_init = _load_init_head(head, task, options.init, init_state) if options.init is not None else None
    model.to(device)
    head.to(device)
    visual_record = prepared.finish(model) if prepared is not None else None

    checkpoint_path = options.run_dir / CHECKPOINT_NAME
    meta_base = {"model": options.model, "task": options.task, "model_config": config.to_dict(),
                 "task_state": task.state(), "train_config": train_config.to_dict(), "seed": options.seed,
                 "data_fingerprints": {s: data_record["splits"][s]["fingerprint"] for s in splits}}

    def on_best(epoch: int, val_metrics: dict[str, Any]) -> None:
        if not distributed.is_main():
            return
        state = {f"model.{k}": v for k, v in model.state_dict().items()}
        state.update({f"head.{k}": v for k, v in head.state_dict().items()})
        save_checkpoint(checkpoint_path, state, {**meta_base, "epoch": epoch, "val": val_metrics})

    # Everything a resumed run must share with the interrupted one; anything else differing is refused.
    run_key = {k: meta_base[k] for k in ("model", "task", "model_config", "train_config", "seed",
                                          "data_fingerprints")}
    run_key["init"] = _str(options.init)
    resume = ResumeFile(options.run_dir, run_key, train_config.checkpoint_every)
    if options.resume:
        resume.check()
    elif distributed.is_main():
        resume.remove()  # a stale point from an earlier run in this directory must never be continued
    result = train(model, head, task, train_config, device, generator, on_best, cnn=trainable_cnn(model),
                   progress=options.progress, resume=resume, resuming=options.resume)
    if result.best_epoch is None:
        raise VlbenchError("validation produced no metric, so no checkpoint was selected (does val have labels?)")
    distributed.barrier()  # rank 0 has written the selected checkpoint
    _restore(model, head, checkpoint_path)
    # The selected epoch's validation was made with the weights just restored: reuse it (on retrieval, scoring
    # every val pair again would cost about as much as an epoch of training).
    done = {"val": result.best_evaluation} if result.best_evaluation is not None else {}
    metrics, files, eval_record = _evaluate_splits(task, model, head, _present(spec, EVAL_SPLITS), options.run_dir,
                                                   device, options.progress, done=done)
    eval_record["reused"] = sorted(done)
    files["checkpoint"] = [CHECKPOINT_NAME]
    record = build_run_record(
        kind="run", model=options.model, task=options.task, seed=options.seed,
        config={"preset": options.preset, "model": config.to_dict(), "train": train_config.to_dict(),
                "data": str(spec.path), "limit": options.limit, "init": _str(options.init), "head_init": head_init,
                "device": str(device),
                "precision": precision_name(device), "world_size": distributed.world_size(),
                "effective_batch_size": train_config.batch_size * train_config.grad_accum * distributed.world_size()},
        data=data_record, metrics=metrics,
        train={**result.to_dict(), "selected_checkpoint": CHECKPOINT_NAME, "resumed": options.resume,
               "parameters": sum(p.numel() for p in model.parameters()) + sum(p.numel() for p in head.parameters())},
        evaluation=eval_record, files=files, device=device,
    )
    if visual_record is not None:
        record["visual_encoder"] = visual_record
    if distributed.is_main():
        write_run_record(options.run_dir, record)
        resume.remove()  # the run is complete; its record and selected checkpoint are what remain
    return record


def evaluate_checkpoint(checkpoint: Path, task_name: str, run_dir: Path, data: Path | None = None,
                        splits: tuple[str, ...] | None = None, device_name: str = "auto", overwrite: bool = False,
                        progress: bool = True, limit: int | None = None, rerank: Rerank | None = None,
                        precision: str = "auto") -> dict[str, Any]:
    """Score a saved checkpoint on a dataset without training; writes the same files as ``run``.

    ``rerank`` (retrieval only): score just the top-k candidates of a first-stage score matrix."""
    load_all()
    meta = read_checkpoint_meta(checkpoint)
    if meta.get("task") != task_name:
        raise VlbenchError(f"{checkpoint}: a {meta.get('task')!r} checkpoint cannot be evaluated on task {task_name!r} "
                           "(its head belongs to that task)")
    task_cls = TASKS.get(task_name)
    device = resolve_device(device_name)
    use_precision(precision, device)
    distributed.setup(device)
    prepare_run_dir(run_dir, overwrite)  # before any slow work (generating the embedded world): fail fast
    spec = distributed.main_first(lambda: resolve_spec(data, task_name, progress))
    wanted = list(splits) if splits else _present(spec, EVAL_SPLITS)
    if not wanted:
        raise VlbenchError(f"{spec.path}: no val or test split to evaluate (name one with --split)")
    seed_everything(int(meta.get("seed", 0)))
    config = ModelSetup.from_dict(meta["model_config"])
    train_config = TrainConfig.from_dict(meta["train_config"])
    tokenizer = load_tokenizer()
    task: Task = task_cls(spec, ImageTensors(config.visual.image_size), TextBatcher(tokenizer, train_config.max_text_len),
                          train_config, state=meta.get("task_state"), limit=limit)
    if rerank is not None:
        if not isinstance(task, RetrievalTask):
            raise VlbenchError("re-ranking (--rerank-k) applies only to the retrieval task")
        task.rerank = rerank
    data_record = _data_record(task, wanted, train_config.max_text_len)
    model = build_model(config)
    head = task.build_head(config.transformer.hidden_size)
    _restore(model, head, checkpoint)
    model.to(device)
    head.to(device)
    metrics, files, eval_record = _evaluate_splits(task, model, head, wanted, run_dir, device, progress)
    record = build_run_record(
        kind="eval", model=meta["model"], task=task_name, seed=int(meta.get("seed", 0)),
        config={"checkpoint": str(checkpoint), "model": config.to_dict(), "train": train_config.to_dict(),
                "data": str(spec.path), "limit": limit, "device": str(device), "precision": precision_name(device),
                "world_size": distributed.world_size()},
        data=data_record, metrics=metrics,
        train={"steps": 0, "wall_seconds": 0.0, "samples_per_second": None, "checkpoint_epoch": meta.get("epoch"),
               "checkpoint_fingerprints": meta.get("data_fingerprints")},
        evaluation=eval_record, files=files, device=device,
    )
    if distributed.is_main():
        write_run_record(run_dir, record)
    return record


def _restore(model: nn.Module, head: nn.Module, path: Path) -> None:
    state, _ = load_checkpoint(path)
    model_state = {k[len("model."):]: v for k, v in state.items() if k.startswith("model.")}
    head_state = {k[len("head."):]: v for k, v in state.items() if k.startswith("head.")}
    _load_strict(model, model_state, path, "model")
    _load_strict(head, head_state, path, "head")


def _init_setup(setup: ModelSetup, path: Path) -> ModelSetup:
    """With ``--init`` from a checkpoint of the same model, take its shapes (e.g. a pre-training run's
    ``--dictionary-size``); sampling and masking switches are never part of a saved config."""
    meta = read_checkpoint_meta(path)
    saved = meta.get("model_config")
    if meta.get("model") != setup.name or not isinstance(saved, dict):
        return setup  # a different model's weights: the strict load reports what does not fit
    return replace(setup, config=ModelSetup.from_dict(saved).config)


def _load_init(model: nn.Module, path: Path) -> dict[str, torch.Tensor]:
    """Initialise the shared model (not the task head) from a pre-training or fine-tuning checkpoint; return
    the checkpoint's tensors (the task head may start from one of its pre-training heads)."""
    state, meta = load_checkpoint(path)
    model_state = {k[len("model."):]: v for k, v in state.items() if k.startswith("model.")}
    _load_strict(model, model_state, path, f"model (from a {meta.get('model')!r} checkpoint)")
    return state


def _load_init_head(head: nn.Module, task: Task, path: Path,
                    state: dict[str, torch.Tensor] | None = None) -> str | None:
    """Start the task head from the checkpoint's matching pre-training head (retrieval: ITM), if it has one.

    Returns what the head was initialised from (recorded in run.json), or None when it starts fresh."""
    if task.pretrained_head is None:
        return None
    prefix = f"pretrain.{task.pretrained_head}."
    if state is None:
        state, _ = load_checkpoint(path)
    head_state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    if not head_state:
        return None
    _load_strict(head, head_state, path, f"{task.name} head (from the pre-training {task.pretrained_head} head)")
    return f"pretrain.{task.pretrained_head}"


def _load_strict(module: nn.Module, state: dict[str, torch.Tensor], path: Path, what: str) -> None:
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        details = []
        if missing:
            details.append(f"missing {len(missing)} (e.g. {', '.join(missing[:3])})")
        if unexpected:
            details.append(f"unexpected {len(unexpected)} (e.g. {', '.join(unexpected[:3])})")
        if wrong:
            details.append(f"shape mismatch in {len(wrong)} (e.g. {wrong[0]}: checkpoint "
                           f"{tuple(state[wrong[0]].shape)} vs model {tuple(own[wrong[0]].shape)})")
        raise VlbenchError(f"{path}: does not fit the {what}: {'; '.join(details)}")
    module.load_state_dict(state)


def _str(path: Path | None) -> str | None:
    return None if path is None else str(path)

"""``vlbench run`` and ``vlbench eval``: train and evaluate a model on a task, or score a checkpoint."""

from __future__ import annotations

from pathlib import Path

import click

from harness import distributed
from harness.cli.model_options import check_weight_options, geometry_options, model_option, weight_options
from harness.cli.precision_option import precision_option
from harness.cli.threads_option import threads_option
from harness.cli.types import SEED, FiniteFloatRange
from harness.cli.workers_option import workers_option
from harness.tasks import TASKS
from harness.training.config import TRAIN_PRESETS

_existing_file = click.Path(exists=True, dir_okay=False, path_type=Path)
_existing_dir = click.Path(exists=True, file_okay=False, path_type=Path)


def _number(value: object) -> str:
    # Percentages to two decimals, as the official VQA script prints them (run.json keeps full precision).
    return f"{value:.2f}" if isinstance(value, float) else str(value)


def _references(record: dict, split: str) -> dict[str, dict]:
    """``{"chance": {metric: value}, "prior": {...}}`` of a split, as run.json's data section records it."""
    return record.get("data", {}).get("splits", {}).get(split, {}).get("reference", {})


def _summary(record: dict) -> str:
    """One line of results; the task's primary metric carries its reference points in brackets."""
    primary = TASKS.get(record["task"]).primary().name if record.get("task") in TASKS.names() else None
    parts = []
    for split, metrics in record["metrics"].items():
        shown = []
        for key, value in metrics.items():
            if isinstance(value, dict):
                continue
            text = f"{key} {_number(value)}"
            if key == primary:
                refs = [f"{name} {_number(float(values[key]))}" for name, values in _references(record, split).items()
                        if isinstance(values.get(key), (int, float))]
                text += f" [{', '.join(refs)}]" if refs else ""
            shown.append(text)
        parts.append(f"{split}: {', '.join(shown)}")
    return "; ".join(parts)


def _meanings(record: dict) -> list[str]:
    """What the bracketed reference points and the less obvious metrics mean, and their values on the last split
    (test), so a newcomer can read the line above without the docs."""
    from harness.metrics.reference import MEANING

    if record.get("task") not in TASKS.names():
        return []
    task = TASKS.get(record["task"])
    split = list(record["metrics"])[-1] if record["metrics"] else None
    refs = _references(record, split) if split else {}
    lines = [f"  {name}: {MEANING[name]}" for name in refs if name in MEANING]
    for metric in task.metrics:
        if metric.description and split and metric.read(record["metrics"][split]) is not None:
            values = [f"{name} {_number(float(v[metric.name]))}" for name, v in refs.items()
                      if isinstance(v.get(metric.name), (int, float))]
            lines.append(f"  {metric.name}: {metric.description}" + (f" ({split}: {', '.join(values)})" if values else ""))
    return lines


@click.command()
@model_option("The visual encoder (everything else is shared).", required=True)
@click.option("--task", type=click.Choice(TASKS.names()), required=True, help="Task to fine-tune and evaluate.")
@click.option("--run-dir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Where run.json, predictions and the checkpoint go.")
@click.option("--data", type=_existing_file, default=None,
              help="Dataset spec YAML (docs/dataset-spec.md). Default: the embedded world's spec for the task.")
@click.option("--preset", type=click.Choice(sorted(TRAIN_PRESETS)), default="tiny", show_default=True,
              help="tiny: CPU minutes on the embedded world; base: the papers' sizes (GPU).")
@click.option("--epochs", type=click.IntRange(min=1), default=None, help="Override the preset's epochs.")
@click.option("--seed", type=SEED, default=0, show_default=True, help="Seed of everything random.")
@click.option("--seeds", default=None, metavar="N,N,...",
              help="Run the same configuration once per seed into sibling directories RUN_DIR/seed-N (e.g. "
                   "--seeds 1,2,3); `vlbench compare RUN_DIR` then reports mean ± std over them.")
@click.option("--batch-size", type=click.IntRange(min=1), default=None, help="Override the training batch size.")
@click.option("--lr", type=FiniteFloatRange(min=0, min_open=True), default=None,
              help="AdamW learning rate of transformer and heads.")
@click.option("--cnn-lr", type=FiniteFloatRange(min=0, min_open=True), default=None, help="Learning rate of the CNN.")
@click.option("--head-lr-mult", type=FiniteFloatRange(min=0, min_open=True), default=None,
              help="The task head learns at --lr times this (ViLT: 10 for its VQA and NLVR2 classifiers).")
@click.option("--cnn-optimizer", type=click.Choice(["adamw", "sgd"]), default=None,
              help="Optimiser of the CNN (Pixel-BERT: sgd).")
@click.option("--grad-accum", type=click.IntRange(min=1), default=None, help="Gradient accumulation steps.")
@click.option("--hard-negatives/--random-negatives", default=None,
              help="Retrieval: hardest of a few sampled negative captions instead of a random one.")
@click.option("--retrieval-objective", type=click.Choice(["itm", "ranking"]), default=None,
              help="Retrieval's loss: itm (two-class ITM on a positive, a negative caption and a negative image; "
                   "tiny default) or ranking (Pixel-BERT's: softmax over the positive and the 5 hardest of 20 "
                   "negative captions; base default).")
@click.option("--freeze-cnn", is_flag=True, default=None,
              help="Fine-tune with the CNN fixed (weights and BatchNorm statistics); pixelbert and soho.")
@click.option("--itc/--no-itc", default=None,
              help="Retrieval: train the ITC first stage with ITM and re-rank large test splits with it (default "
                   "on); --no-itc: ITM alone, every split scored in full by the cross-encoder (Pixel-BERT).")
@click.option("--init", type=_existing_file, default=None,
              help="Initialise the model from a vlbench checkpoint (e.g. from `vlbench pretrain`).")
@click.option("--pretraining", type=click.Choice(["auto", "world", "none"]), default="auto", show_default=True,
              help="Where the weights start without --init. world: a checkpoint pre-trained on the embedded world's "
                   "captions (MLM+ITM, +MVM for soho, MLM for textonly; the papers' protocol), made once per model "
                   "and cached in $VLBENCH_CACHE/pretrained; none: random weights; auto: world when --data is "
                   "omitted (the embedded benchmark), else none.")
@click.option("--pretraining-draw", type=click.Choice(["shared", "per-seed"]), default="shared", show_default=True,
              help="World pre-training: shared (one checkpoint, made once with seed 0, that every seed fine-tunes, "
                   "so the seeds measure fine-tuning variance only) or per-seed (each run seed pre-trains a "
                   "checkpoint of its own, cached; one pre-training per seed, 15-30 min each on a 2-core CPU; "
                   "`compare`'s seed test then covers the pre-training draw, which moved region's NLVR2 by 5 "
                   "points in docs/results/discriminate.md).")
@weight_options
@geometry_options
@click.option("--detector", type=_existing_file, default=None,
              help="region/grid: a trained detector (`vlbench detector train` output, or a torchvision Faster "
                   "R-CNN state dict). Default: train one on the spec's COCO boxes the first time, then reuse it.")
@click.option("--detector-data", type=_existing_file, default=None,
              help="region/grid: spec whose train split has COCO boxes to train the detector on (default: this "
                   "spec, or the embedded world's scenes for NLVR2).")
@click.option("--boxes", type=click.Choice(["detector", "gt"]), default=None,
              help="region: the detector's top boxes (default) or the annotated boxes (oracle upper bound).")
@click.option("--features", type=_existing_dir, default=None,
              help="region: read boxes and features by image id from a cache written by `vlbench features import` "
                   "(e.g. bottom-up attention's 2048-d Visual Genome features) instead of running a detector; "
                   "every image of the run must be in it. Implies --pretraining none on the embedded world.")
@click.option("--keep-dictionary", is_flag=True, default=None,
              help="soho: keep the visual dictionary at fine-tuning (default: bypass it, as SOHO's released "
                   "fine-tuning does; pre-training always uses it).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@precision_option
@threads_option
@workers_option
@click.option("--limit", type=click.IntRange(min=1), default=None,
              help="Use only the first N examples (retrieval: images) of every split, for quick checks and CI "
                   "subsets; recorded, and the split fingerprints change with it.")
@click.option("--resume", is_flag=True,
              help="Continue the interrupted run in --run-dir from its resume.safetensors (give the same options).")
@click.option("--checkpoint-every", type=click.IntRange(min=0), default=None,
              help="Optimiser steps between resume points (also after every epoch and on Ctrl-C; 0 = only those).")
@click.option("--overwrite", is_flag=True, help="Replace a run already in --run-dir.")
@click.option("--no-progress", is_flag=True, help="No progress bars.")
def run(model, task, run_dir, data, preset, epochs, seed, seeds, batch_size, lr, cnn_lr, head_lr_mult, cnn_optimizer,
        grad_accum, hard_negatives, retrieval_objective, freeze_cnn, itc, init, pretraining, pretraining_draw, text_init, text_init_layers, cnn_init,
        image_size, max_size, detector,
        detector_data, boxes, features, keep_dictionary, workers, limit, device,
        precision, resume, checkpoint_every, overwrite, no_progress) -> None:
    """Train MODEL on TASK, select the checkpoint on val, predict val and test, write DIR/run.json.

    Test predictions are written in the official formats: predictions_test.json (VQA results),
    predictions_test.csv (NLVR2 identifier,label) or scores_test.npy (retrieval, images x captions).
    """
    from harness.experiment import RunOptions, run_experiment
    from harness.training.cpu_share import cpu_share_note

    check_weight_options(text_init, text_init_layers)
    overrides = {"epochs": epochs, "batch_size": batch_size, "lr": lr, "cnn_lr": cnn_lr,
                 "head_lr_mult": head_lr_mult, "cnn_optimizer": cnn_optimizer, "grad_accum": grad_accum,
                 "itm_hard_negatives": hard_negatives, "itc": itc, "checkpoint_every": checkpoint_every,
                 "retrieval_objective": retrieval_objective, "freeze_cnn": freeze_cnn,
                 "num_workers": workers}
    ctx = click.get_current_context()
    if seeds is not None and ctx.get_parameter_source("seed") != click.core.ParameterSource.DEFAULT:
        raise click.UsageError("give either --seed or --seeds, not both")
    # One configuration over several seeds: identical options, only the seed and the directory differ.
    targets = [(seed, run_dir)] if seeds is None else [(s, run_dir / f"seed-{s}") for s in _parse_seeds(seeds)]
    for this_seed, this_dir in targets:
        record = run_experiment(RunOptions(
            model=model, task=task, run_dir=this_dir, data=data, preset=preset, seed=this_seed, init=init,
            text_init=text_init, text_init_layers=text_init_layers, cnn_init=cnn_init, device=device,
            precision=precision, overwrite=overwrite, progress=not no_progress, limit=limit, train_overrides=overrides,
            detector=detector, detector_data=detector_data, boxes=boxes, resume=resume, pretraining=pretraining,
            pretraining_draw=pretraining_draw,
            keep_dictionary=keep_dictionary or None, features=features, image_size=image_size, max_size=max_size,
        ))
        which = f"{model} on {task}" + (f" (seed {this_seed})" if seeds is not None else "")
        if not distributed.is_main():
            continue  # under torchrun, rank 0 reports
        click.echo(f"{which}: {_summary(record)}  "
                   f"({record['train']['wall_seconds']:.0f}s training, "
                   f"{record['train']['samples_per_second']} samples/s{cpu_share_note(record['train'])}) "
                   f"-> {this_dir / 'run.json'}")
        for line in _meanings(record):
            click.echo(line)


def _parse_seeds(text: str) -> list[int]:
    try:
        seeds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got {text!r}", param_hint="--seeds") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise click.BadParameter(f"expected distinct seeds, got {text!r}", param_hint="--seeds")
    if any(not SEED.min <= s <= SEED.max for s in seeds):  # type: ignore[operator]
        raise click.BadParameter(f"seeds must be between {SEED.min} and {SEED.max}, got {text!r}",
                                 param_hint="--seeds")
    return seeds


@click.command(name="eval")
@click.option("--checkpoint", type=_existing_file, required=True, help="A checkpoint written by `vlbench run`.")
@click.option("--task", type=click.Choice(TASKS.names()), required=True, help="The checkpoint's task.")
@click.option("--run-dir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Where run.json and the prediction files go.")
@click.option("--data", type=_existing_file, default=None, help="Dataset spec YAML. Default: the embedded world.")
@click.option("--split", "splits", multiple=True, help="Split(s) to score (repeatable). Default: val and test.")
@click.option("--limit", type=click.IntRange(min=1), default=None,
              help="Score only the first N examples (retrieval: images) of each split.")
@click.option("--rerank-k", type=click.IntRange(min=1), default=None,
              help="Retrieval: score only each image's top-K captions and each caption's top-K images of a first "
                   "stage: --first-stage's matrix (needs one --split), or without it the checkpoint's own ITC "
                   "first stage on every split scored (by default a retrieval checkpoint with ITC does that, "
                   "with its rerank_k, on splits of more than full_scoring_images images).")
@click.option("--first-stage", type=_existing_file, default=None,
              help="With --rerank-k: a .npy score matrix [n_images, n_captions] for the split (any model's).")
@click.option("--features", type=_existing_dir, default=None,
              help="region checkpoints trained with `run --features`: the imported feature cache to read.")
@geometry_options
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@precision_option
@threads_option
@workers_option
@click.option("--overwrite", is_flag=True, help="Replace a run already in --run-dir.")
@click.option("--no-progress", is_flag=True, help="No progress bars.")
def eval_(checkpoint, task, run_dir, data, splits, limit, rerank_k, first_stage, features, image_size, max_size,
          device, precision, workers, overwrite, no_progress) -> None:
    """Score a saved checkpoint on a dataset without training; writes the same files as `run`.

    --image-size / --max-size evaluate at another image geometry than the checkpoint was trained at."""
    from harness.experiment import evaluate_checkpoint
    from harness.tasks.rerank import Rerank

    rerank = None
    if first_stage is not None and rerank_k is None:
        raise click.UsageError("--first-stage needs --rerank-k")
    if first_stage is not None:
        if len(splits) != 1:
            raise click.UsageError("re-ranking a --first-stage matrix scores one split: name it with --split")
        rerank = Rerank.from_file(first_stage, rerank_k)
    elif rerank_k is not None:
        rerank = Rerank.itc(rerank_k)
    record = evaluate_checkpoint(checkpoint, task, run_dir, data=data, splits=tuple(splits) or None,
                                 device_name=device, overwrite=overwrite, progress=not no_progress, limit=limit,
                                 rerank=rerank, precision=precision, features=features, workers=workers,
                                 image_size=image_size, max_size=max_size)
    if distributed.is_main():
        click.echo(f"{record['model']} on {task}: {_summary(record)} -> {run_dir / 'run.json'}")
        for line in _meanings(record):
            click.echo(line)


COMMANDS = (run, eval_)

"""``vlbench pretrain``: pre-train a model on image-caption pairs for ``vlbench run --init``."""

from __future__ import annotations

from pathlib import Path

import click

from harness.cli.model_options import check_weight_options, geometry_options, model_option, weight_options
from harness.cli.precision_option import precision_option
from harness.cli.threads_option import threads_option
from harness.cli.types import SEED, FiniteFloatRange
from harness.cli.workers_option import workers_option
from harness.pretraining.config import PRETRAIN_PRESETS

_existing_file = click.Path(exists=True, dir_okay=False, path_type=Path)
_existing_dir = click.Path(exists=True, file_okay=False, path_type=Path)


@click.command()
@model_option("Model to pre-train (the same names as `vlbench run`).", required=True)
@click.option("--run-dir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Where run.json and checkpoint.safetensors go.")
@click.option("--data", type=_existing_file, default=None,
              help="A captions or retrieval dataset spec (Karpathy JSON). Default: the embedded world's captions.")
@click.option("--objectives", default=None,
              help="Comma list of mlm (masked language modelling on the image), itm (image-text matching), "
                   "mvm (SOHO masked visual modelling; soho only). Default: mlm,itm.")
@click.option("--pixel-sample", type=click.IntRange(min=0), default=None,
              help="Random pixel sampling: pixel tokens kept per image per training step (pre-training only; "
                   "validation and fine-tuning see all). Default: Pixel-BERT's share (100 of ~273) of the grid, "
                   "6 of 16 in the tiny world; 0 = off. Pixel models only.")
@click.option("--preset", type=click.Choice(sorted(PRETRAIN_PRESETS)), default="tiny", show_default=True,
              help="tiny: CPU minutes on the embedded world; base: the papers' sizes (GPU).")
@click.option("--epochs", type=click.IntRange(min=1), default=None, help="Override the preset's epochs.")
@click.option("--seed", type=SEED, default=0, show_default=True, help="Seed of everything random.")
@click.option("--batch-size", type=click.IntRange(min=1), default=None,
              help="Override the batch size (per process under torchrun: the effective batch is batch size x "
                   "processes x gradient accumulation).")
@click.option("--eval-batch-size", type=click.IntRange(min=1), default=None,
              help="Override the validation batch size (validation metrics do not depend on the process count, "
                   "but do on this: each batch draws its own masks and negatives).")
@click.option("--lr", type=FiniteFloatRange(min=0, min_open=True), default=None,
              help="AdamW learning rate of transformer and heads.")
@click.option("--cnn-lr", type=FiniteFloatRange(min=0, min_open=True), default=None, help="Learning rate of the CNN.")
@click.option("--dictionary-size", type=click.IntRange(min=2), default=None,
              help="SOHO: visual dictionary entries (paper: 2048; tiny preset: 256).")
@click.option("--dictionary-momentum", type=FiniteFloatRange(min=0, max=1, max_open=True), default=None,
              help="SOHO: the dictionary's moving-average decay (default 0.4, the release's constant; with "
                   "--dictionary-schedule annealed, its cap).")
@click.option("--dictionary-schedule", type=click.Choice(["constant", "annealed"]), default=None,
              help="SOHO: constant momentum (default, as released) or annealed: min(0.1 x epoch, momentum), the "
                   "release's unused set_decay_updates per epoch.")
@click.option("--mvm-head", type=click.Choice(["dictionary", "classifier"]), default=None,
              help="SOHO: score masked cells by cosine similarity to the dictionary's entries (default, as "
                   "released) or with a learned classifier over entry indices.")
@click.option("--mvm-probability", type=FiniteFloatRange(min=0, max=1, min_open=True), default=None,
              help="SOHO: share of images whose cells of one random dictionary entry are masked.")
@click.option("--itm-swap-negatives", type=FiniteFloatRange(min=0, max=1), default=None,
              help="Share of ITM negatives that are the image's own caption with one colour word swapped for a "
                   "colour none of its captions names (hard negatives that make ITM bind words to pixels; "
                   "default 0: Pixel-BERT's random other caption).")
@weight_options
@geometry_options
@click.option("--detector", type=_existing_file, default=None,
              help="region/grid: a trained detector (`vlbench detector train` output); default: the one `run` "
                   "would use, trained on the spec's COCO boxes the first time.")
@click.option("--limit", type=click.IntRange(min=2), default=None,
              help="Use only the first N images of each split (quick checks); recorded in run.json.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@precision_option
@threads_option
@workers_option
@click.option("--resume", is_flag=True,
              help="Continue the interrupted pre-training in --run-dir from its last finished epoch.")
@click.option("--overwrite", is_flag=True, help="Replace a run already in --run-dir.")
@click.option("--no-progress", is_flag=True, help="No progress bars.")
def pretrain(model, run_dir, data, objectives, pixel_sample, preset, epochs, seed, batch_size, eval_batch_size, lr,
             cnn_lr, detector, dictionary_size, dictionary_momentum, dictionary_schedule, mvm_head, mvm_probability, itm_swap_negatives, text_init, text_init_layers,
             cnn_init, image_size, max_size, limit, device, precision, workers, resume, overwrite, no_progress) -> None:
    """Pre-train MODEL on image-caption pairs with MLM / ITM (/ MVM), then fine-tune with `vlbench run --init`.

    Writes DIR/checkpoint.safetensors (the model under `model.`, the pre-training heads under `pretrain.`) and
    DIR/run.json (config, seed, data fingerprints, per-objective validation losses and accuracies, SOHO's
    dictionary usage, samples/s). Example:

        vlbench pretrain --model pixelbert --run-dir runs/pt && \\
        vlbench run --model pixelbert --task vqa --init runs/pt/checkpoint.safetensors --run-dir runs/vqa

    Several processes: `torchrun --nproc_per_node N -m harness pretrain ...` (DistributedDataParallel; rank 0
    writes the files).
    """
    from harness.pretraining.config import parse_objectives
    from harness.pretraining.experiment import PretrainOptions, run_pretraining
    from harness.training.cpu_share import cpu_share_note

    check_weight_options(text_init, text_init_layers)
    overrides = {"objectives": parse_objectives(objectives) if objectives is not None else None,
                 "pixel_sample": pixel_sample, "epochs": epochs, "batch_size": batch_size,
                 "eval_batch_size": eval_batch_size, "lr": lr,
                 "cnn_lr": cnn_lr, "mvm_probability": mvm_probability, "mvm_head": mvm_head,
                 "itm_swap_negatives": itm_swap_negatives, "num_workers": workers}
    record = run_pretraining(PretrainOptions(
        model=model, run_dir=run_dir, data=data, preset=preset, seed=seed, dictionary_size=dictionary_size,
        dictionary_momentum=dictionary_momentum, dictionary_schedule=dictionary_schedule,
        text_init=text_init, text_init_layers=text_init_layers, cnn_init=cnn_init, detector=detector, device=device,
        precision=precision, overwrite=overwrite, progress=not no_progress, limit=limit, overrides=overrides,
        resume=resume, image_size=image_size, max_size=max_size,
    ))
    from harness import distributed

    if not distributed.is_main():
        return  # under torchrun, rank 0 reports
    val = ", ".join(f"{k} {v}" for k, v in record["metrics"]["val"].items() if not k.endswith("_predictions"))
    click.echo(f"{model} pre-trained ({'+'.join(record['config']['objectives'])}): val {val}  "
               f"({record['train']['wall_seconds']:.0f}s, {record['train']['samples_per_second']} samples/s"
               f"{cpu_share_note(record['train'])}) "
               f"-> {run_dir / 'checkpoint.safetensors'}")


COMMANDS = (pretrain,)

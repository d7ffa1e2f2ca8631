"""``vlbench bench``: measure throughput, latency, FLOPs, memory and harness overhead; write DIR/bench.json."""

from __future__ import annotations

from pathlib import Path

import click

from harness.cli.model_options import check_weight_options, geometry_options, model_option, weight_options
from harness.cli.precision_option import precision_option
from harness.cli.threads_option import threads_option
from harness.models import MODELS
from harness.tasks import TASKS
from harness.training.config import TRAIN_PRESETS

_existing_file = click.Path(exists=True, dir_okay=False, path_type=Path)
_existing_dir = click.Path(exists=True, file_okay=False, path_type=Path)


def _models(ctx: click.Context, param: click.Parameter, value: str | None) -> list[str]:
    if not value:
        return []
    names = [v.strip() for v in value.split(",") if v.strip()]
    unknown = [n for n in names if n not in MODELS.names()]
    if unknown:
        raise click.BadParameter(f"unknown model(s) {', '.join(unknown)} (known: {', '.join(MODELS.names())})")
    return names


def _fmt(x: float | None, unit: str = "", digits: int = 1) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}{unit}"


@click.command()
@model_option("Model to measure; with --compare, the reference the others are divided by.", required=True)
@click.option("--task", type=click.Choice(TASKS.names()), required=True,
              help="Task whose real batches (val split for inference, train split for training) and head are used.")
@click.option("--run-dir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Where bench.json goes (written atomically; an existing one is replaced).")
@click.option("--data", type=_existing_file, default=None, help="Dataset spec YAML. Default: the embedded world.")
@click.option("--preset", type=click.Choice(sorted(TRAIN_PRESETS)), default="tiny", show_default=True,
              help="Model shapes: tiny (64 px, 4-layer transformer) or base (ResNet-50 / BERT-base, 512 px).")
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True,
              help="Batch size of inference and training steps.")
@click.option("--compare", callback=_models, default=None, metavar="M1,M2,...",
              help="Also measure these models in the same process, interleaved round-robin with --model, and "
                   "report their ratios to it (the way to compare on a noisy machine).")
@click.option("--checkpoint", type=_existing_file, default=None,
              help="Load trained weights from a `vlbench run` checkpoint of --model/--task (costs do not depend on "
                   "weights, except the region model's box count, which its detector decides).")
@click.option("--detector", type=_existing_file, default=None,
              help="region/grid: detector file. Default: the one `run` would use (cached, or trained on the boxes).")
@click.option("--features", type=_existing_dir, default=None,
              help="region: imported features (`vlbench features import` output) instead of a detector; the "
                   "timings then leave the detector's cost out (bench.json says so).")
@weight_options
@geometry_options
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@precision_option
@click.option("--warmup", type=click.IntRange(min=0), default=3, show_default=True,
              help="Untimed calls per model before timing.")
@click.option("--repeats", type=click.IntRange(min=1), default=20, show_default=True,
              help="Timed inference rounds (each times every model once); the median is reported.")
@click.option("--train-steps", type=click.IntRange(min=1), default=5, show_default=True,
              help="Timed optimizer steps per model.")
@click.option("--overhead-steps", type=click.IntRange(min=0), default=8, show_default=True,
              help="Training steps per epoch of the harness-overhead run (real training loop); 0 skips it.")
@click.option("--overhead-epochs", type=click.IntRange(min=1), default=2, show_default=True,
              help="Epochs of the harness-overhead run (epoch 1 decodes images, later ones hit the cache).")
@click.option("--channels-last/--no-channels-last", default=None,
              help="NHWC convolutions. Default: on for CUDA, off on CPU.")
@click.option("--compile", "compile_", is_flag=True, help="torch.compile the CNN backbone and transformer layers.")
@threads_option
@click.option("--no-progress", is_flag=True, help="No progress bars.")
def bench(model, task, run_dir, data, preset, batch_size, compare, checkpoint, detector, features, text_init, text_init_layers,
          cnn_init, image_size, max_size, device, precision, warmup, repeats, train_steps, overhead_steps, overhead_epochs, channels_last,
          compile_, no_progress) -> None:
    """Time MODEL's real pipeline on TASK and write DIR/bench.json.

    Inference (end to end, and split into visual encoder vs transformer + head; the region model's detector
    always runs live, never from the feature cache), training samples/s, FLOPs counted with PyTorch's flop
    counter, achieved FLOP/s against this device's measured matmul peak, peak memory, and the harness's share
    of a real training loop. CUDA: CUDA-event timing; precision as --precision (bf16 autocast on CUDA by default).

    \b
    Example:  vlbench bench --model pixelbert --task vqa --run-dir results/bench --compare region
    """
    from harness.bench.run import BenchOptions, run_bench

    check_weight_options(text_init, text_init_layers)
    report = run_bench(BenchOptions(
        model=model, task=task, run_dir=run_dir, data=data, preset=preset, batch_size=batch_size, compare=compare,
        checkpoint=checkpoint, detector=detector, features=features, text_init=text_init, text_init_layers=text_init_layers,
        cnn_init=cnn_init, image_size=image_size, max_size=max_size, device=device, precision=precision,
        warmup=warmup, repeats=repeats,
        train_steps=train_steps, overhead_steps=overhead_steps, overhead_epochs=overhead_epochs,
        channels_last=channels_last, compile=compile_, progress=not no_progress))
    for name, r in report["models"].items():
        inf, split, ach = r["inference"], r["split"], r["achieved"]
        overhead = r.get("harness_overhead") or {}
        ratio = report.get("ratios", {}).get(name, {}).get("inference_samples_per_second")
        click.echo(
            f"{name} on {task} (batch {batch_size}, {report['precision']}): {_fmt(inf['samples_per_second'])} samples/s, "
            f"{_fmt(inf['latency_ms_per_sample']['p50'], ' ms', 2)}/sample p50 "
            f"({_fmt(inf['latency_ms_per_sample']['p95'], ' ms', 2)} p95); {split['visual_encoder']['name']} "
            f"{_fmt(split['visual_encoder']['share'] and 100 * split['visual_encoder']['share'], '%', 0)}; "
            f"{_fmt(r['flops']['per_sample'] / 1e6, ' MFLOP', 1)}/sample, "
            f"{_fmt(ach['fraction_of_matmul_peak'] and 100 * ach['fraction_of_matmul_peak'], '%', 1)} of matmul peak; "
            f"train {_fmt(r['train']['samples_per_second'])} samples/s; harness "
            f"{_fmt(overhead.get('projected_full_epoch', {}).get('fraction') and 100 * overhead['projected_full_epoch']['fraction'], '%', 1)}"
            + (f"; x{ratio:.2f} vs {report['reference']}" if ratio is not None and name != report["reference"] else ""))
    click.echo(f"-> {run_dir / 'bench.json'}")


COMMANDS = (bench,)

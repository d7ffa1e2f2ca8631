"""``vlbench pretrain-ablation``: the papers' pre-training ablation, fine-tuned on every task, as a table."""

from __future__ import annotations

from pathlib import Path

import click

from harness.cli.precision_option import precision_option
from harness.cli.threads_option import threads_option
from harness.cli.types import SEED
from harness.pretraining.ablation import TASKS, VARIANTS


@click.command(name="pretrain-ablation")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder for every run, ablation.md (the table) and ablation.json. Finished runs are reused.")
@click.option("--world", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="A `vlbench data synth` folder (captions/vqa/nlvr2/retrieval specs). Default: the embedded world.")
@click.option("--variant", "variants", multiple=True, type=click.Choice([v.name for v in VARIANTS]),
              help="Run only these variants (repeatable). Default: all six.")
@click.option("--task", "tasks", multiple=True, type=click.Choice(TASKS), help="Only these tasks (repeatable).")
@click.option("--pretrain-epochs", type=click.IntRange(min=1), default=None, help="Override pre-training epochs.")
@click.option("--epochs", type=click.IntRange(min=1), default=None, help="Override fine-tuning epochs.")
@click.option("--limit", type=click.IntRange(min=1), default=None,
              help="Fine-tune and evaluate on the first N examples (retrieval: images) of each split only.")
@click.option("--pretrain-limit", type=click.IntRange(min=2), default=None,
              help="Pre-train on the first N images of each split only.")
@click.option("--seed", type=SEED, default=0, show_default=True)
@click.option("--device", default="auto", show_default=True)
@precision_option
@threads_option
@click.option("--no-progress", is_flag=True)
def pretrain_ablation(out, world, variants, tasks, pretrain_epochs, epochs, limit, pretrain_limit, seed, device, precision,
                      no_progress) -> None:
    """Fine-tune pixelbert from scratch / MLM / ITM / MLM+ITM / MLM+ITM+pixel sampling pre-training and soho
    MLM+ITM+MVM on VQA, NLVR2 and retrieval; write OUT/ablation.md. The tiny preset takes several hours on a
    2-core CPU (five pre-trainings of the preset's 6 epochs over 18,000 captioned scenes, 15-30 minutes each on one
    thread, and eighteen fine-tunings); use --pretrain-epochs / --pretrain-limit / --limit / --epochs for a quick
    look."""
    from harness.pretraining.ablation import run_ablation
    from harness.world.cache import default_world

    world = world or default_world(progress=not no_progress)
    result = run_ablation(out, world, variants=tuple(variants) or None, tasks=tuple(tasks) or TASKS,
                          pretrain_epochs=pretrain_epochs, epochs=epochs, limit=limit, pretrain_limit=pretrain_limit, seed=seed, device=device,
                          precision=precision,
                          progress=not no_progress)
    click.echo((out / "ablation.md").read_text(encoding="utf-8"))
    click.echo(f"{len(result['rows'])} variants in {result['wall_seconds']} s -> {out / 'ablation.md'}")


COMMANDS = (pretrain_ablation,)

"""``vlbench data synth``: write the embedded world (scenes in the official VQA / NLVR2 / Karpathy / COCO formats)."""

from __future__ import annotations

from pathlib import Path

import click

SIZE_CHOICES = ("tiny", "small")


@click.command(name="synth")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder to write the world into: must be new, empty, or already hold a world.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Random seed; the same seed and size give byte-identical files.")
@click.option("--size", type=click.Choice(SIZE_CHOICES), default="tiny", show_default=True,
              help="tiny: 64 px, 18800 scenes, 1250 NLVR2 sets (about 30 s); small: 128 px, 5000 scenes, 2000 NLVR2 sets.")
@click.option("--force", is_flag=True,
              help="Regenerate even if OUT already holds a world (same or different seed/size). "
                   "A non-empty folder that is not a world is never touched.")
@click.option("--no-progress", is_flag=True, help="Do not show the progress bar on stderr.")
def synth(out: Path, seed: int, size: str, force: bool, no_progress: bool) -> None:
    """Generate the embedded world into OUT.

    Procedurally rendered scenes (1-3 shapes of 6 colours on varied backgrounds) with, for splits
    train/val/test: VQA v2 questions and 10-annotator answers, NLVR2 JSON-lines with image pairs,
    a Karpathy caption JSON (5 captions per image), COCO boxes, and the specs vqa.yaml, nlvr2.yaml,
    retrieval.yaml and captions.yaml (plus WORLD.json). See docs/dataset-spec.md for the layout.

    The world is written to a hidden temporary folder beside OUT and renamed into place when complete,
    so an interrupted run never leaves a half world. If OUT already holds this exact world (same seed,
    size and generator version) nothing is done; a different world there is an error unless --force.
    """
    from harness.world.synth import summary_line, synth_world  # lazy: keeps `vlbench --help` fast

    result = synth_world(out, seed=seed, size=size, progress=not no_progress, force=force)
    if result.status == "unchanged":
        click.echo(f"{out} already holds this world (seed {seed}, size {size}); nothing to do "
                   "(use --force to regenerate)")
        return
    click.echo(f"{result.status} {out}: {summary_line(result.info)}")

"""``vlbench detector``: train and score the region baseline's Faster R-CNN on COCO-format boxes."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import click

from harness.cli.types import SEED
from harness.training.config import TRAIN_PRESETS

_existing_file = click.Path(exists=True, dir_okay=False, path_type=Path)
DETECTOR_FILE = "detector.safetensors"


@click.group()
def detector() -> None:
    """The region baseline's detector (torchvision Faster R-CNN on the preset's CNN family)."""


@detector.command()
@click.option("--data", type=_existing_file, required=True,
              help="Dataset spec whose train split has a 'boxes:' COCO instances file (e.g. WORLD/vqa.yaml).")
@click.option("--run-dir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Where detector.safetensors and detector.json (box mAP, training record) go.")
@click.option("--preset", type=click.Choice(sorted(TRAIN_PRESETS)), default="tiny", show_default=True,
              help="Backbone and detector settings: tiny = the tiny CNN of pixelbert-tiny; base = ResNet-50.")
@click.option("--epochs", type=click.IntRange(min=1), default=None, help="Override the detector's epochs.")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Train on the first N images only.")
@click.option("--seed", type=SEED, default=0, show_default=True)
@click.option("--overwrite", is_flag=True, help="Replace a detector already in --run-dir.")
@click.option("--no-progress", is_flag=True, help="No progress bars.")
def train(data, run_dir, preset, epochs, limit, seed, overwrite, no_progress) -> None:
    """Train the detector on the train split's boxes (and, where the boxes file names attributes, bottom-up
    attention's attribute head on them); report pycocotools box mAP and attribute accuracy on the held-out
    split (test, else val). Pass the file to `vlbench run --model region --detector DIR/detector.safetensors`."""
    from baselines.coco_boxes import load_coco_boxes
    from baselines.region_setup import train_and_save
    from harness.data.spec import load_spec
    from harness.errors import VlbenchError
    from harness.fileio import write_json
    from harness.models import model_setup

    out = run_dir / DETECTOR_FILE
    if out.exists() and not overwrite:
        raise VlbenchError(f"{out} exists; choose another --run-dir or pass --overwrite")
    run_dir.mkdir(parents=True, exist_ok=True)
    setup = model_setup("region", preset)
    region = setup.config.region
    assert region is not None
    if epochs is not None:
        region = replace(region, detector_epochs=epochs)
    spec = load_spec(data)
    boxes = load_coco_boxes(spec, "train")
    if limit is not None:
        boxes = replace(boxes, images=boxes.images[:limit])
    record = train_and_save(setup.visual, region, spec, out, seed=seed, progress=not no_progress, train_data=boxes)
    write_json(run_dir / "detector.json", record)
    quality = record.get("mAP") or {}
    attributes = record.get("attribute_accuracy")
    attributes = f", attribute accuracy {attributes['accuracy']}" if attributes else ""
    click.echo(f"detector: box mAP {quality.get('map')} (AP50 {quality.get('map50')}){attributes} on "
               f"{record['map_split']}, {record['training']['wall_seconds']:.0f}s training -> {out}")


@click.group()
def features() -> None:
    """Region feature caches: import precomputed bottom-up features."""


@features.command(name="import")
@click.option("--tsv", type=_existing_file, default=None,
              help="Bottom-up TSV (image_id, image_w, image_h, num_boxes, boxes, features; base64 float32).")
@click.option("--npz-dir", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Folder of per-image .npz files (x, bbox, num_bbox, image_h, image_w).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Cache folder to write (memory-mappable .npy arrays keyed by image id).")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def import_(tsv, npz_dir, out, no_progress) -> None:
    """Convert precomputed region features into a vlbench feature cache."""
    from baselines.importers import import_npz, import_tsv

    if (tsv is None) == (npz_dir is None):
        raise click.UsageError("give exactly one of --tsv and --npz-dir")
    cache = import_tsv(tsv, out, not no_progress) if tsv else import_npz(npz_dir, out, not no_progress)
    click.echo(f"imported {len(cache)} images, {cache.features.shape[0]} boxes of dimension {cache.feature_dim} "
               f"-> {out}")

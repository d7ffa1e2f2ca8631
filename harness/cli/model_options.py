"""Options every model-running command shares (run, eval, pretrain, bench): one definition, one help text.

``--model``'s choices and help come from the model registry (each recipe's description), so a new model file
shows up in every command without editing them.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from harness.models import MODELS

_existing_file = click.Path(exists=True, dir_okay=False, path_type=Path)
_existing_dir = click.Path(exists=True, file_okay=False, path_type=Path)


def model_option(lead: str, **kwargs: Any) -> Callable:
    """``--model``, one of the registered models; the help lists them with their descriptions."""
    listed = "; ".join(f"{name}: {cls.description}" for name, cls in MODELS.items())
    return click.option("--model", type=click.Choice(MODELS.names()), help=f"{lead} {listed}.", **kwargs)


def weight_options(function: Callable) -> Callable:
    """``--text-init``, ``--text-init-layers``, ``--cnn-init``: real weights from local files."""
    for option in reversed((
        click.option("--text-init", type=_existing_dir, default=None,
                     help="Initialise text embeddings + transformer from a local BERT-family folder; its config "
                          "sets the shape."),
        click.option("--text-init-layers", type=click.IntRange(min=1), default=None,
                     help="With --text-init: keep only the first N layers."),
        click.option("--cnn-init", type=_existing_file, default=None, help="Local torchvision state dict for the CNN."),
    )):
        function = option(function)
    return function


def check_weight_options(text_init: Path | None, text_init_layers: int | None) -> None:
    if text_init_layers is not None and text_init is None:
        raise click.UsageError("--text-init-layers needs --text-init")


def geometry_options(function: Callable) -> Callable:
    """``--image-size`` and ``--max-size``: the image geometry, replacing the preset's."""
    for option in reversed((
        click.option("--image-size", type=click.IntRange(min=8), default=None,
                     help="The short side of each image, aspect ratio kept, long side capped by --max-size "
                          "(default cap: the preset's, or 1333/800 of the short side as in Pixel-BERT); with "
                          "--max-size 0 the side of a square. Default: the preset's (tiny: 64 px squares; base: "
                          "800, as in Pixel-BERT)."),
        click.option("--max-size", type=click.IntRange(min=0), default=None,
                     help="Keep each image's aspect ratio, short side --image-size, long side at most this "
                          "(Pixel-BERT: 1333); batches are padded and the padding masked out of attention, pixel "
                          "sampling and SOHO's dictionary. 0: square images. Default: the preset's (tiny 0, base "
                          "1333)."),
    )):
        function = option(function)
    return function

"""World pre-training: the image-caption stage every model goes through before fine-tuning on the embedded world.

Pixel-BERT and SOHO are never fine-tuned from scratch in their papers: pre-training on image-caption pairs is
part of the protocol, and without it no model here binds words to pixels within the tiny budget (NLVR2 and
VQA's yes/no questions sit at the language prior; docs/results/discriminate.md). So `vlbench run` on the
embedded world starts every model from a checkpoint pre-trained on the world's captions (Karpathy train +
restval), made once per model and configuration and cached under ``$VLBENCH_CACHE/pretrained``, the way the
region detector is. Every model gets the same captions, steps and schedule; the objectives are each paper's:
MLM + ITM, plus MVM for models with a visual dictionary (SOHO), MLM alone for the text-only control (ITM needs
an image).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import sys
import uuid
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from harness import distributed
from harness.errors import VlbenchError
from harness.fileio import cache_root
from harness.models import recipe
from harness.pretraining.config import PRETRAIN_PRESETS

CACHE_DIR = "pretrained"
CHECKPOINT_NAME = "checkpoint.safetensors"
WORLD_PRESETS = ("tiny",)
"""Presets the embedded world has a pre-training budget for: the pre-training preset's own (tiny: 6 passes over
the world's 18,000 captioned training scenes, 3378 steps at batch 32)."""


def world_objectives(model: str) -> tuple[str, ...]:
    """The pre-training objectives of ``model``'s paper (see the module docstring)."""
    capabilities = recipe(model).capabilities
    if not capabilities.visual_tokens:
        return ("mlm",)
    return ("mlm", "itm", "mvm") if capabilities.visual_dictionary else ("mlm", "itm")


@dataclass(frozen=True)
class WorldPretraining:
    """What a run asks of the world pre-training stage."""

    model: str
    preset: str
    world: Path
    """The embedded world folder (its captions.yaml is the data)."""
    precision: str
    device: str = "auto"
    options: dict[str, Any] | None = None
    """Model options that shape the pre-trained model (detector, dictionary size, weight files)."""
    progress: bool = True
    seed: int = 0
    """The pre-training's seed (initialisation, shuffle, masks, negatives)."""
    per_seed: bool = False
    """The run asked for a draw of its own (``--pretraining-draw per-seed``, ``seed`` = the run's seed) rather
    than the one shared draw every run fine-tunes: recorded, so the two protocols are different rows in
    ``compare`` while a per-seed configuration's seeds stay one row."""

    def identity(self) -> dict[str, Any]:
        """Everything that decides the checkpoint: two runs with the same identity share it."""
        info = json.loads((self.world / "WORLD.json").read_text(encoding="utf-8"))
        given = dict(self.options or {})
        geometry = {k: given.pop(k, None) for k in ("image_size", "max_size")}
        options = {k: (_file_identity(v) if isinstance(v, Path) else v) for k, v in sorted(given.items()) if v is not None}
        # The model's preset config: anything that changes what pre-training sees (the region selection, the
        # dictionary, the image geometry as resolved, so two spellings of one geometry share a checkpoint) must
        # make another checkpoint, never reuse one made under other settings.
        from harness.models import model_setup

        config = model_setup(self.model, self.preset, **geometry).config.to_dict()
        # Pixel sampling is off: the tiny world's images have 16 cells, and the measured protocol kept all.
        seed = {"seed": self.seed} if self.seed else {}  # absent for seed 0: the keys made before seeds existed
        return {"model": self.model, "preset": self.preset, "model_config": config, **seed,
                "objectives": list(world_objectives(self.model)),
                # The whole pre-training config (epochs, what an epoch holds, SOHO's MVM head, ...).
                "pretrain": PRETRAIN_PRESETS[self.preset].to_dict(), "precision": self.precision, "options": options,
                "world": {k: info.get(k) for k in ("generator_version", "seed", "size")}}

    def key(self) -> str:
        text = json.dumps(self.identity(), sort_keys=True)
        return f"{self.model}-{self.preset}-{hashlib.sha256(text.encode()).hexdigest()[:12]}"


def _file_identity(path: Path) -> str:
    """A weight file named by content, so the same file moved elsewhere keeps its cache entry (a folder, such
    as a BERT checkpoint, by its resolved path)."""
    if path.is_dir():
        return str(path.resolve())
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return "sha256:" + digest.hexdigest()[:16]


def supported(preset: str) -> bool:
    return preset in WORLD_PRESETS


def world_pretrained(request: WorldPretraining, cache: Path | None = None) -> tuple[Path, dict[str, Any]]:
    """The cached pre-trained checkpoint for ``request`` and its record (``config``: what identifies it;
    ``record``: path, whether made now, cost, val metrics), pre-training it first if needed.

    Concurrent runs wait on one lock per entry, so a checkpoint is made once; it is written into a staging
    folder and renamed into place, so an interrupted pre-training never leaves a half entry."""
    if not supported(request.preset):
        raise VlbenchError(f"world pre-training has no budget for preset {request.preset!r} "
                           f"(has: {', '.join(WORLD_PRESETS)}); pass --init CK or --pretraining none")
    root = (cache or cache_root()) / CACHE_DIR
    root.mkdir(parents=True, exist_ok=True)
    final = root / request.key()
    trained_now = False
    with _EntryLock(root / f".{final.name}.lock"):
        if not (final / "run.json").is_file():
            trained_now = True
            if distributed.is_main():  # a killed pre-training's staging folder (we hold the entry's lock)
                for stale in root.glob(f".{final.name}.new-*"):
                    shutil.rmtree(stale, ignore_errors=True)
            _pretrain_into(request, root, final)
    distributed.barrier()
    record = json.loads((final / "run.json").read_text(encoding="utf-8"))
    # What the run started from: part of its configuration, identical for every seed of one configuration. A
    # per-seed draw is named by its seed-0 entry and the draw, so its seeds share a row apart from the shared
    # draw's; the entry each seed used goes into the record.
    config = {"source": "world-pretraining", "key": final.name, "objectives": record["config"]["objectives"],
              "epochs": record["config"]["pretrain"]["epochs"]}
    if request.per_seed:
        config.update(key=replace(request, seed=0).key(), draw="per-seed")
    return final / CHECKPOINT_NAME, {
        "config": config,
        # Where it is and how it was made here: informative, differs between machines and runs.
        "record": {"checkpoint": str(final / CHECKPOINT_NAME), "key": final.name, "seed": request.seed,
                   "trained_now": trained_now, "data": record["config"]["data"], "val": record["metrics"]["val"],
                   "seconds": record["train"]["wall_seconds"]}}


def _pretrain_into(request: WorldPretraining, root: Path, final: Path) -> None:
    from harness.pretraining.experiment import PretrainOptions, run_pretraining

    if request.progress and distributed.is_main():
        print(f"pre-training {request.model} on the embedded world's captions (once; cached in {final})",
              file=sys.stderr)
    staging = root / f".{final.name}.new-{distributed.broadcast_object(uuid.uuid4().hex)}"
    options = dict(request.options or {})
    try:
        run_pretraining(PretrainOptions(
            model=request.model, run_dir=staging, data=request.world / "captions.yaml", preset=request.preset,
            seed=request.seed, dictionary_size=options.get("dictionary_size"), text_init=options.get("text_init"),
            text_init_layers=options.get("text_init_layers"), cnn_init=options.get("cnn_init"),
            detector=options.get("detector"), device=request.device, precision=request.precision,
            image_size=options.get("image_size"), max_size=options.get("max_size"),
            progress=request.progress,
            overrides={"objectives": world_objectives(request.model), "pixel_sample": 0}))
        if distributed.is_main():
            os.rename(staging, final)
    finally:
        if distributed.is_main():
            shutil.rmtree(staging, ignore_errors=True)


class _EntryLock:
    """flock on a file beside the entry (main process only); released when the process dies."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file = None

    def __enter__(self) -> _EntryLock:
        if distributed.is_main():
            self._file = self.path.open("a+")
            try:
                fcntl.flock(self._file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                print(f"waiting for another vlbench process to finish {self.path.stem[1:-5]} ...", file=sys.stderr)
                fcntl.flock(self._file.fileno(), fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._file is not None:
            self._file.close()

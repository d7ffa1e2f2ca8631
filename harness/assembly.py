"""The one path from a command's options to a ready model, shared by ``run``, ``eval``, ``pretrain`` and ``bench``.

    run dir checked -> data (spec; the embedded world when none is given) -> setup (preset shapes, ``--init``
    shapes, model options) -> the recipe's ``prepare`` (detector, feature cache; rank 0 first under torchrun)
    -> model built -> local weights (``--text-init``, ``--cnn-init``, then the command's own) -> device
    -> the recipe's ``finish`` (e.g. region features extracted where the detector now sits)

Each command keeps only what is its own (its task or caption data, its heads, its loop, its record). Weight
loading that several commands share (strict loads, ``--init``, checkpoints with ``model.``/``head.`` parts) lives
here too.
"""

from __future__ import annotations

import fcntl
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from harness import distributed
from harness.checkpoints import load_checkpoint, read_checkpoint_meta
from harness.data.spec import DatasetSpec, load_spec
from harness.errors import VlbenchError
from harness.models import (
    ModelSetup,
    PrepareContext,
    build_model,
    check_options,
    load_pretrained_parts,
    model_setup,
    recipe,
    with_geometry,
)
from harness.runtime import Runtime
from harness.tasks.base import Task
from harness.world.cache import default_world
from pixelbert.model import VisionLanguageModel

# What a run, eval or pretrain writes into its directory: what --overwrite clears before the new run.
RUN_ARTEFACTS = ("run.json", "checkpoint.safetensors", "resume.safetensors", "predictions_*.json",
                 "predictions_*.csv", "scores_*.npy", "per_example_*.json")
LOCK_NAME = ".vlbench.lock"


class RunDirLock:
    """An exclusive lock on a run directory while one command works in it: a second command started into the
    same directory stops with a one-line error instead of silently replacing the first one's files. The lock is
    the operating system's (flock), so a killed process never leaves it held."""

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / LOCK_NAME
        self._file = self.path.open("a+")
        try:
            fcntl.flock(self._file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._file.close()
            raise VlbenchError(f"{run_dir} is in use by another vlbench command (it holds {self.path}); wait for "
                               "it to finish or choose another --run-dir") from None

    def release(self) -> None:
        handle = getattr(self, "_file", None)  # absent when opening the lock file itself failed
        if handle is not None and not handle.closed:
            self.path.unlink(missing_ok=True)
            handle.close()  # closing drops the lock

    def __del__(self) -> None:
        self.release()


@contextmanager
def run_directory(run_dir: Path, overwrite: bool, resume: bool = False) -> Iterator[None]:
    """The command's run directory, locked while the ``with`` block runs (see :func:`prepare_run_dir`)."""
    lock = prepare_run_dir(run_dir, overwrite, resume)
    try:
        yield
    finally:
        if lock is not None:
            lock.release()


def prepare_run_dir(run_dir: Path, overwrite: bool, resume: bool = False) -> RunDirLock | None:
    """Lock the directory (the main process under torchrun) and refuse one that holds a finished run unless
    ``overwrite``, which clears every file the earlier run wrote; before any slow work. Keep the returned lock
    for as long as the command writes there."""
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = RunDirLock(run_dir) if distributed.is_main() else None
    try:
        if resume and (run_dir / "run.json").exists():
            raise VlbenchError(f"{run_dir} holds a finished run (run.json); there is nothing to resume")
        if (run_dir / "run.json").exists():
            if not overwrite:
                raise VlbenchError(f"{run_dir} already holds a run (run.json); choose another --run-dir or pass "
                                   "--overwrite")
            if distributed.is_main():
                for pattern in RUN_ARTEFACTS:  # the new run's files must not sit beside the old run's leftovers
                    for path in run_dir.glob(pattern):
                        path.unlink(missing_ok=True)
        distributed.barrier()
    except BaseException:
        # Released now, not when the traceback (which keeps this frame, and the lock, alive) is collected.
        if lock is not None:
            lock.release()
        raise
    return lock


@dataclass(frozen=True)
class Data:
    """The dataset a command runs on; ``world`` is the embedded world's folder when no ``--data`` was given."""

    spec: DatasetSpec
    world: Path | None = None

    @property
    def detector_boxes(self) -> Path | None:
        """Boxes for a detector when the spec has none: on the embedded world its scenes' (NLVR2 pair images
        carry no boxes); on a user's data nothing is guessed."""
        return None if self.world is None else self.world / "vqa.yaml"


def open_data(data: Path | None, name: str, progress: bool = True) -> Data:
    """The user's spec, or the embedded world's ``name``.yaml (generated once and cached; rank 0 first)."""
    def load() -> Data:
        if data is not None:
            return Data(load_spec(data))
        world = default_world(progress=progress)
        return Data(load_spec(world / f"{name}.yaml"), world)

    return distributed.main_first(load)


def require_splits(spec: DatasetSpec, splits: tuple[str, ...], what: str) -> None:
    for split in splits:
        if split not in spec.splits:
            raise VlbenchError(f"{spec.path}: {what} needs a {split!r} split (has: {', '.join(spec.splits)})")


@dataclass(frozen=True)
class ModelRequest:
    """What a command was asked for about its model."""

    name: str
    preset: str = "tiny"
    text_init: Path | None = None
    text_init_layers: int | None = None
    cnn_init: Path | None = None
    init: Path | None = None
    """A vlbench checkpoint to start from; of the same model, its shapes are taken too."""
    options: dict[str, Any] = field(default_factory=dict)
    """Model options (``boxes``, ``detector``, ``dictionary_size``, ...); None values count as not given."""
    image_size: int | None = None
    max_size: int | None = None
    """Image geometry (``--image-size`` / ``--max-size``); None keeps the preset's (or ``--init``'s)."""

    def given_options(self) -> dict[str, Any]:
        return {k: v for k, v in self.options.items() if v is not None}


def resolve_setup(request: ModelRequest) -> ModelSetup:
    """The setup ``request`` asks for: preset shapes, ``--init``'s shapes, model options folded in."""
    options = request.given_options()
    check_options(request.name, options)
    setup = model_setup(request.name, request.preset, text_init=request.text_init,
                        text_init_layers=request.text_init_layers, cnn_init=request.cnn_init,
                        image_size=request.image_size, max_size=request.max_size)
    if request.init is not None:
        setup = init_setup(setup, request.init)
        setup = replace(setup, config=with_geometry(setup.config, request.image_size, request.max_size))
    return recipe(request.name).apply_options(setup, options)


@dataclass
class Assembled:
    setup: ModelSetup
    """The final setup (``prepare`` may refine it, e.g. with the detector's class count)."""
    model: VisionLanguageModel
    visual_record: dict[str, Any] | None
    """What run.json records about the visual encoder (detector, feature cache), None when nothing to say."""


def assemble(setup: ModelSetup, runtime: Runtime, *, context: PrepareContext | None = None,
             load: Callable[[VisionLanguageModel], None] | None = None,
             channels_last: bool = False) -> Assembled:
    """Build ``setup``'s model on ``runtime.device``.

    ``context``: run the recipe's ``prepare`` / ``finish`` with it (None when every weight comes from a
    checkpoint, as in ``eval``). ``load``: the command's own weights (``--init``, a checkpoint), loaded after the
    local text/CNN weights and before the move to the device.
    """
    prepared = None
    if context is not None:
        # Under torchrun rank 0 trains or finds the detector first and the others then read it; the feature
        # extraction in finish() is sharded over the ranks.
        prepared = distributed.main_first(lambda: recipe(setup.name).prepare(setup, context))
    if prepared is not None:
        setup = prepared.setup
    model = build_model(setup)
    load_pretrained_parts(model, setup)
    if load is not None:
        load(model)
    model.to(runtime.device)
    if channels_last:
        # NHWC convolutions: cuDNN's tensor-core kernels want it; the transformer's 3-D tensors are unaffected.
        model.to(memory_format=torch.channels_last)
    visual_record = prepared.finish(model) if prepared is not None else None
    return Assembled(setup, model, visual_record)


# --- weights ------------------------------------------------------------------------------------------------
def prefixed(parts: dict[str, dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """One checkpoint state from named parts: ``{"model": sd, "head": sd}`` -> ``model.x``, ``head.y``."""
    return {f"{prefix}.{key}": value for prefix, state in parts.items() for key, value in state.items()}


def part(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The tensors of one named part of a checkpoint state (prefix removed)."""
    start = f"{prefix}."
    return {k[len(start):]: v for k, v in state.items() if k.startswith(start)}


def load_strict(module: nn.Module, state: dict[str, torch.Tensor], path: Path, what: str) -> None:
    """Load ``state`` into ``module`` exactly, or say in one line what does not fit."""
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


def restore(model: nn.Module, head: nn.Module, path: Path) -> None:
    """Model and task head from a ``run`` checkpoint."""
    state, _ = load_checkpoint(path)
    load_strict(model, part(state, "model"), path, "model")
    load_strict(head, part(state, "head"), path, "head")


def init_setup(setup: ModelSetup, path: Path) -> ModelSetup:
    """With ``--init`` from a checkpoint of the same model, take its shapes (e.g. a pre-training run's
    ``--dictionary-size``); sampling and masking switches are never part of a saved config."""
    meta = read_checkpoint_meta(path)
    saved = meta.get("model_config")
    if meta.get("model") != setup.name or not isinstance(saved, dict):
        return setup  # a different model's weights: the strict load reports what does not fit
    config = ModelSetup.from_dict(saved).config
    if config.dictionary is not None and setup.config.dictionary is not None:
        # Whether fine-tuning keeps the dictionary is this run's choice (--keep-dictionary), not the checkpoint's.
        config = replace(config, dictionary=replace(config.dictionary, fine_tune=setup.config.dictionary.fine_tune))
    return replace(setup, config=config)


def load_init(model: nn.Module, path: Path) -> dict[str, torch.Tensor]:
    """Initialise the shared model (not the task head) from a pre-training or fine-tuning checkpoint; return
    the checkpoint's tensors (the task head may start from one of its pre-training heads)."""
    state, meta = load_checkpoint(path)
    load_strict(model, part(state, "model"), path, f"model (from a {meta.get('model')!r} checkpoint)")
    return state


def load_init_head(head: nn.Module, task: Task | type[Task], path: Path,
                   state: dict[str, torch.Tensor] | None = None) -> str | None:
    """Start the task head from the checkpoint's matching pre-training head (retrieval: ITM), if it has one.

    Returns what the head was initialised from (recorded in run.json), or None when it starts fresh."""
    pretrained_head = task.pretrained_head
    if pretrained_head is None:
        return None
    if state is None:
        state, _ = load_checkpoint(path)
    head_state = part(state, f"pretrain.{pretrained_head}")
    if not head_state:
        return None
    # A head with a part of that name (retrieval with ITC: RetrievalHead.itm) starts that part from it; the rest
    # (the ITC projections, which pre-training has no counterpart of) starts fresh.
    target = getattr(head, pretrained_head, None)
    target = target if isinstance(target, nn.Module) else head
    load_strict(target, head_state, path, f"{task.name} head (from the pre-training {pretrained_head} head)")
    return f"pretrain.{pretrained_head}"


def parameter_count(*modules: nn.Module) -> int:
    return sum(p.numel() for module in modules for p in module.parameters())

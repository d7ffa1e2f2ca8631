"""``bench`` as a function: build every subject, measure them interleaved, measure harness overhead, write."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from harness.assembly import ModelRequest, open_data
from harness.bench.flops import MatmulProbe
from harness.bench.measure import measure
from harness.bench.overhead import measure_overhead
from harness.bench.report import build_report, write_report
from harness.bench.subjects import build_subject
from harness.errors import VlbenchError
from harness.models import MODELS, recipe
from harness.runtime import Runtime
from harness.training.config import train_preset
from harness.training.seeding import seed_everything


@dataclass
class BenchOptions:
    model: str
    task: str
    run_dir: Path
    data: Path | None = None
    preset: str = "tiny"
    batch_size: int = 32
    compare: list[str] = field(default_factory=list)
    checkpoint: Path | None = None
    detector: Path | None = None
    features: Path | None = None
    """Region: imported features (``vlbench features import``); then no detector cost is measured."""
    text_init: Path | None = None
    text_init_layers: int | None = None
    cnn_init: Path | None = None
    image_size: int | None = None
    max_size: int | None = None
    """Image geometry (``--image-size`` / ``--max-size``); None keeps the preset's."""
    device: str = "auto"
    precision: str = "auto"
    """auto (bf16 autocast on CUDA and on CPUs with native bf16, else fp32), fp32 or bf16."""
    warmup: int = 3
    repeats: int = 20
    train_steps: int = 5
    overhead_steps: int = 8
    overhead_epochs: int = 2
    channels_last: bool | None = None
    """None = on for CUDA (NHWC convolutions), off on CPU (oneDNN picks its own layout there)."""
    compile: bool = False
    threads: int | None = None
    progress: bool = True


def models_to_time(model: str, compare: list[str]) -> tuple[list[str], list[str]]:
    """The models a bench times (``model`` first, duplicates dropped) and notes on what it leaves out: a model
    without visual tokens (textonly) has no visual pipeline to time, so as ``--model`` it is an error and in
    ``--compare`` it is skipped (a sweep over every model name should not lose its run to it)."""
    names = list(dict.fromkeys([model, *compare]))
    for name in names:
        MODELS.get(name)  # unknown names -> one-line error listing the known ones
    timeable = [n for n in names if recipe(n).capabilities.visual_tokens]
    if model not in timeable:
        others = ", ".join(n for n in MODELS.names() if recipe(n).capabilities.visual_tokens)
        raise VlbenchError(f"{model} has no visual encoder to benchmark; compare {others}")
    notes = [f"{n} skipped: it has no visual encoder to time" for n in names if n not in timeable]
    return timeable, notes


def run_bench(options: BenchOptions) -> dict[str, Any]:
    names, notes = models_to_time(options.model, options.compare)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    if options.checkpoint is not None and len(names) > 1:
        raise VlbenchError("--checkpoint belongs to one model; it cannot be combined with --compare")
    if min(options.batch_size, options.repeats, options.train_steps) < 1 or options.warmup < 0:
        raise VlbenchError("--batch-size, --repeats and --train-steps must be at least 1, --warmup at least 0")
    if options.threads is not None:
        torch.set_num_threads(options.threads)
    runtime = Runtime.start(options.device, options.precision, join=False)
    device = runtime.device
    channels_last = device.type == "cuda" if options.channels_last is None else options.channels_last
    data = open_data(options.data, options.task, options.progress)
    spec = data.spec
    options.run_dir.mkdir(parents=True, exist_ok=True)
    seed_everything(0)
    train_config = train_preset(options.preset, options.task).with_overrides(batch_size=options.batch_size)

    probe = MatmulProbe(runtime)
    probe.warm()
    subjects = [build_subject(_request(name, options), options.task, data, runtime, batch_size=options.batch_size,
                              train_config=train_config, checkpoint=options.checkpoint, channels_last=channels_last,
                              compile_model=options.compile, progress=options.progress) for name in names]
    results = measure(subjects, probe, warmup=options.warmup, repeats=options.repeats,
                      train_steps=options.train_steps, progress=options.progress)
    peak = probe.record()
    for subject in subjects:
        results[subject.name]["harness_overhead"] = (
            measure_overhead(subject, steps=options.overhead_steps, epochs=options.overhead_epochs,
                             progress=options.progress) if options.overhead_steps > 0 else None)
    settings = {"preset": options.preset, "data": str(spec.path), "warmup": options.warmup, "repeats": options.repeats,
                "train_steps": options.train_steps, "overhead_steps": options.overhead_steps,
                "overhead_epochs": options.overhead_epochs, "channels_last": channels_last, "compile": options.compile,
                "inference_mode": True, "checkpoint": None if options.checkpoint is None else str(options.checkpoint),
                "detector": None if options.detector is None else str(options.detector),
                "features": None if options.features is None else str(options.features),
                "interleaved": len(names) > 1, "split": subjects[0].setup["split"]}
    report = build_report(reference=options.model, task=options.task, results=results, device=device,
                          precision=runtime.precision_name, batch_size=options.batch_size, peak=peak, settings=settings)
    write_report(options.run_dir, report)
    return report


def _request(name: str, options: BenchOptions) -> ModelRequest:
    """What ``run`` would be asked for ``name``; ``--detector`` goes to the models that take one (the others in a
    ``--compare`` ignore it)."""
    accepted = recipe(name).capabilities.options
    given = {k: v for k, v in (("detector", options.detector), ("features", options.features))
             if k in accepted and v is not None}
    return ModelRequest(name, options.preset, text_init=options.text_init, text_init_layers=options.text_init_layers,
                        cnn_init=options.cnn_init, options=given, image_size=options.image_size,
                        max_size=options.max_size)

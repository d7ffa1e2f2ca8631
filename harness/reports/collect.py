"""Gather run directories into records that ``compare`` can tabulate.

A run directory holds ``run.json`` (from ``run`` or ``eval``) and, optionally, ``bench.json`` (from ``bench``)
and ``per_example_{split}.json`` (per-example results for paired tests). A directory with only ``bench.json``
contributes throughput to its model's row. A directory with neither is searched (recursively) for run
directories, so ``vlbench compare DIR`` works on the parent of ``vlbench run --seeds`` output.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import VlbenchError
from harness.fileio import read_json
from harness.training.config import TRAIN_PRESETS, TrainConfig, train_preset

# Parts of run.json's config that do not change what a model learns (where the data file lives, which device
# ran it) or that follow from the task (head_init: which pre-trained head the task's head starts from; retrieval
# continues ITM, VQA and NLVR2 start fresh): runs that differ only in these are seeds of one configuration, and
# a model's runs on several tasks share one row. effective_batch_size follows from the batch size and gradient
# accumulation (compared as changes from the task's preset, below) and world_size (kept): tiny NLVR2's preset
# batch of 64 against VQA's 32 is the preset, not another configuration.
_NON_CONFIG_KEYS = ("data", "device", "precision", "checkpoint", "head_init", "effective_batch_size")


@dataclass
class BenchInfo:
    """What ``compare`` uses from ``bench.json`` (DESIGN.md section 8); None where the file does not say."""

    path: Path
    samples_per_second: float | None
    ms_per_image: float | None
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    device: str | None
    precision: str | None
    batch_size: int | None
    detector_counted: bool | None
    raw: dict[str, Any]


@dataclass
class RunInfo:
    path: Path
    model: str
    task: str
    seed: int
    kind: str
    config: dict[str, Any]
    config_key: str
    """Hash of the configuration without seed and location: equal keys = seeds of one configuration."""
    fingerprints: dict[str, str]
    metrics: dict[str, Any]
    bench: BenchInfo | None = None
    label: str = ""
    """Row label in tables and plots: the model name, plus what differs when a model has several configs."""
    references: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Per split, the reference points run.json recorded from the data (``{"chance": metrics, "prior": ...}``)."""

    def per_example(self, split: str) -> dict[str, Any] | None:
        path = self.path / f"per_example_{split}.json"
        if not path.is_file():
            return None
        data = read_json(path)
        return data if isinstance(data, dict) and data else None


@dataclass
class Collection:
    runs: list[RunInfo] = field(default_factory=list)
    benches: list[tuple[str, str | None, BenchInfo]] = field(default_factory=list)
    """Bench-only directories: (model, task or None, bench)."""
    notes: list[str] = field(default_factory=list)


def _dig(data: Any, *paths: str) -> Any:
    """The first of several dotted paths present in nested dicts."""
    for dotted in paths:
        node = data
        for part in dotted.split("."):
            if not isinstance(node, dict) or part not in node:
                node = None
                break
            node = node[part]
        if node is not None:
            return node
    return None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def read_bench(path: Path, model: str | None = None, raw: Any = None) -> BenchInfo:
    """The headline numbers of a ``vlbench bench`` file (its layout: ``harness/bench/report.py``) for ``model``:
    the ``--model`` results at the top level by default, or one of the ``--compare`` models measured beside it
    (``models.NAME``, same device, batch and precision). ``raw``: the file's parsed content, if already read.

    One NLVR2 sample is two images, so ms per image divides by the task's images per sample. ``bench`` always
    runs a region model's detector live (never the feature cache), so ``detector_counted`` is True for detector
    encoders and None where there is no detector.
    """
    raw = read_json(path) if raw is None else raw
    if not isinstance(raw, dict):
        raise VlbenchError(f"{path}: expected a JSON object")
    if not isinstance(raw.get("inference"), dict):
        raise VlbenchError(f"{path}: not a `vlbench bench` file (no 'inference' block)")
    block: dict[str, Any] = raw
    if model is not None and model != raw.get("model"):
        found = _dig(raw, f"models.{model}")
        if not isinstance(found, dict):
            raise VlbenchError(f"{path}: has no measurements of model {model!r}")
        block = found
    sps = _number(_dig(block, "inference.samples_per_second"))
    from harness.tasks import TASKS

    task = raw.get("task")
    images_per_sample = float(TASKS.get(task).images_per_sample) if isinstance(task, str) and task in TASKS else 1.0
    ms_image = 1000.0 / (sps * images_per_sample) if sps else None
    encoder = _dig(block, "split.visual_encoder.name")
    batch = _dig(raw, "batch_size")
    return BenchInfo(
        path=path,
        samples_per_second=sps,
        ms_per_image=ms_image,
        latency_p50_ms=_number(_dig(block, "inference.latency_ms_per_sample.p50")),
        latency_p95_ms=_number(_dig(block, "inference.latency_ms_per_sample.p95")),
        device=_dig(raw, "device.name"),
        precision=_dig(raw, "precision"),
        batch_size=int(batch) if isinstance(batch, int) else None,
        detector_counted=True if encoder == "detector" else None,
        raw=raw,
    )


def bench_models(bench: BenchInfo) -> list[str]:
    """Every model a bench file measured: its ``--model`` first, then the ``--compare`` models."""
    main = bench.raw.get("model")
    if not isinstance(main, str):
        raise VlbenchError(f"{bench.path}: does not name its model")
    others = bench.raw.get("models") if isinstance(bench.raw.get("models"), dict) else {}
    return [main, *(m for m in others if m != main)]


def comparable_config(config: dict[str, Any], task: str) -> dict[str, Any]:
    """What identifies a configuration across tasks: the run config without paths and devices, and with the
    training settings as changes from the task's preset (tiny retrieval's own epoch budget is the preset's,
    not a different configuration, so a model's VQA, NLVR2 and retrieval runs share one table row)."""
    kept = {k: v for k, v in config.items() if k not in _NON_CONFIG_KEYS}
    train, preset = kept.get("train"), kept.get("preset")
    if isinstance(kept.get("overrides"), dict) and preset in TRAIN_PRESETS:
        # Runs that record their explicit overrides: the preset + those is the configuration (`--epochs 1` on
        # VQA, whose tiny preset is 1 epoch, and on NLVR2, whose preset is 4, is one configuration). Settings
        # that differ from today's preset without an override (the preset changed since, e.g. base retrieval's
        # objective) are part of it too, so old and new runs of one preset name never share a row.
        overrides = kept.pop("overrides")
        drift = {}
        if isinstance(train, dict):
            recorded = _plain(TrainConfig.from_dict(train).to_dict())
            default = _plain(train_preset(str(preset), task).to_dict())
            drift = {k: v for k, v in recorded.items() if k not in overrides and default.get(k) != v}
        kept["train"] = {**overrides, **drift}
    elif isinstance(train, dict) and preset in TRAIN_PRESETS:
        default = train_preset(str(preset), task).to_dict()
        kept["train"] = {k: v for k, v in train.items() if k not in default or default[k] != v}
    return kept


def _plain(data: dict[str, Any]) -> dict[str, Any]:
    """As run.json stores it (tuples as lists), so recorded and preset values compare equal."""
    return json.loads(json.dumps(data, default=str))


def config_key(config: dict[str, Any], task: str) -> str:
    kept = comparable_config(config, task)
    return hashlib.sha256(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()[:10]


def _expand(paths: list[Path]) -> list[Path]:
    """Run directories: the paths themselves, or every directory below one holding run.json/bench.json."""
    out: list[Path] = []
    for path in paths:
        if not path.is_dir():
            raise VlbenchError(f"{path}: not a directory")
        if (path / "run.json").is_file() or (path / "bench.json").is_file():
            out.append(path)
            continue
        found = sorted({p.parent for pattern in ("run.json", "bench.json") for p in path.rglob(pattern)})
        if not found:
            raise VlbenchError(f"{path}: no run.json or bench.json in it or below it")
        out.extend(found)
    return list(dict.fromkeys(out))


def _read_run(path: Path) -> dict[str, Any]:
    record = read_json(path / "run.json")
    missing = [k for k in ("model", "task", "metrics") if not isinstance(record, dict) or k not in record]
    if missing:
        raise VlbenchError(f"{path / 'run.json'}: not a vlbench run record (missing {', '.join(missing)})")
    if not isinstance(record["metrics"], dict):
        raise VlbenchError(f"{path / 'run.json'}: 'metrics' is not a mapping")
    _check_finite(record["metrics"], path / "run.json", "metrics")
    return record


def _check_finite(node: Any, path: Path, where: str) -> None:
    """Every number of a record's metrics must be finite: a NaN would sort as 'best' in one table and lose its
    paired test in another."""
    if isinstance(node, dict):
        for key, value in node.items():
            _check_finite(value, path, f"{where}.{key}")
    elif isinstance(node, float) and not math.isfinite(node):
        raise VlbenchError(f"{path}: {where} is {node}, not a finite number")


def collect(paths: list[Path]) -> Collection:
    """Read every run directory; pre-training runs are skipped with a note (they have no task metrics)."""
    result = Collection()
    for directory in _expand(paths):
        bench = read_bench(directory / "bench.json") if (directory / "bench.json").is_file() else None
        if not (directory / "run.json").is_file():
            assert bench is not None
            task = _dig(bench.raw, "task")
            for model in bench_models(bench):  # `bench --compare` measured several side by side
                result.benches.append((model, task if isinstance(task, str) else None,
                                       read_bench(bench.path, model, raw=bench.raw)))
            continue
        record = _read_run(directory)
        if record.get("kind") == "pretrain":
            result.notes.append(f"skipped {directory}: a pre-training run (no fine-tuning results)")
            continue
        splits = (record.get("data") or {}).get("splits") or {}
        config = record.get("config") or {}
        result.runs.append(RunInfo(
            path=directory, model=str(record["model"]), task=str(record["task"]), seed=int(record.get("seed", 0)),
            kind=str(record.get("kind", "run")), config=config, config_key=config_key(config, str(record["task"])),
            fingerprints={s: v.get("fingerprint") for s, v in splits.items() if isinstance(v, dict)},
            metrics=record.get("metrics") or {}, bench=bench,
            references={s: v["reference"] for s, v in splits.items()
                        if isinstance(v, dict) and isinstance(v.get("reference"), dict)},
        ))
    if not result.runs:
        raise VlbenchError("no fine-tuning runs to compare" + (f" ({'; '.join(result.notes)})" if result.notes
                                                               else ""))
    _label(result.runs)
    return result


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(data, dict):
        return {prefix: data}
    out: dict[str, Any] = {}
    for key, value in data.items():
        out.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


# Config keys that records leave out at their default (so older records keep their keys): what absence means.
_ABSENT_MEANS = {"pretraining.draw": "shared"}


def _effective(runs: list[RunInfo], key: str, own: dict[str, Any]) -> Any:
    """A differing setting's value for the label of one configuration (``runs``: all its runs): what it set,
    else (a training setting left at its preset) the value its records say it ran with when they agree, so a row
    reads ``objective=itm`` rather than ``objective=None``; ``preset`` when its tasks' presets differ."""
    if own.get(key) is None and key in _ABSENT_MEANS:
        return _ABSENT_MEANS[key]
    if own.get(key) is not None or not key.startswith("train."):
        return own.get(key)
    name = key.split(".", 1)[1]
    values = {json.dumps(run.config["train"].get(name), default=str) for run in runs
              if isinstance(run.config.get("train"), dict)}
    return json.loads(values.pop()) if len(values) == 1 else "preset"


def _label(runs: list[RunInfo]) -> None:
    """Row labels: the model name; when one model has several configurations (over all tasks), the config
    keys whose values differ between them are appended, so the table says what the variants are."""
    by_model: dict[str, dict[str, dict[str, Any]]] = {}
    for run in runs:
        by_model.setdefault(run.model, {})[run.config_key] = _flatten(comparable_config(run.config, run.task))
    for run in runs:
        configs = by_model[run.model]
        if len(configs) == 1:
            run.label = run.model
            continue
        keys = sorted({k for flat in configs.values() for k in flat})
        differing = [k for k in keys if len({json.dumps(f.get(k), default=str) for f in configs.values()}) > 1]
        own = configs[run.config_key]
        same = [r for r in runs if r.model == run.model and r.config_key == run.config_key]
        parts = [f"{k.split('.')[-1]}={_effective(same, k, own)}" for k in differing[:3]]
        run.label = f"{run.model} ({', '.join(parts)})" if parts else f"{run.model} [{run.config_key[:6]}]"

"""The papers' pre-training ablation on one dataset: which objectives help which task.

Variants (Pixel-BERT Table 6 / SOHO Table 6 in spirit): fine-tuning from scratch, MLM only, ITM only, MLM+ITM,
MLM+ITM with random pixel sampling, and SOHO with MLM+ITM+MVM; each is fine-tuned on VQA, NLVR2 and retrieval
with the same fine-tuning settings and seed. Finished runs (a run.json in place) are reused, so an interrupted
ablation resumes where it stopped.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.errors import VlbenchError
from harness.experiment import RunOptions, run_experiment
from harness.fileio import read_json, write_json
from harness.pretraining.experiment import CHECKPOINT_NAME, PretrainOptions, run_pretraining

TASKS = ("vqa", "nlvr2", "retrieval")
# The test-split metric shown per task (the task's own selection metric).
TASK_METRIC = {"vqa": "overall", "nlvr2": "accuracy", "retrieval": "rsum"}


@dataclass(frozen=True)
class Variant:
    name: str
    model: str
    objectives: tuple[str, ...] | None  # None = no pre-training
    pixel_sample: int | None = 0  # 0 = off; None = the pre-training default share

    @property
    def label(self) -> str:
        if self.objectives is None:
            return f"{self.model}, no pre-training"
        sampled = " + pixel sampling" if self.pixel_sample is None else ""
        return f"{self.model}, {'+'.join(o.upper() for o in self.objectives)}{sampled}"


VARIANTS: tuple[Variant, ...] = (
    Variant("scratch", "pixelbert", None),
    Variant("mlm", "pixelbert", ("mlm",)),
    Variant("itm", "pixelbert", ("itm",)),
    Variant("mlm-itm", "pixelbert", ("mlm", "itm")),
    Variant("mlm-itm-ps", "pixelbert", ("mlm", "itm"), pixel_sample=None),
    Variant("soho-mlm-itm-mvm", "soho", ("mlm", "itm", "mvm")),  # SOHO feeds every cell (no pixel sampling)
)


def _existing(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / "run.json"
    return read_json(path) if path.is_file() else None


def run_ablation(out: Path, world: Path, *, variants: tuple[str, ...] | None = None,
                 tasks: tuple[str, ...] = TASKS, pretrain_epochs: int | None = None, epochs: int | None = None,
                 limit: int | None = None, pretrain_limit: int | None = None, seed: int = 0, device: str = "auto",
                 precision: str = "auto",
                 progress: bool = True) -> dict[str, Any]:
    """Run (or reuse) every variant x task under ``out``; write ``out/ablation.md`` and ``out/ablation.json``.

    ``world`` is a folder holding captions.yaml, vqa.yaml, nlvr2.yaml and retrieval.yaml (``vlbench data synth``).
    """
    chosen = [v for v in VARIANTS if variants is None or v.name in variants]
    if variants is not None and len(chosen) != len(set(variants)):
        known = ", ".join(v.name for v in VARIANTS)
        raise VlbenchError(f"unknown ablation variant in {', '.join(variants)} (known: {known})")
    for name in ("captions", *tasks):
        if not (world / f"{name}.yaml").is_file():
            raise VlbenchError(f"{world}: no {name}.yaml (expected a `vlbench data synth` folder)")
    rows: list[dict[str, Any]] = []
    start = time.perf_counter()
    for variant in chosen:
        row: dict[str, Any] = {"variant": variant.name, "label": variant.label, "pretrain": None, "tasks": {}}
        init = None
        if variant.objectives is not None:
            pt_dir = out / "pretrain" / variant.name
            record = _existing(pt_dir) or run_pretraining(PretrainOptions(
                model=variant.model, run_dir=pt_dir, data=world / "captions.yaml", seed=seed, device=device, precision=precision,
                progress=progress, overwrite=True, limit=pretrain_limit,
                overrides={"objectives": variant.objectives, "pixel_sample": variant.pixel_sample,
                           "epochs": pretrain_epochs}))
            init = pt_dir / CHECKPOINT_NAME
            row["pretrain"] = {"seconds": record["train"]["wall_seconds"],
                               "samples_per_second": record["train"]["samples_per_second"],
                               "pixel_sample": record["config"]["pixel_sample"], "val": record["metrics"]["val"]}
        for task in tasks:
            run_dir = out / variant.name / task
            record = _existing(run_dir) or run_experiment(RunOptions(
                model=variant.model, task=task, run_dir=run_dir, data=world / f"{task}.yaml", seed=seed, init=init,
                device=device, precision=precision, overwrite=True, progress=progress, limit=limit, train_overrides={"epochs": epochs},
                pretraining="none"))  # each variant's own pre-training (or none) is the point
            row["tasks"][task] = {"test": record["metrics"].get("test"), "val": record["metrics"].get("val"),
                                  "seconds": record["train"]["wall_seconds"]}
        rows.append(row)
    result = {"seed": seed, "limit": limit, "pretrain_limit": pretrain_limit, "epochs": epochs, "pretrain_epochs": pretrain_epochs,
              "wall_seconds": round(time.perf_counter() - start, 1), "rows": rows}
    write_json(out / "ablation.json", result)
    (out / "ablation.md").write_text(ablation_table(result, tasks), encoding="utf-8")
    return result


def _metric(row: dict[str, Any], task: str, key: str) -> str:
    test = (row["tasks"].get(task) or {}).get("test") or {}
    value = test.get(key)
    return "" if value is None else f"{value:.2f}"


def ablation_table(result: dict[str, Any], tasks: tuple[str, ...] = TASKS) -> str:
    """Markdown: one row per variant, the test metric per task, and what pre-training cost."""
    header = ["variant", *(f"{t} {TASK_METRIC[t]}" for t in tasks), "pre-train s", "pre-train samples/s",
              "val MLM acc", "val ITM acc", "val MVM acc"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in result["rows"]:
        pt = row["pretrain"] or {}
        val = pt.get("val") or {}

        def show(value: Any) -> str:
            return "" if value is None else str(value)

        cells = [row["label"], *(_metric(row, t, TASK_METRIC[t]) for t in tasks), show(pt.get("seconds")),
                 show(pt.get("samples_per_second")), show(val.get("mlm_accuracy")), show(val.get("itm_accuracy")),
                 show(val.get("mvm_accuracy"))]
        lines.append("| " + " | ".join(cells) + " |")
    notes = (f"\nTest split; seed {result['seed']}; fine-tuning epochs {result['epochs'] or 'preset'}, pre-training "
             f"epochs {result['pretrain_epochs'] or 'preset'}, limit {result['limit'] or 'none'} (pre-training "
             f"{result['pretrain_limit'] or 'none'}); "
             f"total wall time {result['wall_seconds']} s.\n")
    return "\n".join(lines) + "\n" + notes

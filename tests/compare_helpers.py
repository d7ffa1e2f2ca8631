"""Hand-written run directories for compare/check tests: run.json, per_example files and bench.json whose
numbers the tests know exactly (no training)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

FP = {"vqa": "sha256:vqa-test", "nlvr2": "sha256:nlvr2-test", "retrieval": "sha256:ret-test"}


def make_run(directory: Path, model: str, task: str, *, seed: int = 0, metrics: dict[str, Any] | None = None,
             per_example: dict[str, Any] | None = None, fingerprint: str | None = None, kind: str = "run",
             config: dict[str, Any] | None = None, bench: dict[str, Any] | None = None,
             reference: dict[str, Any] | None = None) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    record = {
        "record_version": 1, "kind": kind, "model": model, "task": task, "seed": seed,
        "config": config or {"preset": "tiny", "train": {"epochs": 1}, "data": f"/somewhere/{task}.yaml",
                             "device": "cpu"},
        "data": {"splits": {"test": {"fingerprint": fingerprint or FP.get(task, "sha256:x")}}},
        "metrics": {"test": metrics} if metrics is not None else {},
        "train": {"steps": 1, "wall_seconds": 1.0, "samples_per_second": 1.0},
    }
    if reference is not None:
        record["data"]["splits"]["test"]["reference"] = reference
    (directory / "run.json").write_text(json.dumps(record))
    if per_example is not None:
        (directory / "per_example_test.json").write_text(json.dumps(per_example))
    if bench is not None:
        (directory / "bench.json").write_text(json.dumps(bench))
    return directory


def nlvr2_run(directory: Path, model: str, correct: list[bool], seed: int = 0, **kwargs: Any) -> Path:
    accuracy = round(100 * sum(correct) / len(correct), 2)
    return make_run(directory, model, "nlvr2", seed=seed, metrics={"accuracy": accuracy, "consistency": 0.0},
                    per_example={"kind": "correct", "ids": [f"ex-{i}" for i in range(len(correct))],
                                 "values": correct}, **kwargs)


def vqa_run(directory: Path, model: str, values: list[float], types: list[str] | None = None, seed: int = 0,
            **kwargs: Any) -> Path:
    types = types or ["yes/no"] * len(values)
    per_type = {t: round(100 * sum(v for v, u in zip(values, types) if u == t) / types.count(t), 2)
                for t in set(types)}
    metrics = {"overall": round(100 * sum(values) / len(values), 2), "perAnswerType": per_type,
               "perQuestionType": {}}
    return make_run(directory, model, "vqa", seed=seed, metrics=metrics,
                    per_example={"kind": "vqa_accuracy", "ids": [str(i) for i in range(len(values))],
                                 "values": values, "answer_types": types}, **kwargs)

"""bench.json: what one ``vlbench bench`` run measured, written atomically (schema in README "Measuring speed").

Top level describes the run (task, device, precision, batch size, matmul peak, versions) and, flattened for
readers that want one model, the ``--model`` results (``inference``, ``split``, ``train``, ``flops``,
``achieved``, ``memory``, ``harness_overhead``). ``models`` holds every measured model's results by name;
``ratios`` (with ``--compare``) divides each model's numbers by the reference model's, measured in the same
interleaved rounds. Key names are stable: extend, never rename.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from harness.fileio import write_json
from harness.records.environment import device_description, environment

SCHEMA = "vlbench-bench-v1"
BENCH_FILE = "bench.json"
# Keys every bench.json has (tests and `vlbench check` rely on them).
CONTRACT_KEYS = ("schema", "model", "task", "batch_size", "device", "precision", "matmul_peak", "inference", "split",
                 "train", "flops", "achieved", "memory", "harness_overhead", "models", "env")


def ratios(results: dict[str, dict[str, Any]], reference: str) -> dict[str, dict[str, float | None]]:
    """Each model against ``reference``: throughput ratios (>1 = faster than the reference) and cost ratios."""
    ref = results[reference]

    def div(a: float | None, b: float | None) -> float | None:
        return a / b if a is not None and b else None

    out = {}
    for name, r in results.items():
        out[name] = {
            "inference_samples_per_second": div(r["inference"]["samples_per_second"],
                                                ref["inference"]["samples_per_second"]),
            "latency_p50": div(r["inference"]["batch_latency_ms"]["p50"], ref["inference"]["batch_latency_ms"]["p50"]),
            "visual_encoder_ms": div(r["split"]["visual_encoder"]["ms_per_batch"],
                                     ref["split"]["visual_encoder"]["ms_per_batch"]),
            "transformer_ms": div(r["split"]["transformer"]["ms_per_batch"], ref["split"]["transformer"]["ms_per_batch"]),
            "train_samples_per_second": div(r["train"]["samples_per_second"], ref["train"]["samples_per_second"]),
            "flops_per_sample": div(r["flops"]["per_sample"], ref["flops"]["per_sample"]),
        }
    return out


def build_report(*, reference: str, task: str, results: dict[str, dict[str, Any]], device: torch.device,
                 precision: str, batch_size: int, peak: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
    primary = results[reference]
    report: dict[str, Any] = {
        "schema": SCHEMA,
        "kind": "bench",
        "model": reference,
        "task": task,
        "batch_size": batch_size,
        "device": {"name": device_description(device), "type": device.type, "threads": torch.get_num_threads()},
        "precision": precision,
        "matmul_peak": peak,
        **{k: primary.get(k) for k in ("inference", "split", "train", "flops", "achieved", "memory",
                                       "harness_overhead")},
        "models": results,
        "reference": reference,
        "settings": settings,
        "env": environment(device),
    }
    if len(results) > 1:
        report["ratios"] = ratios(results, reference)
    return report


def write_report(run_dir: Path, report: dict[str, Any]) -> Path:
    path = run_dir / BENCH_FILE
    write_json(path, _rounded(report))
    return path


def _rounded(value: Any) -> Any:
    """Floats to 6 significant digits: timings are not more precise than that, and the file stays readable."""
    if isinstance(value, float):
        return float(f"{value:.6g}")
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value

"""`vlbench bench`: the bench.json contract, counted FLOPs, live detector timing, harness overhead, bad input.

Kept fast: batch 4, one or two timed rounds, tiny preset on the session world (the numbers are not checked for
speed, only for being real measurements that add up).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from harness.bench.flops import MatmulProbe, count_flops
from harness.bench.report import CONTRACT_KEYS
from harness.bench.timing import TimingStats, percentile, time_call
from harness.cli.main import cli
from harness.training.precision import cpu_has_native_bf16

FAST = ["--batch-size", "4", "--warmup", "1", "--repeats", "2", "--train-steps", "1", "--no-progress"]


def _bench(world: Path, out: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["bench", "--task", "vqa", "--data", str(world / "vqa.yaml"),
                                      "--run-dir", str(out), *FAST, *args])
    return result.exit_code, result.output


# ------------------------------------------------------------------------------------------------ units


def test_linear_flops_equal_the_hand_count() -> None:
    layer = torch.nn.Linear(16, 8)
    x = torch.randn(5, 16)
    assert count_flops(lambda: layer(x)).total == 2 * 5 * 16 * 8  # one multiply-add = 2 FLOPs
    # Backward: grad wrt input and wrt weight, each another 2 * 5 * 16 * 8.
    flops = count_flops(lambda: layer(x.requires_grad_()).sum().backward())
    assert flops.total == 3 * 2 * 5 * 16 * 8


def test_conv_flops_equal_the_hand_count() -> None:
    conv = torch.nn.Conv2d(3, 4, kernel_size=3, padding=1, bias=False)
    x = torch.randn(2, 3, 8, 8)
    assert count_flops(lambda: conv(x)).total == 2 * (2 * 8 * 8) * 4 * (3 * 3 * 3)


def test_timing_statistics() -> None:
    assert percentile([1.0, 2.0, 3.0, 4.0, 5.0], 50) == 3.0
    assert percentile([1.0, 2.0], 95) == pytest.approx(1.95)
    stats = TimingStats.of([1.0, 1.0, 1.0, 10.0])
    assert stats.median == 1.0 and stats.p95 > stats.median and stats.repeats == 4
    calls = []
    samples = time_call(lambda: calls.append(1), torch.device("cpu"), warmup=2, repeats=3)
    assert len(samples) == 3 and len(calls) == 5 and all(s >= 0 for s in samples)


@pytest.mark.parametrize("precision, dtype", [("fp32", "float32"), ("bf16", "bfloat16")])
def test_matmul_peak_is_measured_in_the_runs_precision(precision: str, dtype: str) -> None:
    from harness.runtime import Runtime

    probe = MatmulProbe(Runtime.start("cpu", precision, join=False), size=128)
    probe.warm(3)
    record = probe.record()
    assert record["flops_per_second"] >= record["median_flops_per_second"] > 0
    assert record["dtype"] == dtype and record["size"] == 128 and record["repeats"] == 3


# ------------------------------------------------------------------------------------------------ end to end


@pytest.fixture(scope="module")
def pixel_bench(world: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("bench-pixel")
    code, output = _bench(world, out, "--model", "pixelbert", "--overhead-steps", "2", "--overhead-epochs", "2")
    assert code == 0, output
    assert "samples/s" in output
    assert not [p for p in out.iterdir() if p.name != "bench.json"]  # atomic write left no temporary file
    return json.loads((out / "bench.json").read_text())


def test_bench_json_has_the_contract_keys(pixel_bench: dict) -> None:
    for key in CONTRACT_KEYS:
        assert key in pixel_bench, key
    assert pixel_bench["model"] == "pixelbert" and pixel_bench["task"] == "vqa" and pixel_bench["batch_size"] == 4
    auto = "bf16-autocast" if cpu_has_native_bf16() else "fp32"  # --precision auto on this CPU
    assert pixel_bench["precision"] == auto and pixel_bench["device"]["type"] == "cpu"
    assert pixel_bench["env"]["packages"]["torch"] == torch.__version__.split("+")[0] or \
        pixel_bench["env"]["packages"]["torch"]
    inference = pixel_bench["inference"]
    assert inference["samples_per_second"] > 0 and inference["batch_seconds"]["repeats"] == 2
    p50, p95 = inference["latency_ms_per_sample"]["p50"], inference["latency_ms_per_sample"]["p95"]
    assert 0 < p50 <= p95
    assert inference["samples_per_second"] == pytest.approx(1000 / p50, rel=1e-3)
    split = pixel_bench["split"]
    assert split["visual_encoder"]["name"] == "cnn"
    assert split["visual_encoder"]["share"] + split["transformer"]["share"] == pytest.approx(1.0, abs=1e-3)
    assert pixel_bench["train"]["samples_per_second"] > 0
    assert pixel_bench["memory"]["inference"]["peak_bytes"] > 0
    assert pixel_bench["memory"]["inference"]["kind"] == "cpu_rss_high_water"


def test_bench_flops_are_counted_and_add_up(pixel_bench: dict) -> None:
    flops = pixel_bench["flops"]
    assert flops["per_sample"] > 0 and flops["visual_per_sample"] > 0 and flops["transformer_per_sample"] > 0
    # End to end = visual encoder + transformer/head, counted separately.
    assert flops["per_sample"] == pytest.approx(flops["visual_per_sample"] + flops["transformer_per_sample"], rel=1e-6)
    assert flops["train_per_sample"] > 2 * flops["per_sample"]  # backward costs about twice the forward
    assert "convolution" in flops["by_op"] and sum(flops["by_op"].values()) == flops["per_batch"]
    achieved = pixel_bench["achieved"]
    assert achieved["flops_per_second"] == pytest.approx(flops["per_batch"] / pixel_bench["inference"]["batch_seconds"]
                                                         ["median"], rel=1e-3)
    peak = pixel_bench["matmul_peak"]["flops_per_second"]
    assert achieved["fraction_of_matmul_peak"] == pytest.approx(achieved["flops_per_second"] / peak, rel=1e-3)


def test_bench_measures_harness_overhead(pixel_bench: dict) -> None:
    overhead = pixel_bench["harness_overhead"]
    assert overhead["steps"] == 2 * 2 and overhead["epochs"] == 2  # 2 steps per epoch, 2 epochs
    seconds = overhead["seconds"]
    assert seconds["compute"] > 0 and seconds["data"] > 0 and seconds["evaluate_model"] > 0
    assert seconds["evaluate_total"] >= seconds["evaluate_model"]
    assert 0 <= overhead["fraction"] < 1 and 0 <= overhead["projected_full_epoch"]["fraction"] < 1
    assert overhead["meets_target"] == (overhead["projected_full_epoch"]["fraction"] < 0.05)


def test_region_compare_times_the_detector_live(world: Path, detector_file, tmp_path: Path) -> None:
    code, output = _bench(world, tmp_path, "--model", "pixelbert", "--compare", "region", "--detector",
                          str(detector_file[0]), "--overhead-steps", "0")
    assert code == 0, output
    report = json.loads((tmp_path / "bench.json").read_text())
    assert set(report["models"]) == {"pixelbert", "region"} and report["settings"]["interleaved"]
    region = report["models"]["region"]
    visual = region["split"]["visual_encoder"]
    assert visual["name"] == "detector"
    # Every timed forward went through the detector: no image was served from a feature cache.
    assert visual["detector_live_images"] == visual["detector_live_expected"] > 0
    assert region["visual_encoder_record"]["cache"] is None
    assert visual["ms_per_batch"] > 0 and region["flops"]["visual_per_sample"] > 0
    ratios = report["ratios"]
    assert ratios["pixelbert"]["inference_samples_per_second"] == 1.0
    assert ratios["region"]["inference_samples_per_second"] == pytest.approx(
        region["inference"]["samples_per_second"] / report["models"]["pixelbert"]["inference"]["samples_per_second"],
        rel=1e-3)
    assert report["harness_overhead"] is None


@pytest.mark.parametrize("args, message", [
    (["--model", "pixelbert", "--compare", "nosuch"], "unknown model"),
    (["--model", "textonly"], "textonly has no visual encoder"),
    (["--model", "pixelbert", "--device", "cuda:7"], "CUDA is not available" if not torch.cuda.is_available()
     else "invalid device"),
])
def test_bad_input_is_a_one_line_error(world: Path, tmp_path: Path, args: list[str], message: str) -> None:
    code, output = _bench(world, tmp_path, *args)
    assert code == 2, output
    assert message in output and "Traceback" not in output
    assert not (tmp_path / "bench.json").exists()


def test_textonly_in_compare_is_skipped_with_a_note_not_an_error() -> None:
    from harness.bench.run import models_to_time

    names, notes = models_to_time("region", ["pixelbert", "textonly", "region", "grid"])
    assert names == ["region", "pixelbert", "grid"] and notes == ["textonly skipped: it has no visual encoder to time"]
    assert models_to_time("pixelbert", ["soho"]) == (["pixelbert", "soho"], [])


def test_checkpoint_of_another_model_is_refused(world: Path, tmp_path: Path) -> None:
    from harness.checkpoints import save_checkpoint

    fake = tmp_path / "ck.safetensors"
    save_checkpoint(fake, {"model.x": torch.zeros(1)}, {"model": "soho", "task": "vqa"})
    code, output = _bench(world, tmp_path / "out", "--model", "pixelbert", "--checkpoint", str(fake))
    assert code == 2 and "not pixelbert/vqa" in output and len(output.strip().splitlines()) == 1

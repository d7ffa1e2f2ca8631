"""`vlbench check --baseline`: exit 0 on a matching run, 1 with a readable regression list on a worse or slower
run, 2 on bad input; `--write` refreshes a baseline that the same runs then pass."""

from __future__ import annotations

from pathlib import Path

import yaml
from click.testing import CliRunner
from compare_helpers import FP, vqa_run

from harness.cli.main import cli

BASELINE = {
    "description": "test",
    "split": "test",
    "runs": [{"model": "pixelbert", "task": "vqa", "fingerprint": FP["vqa"],
              "metrics": {"overall": {"value": 50.0, "tolerance": 5.0},
                          "perAnswerType.yes/no": {"value": 50.0, "tolerance": 5.0}},
              "throughput": {"samples_per_second": {"value": 100.0, "tolerance": 0.5}}}],
}


def _baseline(tmp_path: Path, data: dict = BASELINE) -> Path:
    path = tmp_path / "baseline.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _check(*args: str):
    return CliRunner().invoke(cli, ["check", *args])


def _run(tmp_path: Path, name: str, right: int, speed: float | None = None, **kwargs) -> Path:
    bench = None if speed is None else {"model": "pixelbert", "task": "vqa", "inference": {"samples_per_second": speed}}
    return vqa_run(tmp_path / name, "pixelbert", [1.0] * right + [0.0] * (20 - right), bench=bench, **kwargs)


def test_matching_run_passes(tmp_path: Path) -> None:
    run = _run(tmp_path, "ok", right=10, speed=90.0)  # 50.0: at the baseline; 0.9x speed within 0.5
    result = _check("--baseline", str(_baseline(tmp_path)), str(run))
    assert result.exit_code == 0, result.output
    assert "OK: 3 check(s)" in result.output
    # At exactly the tolerance edge (45.0 = 50 - 5) still passes.
    edge = _run(tmp_path, "edge", right=9)
    assert _check("--baseline", str(_baseline(tmp_path)), str(edge)).exit_code == 0


def test_worse_run_fails_with_a_readable_list(tmp_path: Path) -> None:
    worse = _run(tmp_path, "worse", right=8, speed=40.0)  # 40.0 < 45 allowed; 0.4x < 0.5x allowed
    result = _check("--baseline", str(_baseline(tmp_path)), str(worse))
    assert result.exit_code == 1
    out = result.output
    assert "FAILED: 3 regression(s)" in out
    assert "overall = 40, baseline 50 (allowed -5)" in out
    assert "samples_per_second = 40, baseline 100 (allowed x0.5)" in out
    assert "REGRESSION" in out and "verdict" in out.splitlines()[0]


def test_throughput_is_skipped_without_bench(tmp_path: Path) -> None:
    run = _run(tmp_path, "nobench", right=10)
    result = _check("--baseline", str(_baseline(tmp_path)), str(run))
    assert result.exit_code == 0, result.output
    assert "skipped" in result.output


def test_bad_input_exits_2(tmp_path: Path) -> None:
    run = _run(tmp_path, "ok", right=10)
    other_data = _run(tmp_path, "other", right=10, fingerprint="sha256:different")
    baseline = _baseline(tmp_path)
    result = _check("--baseline", str(baseline), str(other_data))
    assert result.exit_code == 2 and "different test data than the baseline" in result.output
    region = vqa_run(tmp_path / "region", "region", [1.0] * 4)
    result = _check("--baseline", str(baseline), str(region))
    assert result.exit_code == 2 and "no baseline entry for model 'region'" in result.output
    (tmp_path / "bad.yaml").write_text("runs: [{model: pixelbert, task: vqa, metrics: {overall: 3}}]")
    result = _check("--baseline", str(tmp_path / "bad.yaml"), str(run))
    assert result.exit_code == 2 and "expected {value: NUMBER, tolerance: NUMBER}" in result.output
    result = _check("--baseline", str(tmp_path / "missing.yaml"), str(run))
    assert result.exit_code == 2 and "missing.yaml: baseline not found" in result.output


def test_write_refreshes_a_baseline_that_the_runs_pass(tmp_path: Path) -> None:
    runs = [_run(tmp_path, f"seed-{s}", right=r, seed=s, speed=50.0) for s, r in ((1, 10), (2, 12))]
    path = tmp_path / "fresh.yaml"
    result = _check("--write", "--baseline", str(path), "--tolerance", "3", *map(str, runs))
    assert result.exit_code == 0, result.output
    data = yaml.safe_load(path.read_text())
    entry = data["runs"][0]
    assert entry["metrics"]["overall"] == {"value": 55.0, "tolerance": 3.0}  # mean of 50 and 60
    assert entry["fingerprint"] == FP["vqa"]
    # seed 1 (50.0) is 5 points under the mean: beyond 3 -> regression; seed 2 passes.
    assert _check("--baseline", str(path), str(runs[1])).exit_code == 0
    assert _check("--baseline", str(path), str(runs[0])).exit_code == 1


def test_tolerance_in_seed_standard_deviations(tmp_path: Path) -> None:
    """--write --tolerance-std K records the seeds' std; check allows a drop of K std (or the points tolerance,
    whichever is larger), so a noisy metric gets room and a steady one stays tight."""
    runs = [_run(tmp_path, f"seed-{s}", right=r, seed=s) for s, r in ((1, 10), (2, 12), (3, 14))]  # 50, 60, 70
    path = tmp_path / "std.yaml"
    result = _check("--write", "--baseline", str(path), "--tolerance", "0", "--tolerance-std", "2", *map(str, runs))
    assert result.exit_code == 0, result.output
    overall = yaml.safe_load(path.read_text())["runs"][0]["metrics"]["overall"]
    assert overall == {"value": 60.0, "tolerance": 0.0, "std": 10.0, "tolerance_std": 2.0}
    assert _check("--baseline", str(path), str(runs[0])).exit_code == 0  # 50 >= 60 - 2 x 10
    far = _run(tmp_path, "far", right=7, seed=4)  # 35 < 40
    result = _check("--baseline", str(path), str(far))
    assert result.exit_code == 1 and "allowed -20 (2 std)" in result.output
    one_seed = _check("--write", "--baseline", str(tmp_path / "one.yaml"), "--tolerance-std", "2", str(runs[0]))
    assert one_seed.exit_code == 2 and "at least two seeds" in one_seed.output
    (tmp_path / "nostd.yaml").write_text(
        "runs: [{model: pixelbert, task: vqa, metrics: {overall: {value: 50, tolerance_std: 2}}}]")
    result = _check("--baseline", str(tmp_path / "nostd.yaml"), str(runs[0]))
    assert result.exit_code == 2 and "needs the baseline's seed 'std'" in result.output

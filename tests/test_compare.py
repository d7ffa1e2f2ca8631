"""`vlbench compare` on hand-written run directories: statistics computed by hand, the split refusal, seeds,
significance markers on a known-different and a known-equal pair, outputs (Markdown, CSV, LaTeX, HTML, plots)."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from compare_helpers import make_run, nlvr2_run, vqa_run

from harness.cli.main import cli
from harness.reports.significance import (
    bootstrap_ratio_diff,
    bootstrap_retrieval,
    mcnemar_exact,
    retrieval_units,
)


def _compare(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["compare", *args, "--resamples", "1000"])
    return result.exit_code, result.stdout, result.stderr


# --- statistics ---------------------------------------------------------------------------------------------
def test_mcnemar_exact_matches_hand_computed_binomial() -> None:
    # 8 examples only A gets right, 2 only B: p = 2 * P(X <= 2 | n=10, 1/2) = 2 * (1 + 10 + 45) / 1024.
    a = np.array([True] * 8 + [False] * 2 + [True] * 5 + [False] * 3)
    b = np.array([False] * 8 + [True] * 2 + [True] * 5 + [False] * 3)
    result = mcnemar_exact(a, b)
    assert (result.a_only, result.b_only) == (8, 2)
    assert result.p_value == pytest.approx(112 / 1024)
    # 10 vs 0: p = 2 / 1024; no discordant pairs: p = 1.
    assert mcnemar_exact(np.ones(10, bool), np.zeros(10, bool)).p_value == pytest.approx(2 / 1024)
    assert mcnemar_exact(np.ones(5, bool), np.ones(5, bool)).p_value == 1.0


def test_paired_bootstrap_is_seeded_and_separates_real_from_null_differences() -> None:
    rng = np.random.default_rng(1)
    base = rng.random(300)
    same = bootstrap_ratio_diff(base, base.copy(), np.ones(300), resamples=2000)
    assert same == (0.0, 0.0, 0.0)
    better = np.clip(base + 0.2, 0, 1)
    diff, low, high = bootstrap_ratio_diff(better, base, np.ones(300), resamples=2000)
    assert diff == pytest.approx(100 * (better - base).mean())
    assert 0 < low < diff < high
    assert bootstrap_ratio_diff(better, base, np.ones(300), resamples=2000) == (diff, low, high)  # reproducible


def test_retrieval_bootstrap_groups_captions_by_image() -> None:
    # 2 images x 2 captions; ranks 0-based: image 0's best caption at rank 0, image 1's at rank 6.
    per_example = {"tr_best_rank": [0, 6], "ir_rank": [0, 1, 0, 3], "captions_per_image": [2, 2]}
    tr, ir, counts = retrieval_units(per_example)
    assert tr.tolist() == [[1, 1, 1], [0, 0, 1]]            # hits at K = 1, 5, 10
    assert ir.tolist() == [[1, 2, 2], [1, 2, 2]]            # caption hits summed per image
    assert counts.tolist() == [2, 2]
    worse = retrieval_units({"tr_best_rank": [20, 20], "ir_rank": [1, 1, 1, 1], "captions_per_image": [2, 2]})
    result = bootstrap_retrieval((tr, ir, counts), worse, resamples=500)
    assert result["tr_r1"][0] == pytest.approx(50.0)          # 1/2 images vs 0/2
    assert result["ir_r1"][0] == pytest.approx(50.0)          # 2/4 captions vs 0/4
    # A: TR 50/50/100 + IR 50/100/100 = 450; B: TR 0/0/0 + IR 0/100/100 = 200.
    assert result["rsum"][0] == pytest.approx(450 - 200)


# --- the command --------------------------------------------------------------------------------------------
def test_seeds_aggregate_as_mean_std_with_count(tmp_path: Path) -> None:
    # Three seeds with 40 questions each: overall 50.0, 52.5 and 57.5 -> mean 53.33, sample std 3.82.
    for seed, right in ((1, 20), (2, 21), (3, 23)):
        vqa_run(tmp_path / "pb" / f"seed-{seed}", "pixelbert", [1.0] * right + [0.0] * (40 - right), seed=seed)
    vqa_run(tmp_path / "txt", "textonly", [1.0] * 10 + [0.0] * 30)
    code, out, err = _compare(str(tmp_path / "pb"), str(tmp_path / "txt"), "--out", str(tmp_path / "rep"))
    assert code == 0, err
    values = [50.0, 52.5, 57.5]
    mean, std = float(np.mean(values)), float(np.std(values, ddof=1))
    md = (tmp_path / "rep" / "comparison.md").read_text()
    assert f"**{mean:.2f} ± {std:.2f}**" in md
    rows = {r["label"]: r for r in csv.DictReader((tmp_path / "rep" / "comparison.csv").open())}
    assert float(rows["pixelbert"]["vqa.overall.mean"]) == pytest.approx(mean, abs=1e-3)
    assert float(rows["pixelbert"]["vqa.overall.std"]) == pytest.approx(std, abs=1e-3)
    assert rows["pixelbert"]["vqa.n"] == "3" and rows["textonly"]["vqa.n"] == "1"
    assert rows["textonly"]["vqa.overall.std"] == ""  # one seed: no spread, not a fake 0


def test_different_split_fingerprints_are_refused_unless_allowed(tmp_path: Path) -> None:
    a = nlvr2_run(tmp_path / "a", "pixelbert", [True, False] * 10)
    b = nlvr2_run(tmp_path / "b", "region", [True, True] * 10, fingerprint="sha256:other-split")
    code, _, err = _compare(str(a), str(b), "--out", str(tmp_path / "rep"))
    assert code == 2
    line = err.strip()
    assert "\n" not in line and line.startswith("error:") and str(a) in line and str(b) in line
    assert "--allow-different-splits" in line
    assert not (tmp_path / "rep" / "comparison.md").exists()
    code, _, err = _compare(str(a), str(b), "--out", str(tmp_path / "rep"), "--allow-different-splits")
    assert code == 0, err
    md = (tmp_path / "rep" / "comparison.md").read_text()
    assert "different test splits" in md
    assert "No paired tests" in md  # nothing is tested across different data


def test_significance_marks_a_known_different_pair_and_not_a_known_equal_pair(tmp_path: Path) -> None:
    best = [True] * 180 + [False] * 20
    # region: right on the same 180 minus 40 of them -> 40 discordant pairs all favouring pixelbert.
    worse = [True] * 140 + [False] * 60
    # soho: the same correctness as pixelbert except two swaps (1 each way) -> p = 1.
    equal = list(best)
    equal[0], equal[199] = False, True
    nlvr2_run(tmp_path / "pb", "pixelbert", best)
    nlvr2_run(tmp_path / "rg", "region", worse)
    nlvr2_run(tmp_path / "so", "soho", equal)
    code, _, err = _compare(str(tmp_path), "--out", str(tmp_path / "rep"))
    assert code == 0, err
    md = (tmp_path / "rep" / "comparison.md").read_text()
    table = {line.split("|")[1].strip(): line for line in md.splitlines() if line.startswith("| ")}
    assert "**90.00**" in table["pixelbert"]
    assert "70.00†" in table["region"]
    assert "90.00 |" in table["soho"] and "90.00†" not in table["soho"]
    sig = list(csv.DictReader((tmp_path / "rep" / "significance.csv").open()))
    by_pair = {(r["a"], r["b"]): r for r in sig}
    assert float(by_pair[("pixelbert", "region")]["p_value"]) == pytest.approx(2 * 0.5 ** 40)
    assert float(by_pair[("pixelbert", "soho")]["p_value"]) == pytest.approx(1.0)
    assert by_pair[("pixelbert", "region")]["significant"] == "True"
    assert "McNemar" in md and "p < 0.05" in md  # the footnote names the test and threshold


def test_vqa_bootstrap_marks_per_answer_type(tmp_path: Path) -> None:
    types = ["yes/no"] * 100 + ["number"] * 100
    good = [1.0] * 100 + [0.3] * 100
    bad_numbers = [1.0] * 100 + [0.0] * 100  # same on yes/no, much worse on numbers
    vqa_run(tmp_path / "pb", "pixelbert", good, types)
    vqa_run(tmp_path / "gr", "grid", bad_numbers, types)
    code, _, err = _compare(str(tmp_path / "pb"), str(tmp_path / "gr"), "--out", str(tmp_path / "rep"))
    assert code == 0, err
    rows = {r["label"]: r for r in csv.DictReader((tmp_path / "rep" / "comparison.csv").open())}
    assert rows["grid"]["vqa.number.sig_vs_best"] == "True"
    assert rows["grid"]["vqa.overall.sig_vs_best"] == "True"
    assert rows["grid"]["vqa.yes/no.sig_vs_best"] in ("False", "")  # identical: never significant


def test_pretrain_runs_are_skipped_with_a_note_and_outputs_are_complete(tmp_path: Path) -> None:
    vqa_run(tmp_path / "pb", "pixelbert", [1.0, 0.0] * 20,
            bench={"model": "pixelbert", "task": "vqa", "inference": {"samples_per_second": 100.0}})
    vqa_run(tmp_path / "rg", "region", [1.0, 1.0, 0.0, 0.0] * 10,
            bench={"model": "region", "task": "vqa", "inference": {"samples_per_second": 25.0}})
    make_run(tmp_path / "pre", "pixelbert", "pretrain", kind="pretrain", metrics={"mlm_accuracy": 1.0})
    code, out, err = _compare(str(tmp_path / "pb"), str(tmp_path / "rg"), str(tmp_path / "pre"), "--out",
                              str(tmp_path / "rep"))
    assert code == 0, err
    assert "pre-training run" in err
    rep = tmp_path / "rep"
    md = (rep / "comparison.md").read_text()
    assert "Speed img/s" in md and "100.0" in md and "10.00" in md  # 100 samples/s -> 10 ms/image
    for name in ("comparison.md", "comparison.csv", "comparison.tex", "comparison.html", "task_bars.png",
                 "task_bars.pdf", "vqa_answer_types.png", "accuracy_vs_speed.png", "accuracy_vs_speed.pdf"):
        assert (rep / name).stat().st_size > 0, name
    tex = (rep / "comparison.tex").read_text()
    assert r"\toprule" in tex and r"\midrule" in tex and r"\bottomrule" in tex and r"\multicolumn" in tex
    page = (rep / "comparison.html").read_text()
    assert page.count("data:image/png;base64,") >= 3
    assert not re.search(r"(src|href)=\"https?:", page)  # self-contained: nothing fetched
    assert "pixelbert" in page and "region" in page


def test_no_bench_skips_pareto_cleanly(tmp_path: Path) -> None:
    vqa_run(tmp_path / "pb", "pixelbert", [1.0, 0.0] * 5)
    code, _, err = _compare(str(tmp_path / "pb"), "--out", str(tmp_path / "rep"))
    assert code == 0
    assert "accuracy vs speed plot skipped" in err
    assert not (tmp_path / "rep" / "accuracy_vs_speed.png").exists()


def test_duplicate_seed_and_no_runs_are_one_line_errors(tmp_path: Path) -> None:
    vqa_run(tmp_path / "a", "pixelbert", [1.0, 0.0], seed=1)
    vqa_run(tmp_path / "b", "pixelbert", [1.0, 1.0], seed=1)
    code, _, err = _compare(str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "rep"))
    assert code == 2 and "seed 1 appears in more than one run" in err
    (tmp_path / "empty").mkdir()
    code, _, err = _compare(str(tmp_path / "empty"), "--out", str(tmp_path / "rep"))
    assert code == 2 and err.startswith("error:") and "no run.json" in err


def test_a_models_runs_on_all_tasks_share_one_row_despite_per_task_preset_budgets(tmp_path: Path) -> None:
    """tiny retrieval trains 4 epochs validated once (its preset budget): still the same configuration as the
    model's VQA run, so one row; a run where the user changed a setting is a separate, labelled row."""
    from harness.training.config import train_preset

    def config(task: str, **changes: object) -> dict[str, object]:
        train = train_preset("tiny", task).with_overrides(**changes).to_dict()
        return {"preset": "tiny", "train": train, "data": f"/w/{task}.yaml", "device": "cpu"}

    vqa_run(tmp_path / "pb-vqa", "pixelbert", [1.0, 0.0] * 5, config=config("vqa"))
    make_run(tmp_path / "pb-ret", "pixelbert", "retrieval", config=config("retrieval"),
             metrics={"tr_r1": 1.0, "tr_r5": 2.0, "tr_r10": 3.0, "ir_r1": 1.0, "ir_r5": 2.0, "ir_r10": 3.0,
                      "rsum": 12.0})
    vqa_run(tmp_path / "pb-long", "pixelbert", [1.0, 1.0] * 5, config=config("vqa", epochs=16))
    code, out, err = _compare(str(tmp_path / "pb-vqa"), str(tmp_path / "pb-ret"), "--out", str(tmp_path / "a"))
    assert code == 0, err
    assert "compared 1 configuration(s): pixelbert" in out
    code, out, err = _compare(str(tmp_path / "pb-vqa"), str(tmp_path / "pb-ret"), str(tmp_path / "pb-long"),
                              "--out", str(tmp_path / "b"))
    assert code == 0, err
    assert "compared 2 configuration(s)" in out and "epochs=16" in out


def test_bench_compare_models_each_get_their_speed(tmp_path: Path) -> None:
    """`vlbench bench --model region --compare pixelbert` measures both side by side in one bench.json: the
    table shows each model's own throughput, not the --model's for all."""
    vqa_run(tmp_path / "pb", "pixelbert", [1.0, 0.0] * 5)
    vqa_run(tmp_path / "rg", "region", [1.0, 1.0, 0.0, 0.0] * 3)
    (tmp_path / "bench").mkdir()
    (tmp_path / "bench" / "bench.json").write_text(json.dumps({
        "model": "region", "task": "vqa", "inference": {"samples_per_second": 50.0},
        "models": {"region": {"inference": {"samples_per_second": 50.0}},
                   "pixelbert": {"inference": {"samples_per_second": 400.0}}},
    }))
    code, _, err = _compare(str(tmp_path / "pb"), str(tmp_path / "rg"), str(tmp_path / "bench"), "--out",
                            str(tmp_path / "rep"))
    assert code == 0, err
    rows = {r["label"]: r for r in csv.DictReader((tmp_path / "rep" / "comparison.csv").open())}
    assert float(rows["pixelbert"]["images_per_second"]) == 400.0
    assert float(rows["region"]["images_per_second"]) == 50.0

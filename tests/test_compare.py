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


def _compare(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["compare", *args, "--resamples", "1000"])
    return result.exit_code, result.stdout, result.stderr


# --- statistics: tests/test_significance.py ---------------------------------------------------------------
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
    main = md.split("## Differences")[0]
    table = {line.split("|")[1].strip(): line for line in main.splitlines() if line.startswith("| ")}
    assert "**" not in table["pixelbert"]  # soho ties it: no bold for a lead that is not significant
    assert "70.00†" in table["region"]
    assert "90.00 |" in table["soho"] and "90.00†" not in table["soho"]
    sig = [r for r in csv.DictReader((tmp_path / "rep" / "significance.csv").open()) if r["metric"] == "accuracy"]
    by_pair = {(r["a"], r["b"]): r for r in sig}
    assert float(by_pair[("pixelbert", "region")]["diff"]) == pytest.approx(20.0)
    assert float(by_pair[("pixelbert", "region")]["p_holm"]) < 1e-6
    assert float(by_pair[("pixelbert", "soho")]["p_value"]) == pytest.approx(1.0)
    assert by_pair[("pixelbert", "region")]["significant"] == "True"
    assert by_pair[("pixelbert", "soho")]["significant"] == "False"
    assert "examples only" in by_pair[("pixelbert", "region")]["detail"]  # one seed each: said plainly
    # Holm's family is a column (3 pairs of one metric), and the footnote says so with the threshold
    assert {r["family"] for r in sig} == {"nlvr2/accuracy"} and {r["family_size"] for r in sig} == {"3"}
    assert "p < 0.05" in md and "Holm" in md and "the 3 pairwise comparisons of one task and metric" in md
    raw = sorted(float(r["p_value"]) for r in sig)
    assert sorted(float(r["p_holm"]) for r in sig)[0] == pytest.approx(min(1.0, 3 * raw[0]))
    # --holm-family report: one family of every metric's pairs (accuracy and consistency: 6)
    code, _, err = _compare(str(tmp_path), "--out", str(tmp_path / "rep-all"), "--holm-family", "report")
    assert code == 0, err
    every = list(csv.DictReader((tmp_path / "rep-all" / "significance.csv").open()))
    assert len(every) == 6 and {r["family"] for r in every} == {"report"} and {r["family_size"] for r in every} == {"6"}
    smallest = min(every, key=lambda r: float(r["p_value"]))
    assert float(smallest["p_holm"]) == pytest.approx(min(1.0, 6 * float(smallest["p_value"])))
    assert "all 6 comparisons of this report" in (tmp_path / "rep-all" / "comparison.md").read_text()
    # the interval of the difference to the column's best, in the row of the worse model
    differences = md.split("## Differences to each column's best")[1].split("##")[0]
    region = next(line for line in differences.splitlines() if line.startswith("| region"))
    assert "-20.00 [" in region and "best" in next(line for line in differences.splitlines()
                                                   if line.startswith("| pixelbert"))
    # Without the tie, the significant lead is bold.
    code, _, err = _compare(str(tmp_path / "pb"), str(tmp_path / "rg"), "--out", str(tmp_path / "rep2"))
    assert code == 0, err
    assert "| pixelbert | **90.00** |" in (tmp_path / "rep2" / "comparison.md").read_text()


def test_reference_rows_close_the_table_and_lines_mark_the_plot(tmp_path: Path) -> None:
    reference = {"chance": {"accuracy": 50.0, "consistency": 6.25}, "prior": {"accuracy": 51.5, "consistency": 4.0}}
    nlvr2_run(tmp_path / "pb", "pixelbert", [True] * 120 + [False] * 80, reference=reference)
    nlvr2_run(tmp_path / "tx", "textonly", [True] * 101 + [False] * 99, reference=reference)
    code, _, err = _compare(str(tmp_path / "pb"), str(tmp_path / "tx"), "--out", str(tmp_path / "rep"))
    assert code == 0, err
    md = (tmp_path / "rep" / "comparison.md").read_text()
    rows = {line.split("|")[1].strip(): line for line in md.split("## Differences")[0].splitlines()
            if line.startswith("| ")}
    assert "| 50.00 | 6.25 |" in rows["(chance)"] and "| 51.50 | 4.00 |" in rows["(prior)"]
    assert "(chance) random guessing" in md and "(prior) the train split's most frequent answer" in md
    page = (tmp_path / "rep" / "comparison.html").read_text()
    assert "<th>(chance)</th>" in page


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


def test_runs_of_one_preset_made_before_and_after_its_defaults_changed_are_two_configurations() -> None:
    # The base preset's retrieval objective became Pixel-BERT's ranking loss: an older base run (itm, which its
    # record does not name) must not be averaged with a new one.
    from harness.reports.collect import config_key
    from harness.training.config import train_preset

    new = train_preset("base", "retrieval").to_dict()
    old = {k: v for k, v in new.items() if k not in ("retrieval_objective", "ranking_negatives", "ranking_hardest")}
    config = {"preset": "base", "overrides": {}, "model": {}}
    assert config_key({**config, "train": new}, "retrieval") != config_key({**config, "train": old}, "retrieval")
    # Fields a record lacks because they are newer, at their default, change nothing.
    tiny = train_preset("tiny", "vqa").to_dict()
    older = {k: v for k, v in tiny.items() if k != "freeze_cnn"}
    tiny_config = {"preset": "tiny", "overrides": {}, "model": {}}
    assert config_key({**tiny_config, "train": tiny}, "vqa") == config_key({**tiny_config, "train": older}, "vqa")


def test_a_variant_left_at_its_preset_is_labelled_with_the_value_it_ran_with(tmp_path: Path) -> None:
    from compare_helpers import make_run

    from harness.reports.collect import collect

    base = {"preset": "tiny", "device": "cpu"}
    make_run(tmp_path / "a", "pixelbert", "retrieval", metrics={"rsum": 1.0},
             config={**base, "overrides": {}, "train": {"retrieval_objective": "itm"}})
    make_run(tmp_path / "b", "pixelbert", "retrieval", metrics={"rsum": 2.0},
             config={**base, "overrides": {"retrieval_objective": "ranking"},
                     "train": {"retrieval_objective": "ranking"}})
    labels = sorted(run.label for run in collect([tmp_path]).runs)
    assert labels == ["pixelbert (retrieval_objective=itm)", "pixelbert (retrieval_objective=ranking)"]


def test_the_shared_pretraining_draw_is_labelled_shared_beside_a_per_seed_one(tmp_path: Path) -> None:
    """Records of the shared draw carry no ``draw`` key (older records keep their keys); beside a per-seed
    configuration its row must say what it is, not ``draw=None``."""
    from compare_helpers import make_run

    from harness.reports.collect import collect

    base = {"preset": "tiny", "device": "cpu", "overrides": {}, "train": {}}
    shared = {"source": "world-pretraining", "key": "region-tiny-1"}
    make_run(tmp_path / "a", "region", "nlvr2", metrics={"accuracy": 60.0}, config={**base, "pretraining": shared})
    make_run(tmp_path / "b", "region", "nlvr2", metrics={"accuracy": 61.0},
             config={**base, "pretraining": {**shared, "draw": "per-seed"}})
    labels = sorted(run.label for run in collect([tmp_path]).runs)
    assert labels == ["region (draw=per-seed)", "region (draw=shared)"]


def test_a_tasks_own_preset_batch_keeps_the_models_runs_one_configuration() -> None:
    """Tiny NLVR2 trains at batch 64 by its preset, VQA at 32: the same model and protocol on both tasks is one
    row in `compare`; a batch set by hand (`--batch-size 64` on VQA) is another configuration."""
    from harness.reports.collect import config_key
    from harness.training.config import train_preset

    def config(task: str, overrides: dict, world_size: int = 1) -> dict:
        train = train_preset("tiny", task).with_overrides(**overrides).to_dict()
        return {"preset": "tiny", "overrides": overrides, "train": train, "world_size": world_size,
                "effective_batch_size": train["batch_size"] * train["grad_accum"] * world_size}

    assert train_preset("tiny", "nlvr2").batch_size != train_preset("tiny", "vqa").batch_size
    assert config_key(config("nlvr2", {}), "nlvr2") == config_key(config("vqa", {}), "vqa")
    assert config_key(config("vqa", {"batch_size": 64}), "vqa") != config_key(config("vqa", {}), "vqa")
    assert config_key(config("vqa", {}, world_size=2), "vqa") != config_key(config("vqa", {}), "vqa")

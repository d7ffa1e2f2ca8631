"""``vlbench score vqa|nlvr2|retrieval``: JSON on stdout, one-line errors through the top-level group."""

from __future__ import annotations

import json
from pathlib import Path

import click
import numpy as np
import pytest
from click.testing import CliRunner

from harness.cli.score_cmd import score
from harness.errors import DataError, PredictionsError
from harness.metrics.vqa import vqa_evaluate

NLVR2_FIXTURE = Path(__file__).resolve().parent / "fixtures" / "nlvr2_dev_sample.jsonl"


def top_level_cli() -> click.Group:
    """The real ``vlbench`` group."""
    from harness.cli.main import cli

    return cli


# ---------------------------------------------------------------------------------------------------------
# Fixtures: small files in the official formats
# ---------------------------------------------------------------------------------------------------------


@pytest.fixture
def vqa_files(tmp_path: Path) -> dict[str, Path]:
    items = [
        (1, ["yes"] * 10, "is the", "yes/no"),
        (2, ["2"] * 6 + ["3"] * 4, "how many", "number"),
        (3, ["red"] * 2 + ["blue"] * 8, "what color", "other"),
    ]
    questions = {
        "task_type": "Open-Ended",
        "data_type": "mscoco",
        "questions": [{"question_id": qid, "image_id": 7, "question": "?"} for qid, *_ in items],
    }
    annotations = {
        "annotations": [
            {
                "question_id": qid,
                "image_id": 7,
                "question_type": qt,
                "answer_type": at,
                "multiple_choice_answer": answers[0],
                "answers": [
                    {"answer": a, "answer_confidence": "yes", "answer_id": i + 1}
                    for i, a in enumerate(answers)
                ],
            }
            for qid, answers, qt, at in items
        ]
    }
    results = [
        {"question_id": 1, "answer": "yes"},
        {"question_id": 2, "answer": "three"},
        {"question_id": 3, "answer": "Red."},
    ]
    paths = {
        "questions": tmp_path / "q.json",
        "annotations": tmp_path / "a.json",
        "results": tmp_path / "r.json",
    }
    for name, obj in (("questions", questions), ("annotations", annotations), ("results", results)):
        paths[name].write_text(json.dumps(obj), encoding="utf-8")
    return paths


def vqa_args(paths: dict[str, Path]) -> list[str]:
    return [
        "vqa",
        "--questions",
        str(paths["questions"]),
        "--annotations",
        str(paths["annotations"]),
        "--results",
        str(paths["results"]),
    ]


@pytest.fixture
def nlvr2_files(tmp_path: Path) -> dict[str, Path]:
    labels = [
        ("dev-1-0-0", "True"),
        ("dev-1-1-0", "False"),
        ("dev-1-0-1", "True"),
        ("dev-2-0-0", "False"),
    ]
    label_path = tmp_path / "dev.json"
    label_path.write_text("".join(json.dumps({"identifier": i, "label": v}) + "\n" for i, v in labels))
    predictions = tmp_path / "predictions.csv"
    predictions.write_text("dev-1-0-0,True\ndev-1-1-0,True\ndev-1-0-1,true\ndev-2-0-0,False\n")
    return {"labels": label_path, "predictions": predictions}


@pytest.fixture
def retrieval_files(tmp_path: Path) -> dict[str, Path]:
    images = [
        {"filename": "train.jpg", "split": "train", "sentences": [{"raw": "x"}] * 5},
        {"filename": "a.jpg", "split": "test", "sentences": [{"raw": "x"}] * 2},
        {"filename": "b.jpg", "split": "test", "sentences": [{"raw": "x"}] * 1},
    ]
    data = tmp_path / "dataset_flickr30k.json"
    data.write_text(json.dumps({"dataset": "flickr30k", "images": images}))
    scores = tmp_path / "scores_test.npy"
    # Image a: own captions (0, 1), image b: caption 2. Image b ranks its caption second.
    np.save(scores, np.array([[0.9, 0.1, 0.8], [0.1, 0.2, 0.15]], dtype=np.float32))
    return {"data": data, "scores": scores}


def retrieval_args(paths: dict[str, Path], *extra: str) -> list[str]:
    return ["retrieval", "--scores", str(paths["scores"]), "--data", str(paths["data"]), *extra]


# ---------------------------------------------------------------------------------------------------------
# The score group on its own
# ---------------------------------------------------------------------------------------------------------


def test_vqa_prints_official_json(vqa_files) -> None:
    result = CliRunner().invoke(score, vqa_args(vqa_files))
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    # q1: 1.0, q2: "three" -> "3" with 4 matches -> 1.0, q3: "Red." -> "red" with 2 matches -> 0.6
    assert printed == {
        "overall": 86.67,
        "perAnswerType": {"yes/no": 100.0, "number": 100.0, "other": 60.0},
        "perQuestionType": {"is the": 100.0, "how many": 100.0, "what color": 60.0},
    }
    expected = vqa_evaluate(
        *(json.loads(vqa_files[k].read_text()) for k in ("questions", "annotations", "results"))
    )
    assert printed == expected
    assert result.stdout.count("\n") == 1  # one JSON line, nothing else


def test_vqa_missing_results_is_a_predictions_error(vqa_files) -> None:
    vqa_files["results"].write_text(json.dumps([{"question_id": 1, "answer": "yes"}]))
    result = CliRunner().invoke(score, vqa_args(vqa_files))
    assert isinstance(result.exception, PredictionsError)
    assert str(vqa_files["results"]) in str(result.exception)
    assert "results miss 2 question ids (e.g. 2, 3)" in str(result.exception)


def test_vqa_missing_file_is_a_data_error(vqa_files, tmp_path: Path) -> None:
    vqa_files["annotations"] = tmp_path / "nope.json"
    result = CliRunner().invoke(score, vqa_args(vqa_files))
    assert isinstance(result.exception, DataError)
    assert "nope.json: file not found" in str(result.exception)


def test_nlvr2_prints_json(nlvr2_files) -> None:
    args = ["nlvr2", "--predictions", str(nlvr2_files["predictions"]), "--labels", str(nlvr2_files["labels"])]
    result = CliRunner().invoke(score, args)
    assert result.exit_code == 0, result.output
    # 3 of 4 correct; sentences dev-1--0 (one wrong), dev-1--1, dev-2--0 -> 2 of 3 consistent.
    assert json.loads(result.stdout) == pytest.approx({"accuracy": 75.0, "consistency": 200 / 3})


def test_nlvr2_on_real_dev_sample(tmp_path: Path) -> None:
    records = [json.loads(line) for line in NLVR2_FIXTURE.read_text().splitlines() if line.strip()]
    predictions = tmp_path / "p.csv"
    predictions.write_text("".join(f"{r['identifier']},{r['label']}\n" for r in records))
    args = ["nlvr2", "--predictions", str(predictions), "--labels", str(NLVR2_FIXTURE)]
    result = CliRunner().invoke(score, args)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"accuracy": 100.0, "consistency": 100.0}


def test_nlvr2_bad_line_names_file_and_line(nlvr2_files) -> None:
    nlvr2_files["predictions"].write_text("dev-1-0-0,True\ndev-1-1-0;False\n")
    args = ["nlvr2", "--predictions", str(nlvr2_files["predictions"]), "--labels", str(nlvr2_files["labels"])]
    result = CliRunner().invoke(score, args)
    assert isinstance(result.exception, PredictionsError)
    assert "predictions.csv: line 2" in str(result.exception)


def test_retrieval_prints_json(retrieval_files) -> None:
    result = CliRunner().invoke(score, retrieval_args(retrieval_files))
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    assert list(printed) == ["tr_r1", "tr_r5", "tr_r10", "ir_r1", "ir_r5", "ir_r10", "rsum"]
    # TR ranks: a -> 0, b -> 1 (0.2 > 0.15); IR ranks: c0 -> 0, c1 -> 1 (0.2 > 0.1), c2 -> 1 (0.8 > 0.15).
    assert printed["tr_r1"] == 50.0 and printed["ir_r1"] == pytest.approx(100 / 3)
    assert printed["tr_r5"] == printed["ir_r10"] == 100.0
    assert printed["rsum"] == pytest.approx(50 + 100 / 3 + 400)
    assert result.stderr == ""


def test_retrieval_folds_and_wrong_shape(retrieval_files) -> None:
    result = CliRunner().invoke(score, retrieval_args(retrieval_files, "--folds", "2"))
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["tr_r1"] == 100.0  # each single-image fold is trivially right
    result = CliRunner().invoke(score, retrieval_args(retrieval_files, "--split", "train"))
    assert isinstance(result.exception, PredictionsError)
    assert "expected shape (1, 5)" in str(result.exception)
    assert "scores_test.npy" in str(result.exception)


def test_retrieval_ties_warn_on_stderr_only(retrieval_files) -> None:
    np.save(retrieval_files["scores"], np.zeros((2, 3), dtype=np.float32))
    result = CliRunner().invoke(score, retrieval_args(retrieval_files))
    assert result.exit_code == 0
    assert json.loads(result.stdout)["tr_r1"] == 0.0  # default: ties count against the gold item
    assert "warning: 2 image queries and 3 caption queries" in result.stderr
    result = CliRunner().invoke(score, retrieval_args(retrieval_files, "--ties", "optimistic"))
    assert json.loads(result.stdout)["tr_r1"] == 100.0


def test_retrieval_unreadable_scores(retrieval_files) -> None:
    retrieval_files["scores"].write_text("not numpy")
    result = CliRunner().invoke(score, retrieval_args(retrieval_files))
    assert isinstance(result.exception, PredictionsError)
    assert "not a readable .npy array" in str(result.exception)
    np.save(retrieval_files["scores"], np.array([{"a": 1}], dtype=object), allow_pickle=True)
    result = CliRunner().invoke(score, retrieval_args(retrieval_files))
    assert isinstance(result.exception, PredictionsError)


@pytest.mark.parametrize("sub", [[], ["vqa"], ["nlvr2"], ["retrieval"]])
def test_help(sub: list[str]) -> None:
    result = CliRunner().invoke(score, [*sub, "--help"])
    assert result.exit_code == 0
    assert "Usage" in result.output
    if sub:
        assert "official" in result.output.lower() or "recall" in result.output.lower()


# ---------------------------------------------------------------------------------------------------------
# Through the top-level vlbench group (needs the whole CLI importable)
# ---------------------------------------------------------------------------------------------------------


def test_top_level_lists_score() -> None:
    cli = top_level_cli()
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0 and "score" in result.output


def test_top_level_success(vqa_files) -> None:
    cli = top_level_cli()
    result = CliRunner().invoke(cli, ["score", *vqa_args(vqa_files)])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["overall"] == 86.67


@pytest.mark.parametrize("case", ["vqa_extra", "nlvr2_missing", "retrieval_nan", "missing_file"])
def test_top_level_errors_are_one_line_exit_2(case, vqa_files, nlvr2_files, retrieval_files) -> None:
    cli = top_level_cli()
    if case == "vqa_extra":
        results = json.loads(vqa_files["results"].read_text()) + [{"question_id": 99, "answer": "no"}]
        vqa_files["results"].write_text(json.dumps(results))
        args, needle = vqa_args(vqa_files), "results contain question id 99 not in the annotations"
    elif case == "nlvr2_missing":
        nlvr2_files["predictions"].write_text("dev-1-0-0,True\n")
        args = [
            "nlvr2",
            "--predictions",
            str(nlvr2_files["predictions"]),
            "--labels",
            str(nlvr2_files["labels"]),
        ]
        needle = "miss 3 labelled ids"
    elif case == "retrieval_nan":
        np.save(retrieval_files["scores"], np.array([[0.9, np.nan, 0.8], [0.1, 0.2, 0.15]]))
        args, needle = retrieval_args(retrieval_files), "non-finite"
    else:
        args = ["nlvr2", "--predictions", "/nonexistent/p.csv", "--labels", str(nlvr2_files["labels"])]
        needle = "file not found"
    result = CliRunner().invoke(cli, ["score", *args])
    assert result.exit_code == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0]

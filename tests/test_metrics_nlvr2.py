"""NLVR2 accuracy/consistency: hand cases, the official file formats, the real dev-set sample."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest

from harness.errors import DataError, PredictionsError
from harness.metrics.nlvr2 import (
    nlvr2_consistency_key,
    nlvr2_per_example_correct,
    nlvr2_scores,
    read_nlvr2_labels,
    read_nlvr2_predictions_csv,
)

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "nlvr2_dev_sample.jsonl"


def official_metrics(predictions_csv: str, labels_jsonl: str) -> tuple[float, float]:
    """Transcription of lil-lab/nlvr nlvr2/eval/metrics.py on in-memory file contents (fractions)."""
    predictions = {}
    for line in predictions_csv.splitlines(keepends=True):
        if line:
            splits = line.strip().split(",")
            predictions[splits[0]] = splits[1]
    labeled_examples = [json.loads(line) for line in labels_jsonl.splitlines(keepends=True) if line]
    total_num = len(labeled_examples)
    assert len(predictions) >= total_num
    num_correct = 0.0
    consistency_dict = {}
    for example in labeled_examples:
        anon_label = example["identifier"].split("-")
        anon_label[2] = ""
        anon_label = "-".join(anon_label)
        if anon_label not in consistency_dict:
            consistency_dict[anon_label] = True
        prediction = predictions[example["identifier"]]
        if prediction.lower() == example["label"].lower():
            num_correct += 1.0
        else:
            consistency_dict[anon_label] = False
    num_consistent = 0.0
    for consistent in consistency_dict.values():
        if consistent:
            num_consistent += 1
    return num_correct / total_num, num_consistent / len(consistency_dict)


# ---------------------------------------------------------------------------------------------------------
# Hand cases
# ---------------------------------------------------------------------------------------------------------


def test_consistency_key_blanks_the_pair_field() -> None:
    assert nlvr2_consistency_key("dev-850-2-0") == "dev-850--0"
    assert nlvr2_consistency_key("test1-12-0-3") == "test1-12--3"
    with pytest.raises(DataError, match="split-set-pair-sentence"):
        nlvr2_consistency_key("dev-850")


LABELS = {
    # sentence dev-1--0: three pairs
    "dev-1-0-0": "True",
    "dev-1-1-0": "False",
    "dev-1-2-0": "True",
    # sentence dev-1--1: two pairs
    "dev-1-0-1": "False",
    "dev-1-1-1": "False",
    # sentence dev-2--0: one pair
    "dev-2-0-0": "True",
}


def test_hand_case_accuracy_and_consistency() -> None:
    predictions = {
        "dev-1-0-0": "true",  # correct (case-insensitive)
        "dev-1-1-0": "FALSE",  # correct
        "dev-1-2-0": "False",  # wrong -> sentence dev-1--0 inconsistent
        "dev-1-0-1": "False",  # correct
        "dev-1-1-1": "false",  # correct -> dev-1--1 consistent
        "dev-2-0-0": "True",  # correct -> dev-2--0 consistent
    }
    scores = nlvr2_scores(predictions, LABELS)
    assert scores["accuracy"] == pytest.approx(100 * 5 / 6)
    assert scores["consistency"] == pytest.approx(100 * 2 / 3)
    correct = nlvr2_per_example_correct(predictions, LABELS)
    assert correct == {
        "dev-1-0-0": True,
        "dev-1-1-0": True,
        "dev-1-2-0": False,
        "dev-1-0-1": True,
        "dev-1-1-1": True,
        "dev-2-0-0": True,
    }


def test_pair_field_not_sentence_field_is_grouped() -> None:
    # Same set and pair, different sentence: different groups. One error affects only its own sentence.
    labels = {"dev-9-0-0": "True", "dev-9-0-1": "True"}
    scores = nlvr2_scores({"dev-9-0-0": "True", "dev-9-0-1": "False"}, labels)
    assert scores == {"accuracy": 50.0, "consistency": 50.0}


def test_perfect_and_inverted_predictions() -> None:
    assert nlvr2_scores(dict(LABELS), LABELS) == {"accuracy": 100.0, "consistency": 100.0}
    inverted = {k: "False" if v == "True" else "True" for k, v in LABELS.items()}
    assert nlvr2_scores(inverted, LABELS) == {"accuracy": 0.0, "consistency": 0.0}


def test_coverage_errors() -> None:
    predictions = dict(LABELS)
    del predictions["dev-1-1-1"]
    with pytest.raises(PredictionsError, match=r"miss 1 labelled ids \(e\.g\. dev-1-1-1\)"):
        nlvr2_scores(predictions, LABELS)
    predictions = dict(LABELS, **{"dev-7-0-0": "True"})
    with pytest.raises(PredictionsError, match=r"contain 1 ids not in the labels \(e\.g\. dev-7-0-0\)"):
        nlvr2_scores(predictions, LABELS)
    with pytest.raises(PredictionsError, match="expected True or False"):
        nlvr2_scores(dict(LABELS, **{"dev-2-0-0": "yes"}), LABELS)
    with pytest.raises(DataError, match="no labelled examples"):
        nlvr2_scores({}, {})


# ---------------------------------------------------------------------------------------------------------
# File readers
# ---------------------------------------------------------------------------------------------------------


def test_read_predictions_csv(tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    path.write_text("dev-1-0-0,True\ndev-1-1-0,false\n\ndev-2-0-0, TRUE \r\n", encoding="utf-8")
    assert read_nlvr2_predictions_csv(path) == {
        "dev-1-0-0": "True",
        "dev-1-1-0": "False",
        "dev-2-0-0": "True",
    }


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("identifier,prediction\ndev-1-0-0,True\n", r"line 1: unknown label 'prediction'"),
        ("dev-1-0-0,True\ndev-1-1-0\n", r"line 2: expected 'identifier,True\|False'"),
        ("dev-1-0-0,True,0.9\n", r"line 1: expected 'identifier,True\|False'"),
        ("dev-1-0-0,True\n,True\n", r"line 2: expected"),
        ("dev-1-0-0,1\n", r"line 1: unknown label '1'"),
        ("dev-1-0-0,True\ndev-1-0-0,False\n", r"line 2: identifier 'dev-1-0-0' already predicted on line 1"),
        ("\n\n", "no predictions"),
    ],
)
def test_read_predictions_csv_errors(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "p.csv"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(PredictionsError, match=message):
        read_nlvr2_predictions_csv(path)


def test_read_predictions_missing_file(tmp_path: Path) -> None:
    with pytest.raises(PredictionsError, match="file not found"):
        read_nlvr2_predictions_csv(tmp_path / "nope.csv")


def test_read_labels_errors(tmp_path: Path) -> None:
    path = tmp_path / "l.jsonl"
    path.write_text(
        '{"identifier": "dev-1-0-0", "label": "True"}\n{"identifier": "dev-1-0-0", "label": "False"}\n'
    )
    with pytest.raises(DataError, match="appears twice"):
        read_nlvr2_labels(path)
    path.write_text('{"identifier": "dev-1-0-0", "label": "maybe"}\n')
    with pytest.raises(DataError, match="label must be True or False"):
        read_nlvr2_labels(path)
    path.write_text('{"label": "True"}\n')
    with pytest.raises(DataError, match="identifier"):
        read_nlvr2_labels(path)
    path.write_text('{"identifier": "dev-1", "label": "True"}\n')
    with pytest.raises(DataError, match="split-set-pair-sentence"):
        read_nlvr2_labels(path)
    path.write_text("not json\n")
    with pytest.raises(DataError, match="line 1"):
        read_nlvr2_labels(path)


# ---------------------------------------------------------------------------------------------------------
# The real NLVR2 dev sample
# ---------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dev_records() -> list[dict]:
    return [json.loads(line) for line in FIXTURE.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_real_labels_read(dev_records) -> None:
    labels = read_nlvr2_labels(FIXTURE)
    assert len(labels) == len(dev_records) == 600
    assert labels["dev-850-0-0"] == "False"
    assert labels["dev-850-2-0"] == "True"


def test_real_all_true_predictions(dev_records) -> None:
    labels = read_nlvr2_labels(FIXTURE)
    n_true = sum(1 for record in dev_records if record["label"] == "True")
    # Groups computed independently: identifier split-set-pair-sentence -> (split, set, sentence).
    groups: dict[tuple[str, str, str], list[str]] = {}
    for record in dev_records:
        split, set_id, _pair, sentence = re.fullmatch(
            r"(\w+)-(\d+)-(\d+)-(\d+)", record["identifier"]
        ).groups()
        groups.setdefault((split, set_id, sentence), []).append(record["label"])
    all_true_groups = sum(1 for group in groups.values() if all(label == "True" for label in group))

    scores = nlvr2_scores(dict.fromkeys(labels, "True"), labels)
    assert scores["accuracy"] == pytest.approx(100 * n_true / 600)
    assert scores["consistency"] == pytest.approx(100 * all_true_groups / len(groups))
    assert 0 < scores["consistency"] < scores["accuracy"] < 100
    assert len(groups) < 600  # the sample really has several pairs per sentence

    perfect = nlvr2_scores(dict(labels), labels)
    assert perfect == {"accuracy": 100.0, "consistency": 100.0}
    all_false = nlvr2_scores(dict.fromkeys(labels, "False"), labels)
    assert all_false["accuracy"] + scores["accuracy"] == pytest.approx(100.0)


@pytest.mark.parametrize("seed", range(5))
def test_real_random_predictions_match_official(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    labels_text = FIXTURE.read_text(encoding="utf-8")
    labels = read_nlvr2_labels(FIXTURE)
    lines = []
    for identifier, label in labels.items():
        # Mostly right with random case, so that consistency is neither 0 nor 100.
        flip = rng.random() < 0.2
        value = ("False" if label == "True" else "True") if flip else label
        lines.append(f"{identifier},{rng.choice([value, value.lower(), value.upper()])}")
    rng.shuffle(lines)
    csv_text = "\n".join(lines) + "\n"
    path = tmp_path / "predictions.csv"
    path.write_text(csv_text, encoding="utf-8")
    accuracy, consistency = official_metrics(csv_text, labels_text)
    scores = nlvr2_scores(read_nlvr2_predictions_csv(path), labels)
    assert scores["accuracy"] == pytest.approx(100 * accuracy, abs=1e-12)
    assert scores["consistency"] == pytest.approx(100 * consistency, abs=1e-12)

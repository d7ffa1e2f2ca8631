"""Reference points computed from the data (chance, the train-label prior) and how run results show them."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from harness.cli.run_cmd import _meanings, _summary
from harness.metrics.reference import nlvr2_reference, retrieval_chance, vqa_prior


def test_nlvr2_chance_and_majority_prior() -> None:
    labels = {"dev-1-0-0": "True", "dev-1-1-0": "False", "dev-2-0-0": "True"}  # sentences of 2 pairs and 1 pair
    reference = nlvr2_reference(labels, ["True", "True", "False"])
    assert reference["chance"] == {"accuracy": 50.0, "consistency": pytest.approx(100 * (0.25 + 0.5) / 2)}
    assert reference["prior"]["accuracy"] == pytest.approx(200 / 3)  # "True" everywhere
    assert reference["prior"]["consistency"] == pytest.approx(50.0)  # dev-1--0 has a False pair
    assert "prior" not in nlvr2_reference(labels, [])


def _brute_force_tr(captions_per_image: list[int], k: int) -> float:
    """Expected text-retrieval R@k over every ordering of the captions, by enumeration."""
    owners = [i for i, n in enumerate(captions_per_image) for _ in range(n)]
    orders = list(itertools.permutations(range(len(owners))))
    hits = sum(any(owners[c] == image for c in order[:k]) for image in range(len(captions_per_image))
               for order in orders)
    return 100.0 * hits / (len(orders) * len(captions_per_image))


@pytest.mark.parametrize("captions", [[1, 1], [2, 1, 1], [3, 1, 2]])
def test_retrieval_chance_is_the_exact_expectation_of_a_random_ranking(captions: list[int]) -> None:
    chance = retrieval_chance(captions)["chance"]
    for k in (1, 5, 10):
        assert chance[f"tr_r{k}"] == pytest.approx(_brute_force_tr(captions, k))
        assert chance[f"ir_r{k}"] == pytest.approx(100.0 * min(k, len(captions)) / len(captions))
    assert chance["rsum"] == pytest.approx(sum(v for key, v in chance.items() if key != "rsum"))


def test_retrieval_chance_of_the_embedded_test_split() -> None:
    # 700 images x 5 captions: the chance RSUM the README quotes (4.56).
    assert round(retrieval_chance([5] * 700)["chance"]["rsum"], 2) == 4.56


def _annotation(qid: int, qtype: str, answers: list[str]) -> dict:
    return {"question_id": qid, "image_id": 1, "question_type": qtype, "answer_type": "other",
            "answers": [{"answer": a, "answer_id": i} for i, a in enumerate(answers)]}


def test_vqa_prior_answers_the_most_frequent_train_answer_of_each_question_type() -> None:
    train = [("what color", "red"), ("what color", "red"), ("what color", "blue"), ("is there", "yes")]
    annotations = {"annotations": [_annotation(1, "what color", ["red"] * 10),
                                   _annotation(2, "is there", ["no"] * 10),
                                   _annotation(3, "how many", ["red"] * 2 + ["2"] * 8)]}  # unseen type: overall top
    questions = {"questions": [{"question_id": q, "image_id": 1, "question": "?"} for q in (1, 2, 3)]}
    prior = vqa_prior(train, questions, annotations)["prior"]
    # q1: "red" 1.0; q2: "yes" 0.0; q3: "red" matches 2 of 10 -> official leave-one-out 0.6 (2 x 1/3 + 8 x 2/3)/10
    assert prior["overall"] == pytest.approx(round(100 * (1.0 + 0.0 + 0.6) / 3, 2))
    assert vqa_prior([], questions, annotations) == {}


def test_run_results_name_their_reference_points(tmp_path: Path) -> None:
    record = {"task": "nlvr2", "metrics": {"test": {"accuracy": 52.666666, "consistency": 4.0}},
              "data": {"splits": {"test": {"reference": {"chance": {"accuracy": 50.0, "consistency": 6.25},
                                                         "prior": {"accuracy": 50.4, "consistency": 3.1}}}}}}
    assert _summary(record) == "test: accuracy 52.67 [chance 50.00, prior 50.40], consistency 4.00"
    lines = _meanings(record)
    assert lines[0] == "  chance: random guessing" and lines[1].startswith("  prior: the train split's most frequent")
    assert lines[2] == "  consistency: % of sentences whose every image pair is right (test: chance 6.25, prior 3.10)"
    json.dumps(record)  # the record stays plain JSON

"""VQA v2 loading from the official JSON formats, answer vocabulary, soft targets and fingerprints."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from harness.data.answers import (
    answer_index,
    build_answer_vocab,
    count_oov,
    official_accuracy,
    soft_target,
)
from harness.data.fingerprint import vqa_fingerprint
from harness.data.spec import load_spec
from harness.data.vqa import VqaExample, load_vqa_split
from harness.errors import DataError

TEMPLATE = "train2014/COCO_train2014_{image_id:012d}.jpg"


def question(qid: int, image_id: int, text: str = "What color is the cube?") -> dict[str, Any]:
    return {"question_id": qid, "image_id": image_id, "question": text}


def annotation(qid: int, image_id: int, answers: list[str], answer_type: str = "other",
               question_type: str = "what color is the") -> dict[str, Any]:
    return {
        "question_id": qid, "image_id": image_id, "question_type": question_type, "answer_type": answer_type,
        "multiple_choice_answer": max(set(answers), key=answers.count),
        "answers": [{"answer": a, "answer_confidence": "yes", "answer_id": i + 1} for i, a in enumerate(answers)],
    }


def write_vqa(folder: Path, questions: list[dict[str, Any]], annotations: list[dict[str, Any]] | None,
              template: str = TEMPLATE) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "q.json").write_text(json.dumps(
        {"info": {}, "task_type": "Open-Ended", "data_type": "mscoco", "license": {},
         "data_subtype": "train2014", "questions": questions}))
    entry = {"questions": "q.json", "images": template}
    if annotations is not None:
        (folder / "a.json").write_text(json.dumps(
            {"info": {}, "license": {}, "data_subtype": "train2014", "annotations": annotations}))
        entry["annotations"] = "a.json"
    spec = folder / "vqa.yaml"
    spec.write_text(json.dumps({"task": "vqa", "name": "t", "splits": {"train": entry}}))  # JSON is YAML
    return spec


RED = ["red"] * 8 + ["dark red", "Red."]
TWO = ["2", "two", "Two", "2", "3", "2", "2 ", "2", "2", "3"]


def test_loads_in_question_file_order_with_answers(tmp_path: Path) -> None:
    questions = [question(30, 7), question(10, 7, "How many balls?"), question(20, 8, "Is it red?")]
    annotations = [annotation(20, 8, ["yes"] * 10, "yes/no", "is it"), annotation(30, 7, RED),
                   annotation(10, 7, TWO, "number", "how many")]
    examples = load_vqa_split(write_vqa(tmp_path, questions, annotations), "train")
    assert [e.question_id for e in examples] == [30, 10, 20]
    first = examples[0]
    assert first == VqaExample(
        question_id=30, image_id=7, question="What color is the cube?",
        image_path=(tmp_path / "train2014" / "COCO_train2014_000000000007.jpg").resolve(),
        answers=tuple(RED), answer_type="other", question_type="what color is the",
        multiple_choice_answer="red")
    assert examples[1].answers == tuple(TWO) and examples[1].answer_type == "number"
    assert examples[1].image_path == first.image_path


def test_split_without_annotations_is_predictions_only(tmp_path: Path) -> None:
    examples = load_vqa_split(write_vqa(tmp_path, [question(1, 2), question(3, 4)], None), "train")
    assert [(e.question_id, e.answers, e.answer_type) for e in examples] == [(1, None, None), (3, None, None)]


@pytest.mark.parametrize(
    ("questions", "annotations", "expected"),
    [
        ([question(1, 2), question(1, 3)], None, "question_id 1: duplicate question id"),
        ([question(1, 2), question(5, 2)], [annotation(1, 2, RED)], "question_id 5: no annotation"),
        ([question(1, 2)], [annotation(1, 2, RED), annotation(9, 2, RED)], "question_id 9: annotation has no question"),
        ([question(1, 2)], [annotation(1, 2, RED), annotation(1, 2, RED)], "question_id 1: more than one annotation"),
        ([question(1, 2)], [annotation(1, 3, RED)], "question_id 1: annotation image_id 3 differs"),
        ([question(1, 2)], [{**annotation(1, 2, RED), "answers": []}], "question_id 1: missing or empty 'answers'"),
        ([question(1, 2, "  ")], None, "question_id 1: empty or missing question text"),
        ([{"question_id": "1", "image_id": 2, "question": "q?"}], None, "question_id must be an integer"),
        ([], None, "no questions"),
    ],
)
def test_inconsistent_files_fail_naming_the_question(
    tmp_path: Path, questions: list[dict[str, Any]], annotations: list[dict[str, Any]] | None, expected: str
) -> None:
    with pytest.raises(DataError, match=expected):
        load_vqa_split(write_vqa(tmp_path, questions, annotations), "train")


def test_missing_and_malformed_files(tmp_path: Path) -> None:
    spec = write_vqa(tmp_path, [question(1, 2)], [annotation(1, 2, RED)])
    (tmp_path / "a.json").write_text('{"annotations": [\n  {"question_id": 1,,}\n]}')
    with pytest.raises(DataError, match=r"a\.json: malformed JSON at line 2"):
        load_vqa_split(spec, "train")
    (tmp_path / "a.json").unlink()
    with pytest.raises(DataError, match=r"a\.json: file not found"):
        load_vqa_split(spec, "train")
    (tmp_path / "q.json").write_text('{"not_questions": []}')
    with pytest.raises(DataError, match=r"q\.json: expected a JSON object with a 'questions' list"):
        load_vqa_split(spec, "train")


def test_wrong_task_and_missing_split(tmp_path: Path) -> None:
    spec = write_vqa(tmp_path, [question(1, 2)], None)
    with pytest.raises(DataError, match="no split 'val'"):
        load_vqa_split(spec, "val")
    nlvr2 = tmp_path / "nlvr2.yaml"
    nlvr2.write_text("task: nlvr2\nsplits: {dev: {file: d.json, images: '{identifier}.png'}}\n")
    with pytest.raises(DataError, match="task is 'nlvr2', expected 'vqa'"):
        load_vqa_split(load_spec(nlvr2), "dev")


# --- answers ---------------------------------------------------------------------------------------------


def example(qid: int, answers: list[str] | None, majority: str | None = None) -> VqaExample:
    return VqaExample(question_id=qid, image_id=1, question="q?", image_path=Path("x.jpg"),
                      answers=None if answers is None else tuple(answers), multiple_choice_answer=majority)


def test_official_accuracy_table() -> None:
    expected = {0: 0.0, 1: 0.3, 2: 0.6, 3: 0.9, 4: 1.0, 7: 1.0, 10: 1.0}
    for matches, accuracy in expected.items():
        assert official_accuracy(matches, 10) == pytest.approx(accuracy, abs=1e-12)


def test_soft_target_uses_normalised_answers_and_official_accuracy() -> None:
    vocab = ["2", "3", "red", "yes"]
    index = answer_index(vocab)
    # "two"/"Two"/"2 " normalise to "2": 8 matches -> 1.0; "3" given twice -> 0.6.
    assert soft_target(TWO, index) == pytest.approx({0: 1.0, 1: 0.6})
    # "Red." -> "red" (9 matches); "dark red" is not in the vocabulary.
    assert soft_target(RED, index) == pytest.approx({2: 1.0})
    assert soft_target(["blue"] * 9 + ["red"], index) == pytest.approx({2: 0.3})
    assert soft_target(["blue"] * 10, index) == {}
    assert soft_target(None, index) == {}


def test_soft_target_keeps_the_official_identical_answers_quirk() -> None:
    # Ten identical answers are compared raw by the official evaluator: "car" cannot score against "a car".
    assert soft_target(["a car"] * 10, answer_index(["car"])) == {}
    assert soft_target(["Yes"] * 10, answer_index(["yes"])) == {}
    assert soft_target(["yes"] * 10, answer_index(["yes"])) == {0: 1.0}


def test_soft_target_equals_the_official_scorer_bit_for_bit() -> None:
    import random

    from harness.metrics.vqa import normalize_answer, vqa_soft_score

    rng = random.Random(0)
    pool = ["yes", "Yes", "yes.", "no", "2", "two", "Two ", "3", "a car", "car", "the cars", "red", "dark red",
            "1,000", "1000", "don't know", "dont know", "mr. t", "e.g. red", "\tno\n"]
    vocab = build_answer_vocab(  # a real vocabulary: normalised majority answers
        [VqaExample(i, 0, "q?", Path("x.jpg"), (a,) * 10, multiple_choice_answer=a) for i, a in enumerate(pool)])
    assert set(vocab) == {normalize_answer(a) for a in pool}
    index = answer_index(vocab)
    for _ in range(400):
        answers = [rng.choice(pool[: rng.randint(1, len(pool))]) for _ in range(10)]
        if rng.random() < 0.2:
            answers = [answers[0]] * 10
        expected = {index[v]: vqa_soft_score(answers, v) for v in vocab}  # every entry as a prediction
        assert soft_target(answers, index) == {i: score for i, score in expected.items() if score > 0}, answers


def test_answer_vocab_is_deterministic_frequency_then_alphabetical() -> None:
    train = [example(1, ["yes"] * 10, "yes"), example(2, ["no"] * 10, "no"), example(3, ["Yes"] * 10, "Yes"),
             example(4, TWO, None), example(5, ["blue"] * 10, "blue"), example(6, ["a car"] * 10, "a car")]
    # yes x2; then 1 each, alphabetical: "2" (majority of TWO), "blue", "car" ("a" dropped), "no".
    assert build_answer_vocab(train) == ["yes", "2", "blue", "car", "no"]
    assert build_answer_vocab(list(reversed(train))) == ["yes", "2", "blue", "car", "no"]
    assert build_answer_vocab(train, min_count=2) == ["yes"]
    assert build_answer_vocab(train, max_size=3) == ["yes", "2", "blue"]
    with pytest.raises(DataError, match="question_id 9"):
        build_answer_vocab([example(9, None)])


def test_count_oov() -> None:
    index = answer_index(["yes", "2"])
    examples = [example(1, ["yes"] * 10), example(2, ["blue"] * 9 + ["Yes"]), example(3, ["blue"] * 10),
                example(4, None)]
    assert count_oov(examples, index) == 1


def test_vqa_fingerprint() -> None:
    a, b = example(1, ["yes"] * 10), example(2, TWO)
    assert vqa_fingerprint([a, b]) == vqa_fingerprint([b, a])
    assert vqa_fingerprint([a, b]) != vqa_fingerprint([a, example(2, ["3"] + TWO[1:])])
    assert vqa_fingerprint([a]) != vqa_fingerprint([example(1, None)])

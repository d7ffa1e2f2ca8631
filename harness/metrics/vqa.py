"""The official VQA v2 accuracy, as pure functions.

Reference: GT-Vision-Lab/VQA, ``PythonEvaluationTools/vqaEvaluation/vqaEval.py`` (``VQAEval.evaluate`` and
``setAccuracy``, master) and ``PythonHelperTools/vqaTools/vqa.py`` (``VQA.loadRes``). Per question:

1. every ground-truth answer and the result answer get ``replace('\\n', ' ').replace('\\t', ' ').strip()``;
2. **only if the ten stripped human answers are not all identical**, both the human answers and the result
   answer go through ``processPunctuation`` then ``processDigitArticle``. When all ten agree, nothing is
   normalised and the comparison is exact and case-sensitive: against ten ``"yes"`` the prediction
   ``"Yes."`` scores 0 while ``"yes"`` scores 1. This quirk is replicated on purpose;
3. leave-one-out: for each human answer, count how many of the *other* answers equal the result,
   ``acc = min(1, matches / 3)``; the question's accuracy is the mean of the ten values. With distinct
   annotators, k human answers equal to the result give k=1 -> 0.3, 2 -> 0.6, 3 -> 0.9, 4+ -> 1.0 (a
   matching answer is never compared with itself). "Other" is decided by comparing the whole
   answer dicts (``item != gtAnsDatum``), so two byte-identical dicts (same answer, ``answer_id`` and
   ``answer_confidence``) leave together; real annotations have distinct ``answer_id`` so this never bites;
4. ``overall = round(100 * sum(acc) / n, 2)``; ``perQuestionType`` / ``perAnswerType`` likewise over the
   questions of each type, in order of first appearance.

``VQA.loadRes`` asserts that the set of result question ids equals the set of annotated ids; here that is a
:class:`PredictionsError` naming the difference, and duplicate or malformed results are refused as well
(the official code would silently keep the last duplicate).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from harness.errors import DataError, PredictionsError
from harness.metrics.vqa_normalize import (
    normalize_answer,
    process_digit_article,
    process_punctuation,
    strip_whitespace,
)

__all__ = [
    "below_full_credit",
    "below_full_credit_note",
    "max_attainable_accuracy",
    "normalize_answer",
    "vqa_evaluate",
    "vqa_per_question_accuracy",
    "vqa_soft_score",
]

_N_DECIMALS = 2  # VQAEval(n=2)
MAX_ANSWER_CHARS = 65_536  # as harness.data.text.MAX_TEXT_CHARS; far above any real answer


def _leave_one_out_accuracy(gt_answers: Sequence[str], twins: Sequence[int], res_answer: str) -> float:
    """Official per-question accuracy once answers are prepared (stripped, maybe normalised).

    ``twins[i]`` is how many answer records equal record ``i`` (itself included); they are all excluded
    from record ``i``'s "other answers". It is 1 for every record when the records are distinct.
    """
    n_equal = sum(1 for answer in gt_answers if answer == res_answer)
    gt_acc = []
    for answer, twin_count in zip(gt_answers, twins, strict=True):
        # Records equal to this one have the same answer: they only change the count when it matches.
        matches = n_equal - twin_count if answer == res_answer else n_equal
        gt_acc.append(min(1, float(matches) / 3))
    # sum() over a list, in order, like the official code (so the float result is bit-identical).
    return float(sum(gt_acc)) / len(gt_acc)


@functools.lru_cache(maxsize=1 << 17)
def _normalize_stripped(answer: str) -> str:
    # Answers repeat heavily across a split ("yes", "2", ...): caching makes a full val2014 pass cheap.
    return process_digit_article(process_punctuation(answer))


def _prepare(gt_answers: Sequence[str], res_answer: str) -> tuple[list[str], str]:
    gts = [strip_whitespace(answer) for answer in gt_answers]
    res = strip_whitespace(res_answer)
    if len(set(gts)) > 1:
        gts = [_normalize_stripped(answer) for answer in gts]
        res = _normalize_stripped(res)
    return gts, res


def vqa_soft_score(gt_answers: Sequence[str], answer: str) -> float:
    """The official VQA accuracy (0..1) of ``answer`` against the human answers ``gt_answers``.

    Exactly what :func:`vqa_evaluate` gives that question (treating the human answers as distinct
    annotator records, as real annotations are), including the all-identical-answers quirk described in the
    module docstring. Use it for soft training targets so that targets and evaluation agree; note that a
    target for a vocabulary entry ``normalize_answer(a)`` is this score of that normalised string.
    """
    if not gt_answers:
        raise DataError("vqa_soft_score: no ground-truth answers")
    gts, res = _prepare(gt_answers, answer)
    return _leave_one_out_accuracy(gts, [1] * len(gts), res)


# With n human answers, all equal to the result, each leave-one-out subset holds n - 1 matches: the best a
# question can score is min(1, (n - 1) / 3). Real VQA v2 has 10 answers per question; fewer than 4 cap it.
FULL_CREDIT_ANSWERS = 4


def max_attainable_accuracy(n_answers: int) -> float:
    """The best official accuracy (0-1) a question with ``n_answers`` human answers can get."""
    return min(1.0, max(0, n_answers - 1) / 3)


def below_full_credit(answer_counts: Iterable[int]) -> dict[int, int]:
    """{number of answers: questions} for the questions whose answers cannot give full credit (fewer than 4)."""
    out: dict[int, int] = {}
    for n in answer_counts:
        if n < FULL_CREDIT_ANSWERS:
            out[n] = out.get(n, 0) + 1
    return dict(sorted(out.items()))


def below_full_credit_note(counts: Mapping[int, int], total: int) -> str:
    """One line saying how many questions the official metric caps, and at what (for data check, score, run)."""
    parts = ", ".join(f"{c} with {n} answer{'s' if n != 1 else ''} (at most {100 * max_attainable_accuracy(n):.0f})"
                      for n, c in counts.items())
    return (f"{sum(counts.values())} of {total} annotated questions have fewer than {FULL_CREDIT_ANSWERS} human "
            f"answers, so the official VQA accuracy cannot give them full credit even for the gold answer: {parts} "
            "(VQA v2 has 10 per question)")


def _fail_ann(index: int, problem: str) -> DataError:
    return DataError(f"annotations[{index}]: {problem}")


def _is_int_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_annotations(annotations: Any) -> list[dict[str, Any]]:
    """Validate the official annotation file structure; return its annotation records in file order."""
    if not isinstance(annotations, Mapping) or not isinstance(annotations.get("annotations"), list):
        raise DataError('annotations: expected a JSON object with an "annotations" list (VQA v2 format)')
    records = annotations["annotations"]
    if not records:
        raise DataError("annotations: the annotations list is empty")
    seen: dict[int, int] = {}
    for index, ann in enumerate(records):
        if not isinstance(ann, Mapping):
            raise _fail_ann(index, f"expected an object, got {type(ann).__name__}")
        for key in ("question_id", "answers", "question_type", "answer_type"):
            if key not in ann:
                raise _fail_ann(index, f"missing key {key!r}")
        qid = ann["question_id"]
        if not _is_int_id(qid):
            raise _fail_ann(index, f"question_id must be an integer, got {qid!r}")
        if qid in seen:
            raise _fail_ann(index, f"question id {qid} already annotated at index {seen[qid]}")
        seen[qid] = index
        answers = ann["answers"]
        if not isinstance(answers, list) or not answers:
            raise _fail_ann(index, f"question {qid}: 'answers' must be a non-empty list")
        for answer in answers:
            if not isinstance(answer, Mapping) or not isinstance(answer.get("answer"), str):
                raise _fail_ann(index, f"question {qid}: every answer needs a string 'answer' field")
        for key in ("question_type", "answer_type"):
            if not isinstance(ann[key], str):
                raise _fail_ann(index, f"question {qid}: {key} must be a string")
    return records


def _check_questions(questions: Any, annotated_ids: Sequence[int]) -> dict[int, Mapping[str, Any]]:
    """Validate the questions file and that it covers every annotated question."""
    if not isinstance(questions, Mapping) or not isinstance(questions.get("questions"), list):
        raise DataError('questions: expected a JSON object with a "questions" list (VQA v2 format)')
    by_id: dict[int, Mapping[str, Any]] = {}
    for index, question in enumerate(questions["questions"]):
        if not isinstance(question, Mapping) or not _is_int_id(question.get("question_id")):
            raise DataError(f"questions[{index}]: expected an object with an integer 'question_id'")
        by_id[question["question_id"]] = question
    missing = [qid for qid in annotated_ids if qid not in by_id]
    if missing:
        raise DataError(
            f"the questions file lacks {len(missing)} annotated question ids (e.g. {_examples(missing)}); "
            "are questions and annotations from the same split?"
        )
    return by_id


def _examples(ids: Sequence[Any], limit: int = 3) -> str:
    return ", ".join(str(i) for i in list(ids)[:limit])


def _check_results(results: Any, annotated_ids: Sequence[int]) -> dict[int, str]:
    """Validate a results list against the annotated ids (official: set equality); return id -> answer."""
    if not isinstance(results, list):
        raise PredictionsError(
            f"results must be a JSON array of {{'question_id', 'answer'}} objects, got {type(results).__name__}"
        )
    answers: dict[int, str] = {}
    first_index: dict[int, int] = {}
    for index, item in enumerate(results):
        if not isinstance(item, Mapping):
            raise PredictionsError(f"results[{index}]: expected an object, got {type(item).__name__}")
        for key in ("question_id", "answer"):
            if key not in item:
                raise PredictionsError(f"results[{index}]: missing key {key!r}")
        qid, answer = item["question_id"], item["answer"]
        if not _is_int_id(qid):
            raise PredictionsError(f"results[{index}]: question_id must be an integer, got {qid!r}")
        if not isinstance(answer, str):
            raise PredictionsError(
                f"results[{index}] (question {qid}): answer must be a string, got {type(answer).__name__} {answer!r}"
            )
        if len(answer) > MAX_ANSWER_CHARS:  # the official normalisation scans it ~40 times
            raise PredictionsError(f"results[{index}] (question {qid}): answer of {len(answer):,} characters "
                                   f"(at most {MAX_ANSWER_CHARS:,})")
        if qid in answers:
            raise PredictionsError(
                f"results contain question id {qid} twice (entries {first_index[qid]} and {index})"
            )
        answers[qid] = answer
        first_index[qid] = index
    annotated = set(annotated_ids)
    extra = [qid for qid in answers if qid not in annotated]
    if len(extra) == 1:
        raise PredictionsError(f"results contain question id {extra[0]} not in the annotations")
    if extra:
        raise PredictionsError(
            f"results contain {len(extra)} question ids not in the annotations (e.g. {_examples(extra)})"
        )
    missing = [qid for qid in annotated_ids if qid not in answers]
    if missing:
        noun = "question id" if len(missing) == 1 else "question ids"
        raise PredictionsError(f"results miss {len(missing)} {noun} (e.g. {_examples(missing)})")
    return answers


def _twin_counts(records: Sequence[Mapping[str, Any]], prepared: Sequence[str], res_answer: str) -> list[int]:
    """For each answer record, how many records (itself included) compare equal to it after the official
    in-place update of their 'answer' field; the official leave-one-out drops all of them.

    Only records whose answer equals the result need the count (elsewhere it cannot change the number of
    matches), so the quadratic dict comparison runs only for those.
    """
    if res_answer not in prepared:
        return [1] * len(records)
    updated = [{**record, "answer": answer} for record, answer in zip(records, prepared, strict=True)]
    return [
        sum(1 for other in updated if other == record) if answer == res_answer else 1
        for record, answer in zip(updated, prepared, strict=True)
    ]


def _per_question(
    questions: Mapping[str, Any], annotations: Mapping[str, Any], results: Sequence[Mapping[str, Any]]
) -> list[tuple[int, str, str, float]]:
    """(question id, question type, answer type, accuracy 0..1) in annotation order."""
    records = _check_annotations(annotations)
    annotated_ids = [ann["question_id"] for ann in records]
    by_question = _check_questions(questions, annotated_ids)
    answers = _check_results(results, annotated_ids)
    multiple_choice = questions.get("task_type") == "Multiple Choice"
    rows = []
    for ann in records:
        qid = ann["question_id"]
        res_answer = answers[qid]
        if multiple_choice and res_answer not in by_question[qid].get("multiple_choices", ()):
            # VQA.loadRes: 'predicted answer is not one of the multiple choices'
            raise PredictionsError(
                f"question {qid}: predicted answer {res_answer!r} is not one of the multiple choices"
            )
        gt_records = ann["answers"]
        gts, res = _prepare([record["answer"] for record in gt_records], res_answer)
        acc = _leave_one_out_accuracy(gts, _twin_counts(gt_records, gts, res), res)
        rows.append((qid, ann["question_type"], ann["answer_type"], acc))
    return rows


def vqa_per_question_accuracy(
    questions: Mapping[str, Any], annotations: Mapping[str, Any], results: Sequence[Mapping[str, Any]]
) -> dict[int, float]:
    """Official per-question accuracy in 0..1, unrounded, keyed by question id in annotation order.

    (The official ``evalQA`` holds ``round(100 * acc, 2)``; the raw fraction is kept here because paired
    significance tests want it.) Same validation as :func:`vqa_evaluate`.
    """
    return {qid: acc for qid, _, _, acc in _per_question(questions, annotations, results)}


def _percent(values: Sequence[float]) -> float:
    # VQAEval.setAccuracy: round(100*float(sum(acc))/len(acc), self.n)
    return round(100 * float(sum(values)) / len(values), _N_DECIMALS)


def vqa_evaluate(
    questions: Mapping[str, Any], annotations: Mapping[str, Any], results: Sequence[Mapping[str, Any]]
) -> dict[str, Any]:
    """Official VQA v2 accuracy of ``results`` (the results-file list) against the official questions and
    annotations files (already parsed JSON).

    Returns ``{"overall": float, "perAnswerType": {type: float}, "perQuestionType": {type: float}}`` in
    percent with 2 decimals, identical to ``VQAEval.accuracy``. Raises :class:`PredictionsError` when the
    results do not cover exactly the annotated question ids, repeat an id, or are malformed, and
    :class:`DataError` for malformed questions or annotations.
    """
    rows = _per_question(questions, annotations, results)
    per_question_type: dict[str, list[float]] = {}
    per_answer_type: dict[str, list[float]] = {}
    for _, question_type, answer_type, acc in rows:
        per_question_type.setdefault(question_type, []).append(acc)
        per_answer_type.setdefault(answer_type, []).append(acc)
    return {
        "overall": _percent([acc for *_, acc in rows]),
        "perAnswerType": {name: _percent(values) for name, values in per_answer_type.items()},
        "perQuestionType": {name: _percent(values) for name, values in per_question_type.items()},
    }

"""VQA v2: the official questions and annotations JSON files, read unchanged.

Questions keep the questions file's order (predictions and fingerprints follow it). Annotations are optional
(test-dev has none: predictions only); when present, every question needs exactly one annotation and every
annotation a question, with the same image id.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.data.spec import DatasetSpec, Problems, VqaSplitSpec, as_spec, paused_gc
from harness.data.streamed import StreamedRecords
from harness.data.text import text_problem
from harness.errors import DataError


@dataclass(frozen=True)
class VqaExample:
    question_id: int
    image_id: int
    question: str
    image_path: Path
    answers: tuple[str, ...] | None  # the raw annotator answers (10 in VQA v2); None without annotations
    answer_type: str | None = None  # "yes/no" | "number" | "other"
    question_type: str | None = None  # e.g. "what color is the"
    multiple_choice_answer: str | None = None  # the official majority answer


@dataclass
class VqaSplitStats:
    """Counts ``data check`` reports for one split (filled while loading)."""

    questions: int = 0
    annotations: int = 0
    answers: int = 0
    answer_types: dict[str, int] = field(default_factory=dict)
    answer_counts: list[int] = field(default_factory=list)  # human answers per annotated question


def load_vqa_split(spec: DatasetSpec | str | Path, split: str) -> list[VqaExample]:
    """The examples of ``split`` in the questions file's order; any inconsistency is a DataError."""
    spec = as_spec(spec)
    spec.require_task("vqa")
    entry = spec.split(split)
    assert isinstance(entry, VqaSplitSpec)
    return read_vqa_split(entry, Problems(collect=False))


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class _Annotation:
    """What the examples keep of an annotation (the answer objects' other fields are not used)."""

    image_id: Any
    answers: tuple[str, ...]
    answer_type: str | None
    question_type: str | None
    multiple_choice_answer: str | None


def read_vqa_split(
    entry: VqaSplitSpec, problems: Problems, stats: VqaSplitStats | None = None
) -> list[VqaExample]:
    """Read one split, reporting each bad item to ``problems`` (which raises or collects) and skipping it."""
    with paused_gc():
        return _read_vqa_split(entry, problems, stats if stats is not None else VqaSplitStats())


def _read_vqa_split(entry: VqaSplitSpec, problems: Problems, stats: VqaSplitStats) -> list[VqaExample]:
    qpath = entry.questions
    parsed: list[tuple[int, int, str]] = []
    seen: set[int] = set()
    read = 0
    questions = StreamedRecords(qpath, "questions", problems, "official VQA v2 format")
    for index, q in questions:
        read += 1
        where = f"{qpath}: questions[{index}]"
        if not isinstance(q, dict):
            problems.add(f"{where}: expected an object")
            continue
        qid, image_id, text = q.get("question_id"), q.get("image_id"), q.get("question")
        if not _is_int(qid):
            problems.add(f"{where}: question_id must be an integer, got {qid!r}")
            continue
        where = f"{qpath}: question_id {qid}"
        if qid in seen:
            problems.add(f"{where}: duplicate question id")
            continue
        seen.add(qid)
        if not _is_int(image_id):
            problems.add(f"{where}: image_id must be an integer, got {image_id!r}")
            continue
        problem = text_problem(text, "question text")
        if problem:
            problems.add(f"{where}: {problem}")
            continue
        parsed.append((qid, image_id, text))
    if questions.failed:
        return []
    stats.questions = len(parsed)
    if not read:
        problems.add(f"{qpath}: no questions")

    annotations = _read_annotations(entry, parsed, seen, problems, stats) if entry.annotations else None

    examples: list[VqaExample] = []
    image_paths: dict[int, Path] = {}  # ~5 questions per image: fill and resolve each image once
    for qid, image_id, text in parsed:
        ann: _Annotation | None = None
        if annotations is not None:
            ann = annotations.get(qid)
            if ann is None:  # reported by _read_annotations
                continue
        path = image_paths.get(image_id)
        if path is None:
            try:
                path = entry.images.fill(image_id=image_id)
            except DataError as exc:
                problems.add(f"{qpath}: question_id {qid}: {exc}")
                continue
            image_paths[image_id] = path
        examples.append(
            VqaExample(
                question_id=qid,
                image_id=image_id,
                question=text,
                image_path=path,
                answers=ann.answers if ann else None,
                answer_type=ann.answer_type if ann else None,
                question_type=ann.question_type if ann else None,
                multiple_choice_answer=ann.multiple_choice_answer if ann else None,
            )
        )
    return examples


def _read_annotations(
    entry: VqaSplitSpec,
    parsed: list[tuple[int, int, str]],
    all_question_ids: set[int],
    problems: Problems,
    stats: VqaSplitStats,
) -> dict[int, _Annotation]:
    apath = entry.annotations
    assert apath is not None
    image_of = {qid: image_id for qid, image_id, _ in parsed}
    by_question: dict[int, _Annotation] = {}
    duplicates: set[int] = set()
    records = StreamedRecords(apath, "annotations", problems, "official VQA v2 format")
    for index, ann in records:
        where = f"{apath}: annotations[{index}]"
        if not isinstance(ann, dict):
            problems.add(f"{where}: expected an object")
            continue
        qid = ann.get("question_id")
        if not _is_int(qid):
            problems.add(f"{where}: question_id must be an integer, got {qid!r}")
            continue
        where = f"{apath}: question_id {qid}"
        if qid in by_question or qid in duplicates:
            problems.add(f"{where}: more than one annotation for this question")
            duplicates.add(qid)
            by_question.pop(qid, None)
            continue
        if qid not in all_question_ids:
            problems.add(f"{where}: annotation has no question in {entry.questions}")
            continue
        if qid in image_of and ann.get("image_id") != image_of[qid]:
            problems.add(f"{where}: annotation image_id {ann.get('image_id')!r} differs from the "
                         f"question's {image_of[qid]}")
            continue
        answers = ann.get("answers")
        if not isinstance(answers, list) or not answers:
            problems.add(f"{where}: missing or empty 'answers' list")
            continue
        if not all(isinstance(a, dict) and isinstance(a.get("answer"), str) for a in answers):
            problems.add(f"{where}: every answer must be an object with an 'answer' string")
            continue
        bad = next((p for a in answers if a["answer"].strip() and (p := text_problem(a["answer"], "answer"))), None)
        if bad:  # an empty answer string is real VQA data (scored as it is); a 100 MB one would stall normalising
            problems.add(f"{where}: {bad}")
            continue
        for key in ("answer_type", "question_type", "multiple_choice_answer"):
            if ann.get(key) is not None and not isinstance(ann[key], str):
                problems.add(f"{where}: {key} must be a string, got {ann[key]!r}")
                break
        else:
            by_question[qid] = _Annotation(ann.get("image_id"), tuple(a["answer"] for a in answers),
                                           ann.get("answer_type"), ann.get("question_type"),
                                           ann.get("multiple_choice_answer"))
    if records.failed:
        return {}
    for qid, _, _ in parsed:
        if qid not in by_question and qid not in duplicates:
            problems.add(f"{entry.questions}: question_id {qid}: no annotation in {apath}")
    stats.annotations = len(by_question)
    stats.answer_counts = [len(a.answers) for a in by_question.values()]
    stats.answers = sum(stats.answer_counts)
    for ann in by_question.values():
        kind = ann.answer_type or "unknown"
        stats.answer_types[kind] = stats.answer_types.get(kind, 0) + 1
    return by_question

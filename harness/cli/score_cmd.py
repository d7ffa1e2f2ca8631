"""``vlbench score``: the official metrics on prediction files.

Each subcommand prints only the JSON result on stdout (one line, so it can be piped into ``jq`` or a file);
bad input raises a :class:`harness.errors.VlbenchError` subclass, which the top-level ``vlbench`` group
turns into ``error: <message>`` on stderr and exit status 2.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
import numpy as np

from harness.errors import DataError, PredictionsError
from harness.fileio import read_json, read_untrusted_npy
from harness.metrics.nlvr2 import nlvr2_scores, read_nlvr2_labels, read_nlvr2_predictions_csv
from harness.metrics.retrieval import (
    captions_per_image_from_karpathy,
    retrieval_recall,
    retrieval_tie_count,
)
from harness.metrics.vqa import below_full_credit, below_full_credit_note, vqa_evaluate

# No exists=True: click's own "does not exist" error is a multi-line usage message, while the readers
# raise a one-line DataError naming the file.
_FILE = click.Path(dir_okay=False, path_type=Path)


def _emit(result: dict[str, Any]) -> None:
    click.echo(json.dumps(result))


@click.group()
def score() -> None:
    """Score prediction files with the official metrics (VQA v2, NLVR2, retrieval recall@K).

    Every subcommand prints a single JSON object on stdout and nothing else.
    """


@score.command("vqa")
@click.option(
    "--questions",
    "questions_path",
    type=_FILE,
    required=True,
    help="Official VQA questions JSON (v2_OpenEnded_mscoco_<split>_questions.json).",
)
@click.option(
    "--annotations",
    "annotations_path",
    type=_FILE,
    required=True,
    help="Official VQA annotations JSON (v2_mscoco_<split>_annotations.json).",
)
@click.option(
    "--results",
    "results_path",
    type=_FILE,
    required=True,
    help='Results JSON: a list of {"question_id": int, "answer": str}, one per annotated question.',
)
def vqa(questions_path: Path, annotations_path: Path, results_path: Path) -> None:
    """VQA v2 accuracy, identical to the official evaluation (GT-Vision-Lab/VQA vqaEval.py).

    Prints {"overall", "perAnswerType", "perQuestionType"} in percent with 2 decimals. The results must
    answer exactly the annotated question ids, each once.
    """
    questions = read_json(questions_path)
    annotations = read_json(annotations_path)
    results = read_json(results_path)
    try:
        scores = vqa_evaluate(questions, annotations, results)
    except PredictionsError as exc:
        raise PredictionsError(f"{results_path}: {exc}") from None
    except DataError as exc:
        raise DataError(f"{exc} (questions {questions_path}, annotations {annotations_path})") from None
    records = annotations["annotations"]
    few = below_full_credit(len(a["answers"]) for a in records)
    if few:
        click.echo(f"warning: {annotations_path}: {below_full_credit_note(few, len(records))}", err=True)
    try:
        _emit(scores)
    except PredictionsError as exc:
        raise PredictionsError(f"{results_path}: {exc}") from None
    except DataError as exc:
        raise DataError(f"{exc} (questions {questions_path}, annotations {annotations_path})") from None


@score.command("nlvr2")
@click.option(
    "--predictions",
    "predictions_path",
    type=_FILE,
    required=True,
    help="Predictions CSV in the official format: 'identifier,True|False' lines, no header.",
)
@click.option(
    "--labels",
    "labels_path",
    type=_FILE,
    required=True,
    help="NLVR2 JSON-lines data file with the gold 'label' of every 'identifier' (e.g. dev.json).",
)
def nlvr2(predictions_path: Path, labels_path: Path) -> None:
    """NLVR2 accuracy and consistency, with the official definitions (lil-lab/nlvr nlvr2/eval/metrics.py).

    Prints {"accuracy", "consistency"} in percent (unrounded). Consistency is the share of sentences
    (identifiers with the pair field removed) whose examples are all predicted correctly. The predictions
    must cover exactly the labelled identifiers, each once.
    """
    predictions = read_nlvr2_predictions_csv(predictions_path)
    labels = read_nlvr2_labels(labels_path)
    try:
        _emit(nlvr2_scores(predictions, labels))
    except PredictionsError as exc:
        raise PredictionsError(f"{predictions_path}: {exc}") from None


@score.command("retrieval")
@click.option(
    "--scores",
    "scores_path",
    type=_FILE,
    required=True,
    help="Score matrix .npy, float [n_images, n_captions]: rows follow the split's images in file "
    "order, columns their captions image by image.",
)
@click.option(
    "--data",
    "data_path",
    type=_FILE,
    required=True,
    help="Karpathy-split JSON (images[].split, images[].sentences) that defines the layout.",
)
@click.option("--split", default="test", show_default=True, help="Karpathy split the scores cover.")
@click.option(
    "--folds",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Score K contiguous equal folds of images separately and average (COCO 1K: --folds 5).",
)
@click.option(
    "--ties",
    type=click.Choice(["optimistic", "pessimistic"]),
    default="pessimistic",
    show_default=True,
    help="How a gold item tied with other items is ranked: pessimistic = every tie goes against it; "
    "optimistic = only strictly higher scores outrank it.",
)
def retrieval(scores_path: Path, data_path: Path, split: str, folds: int, ties: str) -> None:
    """Image-text retrieval recall@1/5/10 in percent.

    Prints {"tr_r1", "tr_r5", "tr_r10", "ir_r1", "ir_r5", "ir_r10", "rsum"}. TR (image to text) is a hit
    when any of the image's captions ranks within K; IR (text to image) when the caption's image does.
    A warning goes to stderr when gold items are tied with other items (see --ties).
    """
    counts = captions_per_image_from_karpathy(data_path, split)
    scores = _load_scores(scores_path)
    try:
        result = retrieval_recall(scores, counts, folds=folds, ties=ties)  # type: ignore[arg-type]
        tied = retrieval_tie_count(scores, counts, folds=folds)
    except PredictionsError as exc:
        raise PredictionsError(f"{scores_path}: {exc}") from None
    if tied["tr"] or tied["ir"]:
        click.echo(
            f"warning: {tied['tr']} image queries and {tied['ir']} caption queries have their gold item tied "
            f"with another item; recalls use the {ties} tie rule (see --ties)",
            err=True,
        )
    _emit(result)


def _load_scores(path: Path) -> np.ndarray:
    try:
        return read_untrusted_npy(path)
    except DataError as exc:
        raise PredictionsError(str(exc)) from None

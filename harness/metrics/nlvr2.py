"""The official NLVR2 accuracy and consistency, as pure functions, plus readers for the official files.

Reference: lil-lab/nlvr, ``nlvr2/eval/metrics.py``:

- predictions are CSV lines ``identifier,prediction`` (no header); labels are the JSON-lines data file
  (``identifier``, ``label`` as ``"True"``/``"False"``);
- an example is correct when ``prediction.lower() == example["label"].lower()``;
  ``precision`` (what everyone reports as accuracy) = correct / number of labelled examples;
- consistency groups examples by the identifier with its pair field blanked:
  ``parts = identifier.split("-"); parts[2] = ""; "-".join(parts)`` (``dev-850-2-0`` -> ``dev-850--0``,
  i.e. split-set-sentence); a group is consistent when all its examples are correct, and consistency =
  consistent groups / groups.

The official script prints both as unrounded fractions; here they are percentages (``100 * fraction``),
unrounded, per the vlbench contract. Where the official script is lax (it ignores extra predictions, keeps
the last of duplicated ids, and crashes on a blank line) these functions refuse the input with a
:class:`PredictionsError` / :class:`DataError` naming the problem instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from harness.errors import DataError, PredictionsError
from harness.fileio import read_jsonl, read_untrusted_text

__all__ = [
    "nlvr2_consistency_key",
    "nlvr2_per_example_correct",
    "nlvr2_scores",
    "read_nlvr2_labels",
    "read_nlvr2_predictions_csv",
]

_CANONICAL = {"true": "True", "false": "False"}


def nlvr2_consistency_key(identifier: str) -> str:
    """The official consistency group of an identifier ``split-set-pair-sentence``: the pair field blanked
    (``"dev-850-2-0"`` -> ``"dev-850--0"``)."""
    parts = identifier.split("-")
    if len(parts) < 3:
        raise DataError(f"NLVR2 identifier {identifier!r} is not of the form split-set-pair-sentence")
    parts[2] = ""
    return "-".join(parts)


def _canonical_label(value: object) -> str | None:
    if not isinstance(value, str):
        return None
    return _CANONICAL.get(value.lower())


def read_nlvr2_predictions_csv(path: str | Path) -> dict[str, str]:
    """Read an official NLVR2 predictions file: one ``identifier,True|False`` line per example, no header.

    Labels are matched case-insensitively (as the official script does) and returned as ``"True"`` /
    ``"False"``; spaces around fields are ignored; blank lines are skipped. A line without exactly two
    fields, an empty identifier, a label other than true/false, or a repeated identifier is a
    :class:`PredictionsError` naming the file and line number.
    """
    path = Path(path)
    try:
        lines = read_untrusted_text(path).splitlines()
    except DataError as exc:
        raise PredictionsError(str(exc)) from None
    predictions: dict[str, str] = {}
    first_line: dict[str, int] = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        fields = [field.strip() for field in line.split(",")]
        if len(fields) != 2 or not fields[0]:
            raise PredictionsError(
                f"{path}: line {number}: expected 'identifier,True|False', got {line.strip()!r}"
            )
        identifier, raw_label = fields
        label = _canonical_label(raw_label)
        if label is None:
            raise PredictionsError(
                f"{path}: line {number}: unknown label {raw_label!r} (expected True or False)"
            )
        if identifier in predictions:
            raise PredictionsError(
                f"{path}: line {number}: identifier {identifier!r} already predicted on line {first_line[identifier]}"
            )
        predictions[identifier] = label
        first_line[identifier] = number
    if not predictions:
        raise PredictionsError(f"{path}: no predictions")
    return predictions


def read_nlvr2_labels(path: str | Path) -> dict[str, str]:
    """Read the gold labels of an official NLVR2 JSON-lines file: ``identifier -> "True" | "False"``.

    Every line needs a string ``identifier`` (split-set-pair-sentence) and a ``label`` of True/False; a
    missing field, an unknown label or a repeated identifier is a :class:`DataError` naming the line.
    """
    path = Path(path)
    records = read_jsonl(path)
    if not records:
        raise DataError(f"{path}: no examples")
    labels: dict[str, str] = {}
    # read_jsonl skips blank lines, so count records rather than claim a physical line number.
    for number, record in enumerate(records, start=1):
        identifier = record.get("identifier")
        if not isinstance(identifier, str) or not identifier:
            raise DataError(f"{path}: example {number}: missing string field 'identifier'")
        nlvr2_consistency_key(identifier)  # validates the form
        label = _canonical_label(record.get("label"))
        if label is None:
            raise DataError(
                f"{path}: example {number} ({identifier}): label must be True or False, got {record.get('label')!r}"
            )
        if identifier in labels:
            raise DataError(f"{path}: example {number}: identifier {identifier!r} appears twice")
        labels[identifier] = label
    return labels


def _examples(ids: list[str], limit: int = 3) -> str:
    return ", ".join(ids[:limit])


def nlvr2_per_example_correct(predictions: Mapping[str, str], labels: Mapping[str, str]) -> dict[str, bool]:
    """Whether each labelled example is predicted correctly (case-insensitive), in label order.

    ``predictions`` must cover exactly the labelled identifiers, and every value must be a true/false
    string; otherwise :class:`PredictionsError` naming the missing / extra / bad ids.
    """
    if not labels:
        raise DataError("NLVR2: no labelled examples")
    missing = [identifier for identifier in labels if identifier not in predictions]
    extra = [identifier for identifier in predictions if identifier not in labels]
    problems = []
    if missing:
        problems.append(f"miss {len(missing)} labelled ids (e.g. {_examples(missing)})")
    if extra:
        problems.append(f"contain {len(extra)} ids not in the labels (e.g. {_examples(extra)})")
    if problems:
        raise PredictionsError(f"NLVR2 predictions {' and '.join(problems)}")
    correct: dict[str, bool] = {}
    for identifier, label in labels.items():
        prediction = predictions[identifier]
        if _canonical_label(prediction) is None:
            raise PredictionsError(
                f"NLVR2 prediction for {identifier} is {prediction!r}, expected True or False"
            )
        if _canonical_label(label) is None:
            raise DataError(f"NLVR2 label for {identifier} is {label!r}, expected True or False")
        correct[identifier] = prediction.lower() == label.lower()
    return correct


def nlvr2_scores(predictions: Mapping[str, str], labels: Mapping[str, str]) -> dict[str, float]:
    """Official NLVR2 ``{"accuracy", "consistency"}`` in percent (unrounded floats; the official script
    prints unrounded fractions, which are these values divided by 100)."""
    correct = nlvr2_per_example_correct(predictions, labels)
    consistent: dict[str, bool] = {}
    num_correct = 0.0
    for identifier, is_correct in correct.items():
        key = nlvr2_consistency_key(identifier)
        consistent.setdefault(key, True)
        if is_correct:
            num_correct += 1.0
        else:
            consistent[key] = False
    num_consistent = float(sum(1 for value in consistent.values() if value))
    return {
        "accuracy": 100.0 * (num_correct / len(correct)),
        "consistency": 100.0 * (num_consistent / len(consistent)),
    }

"""VQA answer vocabulary and soft targets.

The vocabulary holds answers after the official normalisation (``harness.metrics.vqa.normalize_answer``:
processPunctuation + processDigitArticle), and a candidate's target is exactly the official VQA accuracy it
would score as a prediction (``harness.metrics.vqa.vqa_soft_score``), so training targets and the score agree.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache

from harness.data.vqa import VqaExample
from harness.errors import DataError
from harness.metrics.vqa import normalize_answer
from harness.metrics.vqa_normalize import strip_whitespace

# Answers repeat enormously (yes/no/2 ...): normalise each distinct string once.
normalized = lru_cache(maxsize=1 << 17)(normalize_answer)


def official_accuracy(matches: int, total: int) -> float:
    """VQA accuracy of a candidate that ``matches`` of ``total`` annotators gave.

    Averaged over leaving each annotator out: the ``matches`` annotators who gave it leave ``matches-1``
    matches, the others leave ``matches``. For 10 annotators: 1 -> 0.3, 2 -> 0.6, 3 -> 0.9, >=4 -> 1.0.
    """
    if total <= 0 or not 0 <= matches <= total:
        raise ValueError(f"official_accuracy: need 0 <= matches <= total and total > 0, got {matches}/{total}")
    c = matches
    return (c * min(1.0, (c - 1) / 3) + (total - c) * min(1.0, c / 3)) / total


def majority_answer(example: VqaExample) -> str:
    """The normalised ``multiple_choice_answer``; without it, the most common normalised answer (ties: a-z)."""
    if example.multiple_choice_answer is not None:
        return normalized(example.multiple_choice_answer)
    if not example.answers:
        raise DataError(f"question_id {example.question_id}: no answers to build a vocabulary from")
    counts = Counter(normalized(a) for a in example.answers)
    return min(counts, key=lambda a: (-counts[a], a))


def build_answer_vocab(
    train_examples: Iterable[VqaExample], min_count: int = 1, max_size: int | None = None
) -> list[str]:
    """The answer vocabulary of the TRAIN split, most frequent first, ties alphabetical (deterministic).

    An answer's count is the number of questions whose (normalised) majority answer it is, the convention
    behind the standard 3,129-answer VQA v2 vocabulary (bottom-up attention, Pixel-BERT: count >= 9).
    Answers given by only some annotators still receive soft credit when they are in the vocabulary.
    """
    if min_count < 1:
        raise ValueError(f"min_count must be >= 1, got {min_count}")
    if max_size is not None and max_size < 1:
        raise ValueError(f"max_size must be >= 1 or None, got {max_size}")
    counts: Counter[str] = Counter()
    for example in train_examples:
        if example.answers is None:
            raise DataError(f"question_id {example.question_id}: the answer vocabulary needs annotated "
                            "(train) examples")
        counts[majority_answer(example)] += 1
    vocab = sorted((a for a, n in counts.items() if n >= min_count), key=lambda a: (-counts[a], a))
    return vocab[:max_size] if max_size is not None else vocab


def answer_index(vocab: Sequence[str]) -> dict[str, int]:
    return {answer: i for i, answer in enumerate(vocab)}


def soft_target(answers: Sequence[str] | None, vocab_index: Mapping[str, int]) -> dict[int, float]:
    """{vocabulary index: official accuracy} for the in-vocabulary answers among ``answers`` (raw strings).

    Each target is exactly what the official evaluation gives that vocabulary entry as a prediction
    (``vqa_soft_score``, bit for bit), including its quirk that ten identical answers are not normalised:
    against ten "a car", the entry "car" scores 0, and the target says so. Empty when no entry can score
    (an OOV question). Computed here with cached normalisation: calling ``vqa_soft_score`` per candidate
    re-normalises all ten answers each time (~25 s over VQA v2 train instead of a few seconds).
    """
    if not answers:
        return {}
    stripped = [strip_whitespace(a) for a in answers]
    if len(set(stripped)) > 1:  # the official evaluator normalises only when the answers disagree
        prepared, prepare = [normalized(a) for a in answers], normalized
    else:
        prepared, prepare = stripped, strip_whitespace
    counts = Counter(prepared)
    candidates = {normalized(a) for a in answers} | set(stripped)
    targets: dict[int, float] = {}
    for candidate in sorted(candidates):
        index = vocab_index.get(candidate)
        if index is None:
            continue
        result = prepare(candidate)
        matches = counts.get(result, 0)
        if matches > 3:  # every annotator's leave-one-out term is min(1, >=3/3) = 1
            targets[index] = 1.0
        elif matches:
            # The official per-annotator loop, summed in the same order so the float is bit-identical.
            per_annotator = [min(1, float(matches - 1 if gt == result else matches) / 3) for gt in prepared]
            targets[index] = float(sum(per_annotator)) / len(per_annotator)
    return targets


def count_oov(examples: Iterable[VqaExample], vocab_index: Mapping[str, int]) -> int:
    """Annotated examples no vocabulary entry can score on (empty soft target), for the run record."""
    return sum(1 for e in examples if e.answers and not soft_target(e.answers, vocab_index))

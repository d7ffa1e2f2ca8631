"""Reference points of a split, computed from its data: what a score has to beat to mean anything.

- **chance**: the expected score of guessing at random (NLVR2: a fair coin per pair; retrieval: a random
  ranking, exactly, not simulated). VQA has no meaningful chance level (thousands of open answers).
- **prior**: the score of answering from the train split's label distribution without seeing the image or
  the text: NLVR2's majority label; VQA's most frequent answer per question type (the "per Q-type prior"
  baseline of Antol et al., ICCV 2015), scored with the official metric. A text-only model can do better
  than the prior (it reads the question), so the measured text-only run stays the floor of a comparison.

Pure functions, torch-free, like the other metrics. Values are percentages, unrounded (the run line and the
reports round them to the metric's precision).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from harness.metrics.nlvr2 import nlvr2_consistency_key, nlvr2_scores
from harness.metrics.vqa import vqa_evaluate

__all__ = ["MEANING", "nlvr2_reference", "retrieval_chance", "vqa_prior"]

MEANING = {
    "chance": "random guessing",
    "prior": "the train split's most frequent answer (per question type for VQA), without looking at image or text",
}


def nlvr2_reference(labels: Mapping[str, str], train_labels: Iterable[str]) -> dict[str, dict[str, float]]:
    """``{"chance": {...}, "prior": {...}}`` for accuracy and consistency; ``labels``: identifier -> label."""
    groups = Counter(nlvr2_consistency_key(identifier) for identifier in labels)
    chance = {"accuracy": 50.0, "consistency": 100.0 * sum(0.5 ** n for n in groups.values()) / len(groups)}
    counts = Counter(train_labels)
    if not counts:
        return {"chance": chance}
    majority = max(sorted(counts), key=lambda label: counts[label])  # ties: "False" before "True"
    return {"chance": chance, "prior": nlvr2_scores({i: majority for i in labels}, labels)}


def _hit_probability(candidates: int, gold: int, k: int) -> float:
    """P(at least one of ``gold`` items in the top ``k`` of a uniformly random order of ``candidates``)."""
    if k >= candidates:
        return 1.0
    miss = 1.0
    for i in range(k):  # all k drawn from the non-gold items, without replacement
        miss *= max(0, candidates - gold - i) / (candidates - i)
    return 1.0 - miss


def retrieval_chance(captions_per_image: Sequence[int]) -> dict[str, dict[str, float]]:
    """``{"chance": {tr_r1, ..., ir_r10, rsum}}``: the expected recalls of a random ranking, exactly."""
    images, captions = len(captions_per_image), sum(captions_per_image)
    chance: dict[str, float] = {}
    for k in (1, 5, 10):
        chance[f"tr_r{k}"] = 100.0 * sum(_hit_probability(captions, g, k) for g in captions_per_image) / images
    for k in (1, 5, 10):
        chance[f"ir_r{k}"] = 100.0 * _hit_probability(images, 1, k)
    chance["rsum"] = sum(chance.values())
    return {"chance": chance}


def vqa_prior(train: Iterable[tuple[str | None, str | None]], questions: Mapping[str, Any],
              annotations: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """``{"prior": vqa_evaluate(...)}`` of answering every question with the most frequent train answer of its
    question type (the overall most frequent one for types train lacks). ``train``: (question_type,
    multiple_choice_answer) pairs."""
    by_type: dict[str | None, Counter[str]] = {}
    overall: Counter[str] = Counter()
    for question_type, answer in train:
        if answer is not None:
            by_type.setdefault(question_type, Counter())[answer] += 1
            overall[answer] += 1
    if not overall:
        return {}

    def top(counter: Counter[str]) -> str:
        return min(counter, key=lambda a: (-counter[a], a))  # ties broken alphabetically: deterministic

    best = {question_type: top(counter) for question_type, counter in by_type.items()}
    fallback = top(overall)
    results = [{"question_id": a["question_id"], "answer": best.get(a.get("question_type"), fallback)}
               for a in annotations["annotations"]]
    return {"prior": vqa_evaluate(questions, annotations, results)}

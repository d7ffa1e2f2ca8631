"""VQA v2 questions and ten-annotator answers for a scene, with answers balanced per template.

Balance is what keeps a question-only model far from the top: for every question slot the generator lists
every (template, answer, question) that is *true* for the scene, then picks the answer its template has
produced least so far (``AnswerBalancer``). Yes/no templates end near 50/50, counts near uniform over their
range, colours and shapes near uniform. The question is chosen after its answer, so the wording carries no
hint of it.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any

from harness.world.scene import (
    COLOR_NAMES,
    MAX_OBJECTS,
    MIN_OBJECTS,
    NUMBER_WORDS,
    PLURALS,
    SHAPES,
    Scene,
    Spec,
    relation,
    unique_spec,
)

# Template -> the answers it may produce (its balance target) and its official-style answer type.
TEMPLATES: dict[str, tuple[tuple[str, ...], str]] = {
    "count_combo": (("0", "1", "2"), "number"),
    "count_shape": (("0", "1", "2", "3"), "number"),
    "count_color": (("0", "1", "2", "3"), "number"),
    "count_all": (tuple(str(n) for n in range(MIN_OBJECTS, MAX_OBJECTS + 1)), "number"),
    "exist_combo": (("yes", "no"), "yes/no"),
    "exist_shape": (("yes", "no"), "yes/no"),
    "exist_color": (("yes", "no"), "yes/no"),
    "attr_color": (COLOR_NAMES, "other"),
    "attr_shape": (SHAPES, "other"),
    "spatial_h": (("yes", "no"), "yes/no"),
    "spatial_v": (("yes", "no"), "yes/no"),
}
# One question per family per image (when the scene allows it): every image gets varied questions.
FAMILIES: dict[str, tuple[str, ...]] = {
    "count": ("count_combo", "count_shape", "count_color", "count_all"),
    "exist": ("exist_combo", "exist_shape", "exist_color"),
    "attribute": ("attr_color", "attr_shape"),
    "spatial": ("spatial_h", "spatial_v"),
}
FALLBACK_FAMILY = "exist"  # always answerable both ways

RELATION_WORDS = {"left": "to the left of", "right": "to the right of", "above": "above", "below": "below"}

# Plausible annotator mistakes: a neighbouring colour, a look-alike shape.
SIMILAR_COLORS = {"red": ("orange", "purple"), "orange": ("red", "yellow"), "yellow": ("orange", "green"),
                  "green": ("yellow", "blue"), "blue": ("purple", "green"), "purple": ("blue", "red")}
SIMILAR_SHAPES = {"circle": ("square",), "square": ("diamond", "circle"), "triangle": ("diamond",),
                  "diamond": ("square", "triangle"), "cross": ("diamond", "plus")}
WRONG_COUNT_WEIGHTS = (0.45, 0.3, 0.17, 0.08)  # how many of the 10 annotators answer wrongly: 0, 1, 2, 3
VARIANT_RATE = 0.08  # chance that a correct annotator writes a format variant ("two", "Yes.", "a circle")


@dataclass(frozen=True)
class Question:
    template: str
    question: str  # sentence case with a question mark, like the real VQA questions
    question_type: str  # the official-style prefix ("how many", "is there a", ...)
    answer: str  # canonical answer: lowercase, digits for numbers
    answer_type: str  # yes/no | number | other


def _q(template: str, text: str, qtype: str, answer: str) -> Question:
    return Question(template, text[0].upper() + text[1:], qtype, answer, TEMPLATES[template][1])


def candidates(scene: Scene, template: str) -> list[Question]:
    """Every question of ``template`` that is true for ``scene`` with an answer inside the template's range."""
    allowed = set(TEMPLATES[template][0])
    out: list[Question] = []
    if template == "count_combo":
        for color in COLOR_NAMES:
            for shape in SHAPES:
                n = str(scene.count(Spec(color, shape)))
                out.append(_q(template, f"how many {color} {PLURALS[shape]} are there?", "how many", n))
    elif template == "count_shape":
        for shape in SHAPES:
            n = str(scene.count(Spec(shape=shape)))
            out.append(_q(template, f"how many {PLURALS[shape]} are there?", "how many", n))
    elif template == "count_color":
        for color in COLOR_NAMES:
            n = str(scene.count(Spec(color=color)))
            out.append(_q(template, f"how many {color} objects are there?", "how many", n))
    elif template == "count_all":
        n = str(len(scene.objects))
        out += [_q(template, "how many objects are there?", "how many", n),
                _q(template, "how many shapes are in the picture?", "how many", n)]
    elif template in ("exist_combo", "exist_shape", "exist_color"):
        specs = {"exist_combo": [Spec(c, s) for c in COLOR_NAMES for s in SHAPES],
                 "exist_shape": [Spec(shape=s) for s in SHAPES],
                 "exist_color": [Spec(color=c) for c in COLOR_NAMES]}[template]
        for spec in specs:
            answer = "yes" if scene.count(spec) else "no"
            out.append(_q(template, f"is there {spec.with_article()}?", "is there a", answer))
    elif template == "attr_color":
        for obj in scene.objects:
            if Spec(shape=obj.shape) in unique_spec(scene, obj):
                out.append(_q(template, f"what color is the {obj.shape}?", "what color is the", obj.color))
    elif template == "attr_shape":
        for obj in scene.objects:
            if Spec(color=obj.color) in unique_spec(scene, obj):
                out.append(_q(template, f"what is the shape of the {obj.color} object?", "what is the", obj.shape))
    elif template in ("spatial_h", "spatial_v"):
        rels = ("left", "right") if template == "spatial_h" else ("above", "below")
        refs = [unique_spec(scene, o) for o in scene.objects]
        for i, a in enumerate(scene.objects):
            for j, b in enumerate(scene.objects):
                refs_a, refs_b = refs[i], refs[j]
                if i == j or not refs_a or not refs_b:
                    continue
                # The fullest description reads most naturally ("the red circle"); it is unique when any is.
                ref_a, ref_b = Spec(a.color, a.shape), Spec(b.color, b.shape)
                if ref_a not in refs_a:
                    ref_a = refs_a[0]
                if ref_b not in refs_b:
                    ref_b = refs_b[0]
                for rel in rels:
                    holds = relation(a, b, rel)
                    if holds is None:
                        continue
                    text = f"is the {ref_a.noun()} {RELATION_WORDS[rel]} the {ref_b.noun()}?"
                    out.append(_q(template, text, "is the", "yes" if holds else "no"))
    else:
        raise ValueError(f"unknown VQA template {template!r}")
    return [q for q in out if q.answer in allowed]


class AnswerBalancer:
    """Counts answers per template, and picks the feasible (template, answer) that lags its share most."""

    def __init__(self) -> None:
        self.counts: dict[str, Counter[str]] = defaultdict(Counter)

    def lag(self, template: str, answer: str, family_total: float) -> float:
        answers = TEMPLATES[template][0]
        total = sum(self.counts[template].values())
        behind = self.counts[template][answer] - total / len(answers)  # < 0: this answer is under-represented
        usage = total - family_total  # > 0: this template is used more than its family's average
        return behind + 0.5 * usage / len(answers)

    def choose(self, rng: random.Random, family: str, pool: list[Question]) -> Question:
        templates = FAMILIES[family]
        family_total = sum(sum(self.counts[t].values()) for t in templates) / len(templates)
        scored: dict[tuple[str, str], float] = {}
        for q in pool:
            key = (q.template, q.answer)
            if key not in scored:
                scored[key] = self.lag(q.template, q.answer, family_total)
        best = min(scored.values())
        keys = [k for k, v in scored.items() if v <= best + 1e-9]
        template, answer = rng.choice(keys)
        choice = rng.choice([q for q in pool if q.template == template and q.answer == answer])
        self.counts[template][answer] += 1
        return choice


def questions_for_scene(scene: Scene, rng: random.Random, balancer: AnswerBalancer, n: int) -> list[Question]:
    """``n`` distinct questions about ``scene``: one per family in random order, then fallbacks."""
    families = list(FAMILIES)
    rng.shuffle(families)
    while len(families) < n:
        families.append(FALLBACK_FAMILY)
    chosen: list[Question] = []
    for family in families[:n]:
        asked = {q.question for q in chosen}
        for fam in (family, FALLBACK_FAMILY):
            pool = [q for t in FAMILIES[fam] for q in candidates(scene, t) if q.question not in asked]
            if pool:
                chosen.append(balancer.choose(rng, fam, pool))
                break
        else:
            raise RuntimeError("no question left to ask about a scene")  # the 30 existence questions never run out
    return chosen


# --- annotators -------------------------------------------------------------------------------------------

def _wrong_answer(q: Question, rng: random.Random) -> str:
    if q.answer_type == "yes/no":
        return "no" if q.answer == "yes" else "yes"
    if q.answer_type == "number":
        n = int(q.answer)
        return str(n + 1) if n == 0 or rng.random() < 0.5 else str(n - 1)
    if q.answer in SIMILAR_COLORS:
        return rng.choice(SIMILAR_COLORS[q.answer])
    return rng.choice(SIMILAR_SHAPES[q.answer])


def _variant(answer: str, answer_type: str, rng: random.Random) -> str:
    """A way of writing ``answer`` that the official normalisation maps back to it."""
    if answer_type == "number":
        return rng.choice((NUMBER_WORDS[int(answer)], f"{answer}."))
    if answer_type == "yes/no":
        return rng.choice((answer.capitalize(), f"{answer}.", f"{answer.capitalize()}!"))
    if answer in SHAPES:
        article = "an" if answer[0] in "aeiou" else "a"
        return rng.choice((f"{article} {answer}", answer.capitalize(), f"{answer}."))
    return rng.choice((answer.capitalize(), f"{answer}."))


def annotate(q: Question, rng: random.Random) -> dict[str, Any]:
    """Ten answers with realistic disagreement; ``multiple_choice_answer`` is the most frequent one."""
    n_wrong = rng.choices(range(len(WRONG_COUNT_WEIGHTS)), weights=WRONG_COUNT_WEIGHTS)[0]
    wrong_slots = set(rng.sample(range(10), n_wrong))
    answers, canonical = [], []
    for slot in range(10):
        if slot in wrong_slots:
            canon = _wrong_answer(q, rng)
            text = canon
            confidence = rng.choices(("yes", "maybe", "no"), weights=(0.2, 0.5, 0.3))[0]
        else:
            canon = q.answer
            text = _variant(q.answer, q.answer_type, rng) if rng.random() < VARIANT_RATE else q.answer
            confidence = rng.choices(("yes", "maybe"), weights=(0.88, 0.12))[0]
        canonical.append(canon)
        answers.append({"answer": text, "answer_confidence": confidence, "answer_id": slot + 1})
    # At least 7 of 10 are correct, so the most frequent canonical answer is always the true one.
    most_common = Counter(canonical).most_common(1)[0][0]
    return {"answers": answers, "multiple_choice_answer": most_common}

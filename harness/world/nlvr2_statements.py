"""NLVR2-style statements about two scenes, their truth, and image pairs built to make them true or false.

A set is one sentence with several image pairs whose labels are mixed (so NLVR2's consistency metric, all
pairs of a sentence right, means something). For each pair the wanted label is chosen first; ``propose``
samples a candidate pair that is *likely* to have that label (by construction, with near-miss negatives such as
an adjacent count), and ``evaluate`` decides the truth on the scene objects. Pairs are rejection-sampled until
the two agree, so a label is never wrong even when a proposal is.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from dataclasses import dataclass

from harness.world.scene import (
    COLOR_NAMES,
    MAX_OBJECTS,
    MIN_OBJECTS,
    NUMBER_WORDS,
    SHAPES,
    Scene,
    Spec,
    relation,
    sample_scene,
)

TEMPLATES: tuple[str, ...] = ("exact_count", "more", "both", "xor", "relation", "total_count", "each_count")
RELATION_WORDS = {"left": "to the left of", "right": "to the right of", "above": "above", "below": "below"}
MAX_TRIES = 500  # proposals per pair; proposals hit their label most of the time, so this is never reached


@dataclass(frozen=True)
class Statement:
    template: str
    sentence: str
    side: str = "left"  # the image a one-sided statement talks about (left = img0)
    spec: Spec = Spec()
    spec_b: Spec = Spec()  # relation statements: the second object
    rel: str = ""  # relation statements: left | right | above | below
    n: int = 0  # counting statements

    @property
    def synset(self) -> str:
        """NLVR2's ``synset`` field: here the main thing the sentence is about."""
        return self.spec.noun() if (self.spec.color or self.spec.shape) else "object"


def _random_spec(rng: random.Random, kinds: tuple[str, ...] = ("combo", "shape", "color")) -> Spec:
    kind = rng.choice(kinds)
    color = rng.choice(COLOR_NAMES) if kind in ("combo", "color") else None
    shape = rng.choice(SHAPES) if kind in ("combo", "shape") else None
    return Spec(color, shape)


def _other(side: str) -> str:
    return "right" if side == "left" else "left"


def sample_statement(rng: random.Random, template: str) -> Statement:
    """A random sentence of ``template``."""
    side = rng.choice(("left", "right"))
    if template == "exact_count":
        spec, n = _random_spec(rng), rng.randint(1, 3)
        text = f"The {side} image contains exactly {NUMBER_WORDS[n]} {spec.noun(plural=n != 1)}."
        return Statement(template, text, side=side, spec=spec, n=n)
    if template == "more":
        spec = _random_spec(rng)
        text = f"There are more {spec.noun(plural=True)} in the {side} image than in the {_other(side)} image."
        return Statement(template, text, side=side, spec=spec)
    if template == "both":
        spec = _random_spec(rng)
        return Statement(template, f"Both images contain {spec.with_article()}.", spec=spec)
    if template == "xor":
        spec = _random_spec(rng)
        return Statement(template, f"One image contains {spec.with_article()} and the other does not.", spec=spec)
    if template == "relation":
        # Two specs no single object can match both of, so "a X left of a Y" always means two objects.
        kind = rng.choice(("combo", "combo", "shape", "color"))
        while True:
            spec, spec_b = _random_spec(rng, (kind,)), _random_spec(rng, (kind,))
            if spec != spec_b:
                break
        rel = rng.choice(tuple(RELATION_WORDS))
        text = f"The {side} image has {spec.with_article()} {RELATION_WORDS[rel]} {spec_b.with_article()}."
        return Statement(template, text, side=side, spec=spec, spec_b=spec_b, rel=rel)
    if template == "total_count":
        spec, n = _random_spec(rng), rng.randint(2, 4)
        text = f"There are exactly {NUMBER_WORDS[n]} {spec.noun(plural=True)} in the two images combined."
        return Statement(template, text, spec=spec, n=n)
    if template == "each_count":
        n = rng.randint(MIN_OBJECTS, MAX_OBJECTS)
        return Statement(template, f"Each image contains exactly {NUMBER_WORDS[n]} objects.", n=n)
    raise ValueError(f"unknown NLVR2 template {template!r}")


def evaluate(st: Statement, left: Scene, right: Scene) -> bool | None:
    """The statement's truth for the pair; None when it cannot be called (a relation too close to judge)."""
    scenes = {"left": left, "right": right}
    if st.template == "exact_count":
        return scenes[st.side].count(st.spec) == st.n
    if st.template == "more":
        return scenes[st.side].count(st.spec) > scenes[_other(st.side)].count(st.spec)
    if st.template == "both":
        return left.count(st.spec) > 0 and right.count(st.spec) > 0
    if st.template == "xor":
        return (left.count(st.spec) > 0) != (right.count(st.spec) > 0)
    if st.template == "relation":
        scene = scenes[st.side]
        verdicts = [relation(a, b, st.rel) for a in scene.find(st.spec) for b in scene.find(st.spec_b) if a is not b]
        if any(v is True for v in verdicts):
            return True
        return None if any(v is None for v in verdicts) else False
    if st.template == "total_count":
        return left.count(st.spec) + right.count(st.spec) == st.n
    if st.template == "each_count":
        return len(left.objects) == st.n and len(right.objects) == st.n
    raise ValueError(f"unknown NLVR2 template {st.template!r}")


def _near(rng: random.Random, n: int, low: int, high: int) -> int:
    """A count different from ``n`` but close to it: the near miss that makes a false statement hard."""
    options = [(m, w) for m, w in ((n - 1, 4), (n + 1, 4), (n - 2, 1), (n + 2, 1)) if low <= m <= high]
    return rng.choices([m for m, _ in options], weights=[w for _, w in options])[0]

def _with_count(rng: random.Random, spec: Spec, k: int, n_objects: int | None = None) -> Scene:
    """A scene with exactly ``k`` objects matching ``spec``."""
    return sample_scene(rng, n_objects=n_objects, required=[spec] * k, forbid=[spec])


def propose(st: Statement, label: bool, rng: random.Random) -> tuple[Scene, Scene]:
    """A candidate (left, right) pair that usually has ``label`` (``evaluate`` has the last word)."""
    scenes: dict[str, Scene]
    if st.template == "exact_count":
        k = st.n if label else _near(rng, st.n, 0, 4)
        # Half the time the other image holds exactly n: the model must look at the right side.
        other_k = st.n if rng.random() < 0.5 else rng.randint(0, 2)
        scenes = {st.side: _with_count(rng, st.spec, k), _other(st.side): _with_count(rng, st.spec, other_k)}
    elif st.template == "more":
        if label:
            a = rng.randint(1, 3)
            b = rng.randint(0, a - 1)
        else:
            b = rng.randint(1, 3)
            a = b if rng.random() < 0.4 else rng.randint(0, b - 1)
        scenes = {st.side: _with_count(rng, st.spec, a), _other(st.side): _with_count(rng, st.spec, b)}
    elif st.template in ("both", "xor"):
        if st.template == "both":
            present = "both" if label else ("one" if rng.random() < 0.8 else "none")
        else:
            present = "one" if label else rng.choice(("both", "none"))
        if present == "both":
            counts = (rng.randint(1, 2), rng.randint(1, 2))
        elif present == "one":
            counts = (rng.randint(1, 2), 0) if rng.random() < 0.5 else (0, rng.randint(1, 2))
        else:
            counts = (0, 0)
        scenes = {"left": _with_count(rng, st.spec, counts[0]), "right": _with_count(rng, st.spec, counts[1])}
    elif st.template == "relation":
        if label or rng.random() < 0.75:
            # True, or the near miss: both objects present but arranged the other way (rejection decides).
            main = sample_scene(rng, required=[st.spec, st.spec_b], forbid=[st.spec, st.spec_b])
        else:
            main = sample_scene(rng, required=[st.spec], forbid=[st.spec_b])
        distractor = sample_scene(rng, required=[st.spec, st.spec_b]) if rng.random() < 0.5 else sample_scene(rng)
        scenes = {st.side: main, _other(st.side): distractor}
    elif st.template == "total_count":
        total = st.n if label else _near(rng, st.n, 0, 6)
        a = rng.randint(max(0, total - 3), min(total, 3))
        scenes = {"left": _with_count(rng, st.spec, a), "right": _with_count(rng, st.spec, total - a)}
    elif st.template == "each_count":
        counts = [st.n, st.n]
        if not label:
            counts[rng.randrange(2)] = _near(rng, st.n, MIN_OBJECTS, MAX_OBJECTS)
            if rng.random() < 0.25:
                counts = [_near(rng, st.n, MIN_OBJECTS, MAX_OBJECTS) for _ in counts]
        scenes = {"left": sample_scene(rng, n_objects=counts[0]), "right": sample_scene(rng, n_objects=counts[1])}
    else:
        raise ValueError(f"unknown NLVR2 template {st.template!r}")
    return scenes["left"], scenes["right"]


def make_pair(st: Statement, label: bool, rng: random.Random) -> tuple[Scene, Scene]:
    """Rejection-sample a pair whose truth under ``st`` is exactly ``label``."""
    for _ in range(MAX_TRIES):
        left, right = propose(st, label, rng)
        if evaluate(st, left, right) is label:
            return left, right
    raise RuntimeError(f"could not make {st.sentence!r} {label}")


class LabelBalancer:
    """Chooses each set's label vector: never all equal (mixed sets), True/False near 50/50 per template."""

    def __init__(self) -> None:
        self.counts: dict[str, Counter[bool]] = defaultdict(Counter)

    def labels(self, rng: random.Random, template: str, n_pairs: int) -> list[bool]:
        c = self.counts[template]
        if n_pairs < 2:
            n_true = int(c[True] <= c[False]) if n_pairs else 0
        else:
            half = n_pairs // 2
            if c[True] < c[False]:
                n_true = rng.randint(half, n_pairs - 1)
            elif c[True] > c[False]:
                n_true = rng.randint(1, n_pairs - half)
            else:
                n_true = rng.randint(1, n_pairs - 1)
        labels = [True] * n_true + [False] * (n_pairs - n_true)
        rng.shuffle(labels)
        c.update(labels)
        return labels


def template_cycle(rng: random.Random, n_sets: int) -> list[str]:
    """Templates for ``n_sets`` sets: every template equally often, in shuffled rounds."""
    out: list[str] = []
    while len(out) < n_sets:
        block = list(TEMPLATES)
        rng.shuffle(block)
        out += block
    return out[:n_sets]

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
# Easier rungs of the ladder (v3): statements about all objects or one colour word, whose truth the tiny models
# can learn from scratch in minutes. Each reuses the truth/proposal logic named here.
EASY_TEMPLATES: dict[str, str] = {
    "count_compare": "count_compare",  # "The left image contains more objects than the right image."
    "same_count": "same_count",  # "Both images contain the same number of objects."
    "presence_color": "presence",  # "The left image contains a red object."
    "presence_shape": "presence",  # "The left image contains a circle."
    "both_color": "both",  # "Both images contain a red object."
    "xor_color": "xor",  # "One image contains a red object and the other does not."
    "more_color": "more",  # "There are more red objects in the left image than in the right image."
    "exact_count_all": "exact_count_all",  # "The left image contains exactly three objects."
    "shared_color": "shared_color",  # "The two images have an object of the same color."
}
ALL_TEMPLATES: tuple[str, ...] = TEMPLATES + tuple(EASY_TEMPLATES)
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
    def logic(self) -> str:
        """How truth is decided and pairs proposed (an easy template reuses a harder one's logic)."""
        return EASY_TEMPLATES.get(self.template, self.template)

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
    if template == "count_compare":
        text = f"The {side} image contains more objects than the {_other(side)} image."
        return Statement(template, text, side=side)
    if template == "same_count":
        return Statement(template, "Both images contain the same number of objects.")
    if template in ("presence_color", "presence_shape"):
        spec = _random_spec(rng, ("color",) if template == "presence_color" else ("shape",))
        return Statement(template, f"The {side} image contains {spec.with_article()}.", side=side, spec=spec)
    if template == "both_color":
        spec = _random_spec(rng, ("color",))
        return Statement(template, f"Both images contain {spec.with_article()}.", spec=spec)
    if template == "xor_color":
        spec = _random_spec(rng, ("color",))
        return Statement(template, f"One image contains {spec.with_article()} and the other does not.", spec=spec)
    if template == "more_color":
        spec = _random_spec(rng, ("color",))
        text = f"There are more {spec.noun(plural=True)} in the {side} image than in the {_other(side)} image."
        return Statement(template, text, side=side, spec=spec)
    if template == "shared_color":
        return Statement(template, "The two images have an object of the same color.")
    if template == "exact_count_all":
        n = rng.randint(MIN_OBJECTS, MAX_OBJECTS)
        text = f"The {side} image contains exactly {NUMBER_WORDS[n]} objects."
        return Statement(template, text, side=side, n=n)
    raise ValueError(f"unknown NLVR2 template {template!r}")


def evaluate(st: Statement, left: Scene, right: Scene) -> bool | None:
    """The statement's truth for the pair; None when it cannot be called (a relation too close to judge)."""
    scenes = {"left": left, "right": right}
    logic = st.logic
    if logic == "count_compare":
        return len(scenes[st.side].objects) > len(scenes[_other(st.side)].objects)
    if logic == "same_count":
        return len(left.objects) == len(right.objects)
    if logic == "presence":
        return scenes[st.side].count(st.spec) > 0
    if logic == "exact_count_all":
        return len(scenes[st.side].objects) == st.n
    if logic == "shared_color":
        return bool({o.color for o in left.objects} & {o.color for o in right.objects})
    if logic == "exact_count":
        return scenes[st.side].count(st.spec) == st.n
    if logic == "more":
        return scenes[st.side].count(st.spec) > scenes[_other(st.side)].count(st.spec)
    if logic == "both":
        return left.count(st.spec) > 0 and right.count(st.spec) > 0
    if logic == "xor":
        return (left.count(st.spec) > 0) != (right.count(st.spec) > 0)
    if logic == "relation":
        scene = scenes[st.side]
        verdicts = [relation(a, b, st.rel) for a in scene.find(st.spec) for b in scene.find(st.spec_b) if a is not b]
        if any(v is True for v in verdicts):
            return True
        return None if any(v is None for v in verdicts) else False
    if logic == "total_count":
        return left.count(st.spec) + right.count(st.spec) == st.n
    if logic == "each_count":
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
    logic = st.logic
    if logic == "count_compare":
        if label:
            b = rng.randint(MIN_OBJECTS, MAX_OBJECTS - 1)
            a = rng.randint(b + 1, MAX_OBJECTS)
        else:
            a = rng.randint(MIN_OBJECTS, MAX_OBJECTS)
            b = a if rng.random() < 0.3 or a == MAX_OBJECTS else rng.randint(a + 1, MAX_OBJECTS)
        scenes = {st.side: sample_scene(rng, n_objects=a), _other(st.side): sample_scene(rng, n_objects=b)}
    elif logic == "same_count":
        a = rng.randint(MIN_OBJECTS, MAX_OBJECTS)
        b = a if label else _near(rng, a, MIN_OBJECTS, MAX_OBJECTS)
        scenes = {"left": sample_scene(rng, n_objects=a), "right": sample_scene(rng, n_objects=b)}
    elif logic == "presence":
        k = rng.randint(1, 2) if label else 0
        # The other image holds the thing half the time: the model must look at the named side.
        other_k = rng.randint(1, 2) if rng.random() < 0.5 else 0
        scenes = {st.side: _with_count(rng, st.spec, k), _other(st.side): _with_count(rng, st.spec, other_k)}
    elif logic == "shared_color":
        colors = list(COLOR_NAMES)
        rng.shuffle(colors)
        # The left image uses at most three colours; the right one shares one of them (true) or none (false).
        left_scene = sample_scene(rng, forbid=[Spec(color=c) for c in colors[3:]])
        used = sorted({o.color for o in left_scene.objects})
        if label:
            right_scene = sample_scene(rng, required=[Spec(color=rng.choice(used))])
        else:
            right_scene = sample_scene(rng, forbid=[Spec(color=c) for c in used])
        scenes = {"left": left_scene, "right": right_scene} if rng.random() < 0.5 else \
            {"left": right_scene, "right": left_scene}
    elif logic == "exact_count_all":
        a = st.n if label else _near(rng, st.n, MIN_OBJECTS, MAX_OBJECTS)
        b = st.n if rng.random() < 0.5 else rng.randint(MIN_OBJECTS, MAX_OBJECTS)
        scenes = {st.side: sample_scene(rng, n_objects=a), _other(st.side): sample_scene(rng, n_objects=b)}
    elif logic == "exact_count":
        k = st.n if label else _near(rng, st.n, 0, MAX_OBJECTS)
        # Half the time the other image holds exactly n: the model must look at the right side.
        other_k = st.n if rng.random() < 0.5 else rng.randint(0, 2)
        scenes = {st.side: _with_count(rng, st.spec, k), _other(st.side): _with_count(rng, st.spec, other_k)}
    elif logic == "more":
        if label:
            a = rng.randint(1, 3)
            b = rng.randint(0, a - 1)
        else:
            b = rng.randint(1, 3)
            a = b if rng.random() < 0.4 else rng.randint(0, b - 1)
        scenes = {st.side: _with_count(rng, st.spec, a), _other(st.side): _with_count(rng, st.spec, b)}
    elif logic in ("both", "xor"):
        if logic == "both":
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
    elif logic == "relation":
        if label or rng.random() < 0.75:
            # True, or the near miss: both objects present but arranged the other way (rejection decides).
            main = sample_scene(rng, required=[st.spec, st.spec_b], forbid=[st.spec, st.spec_b])
        else:
            main = sample_scene(rng, required=[st.spec], forbid=[st.spec_b])
        distractor = sample_scene(rng, required=[st.spec, st.spec_b]) if rng.random() < 0.5 else sample_scene(rng)
        scenes = {st.side: main, _other(st.side): distractor}
    elif logic == "total_count":
        total = st.n if label else _near(rng, st.n, 0, 2 * MAX_OBJECTS)
        a = rng.randint(max(0, total - MAX_OBJECTS), min(total, MAX_OBJECTS))
        scenes = {"left": _with_count(rng, st.spec, a), "right": _with_count(rng, st.spec, total - a)}
    elif logic == "each_count":
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


def template_cycle(rng: random.Random, n_sets: int, templates: tuple[str, ...] = TEMPLATES) -> list[str]:
    """Templates for ``n_sets`` sets: every entry of ``templates`` equally often (list a template twice to
    double its share), in shuffled rounds."""
    out: list[str] = []
    while len(out) < n_sets:
        block = list(templates)
        rng.shuffle(block)
        out += block
    return out[:n_sets]

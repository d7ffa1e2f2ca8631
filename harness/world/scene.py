"""Scenes of the embedded world: the vocabulary, the scene dataclasses and the random scene sampler.

A scene is pure data (shapes, colours, sizes, normalised positions, a background recipe); ``render.py``
turns it into pixels and every question, statement and caption is computed from it. Coordinates are
normalised to [0, 1] with y pointing down, so the same scene renders at any resolution.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond", "cross")
PLURALS: dict[str, str] = {"circle": "circles", "square": "squares", "triangle": "triangles",
                           "diamond": "diamonds", "cross": "crosses"}
# Saturated, mutually distant colours; backgrounds are low-saturation greys so objects always stand out.
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (215, 40, 40),
    "orange": (240, 140, 20),
    "yellow": (235, 215, 35),
    "green": (40, 165, 60),
    "blue": (35, 85, 215),
    "purple": (145, 55, 190),
}
COLOR_NAMES: tuple[str, ...] = tuple(COLORS)
OBJECT_SIZES: tuple[str, ...] = ("small", "large")
RADIUS: dict[str, float] = {"small": 0.10, "large": 0.15}  # normalised; a shape's extent is about 1.15 r
# (v2: larger than v1's 0.08/0.13 so that a 64 px image shows shapes a small CNN can tell apart)
EXTENT = 1.15  # farthest point of any shape from its centre, in units of r (square corners)

# v3: 1-3 objects (v2: 2-5). With fewer objects per scene the tiny models learn counting and attribute answers
# within the tiny budget (VQA number 64 vs 49, other 48 vs 35 at 1125 steps; docs/results/discriminate.md).
MIN_OBJECTS, MAX_OBJECTS = 1, 3
# Centres at least this fraction of (r1 + r2) apart: partial occlusion happens, but every object keeps
# most of itself visible and stays countable.
MIN_SEPARATION = 0.7
# Objects of the same colour never touch: two overlapping red shapes would read as one blob.
SAME_COLOR_SEPARATION = EXTENT + 0.1
# A spatial relation ("left of") is only asserted or denied when the centres differ by at least this much
# along its axis; closer pairs are ambiguous and never asked about.
CLEAR = 0.1
# Chance that a new object copies the shape (or the colour) of one already placed: without it, repeated
# shapes/colours are too rare for counting questions to have balanced answers.
COPY_SHAPE, COPY_COLOR = 0.3, 0.3
# Chance that an object is placed right against an earlier one of another colour: uniform positions
# alone almost never overlap, and real scenes have occlusion.
TUCK_RATE = 0.25

NUMBER_WORDS: dict[int, str] = {0: "zero", 1: "one", 2: "two", 3: "three", 4: "four", 5: "five",
                                6: "six", 7: "seven", 8: "eight"}


@dataclass(frozen=True)
class SceneObject:
    shape: str
    color: str
    size: str
    x: float  # centre, normalised, 0 = left edge
    y: float  # centre, normalised, 0 = top edge

    @property
    def r(self) -> float:
        return RADIUS[self.size]

    def to_json(self) -> dict[str, Any]:
        # Full precision: a test re-checking "left of" must see exactly the numbers the generator used.
        return {"shape": self.shape, "color": self.color, "size": self.size, "x": self.x, "y": self.y}


@dataclass(frozen=True)
class Spec:
    """A partial description ("red objects", "circles", "red circles") used to count and refer to objects."""

    color: str | None = None
    shape: str | None = None

    def matches(self, obj: SceneObject) -> bool:
        return (self.color is None or obj.color == self.color) and (self.shape is None or obj.shape == self.shape)

    @property
    def kind(self) -> str:
        if self.color and self.shape:
            return "combo"
        return "shape" if self.shape else "color"

    def noun(self, plural: bool = False) -> str:
        """"red circle(s)", "circle(s)" or "red object(s)"."""
        if self.shape is None:
            return f"{self.color} object{'s' if plural else ''}"
        shape = PLURALS[self.shape] if plural else self.shape
        return f"{self.color} {shape}" if self.color else shape

    def with_article(self) -> str:
        noun = self.noun()
        return f"{'an' if noun[0] in 'aeiou' else 'a'} {noun}"


@dataclass(frozen=True)
class Background:
    tone: str  # light | dark
    tint: str  # gray | warm | cool
    pattern: str  # plain | gradient | textured
    base: tuple[int, int, int]
    second: tuple[int, int, int]  # the gradient's far end (equal to base otherwise)
    direction: str  # horizontal | vertical | diagonal (gradients only)
    noise_seed: int  # textured backgrounds: the texture is a pure function of this seed

    def describe(self) -> str:
        """Words for captions: "dark gray", "light bluish gradient", "textured warm light"."""
        tint = {"gray": "gray", "warm": "beige", "cool": "bluish"}[self.tint]
        if self.pattern == "gradient":
            return f"{self.tone} {tint} gradient"
        if self.pattern == "textured":
            return f"textured {self.tone} {tint}"
        return f"plain {self.tone} {tint}"

    def to_json(self) -> dict[str, Any]:
        return {"tone": self.tone, "tint": self.tint, "pattern": self.pattern, "base": list(self.base),
                "second": list(self.second), "direction": self.direction, "noise_seed": self.noise_seed}


@dataclass(frozen=True)
class Scene:
    objects: tuple[SceneObject, ...]  # drawing order: later objects occlude earlier ones
    background: Background

    def count(self, spec: Spec) -> int:
        return sum(spec.matches(o) for o in self.objects)

    def find(self, spec: Spec) -> list[SceneObject]:
        return [o for o in self.objects if spec.matches(o)]

    def to_json(self) -> dict[str, Any]:
        return {"background": self.background.to_json(), "objects": [o.to_json() for o in self.objects]}


def relation(a: SceneObject, b: SceneObject, rel: str) -> bool | None:
    """Whether ``a`` is ``rel`` (left/right/above/below) of ``b``; None when too close to call."""
    delta = {"left": b.x - a.x, "right": a.x - b.x, "above": b.y - a.y, "below": a.y - b.y}[rel]
    if abs(delta) < CLEAR:
        return None
    return delta > 0


def unique_spec(scene: Scene, obj: SceneObject) -> list[Spec]:
    """The descriptions that pick out ``obj`` alone in ``scene`` (for "the red circle", "the triangle")."""
    candidates = [Spec(obj.color, obj.shape), Spec(shape=obj.shape), Spec(color=obj.color)]
    return [s for s in candidates if scene.count(s) == 1]


def sample_background(rng: random.Random) -> Background:
    tone = rng.choice(("light", "dark"))
    tint = rng.choice(("gray", "warm", "cool"))
    pattern = rng.choice(("plain", "gradient", "textured"))
    level = rng.randint(165, 215) if tone == "light" else rng.randint(55, 95)
    # Mild tints only: a saturated background would compete with the object colours.
    shift = {"gray": (0, 0, 0), "warm": (14, 6, -12), "cool": (-10, 0, 16)}[tint]
    base = tuple(max(0, min(255, level + d)) for d in shift)
    second = base
    if pattern == "gradient":
        delta = rng.randint(30, 50) * (1 if tone == "dark" else -1)
        second = tuple(max(0, min(255, c + delta)) for c in base)
    direction = rng.choice(("horizontal", "vertical", "diagonal"))
    return Background(tone=tone, tint=tint, pattern=pattern, base=base, second=second,  # type: ignore[arg-type]
                      direction=direction, noise_seed=rng.randrange(2**31))


def _fill_spec(rng: random.Random, spec: Spec) -> tuple[str, str]:
    return (spec.color or rng.choice(COLOR_NAMES), spec.shape or rng.choice(SHAPES))


def _filler(rng: random.Random, chosen: list[tuple[str, str]], forbid: Sequence[Spec]) -> tuple[str, str]:
    """A random (colour, shape), often repeating one already chosen, never matching a ``forbid`` spec."""
    for _ in range(200):
        color = rng.choice(chosen)[0] if chosen and rng.random() < COPY_COLOR else rng.choice(COLOR_NAMES)
        shape = rng.choice(chosen)[1] if chosen and rng.random() < COPY_SHAPE else rng.choice(SHAPES)
        probe = SceneObject(shape, color, "small", 0.5, 0.5)
        if not any(f.matches(probe) for f in forbid):
            return color, shape
    raise ValueError(f"cannot sample an object avoiding {forbid}")


def sample_scene(rng: random.Random, *, n_objects: int | None = None, required: Sequence[Spec] = (),
                 forbid: Sequence[Spec] = ()) -> Scene:
    """A random scene with ``n_objects`` objects (default 1-3), containing one object per ``required`` spec;
    the other objects match none of ``forbid`` (so "exactly two red circles" can be made true by construction).
    """
    low = max(MIN_OBJECTS, len(required))
    if low > MAX_OBJECTS:
        raise ValueError(f"{len(required)} required objects do not fit in one scene (max {MAX_OBJECTS})")
    n = rng.randint(low, MAX_OBJECTS) if n_objects is None else n_objects
    if not low <= n <= MAX_OBJECTS:
        raise ValueError(f"n_objects={n} outside {low}..{MAX_OBJECTS}")
    kinds = [_fill_spec(rng, s) for s in required]
    while len(kinds) < n:
        kinds.append(_filler(rng, kinds, forbid))
    rng.shuffle(kinds)  # required objects must not always be drawn first (behind the others)
    sizes = [rng.choice(OBJECT_SIZES) for _ in kinds]
    objects = _place(rng, kinds, sizes)
    return Scene(objects=tuple(objects), background=sample_background(rng))


def _place(rng: random.Random, kinds: list[tuple[str, str]], sizes: list[str]) -> list[SceneObject]:
    """Rejection-sample centres inside the image with limited overlap; shrink objects if it keeps failing."""
    for attempt in range(50):
        if attempt >= 25:  # a crowded draw of large objects: make one of them small and retry
            large = [i for i, s in enumerate(sizes) if s == "large"]
            if large:
                sizes[rng.choice(large)] = "small"
        placed: list[SceneObject] = []
        for (color, shape), size in zip(kinds, sizes, strict=True):
            r = RADIUS[size]
            low, high = EXTENT * r + 0.02, 1 - EXTENT * r - 0.02
            anchors = [o for o in placed if o.color != color]
            tuck = bool(anchors) and rng.random() < TUCK_RATE
            for tries in range(100):
                if tuck and tries < 20:  # next to an anchor, just far enough apart to stay countable
                    anchor = rng.choice(anchors)
                    angle = rng.uniform(0.0, 2 * math.pi)
                    dist = rng.uniform(MIN_SEPARATION, 0.9) * (r + anchor.r)
                    x, y = anchor.x + dist * math.cos(angle), anchor.y + dist * math.sin(angle)
                    if not (low <= x <= high and low <= y <= high):
                        continue
                else:
                    x, y = rng.uniform(low, high), rng.uniform(low, high)
                if all((x - o.x) ** 2 + (y - o.y) ** 2 >= (_separation(color, o.color) * (r + o.r)) ** 2
                       for o in placed):
                    placed.append(SceneObject(shape, color, size, x, y))
                    break
            else:
                break
        if len(placed) == len(kinds):
            return placed
    raise RuntimeError("could not place the objects of a scene")  # unreachable in practice: 5 small fit easily


def _separation(color_a: str, color_b: str) -> float:
    return SAME_COLOR_SEPARATION if color_a == color_b else MIN_SEPARATION

"""Five varied captions per scene, Karpathy style (lowercase tokens, raw sentence).

Each caption looks at the scene from a different angle (inventory, counts, a spatial relation, background and
colours, where the salient objects are), so together they pick the image out among similar ones and
retrieval is learnable; the phrasing is drawn at random so no caption type has a fixed wording.
"""

from __future__ import annotations

import random
import re
from collections import Counter

from harness.world.scene import NUMBER_WORDS, PLURALS, Scene, SceneObject, relation

RELATION_WORDS = {"left": "to the left of", "right": "to the right of", "above": "above", "below": "below"}


def tokenize(raw: str) -> list[str]:
    """Karpathy tokens: lowercase words, punctuation dropped."""
    return re.findall(r"[a-z0-9]+", raw.lower())


def _a(phrase: str) -> str:
    return f"{'an' if phrase[0] in 'aeiou' else 'a'} {phrase}"


def _join(items: list[str]) -> str:
    if len(items) == 1:
        return items[0]
    return ", ".join(items[:-1]) + " and " + items[-1]


def _describe(obj: SceneObject, rng: random.Random, size: bool = True) -> str:
    words = ([obj.size] if size and rng.random() < 0.7 else []) + [obj.color, obj.shape]
    return _a(" ".join(words))


def _where(obj: SceneObject) -> str:
    col = "left" if obj.x < 0.38 else "right" if obj.x > 0.62 else ""
    row = "top" if obj.y < 0.38 else "bottom" if obj.y > 0.62 else ""
    if row and col:
        return f"in the {row} {col} corner"
    if row or col:
        return f"at the {row or col}"
    return "in the middle"


def _inventory(scene: Scene, rng: random.Random) -> str:
    objects = list(scene.objects)
    rng.shuffle(objects)
    lead = rng.choice(("", "a picture of ", "an image with ", "a scene with "))
    return f"{lead}{_join([_describe(o, rng) for o in objects])} on a {scene.background.describe()} background"


def _counts(scene: Scene, rng: random.Random) -> str:
    by_shape = Counter(o.shape for o in scene.objects)
    parts = [_a(s) if k == 1 else f"{NUMBER_WORDS[k]} {PLURALS[s]}" for s, k in sorted(by_shape.items())]
    rng.shuffle(parts)
    n = NUMBER_WORDS[len(scene.objects)]
    if len(scene.objects) == 1:  # v3 scenes may hold a single object
        return rng.choice((f"one shape: {parts[0]}", f"{parts[0]}, one object in all"))
    by_color = Counter(o.color for o in scene.objects)
    color, k = max(sorted(by_color.items()), key=lambda item: item[1])
    color_part = "" if k == 1 else f", all of them {color}" if k == len(scene.objects) else f", {NUMBER_WORDS[k]} of them {color}"
    return rng.choice((f"{n} shapes: {_join(parts)}{color_part}",
                       f"{_join(parts)}, {n} objects in all{color_part}"))


def _spatial(scene: Scene, rng: random.Random) -> str:
    pairs = [(a, b, rel) for a in scene.objects for b in scene.objects if a is not b
             for rel in RELATION_WORDS if relation(a, b, rel)]
    if len(scene.objects) == 1:  # nothing to relate: say that it is alone, and where
        obj = scene.objects[0]
        return f"just one {obj.color} {obj.shape}, {_where(obj)}"
    if not pairs:  # every pair too close to call: say where the objects are instead
        return " and ".join(f"{_describe(o, rng, size=False)} {_where(o)}" for o in scene.objects[:3])
    first = rng.choice(pairs)
    # A second relation about a different pair of objects, so the caption says something new.
    others = [p for p in pairs if {id(p[0]), id(p[1])} != {id(first[0]), id(first[1])}]
    chosen = [first] + ([rng.choice(others)] if others else [])
    clauses = [f"{_describe(a, rng, size=False)} {RELATION_WORDS[rel]} {_describe(b, rng, size=False)}"
               for a, b, rel in chosen]
    return ", and ".join(clauses)

def _background(scene: Scene, rng: random.Random) -> str:
    colors = list(dict.fromkeys(o.color for o in scene.objects))
    bg = scene.background.describe()
    if len(scene.objects) == 1:
        obj = scene.objects[0]
        if rng.random() < 0.5:
            return f"{_a(bg)} background with one {obj.color} shape"
        return f"{_a(obj.shape)} in {obj.color} on {_a(bg)} background"
    shapes = list(dict.fromkeys(PLURALS[o.shape] for o in scene.objects))
    if rng.random() < 0.5:
        return f"{_a(bg)} background with {_join(colors)} shapes"
    return f"{_join(shapes)} in {_join(colors)} on {_a(bg)} background"


def _salient(scene: Scene, rng: random.Random) -> str:
    # Large objects first: what a person describing the picture would mention.
    ranked = sorted(scene.objects, key=lambda o: (o.size != "large", o.y, o.x))[:3]
    return " and ".join(f"{_describe(o, rng)} {_where(o)}" for o in ranked)


def captions_for_scene(scene: Scene, rng: random.Random, n: int = 5) -> list[str]:
    """``n`` captions (up to 5 distinct kinds, cycled beyond) in random order, sentence case, full stop."""
    makers = [_inventory, _counts, _spatial, _background, _salient]
    texts = [makers[i % len(makers)](scene, rng) for i in range(n)]
    rng.shuffle(texts)
    return [t[0].upper() + t[1:] + "." for t in texts]

"""The binding probe (benchmarks/binding_probe.py) backs the documented NLVR2 finding: its labels must be right."""

from __future__ import annotations

import importlib.util
import json
import random
from pathlib import Path

from harness.world.scene import COLOR_NAMES, SHAPES

ROOT = Path(__file__).resolve().parents[1]


def _probe():
    spec = importlib.util.spec_from_file_location("binding_probe", ROOT / "benchmarks/binding_probe.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_images_are_the_nlvr2_files_with_their_scene_colours(world: Path) -> None:
    probe = _probe()
    images = probe.scene_images(world, "val")
    pairs = json.loads((world / "meta/scenes.json").read_text())["nlvr2_pairs"]
    assert len(images) == 2 * sum(1 for prefix in pairs if prefix.startswith("val-"))
    path, colours = images[1]  # the first pair's right image
    assert path == world / "nlvr2/images/val/val-0-0-img1.png" and path.is_file()
    assert colours == {o["color"] for o in pairs["val-0-0"]["right"]["objects"]}
    assert all(p.is_file() for p, _ in probe.scene_images(world, "train")[:20])


def test_word_mode_labels_say_whether_the_named_colour_is_there_and_are_balanced(world: Path) -> None:
    probe = _probe()
    images = probe.scene_images(world, "val")
    examples = probe.make_examples(images, "word", random.Random(1), "The left image contains a {word} object.")
    assert len(examples) == len(images)  # six colours, at most five objects: every image can say yes and no
    colours = dict(images)
    words = set()
    for path, text, label in examples:
        colour = text.split(" a ")[1].split()[0]
        words.add(colour)
        assert label == (colour in colours[path])
    assert 0.4 < sum(label for _, _, label in examples) / len(examples) < 0.6
    assert words == set(COLOR_NAMES)  # the word really varies: that is the point of the mode


def test_fixed_mode_always_names_red_and_stays_balanced(world: Path) -> None:
    probe = _probe()
    images = probe.scene_images(world, "val")
    examples = probe.make_examples(images, "fixed", random.Random(1))
    colours = dict(images)
    assert {text for _, text, _ in examples} == {"there is a red object."}
    assert all(label == ("red" in colours[path]) for path, _, label in examples)
    assert 0.35 < sum(label for _, _, label in examples) / len(examples) < 0.65


def test_shape_mode_names_shapes_and_labels_them(world: Path) -> None:
    probe = _probe()
    images = probe.scene_images(world, "val", "shape")
    examples = probe.make_examples(images, "word", random.Random(2), "there is a {word}.", SHAPES)
    shapes = dict(images)
    assert all(label == (text.split()[-1].rstrip(".") in shapes[path]) for path, text, label in examples)
    assert {text.split()[-1].rstrip(".") for _, text, _ in examples} == set(SHAPES)

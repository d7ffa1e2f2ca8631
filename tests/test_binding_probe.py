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


def _fake_world(tmp_path: Path, n_pairs: int = 200) -> Path:
    rng = random.Random(0)

    def scene() -> dict:
        return {"objects": [{"color": rng.choice(COLOR_NAMES), "shape": rng.choice(SHAPES)}
                        for _ in range(rng.randint(2, 5))]}

    pairs = {f"train-{i}-0": {"left": scene(), "right": scene()} for i in range(n_pairs)}
    pairs["val-0-0"] = {"left": scene(), "right": scene()}
    (tmp_path / "meta").mkdir()
    (tmp_path / "meta/scenes.json").write_text(json.dumps({"nlvr2_pairs": pairs}))
    return tmp_path


def test_images_carry_their_scene_colours_and_official_paths(tmp_path):
    probe = _probe()
    world = _fake_world(tmp_path)
    images = probe.scene_images(world, "train")
    assert len(images) == 400  # two per pair, val excluded
    pairs = json.loads((world / "meta/scenes.json").read_text())["nlvr2_pairs"]
    path, colours = images[2]  # pair train-1-0, left image; train images sit in directory set_id % 10
    assert path == world / "nlvr2/images/train/1/train-1-0-img0.png"
    assert colours == {o["color"] for o in pairs["train-1-0"]["left"]["objects"]}
    assert probe.scene_images(world, "val")[1][0] == world / "nlvr2/images/val/val-0-0-img1.png"


def test_word_mode_labels_say_whether_the_named_colour_is_there_and_are_balanced(tmp_path):
    probe = _probe()
    images = probe.scene_images(_fake_world(tmp_path), "train")
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


def test_fixed_mode_always_names_red_and_stays_balanced(tmp_path):
    probe = _probe()
    images = probe.scene_images(_fake_world(tmp_path), "train")
    examples = probe.make_examples(images, "fixed", random.Random(1))
    colours = dict(images)
    assert {text for _, text, _ in examples} == {"there is a red object."}
    assert all(label == ("red" in colours[path]) for path, _, label in examples)
    assert 0.35 < sum(label for _, _, label in examples) / len(examples) < 0.65


def test_shape_mode_names_shapes_and_labels_them(tmp_path):
    probe = _probe()
    images = probe.scene_images(_fake_world(tmp_path), "train", "shape")
    examples = probe.make_examples(images, "word", random.Random(2), "there is a {word}.", SHAPES)
    shapes = dict(images)
    assert all(label == (text.split()[-1].rstrip(".") in shapes[path]) for path, text, label in examples)
    assert {text.split()[-1].rstrip(".") for _, text, _ in examples} == set(SHAPES)

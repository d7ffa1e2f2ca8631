"""The embedded world generator (``vlbench data synth``): formats, determinism, balance, truth, safety.

The tiny world is generated twice per module (once through the CLI, once through the API) and the two are
compared byte for byte; every other test reads those two folders. Answers and labels are re-checked against
the scene metadata (meta/scenes.json) by an independent parser of the question/sentence text.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from harness.errors import VlbenchError
from harness.world import GENERATOR_VERSION, TINY, default_world, synth_world
from harness.world import cache as world_cache
from harness.world import synth as world_synth
from harness.world.scene import CLEAR, COLOR_NAMES, PLURALS, SHAPES

SPLITS = ("train", "val", "test")
SHAPE_OF = {**{s: s for s in SHAPES}, **{p: s for s, p in PLURALS.items()}}
NUMBERS = {"zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6}


# --- helpers ---------------------------------------------------------------------------------------------------

def _cli_invoke(args: list[str]) -> tuple[int, str]:
    """Run ``vlbench data synth ARGS`` through the real top-level group; (exit code, stdout+stderr)."""
    from harness.cli.main import cli

    result = CliRunner().invoke(cli, args)
    return result.exit_code, result.output  # click >= 8.2: output holds stdout and stderr


def _hash_tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _load(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def _phrase(words: list[str]) -> tuple[str | None, str | None]:
    """("red", "circle") from "red circles"; ("red", None) from "red object"; (None, "circle") from "circle"."""
    color = words[0] if words[0] in COLOR_NAMES else None
    noun = words[-1]
    shape = None if noun in ("object", "objects") else SHAPE_OF[noun]
    assert len(words) == 1 + (color is not None), words
    return color, shape


def _count(objects: list[dict[str, Any]], color: str | None, shape: str | None) -> int:
    return sum((color is None or o["color"] == color) and (shape is None or o["shape"] == shape) for o in objects)


def _delta(a: dict[str, Any], b: dict[str, Any], rel: str) -> float:
    """Positive when ``a`` is ``rel`` of ``b`` (image y points down)."""
    return {"left": b["x"] - a["x"], "right": a["x"] - b["x"], "above": b["y"] - a["y"], "below": a["y"] - b["y"]}[rel]


REL = {"to the left of": "left", "to the right of": "right", "above": "above", "below": "below"}


def _vqa_truth(question: str, objects: list[dict[str, Any]]) -> str:
    """The answer to a world question, computed from scratch from its text and the scene objects."""
    q = question.lower()
    if q in ("how many objects are there?", "how many shapes are in the picture?"):
        return str(len(objects))
    if m := re.fullmatch(r"how many (.+) are there\?", q):
        return str(_count(objects, *_phrase(m.group(1).split())))
    if m := re.fullmatch(r"is there an? (.+)\?", q):
        return "yes" if _count(objects, *_phrase(m.group(1).split())) else "no"
    if m := re.fullmatch(r"what color is the (\w+)\?", q):
        (match,) = [o for o in objects if o["shape"] == m.group(1)]  # the question implies it is unique
        return match["color"]
    if m := re.fullmatch(r"what is the shape of the (\w+) object\?", q):
        (match,) = [o for o in objects if o["color"] == m.group(1)]
        return match["shape"]
    if m := re.fullmatch(r"is the (.+?) (to the left of|to the right of|above|below) the (.+)\?", q):
        (a,) = [o for o in objects if _count([o], *_phrase(m.group(1).split()))]
        (b,) = [o for o in objects if _count([o], *_phrase(m.group(3).split()))]
        delta = _delta(a, b, REL[m.group(2)])
        assert abs(delta) >= CLEAR, question  # never asked about a pair too close to call
        return "yes" if delta > 0 else "no"
    raise AssertionError(f"unrecognised question {question!r}")


def _nlvr2_truth(sentence: str, left: list[dict[str, Any]], right: list[dict[str, Any]]) -> bool:
    sides = {"left": left, "right": right}
    s = sentence.lower()
    if m := re.fullmatch(r"the (left|right) image contains exactly (\w+) (.+)\.", s):
        return _count(sides[m.group(1)], *_phrase(m.group(3).split())) == NUMBERS[m.group(2)]
    if m := re.fullmatch(r"there are more (.+) in the (left|right) image than in the (left|right) image\.", s):
        spec = _phrase(m.group(1).split())
        return _count(sides[m.group(2)], *spec) > _count(sides[m.group(3)], *spec)
    if m := re.fullmatch(r"both images contain an? (.+)\.", s):
        spec = _phrase(m.group(1).split())
        return _count(left, *spec) > 0 and _count(right, *spec) > 0
    if m := re.fullmatch(r"one image contains an? (.+) and the other does not\.", s):
        spec = _phrase(m.group(1).split())
        return (_count(left, *spec) > 0) != (_count(right, *spec) > 0)
    if m := re.fullmatch(r"the (left|right) image has an? (.+?) (to the left of|to the right of|above|below) an? (.+)\.", s):
        objects = sides[m.group(1)]
        a_spec, b_spec = _phrase(m.group(2).split()), _phrase(m.group(4).split())
        deltas = [_delta(a, b, REL[m.group(3)]) for a in objects for b in objects
                  if a is not b and _count([a], *a_spec) and _count([b], *b_spec)]
        if any(d >= CLEAR for d in deltas):
            return True
        assert all(d <= -CLEAR for d in deltas), sentence  # a false relation is clearly false
        return False
    if m := re.fullmatch(r"there are exactly (\w+) (.+) in the two images combined\.", s):
        spec = _phrase(m.group(2).split())
        return _count(left, *spec) + _count(right, *spec) == NUMBERS[m.group(1)]
    if m := re.fullmatch(r"each image contains exactly (\w+) objects\.", s):
        return len(left) == len(right) == NUMBERS[m.group(1)]
    raise AssertionError(f"unrecognised sentence {sentence!r}")


# --- fixtures --------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cli_world(world: Path) -> Path:
    """The tiny world, seed 0, generated through the CLI (the session's shared ``world`` fixture)."""
    return world


@pytest.fixture(scope="module")
def world_again(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same world generated a second time, through the API, into a pre-existing empty folder."""
    out = tmp_path_factory.mktemp("api") / "world"
    out.mkdir()
    result = synth_world(out, seed=0, size="tiny", progress=False)
    assert result.status == "created"
    return out


@pytest.fixture(scope="module")
def meta(cli_world: Path) -> dict[str, Any]:
    return _load(cli_world / "meta/scenes.json")


# --- determinism and layout -------------------------------------------------------------------------------------

def test_same_seed_gives_byte_identical_worlds(cli_world: Path, world_again: Path) -> None:
    first, second = _hash_tree(cli_world), _hash_tree(world_again)
    assert len(first) > 3000
    assert first == second


def test_layout_and_world_json(cli_world: Path) -> None:
    for name in ("vqa.yaml", "nlvr2.yaml", "retrieval.yaml", "captions.yaml", "WORLD.json",
                 "karpathy/dataset_world.json", "meta/scenes.json"):
        assert (cli_world / name).is_file(), name
    for split in SPLITS:
        for name in (f"vqa/v2_OpenEnded_world_{split}_questions.json", f"vqa/v2_world_{split}_annotations.json",
                     f"nlvr2/{split}.json", f"coco/instances_{split}.json"):
            assert (cli_world / name).is_file(), name
    info = _load(cli_world / "WORLD.json")
    assert (info["seed"], info["size"], info["generator_version"]) == (0, "tiny", GENERATOR_VERSION)
    counts = info["counts"]
    for split in SPLITS:
        assert counts["vqa"][split] == {"images": TINY.images[split], "questions": TINY.questions_per_image * TINY.images[split]}
        assert counts["nlvr2"][split]["sets"] == TINY.nlvr2_sets[split]
        assert counts["nlvr2"][split]["examples"] == 4 * TINY.nlvr2_sets[split]
        karpathy = {"train": TINY.karpathy_train_images, "test": TINY.karpathy_test_images}.get(split) or TINY.images[split]
        assert counts["retrieval"][split] == {"images": karpathy, "captions": 5 * karpathy}
        boxed = TINY.karpathy_train_images if split == "train" and TINY.karpathy_train_images else TINY.images[split]
        assert counts["coco"][split]["images"] == boxed  # restval scenes carry no boxes (as in the docstring)
    restval = TINY.images["train"] - TINY.karpathy_train_images if TINY.karpathy_train_images else 0
    assert counts["retrieval"].get("restval", {"images": 0})["images"] == restval
    assert counts["retrieval"]["test"]["images"] >= 500  # issue 17: retrieval is scored on >= 500 test images
    assert len(list((cli_world / "images").glob("world_*.png"))) == sum(TINY.images.values())
    assert not [p for p in cli_world.parent.iterdir() if p.name.startswith(".")]  # no temporary folder left


def test_specs_load_with_the_dataset_loaders(cli_world: Path) -> None:
    import harness.data.check as check
    import harness.data.spec as spec_module
    for task in ("vqa", "nlvr2", "retrieval", "captions"):
        spec = spec_module.load_spec(cli_world / f"{task}.yaml")
        assert spec.task == task and list(spec.splits) == list(SPLITS)
        report = check.check_dataset(cli_world / f"{task}.yaml", probe_images=False)
        assert report.ok, report.problems[:5]
    vqa = spec_module.load_spec(cli_world / "vqa.yaml")
    for split in ("train", "val", "test"):
        entry = vqa.split(split)
        assert entry.boxes is not None and entry.boxes.is_file()


# --- VQA --------------------------------------------------------------------------------------------------------

def test_vqa_format(cli_world: Path) -> None:
    seen_ids: set[int] = set()
    for split in SPLITS:
        questions = _load(cli_world / f"vqa/v2_OpenEnded_world_{split}_questions.json")
        annotations = _load(cli_world / f"vqa/v2_world_{split}_annotations.json")
        assert questions["task_type"] == "Open-Ended" and questions["data_subtype"] == split
        assert {"info", "data_type", "license"} <= set(questions) and {"info", "license", "data_type"} <= set(annotations)
        assert annotations["data_subtype"] == split
        by_id = {q["question_id"]: q for q in questions["questions"]}
        assert len(by_id) == len(questions["questions"]) == TINY.questions_per_image * TINY.images[split]
        assert not seen_ids & set(by_id)  # question ids unique across splits
        seen_ids |= set(by_id)
        for ann in annotations["annotations"]:
            q = by_id[ann["question_id"]]
            assert ann["image_id"] == q["image_id"]
            assert q["question"].lower().startswith(ann["question_type"])
            assert ann["answer_type"] in ("yes/no", "number", "other")
            assert [a["answer_id"] for a in ann["answers"]] == list(range(1, 11))
            assert all(a["answer_confidence"] in ("yes", "maybe", "no") for a in ann["answers"])
            assert re.fullmatch(r"[a-z0-9]+", ann["multiple_choice_answer"])  # canonical: lowercase, digits
            assert (cli_world / f"images/world_{ann['image_id']:06d}.png").is_file()


def test_vqa_answers_need_normalisation_sometimes(cli_world: Path) -> None:
    annotations = _load(cli_world / "vqa/v2_world_train_annotations.json")["annotations"]
    variants = [a["answer"] for ann in annotations for a in ann["answers"]
                if a["answer"] != a["answer"].lower().strip(".!") or a["answer"] in NUMBERS]
    disagreements = sum(len({a["answer"] for a in ann["answers"]}) > 1 for ann in annotations)
    assert variants and disagreements > len(annotations) // 3
    from harness.metrics.vqa_normalize import normalize_answer as normalize
    for ann in annotations:
        normalised = Counter(normalize(a["answer"]) for a in ann["answers"])
        assert normalised[ann["multiple_choice_answer"]] >= 7  # 0-3 annotators wrong, the rest right


def test_vqa_answers_are_true_for_the_scene(cli_world: Path, meta: dict[str, Any]) -> None:
    for split in SPLITS:
        questions = {q["question_id"]: q for q in _load(cli_world / f"vqa/v2_OpenEnded_world_{split}_questions.json")["questions"]}
        for ann in _load(cli_world / f"vqa/v2_world_{split}_annotations.json")["annotations"]:
            objects = meta["images"][str(ann["image_id"])]["objects"]
            question = questions[ann["question_id"]]["question"]
            assert _vqa_truth(question, objects) == ann["multiple_choice_answer"], question


def test_vqa_answers_are_balanced_per_template(cli_world: Path, meta: dict[str, Any]) -> None:
    annotations = _load(cli_world / "vqa/v2_world_train_annotations.json")["annotations"]
    per_template: dict[str, Counter[str]] = defaultdict(Counter)
    for ann in annotations:
        per_template[meta["vqa_templates"][str(ann["question_id"])]][ann["multiple_choice_answer"]] += 1
    assert len(per_template) >= 10
    for template, answers in per_template.items():
        total = sum(answers.values())
        assert total >= 100, template
        if set(answers) <= {"yes", "no"}:
            assert 0.4 <= answers["yes"] / total <= 0.6, (template, answers)
        else:
            assert max(answers.values()) / total <= 0.4, (template, answers)
    # A question-only model that knows each template's commonest answer stays far from the top.
    prior = {t: a.most_common(1)[0][0] for t, a in per_template.items()}
    test = _load(cli_world / "vqa/v2_world_test_annotations.json")["annotations"]
    hits = sum(prior[meta["vqa_templates"][str(a["question_id"])]] == a["multiple_choice_answer"] for a in test)
    assert hits / len(test) < 0.45


# --- NLVR2 ------------------------------------------------------------------------------------------------------

def test_nlvr2_format_labels_and_images(cli_world: Path) -> None:
    for split in SPLITS:
        lines = [json.loads(line) for line in (cli_world / f"nlvr2/{split}.json").read_text().splitlines()]
        assert len(lines) == 4 * TINY.nlvr2_sets[split]
        sets: dict[str, list[str]] = defaultdict(list)
        for rec in lines:
            assert {"identifier", "sentence", "label", "left_url", "right_url", "synset", "query", "writer",
                    "validation", "extra_validations"} <= set(rec)
            assert rec["label"] in ("True", "False")
            split_name, set_id, pair_id, sentence_id = rec["identifier"].split("-")
            assert (split_name, sentence_id) == (split, "0")
            assert ("directory" in rec) == (split == "train")  # as in real NLVR2
            folder = cli_world / "nlvr2/images" / split / rec.get("directory", "")
            for img in ("img0", "img1"):
                assert (folder / f"{split}-{set_id}-{pair_id}-{img}.png").is_file()
            sets[set_id].append(rec["label"])
        assert all(len(labels) == 4 and len(set(labels)) == 2 for labels in sets.values())  # mixed labels


def test_nlvr2_labels_are_true_and_balanced(cli_world: Path, meta: dict[str, Any]) -> None:
    per_template: dict[str, Counter[str]] = defaultdict(Counter)
    for split in SPLITS:
        for line in (cli_world / f"nlvr2/{split}.json").read_text().splitlines():
            rec = json.loads(line)
            pair = meta["nlvr2_pairs"][rec["identifier"].rsplit("-", 1)[0]]
            truth = _nlvr2_truth(rec["sentence"], pair["left"]["objects"], pair["right"]["objects"])
            assert rec["label"] == str(truth), rec["sentence"]
            if split == "train":
                per_template[meta["nlvr2_templates"][rec["identifier"]]][rec["label"]] += 1
    assert len(per_template) == 7
    for template, labels in per_template.items():
        assert 0.4 <= labels["True"] / sum(labels.values()) <= 0.6, (template, labels)


# --- captions and boxes -----------------------------------------------------------------------------------------

def test_karpathy_captions(cli_world: Path) -> None:
    data = _load(cli_world / "karpathy/dataset_world.json")
    assert data["dataset"] == "world"
    sentids = []
    for index, image in enumerate(data["images"]):
        assert image["imgid"] == index
        assert (cli_world / image["filepath"] / image["filename"]).is_file()
        assert len(image["sentences"]) == 5 and image["sentids"] == [s["sentid"] for s in image["sentences"]]
        assert len({s["raw"] for s in image["sentences"]}) == 5
        for sentence in image["sentences"]:
            assert sentence["imgid"] == index
            assert sentence["tokens"] == re.findall(r"[a-z0-9]+", sentence["raw"].lower())
        sentids += image["sentids"]
    assert len(sentids) == len(set(sentids))
    expected = Counter(TINY.images)
    if TINY.karpathy_train_images:  # later train scenes are Karpathy "restval", as in the real file
        expected["restval"] = expected["train"] - TINY.karpathy_train_images
        expected["train"] = TINY.karpathy_train_images
    if TINY.karpathy_test_images:  # only the first test scenes are captioned (retrieval's cross-encoder cost)
        expected["test"] = TINY.karpathy_test_images
    assert Counter(i["split"] for i in data["images"]) == expected
    # Captions tell images apart: within the test split almost every image has a caption set of its own.
    test = [tuple(s["raw"] for s in i["sentences"]) for i in data["images"] if i["split"] == "test"]
    assert len(set(test)) == len(test)


def test_captioning_more_test_scenes_only_adds_karpathy_entries(tmp_path: Path) -> None:
    """v4 captions every test scene where v3 captioned the first 100, with v3's random streams: a world that
    captions more test scenes writes every other file byte for byte the same, and the Karpathy file gains entries
    at its end only (so the data of VQA, NLVR2, boxes and pre-training keep their fingerprints)."""
    from dataclasses import replace

    from harness.world.sizes import WorldSize

    size = WorldSize(name="tiny", image_px=32, images={"train": 6, "val": 3, "test": 5},
                     nlvr2_sets={"train": 1, "val": 1, "test": 1}, karpathy_train_images=4)
    world_synth.generate_world(tmp_path / "all", seed=0, size=size, progress=False)
    world_synth.generate_world(tmp_path / "some", seed=0, size=replace(size, karpathy_test_images=2), progress=False)
    every, some = _hash_tree(tmp_path / "all"), _hash_tree(tmp_path / "some")
    changed = {name for name in every if every[name] != some.get(name)}
    assert set(every) == set(some) and changed == {"karpathy/dataset_world.json", "WORLD.json"}
    full = _load(tmp_path / "all/karpathy/dataset_world.json")["images"]
    part = _load(tmp_path / "some/karpathy/dataset_world.json")["images"]
    assert full[:len(part)] == part and [i["split"] for i in full[len(part):]] == ["test"] * 3


def _polygon_area(flat: list[float]) -> float:
    xs, ys = flat[0::2], flat[1::2]
    return abs(sum(xs[i] * ys[i - 1] - xs[i - 1] * ys[i] for i in range(len(xs)))) / 2


def test_coco_boxes(cli_world: Path, meta: dict[str, Any]) -> None:
    annotation_ids = set()
    occluded_fraction: list[float] = []
    for split in SPLITS:
        coco = _load(cli_world / f"coco/instances_{split}.json")
        assert [c["name"] for c in coco["categories"]] == list(SHAPES)
        assert all(c["supercategory"] == "shape" for c in coco["categories"])
        images = {i["id"]: i for i in coco["images"]}
        boxed = TINY.karpathy_train_images if split == "train" and TINY.karpathy_train_images else TINY.images[split]
        assert len(images) == boxed and sorted(images)[0] == min(  # the first scenes of the split
            int(k) for k, v in meta["images"].items() if v["split"] == split)
        per_image = Counter()
        for ann in coco["annotations"]:
            image = images[ann["image_id"]]
            x, y, w, h = ann["bbox"]
            assert all(isinstance(v, float) for v in ann["bbox"])
            assert 0 <= x and 0 <= y and w > 0 and h > 0
            assert x + w <= image["width"] and y + h <= image["height"]
            assert 0 < ann["area"] <= w * h and ann["iscrowd"] == 0
            assert isinstance(ann["segmentation"], list)
            assert ann["id"] not in annotation_ids
            annotation_ids.add(ann["id"])
            per_image[ann["image_id"]] += 1
        # Every object is visible, so every object has its box, and its colour as its one attribute
        # (annotations in the scene's object order).
        colour = {a["id"]: a["name"] for a in coco["attributes"]}
        assert sorted(colour.values()) == sorted(COLOR_NAMES) and min(colour) == 1
        named: dict[int, list[str]] = {}
        for ann in coco["annotations"]:
            named.setdefault(ann["image_id"], []).extend(colour[i] for i in ann["attribute_ids"])
        for image_id in images:
            objects = meta["images"][str(image_id)]["objects"]
            assert per_image[image_id] == len(objects)
            assert named[image_id] == [o["color"] for o in objects]
        # Occlusion happens but is partial: each object keeps at least half of its outline's area visible.
        visible = [ann["area"] / _polygon_area(ann["segmentation"][0]) for ann in coco["annotations"]]
        assert min(visible) >= 0.5
        occluded_fraction.append(sum(v < 0.9 for v in visible) / len(visible))
    assert max(occluded_fraction) > 0.01  # "some occlusion": not every object stands alone


# --- CLI and safety ---------------------------------------------------------------------------------------------

def test_cli_same_world_is_left_alone(cli_world: Path) -> None:
    before = (cli_world / "WORLD.json").stat().st_mtime_ns
    code, output = _cli_invoke(["data", "synth", "--out", str(cli_world), "--no-progress"])
    assert code == 0 and "nothing to do" in output
    assert (cli_world / "WORLD.json").stat().st_mtime_ns == before


def test_cli_refuses_a_different_world(cli_world: Path) -> None:
    code, output = _cli_invoke(["data", "synth", "--out", str(cli_world), "--seed", "1", "--no-progress"])
    assert code == 2 and "error:" in output and "different world" in output
    assert _load(cli_world / "WORLD.json")["seed"] == 0


def test_cli_refuses_a_non_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("keep me")
    code, output = _cli_invoke(["data", "synth", "--out", str(tmp_path), "--no-progress", "--force"])
    assert code == 2 and "error:" in output and "not empty" in output
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_cli_rejects_bad_options(tmp_path: Path) -> None:
    code, _ = _cli_invoke(["data", "synth", "--out", str(tmp_path / "w"), "--size", "huge"])
    assert code == 2
    code, _ = _cli_invoke(["data", "synth", "--out", str(tmp_path / "w"), "--seed", "-1"])
    assert code == 2
    assert not (tmp_path / "w").exists()


def test_synth_help_describes_the_sizes_it_generates() -> None:
    """The --size help quotes each world's scenes and NLVR2 sets: it must follow sizes.py when those change."""
    from harness.world import SIZES

    code, output = _cli_invoke(["data", "synth", "--help"])
    assert code == 0
    text = " ".join(output.split())
    for name, size in SIZES.items():
        assert f"{name}: {size.image_px} px, {sum(size.images.values())} scenes, " \
               f"{sum(size.nlvr2_sets.values())} NLVR2 sets" in text


def test_interrupted_run_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def fail_after_a_few(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) > 5:
            raise KeyboardInterrupt
        return real_render(*args, **kwargs)

    real_render = world_synth.render_scene
    monkeypatch.setattr(world_synth, "render_scene", fail_after_a_few)
    with pytest.raises(KeyboardInterrupt):
        synth_world(tmp_path / "w", progress=False)
    assert list(tmp_path.iterdir()) == []


def test_synth_world_api_errors(tmp_path: Path) -> None:
    with pytest.raises(VlbenchError, match="size"):
        synth_world(tmp_path / "w", size="huge", progress=False)
    (tmp_path / "file").write_text("x")
    with pytest.raises(VlbenchError, match="not a folder"):
        synth_world(tmp_path / "file", progress=False)


# --- the cached default world -----------------------------------------------------------------------------------

def _fake_world(folder: Path, seed: int, size: str) -> None:
    folder.mkdir(parents=True)
    (folder / "WORLD.json").write_text(json.dumps({"generator_version": GENERATOR_VERSION, "seed": seed,
                                                   "size": size}))


def test_default_world_generates_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VLBENCH_CACHE", str(tmp_path))
    made = []

    def fake_generate(parent: Path, name: str, *, seed: int, size: str, progress: bool) -> tuple[Path, dict]:
        temp = parent / f".{name}.partial-test-{len(made)}"
        _fake_world(temp, seed, size)
        made.append(temp)
        return temp, {}

    monkeypatch.setattr(world_cache, "generate_to_temp", fake_generate)
    path = default_world("tiny", 3, progress=False)
    assert path == tmp_path / f"world-tiny-seed3-{GENERATOR_VERSION}"
    assert _load(path / "WORLD.json")["seed"] == 3
    assert default_world("tiny", 3, progress=False) == path and len(made) == 1  # cached: no second generation
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


def test_default_world_uses_the_winner_of_a_race(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VLBENCH_CACHE", str(tmp_path))
    final = tmp_path / f"world-tiny-seed0-{GENERATOR_VERSION}"

    def slow_generate(parent: Path, name: str, *, seed: int, size: str, progress: bool) -> tuple[Path, dict]:
        temp = parent / f".{name}.partial-loser"
        _fake_world(temp, seed, size)
        _fake_world(final, seed, size)  # another process finishes first
        (final / "winner").write_text("")
        return temp, {}

    monkeypatch.setattr(world_cache, "generate_to_temp", slow_generate)
    assert default_world("tiny", 0, progress=False) == final
    assert (final / "winner").exists()
    assert [p.name for p in tmp_path.iterdir()] == [final.name]  # the loser's copy is gone

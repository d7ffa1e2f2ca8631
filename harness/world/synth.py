"""Writing the embedded world: scenes -> images, VQA, NLVR2, Karpathy captions, COCO boxes, specs, WORLD.json.

Layout (docs/dataset-spec.md, "The embedded world")::

    DIR/vqa.yaml nlvr2.yaml retrieval.yaml captions.yaml WORLD.json
    DIR/images/world_{image_id:06d}.png
    DIR/vqa/v2_OpenEnded_world_{split}_questions.json  DIR/vqa/v2_world_{split}_annotations.json
    DIR/nlvr2/{split}.json  DIR/nlvr2/images/{split}/[{directory}/]{split}-{set}-{pair}-img{0,1}.png
    DIR/karpathy/dataset_world.json  DIR/coco/instances_{split}.json
    DIR/meta/scenes.json   # the scene behind every image, and each question's template (for analysis)

Determinism: every random choice comes from a ``random.Random`` seeded by a string naming the seed, the
stream and the split (so, e.g., the val split does not change when train grows), PNGs carry no timestamps,
and every JSON is written in insertion order. Same seed and size, same bytes.

Safety: a world is written into a hidden sibling folder and renamed into place only when complete, with
WORLD.json written last; an interrupted run leaves no folder that looks like a world.
"""

from __future__ import annotations

import json
import os
import random
import secrets
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from tqdm import tqdm

from harness.errors import VlbenchError
from harness.fileio import atomic_open, write_json, write_text
from harness.world import nlvr2_statements as nlvr2
from harness.world.captions import captions_for_scene, tokenize
from harness.world.coco_boxes import CocoBuilder
from harness.world.render import render_scene, save_png
from harness.world.scene import Scene, sample_scene
from harness.world.sizes import GENERATOR_VERSION, SAMPLING_STREAMS, SPLITS, WorldSize, get_size
from harness.world.vqa_questions import AnswerBalancer, annotate, questions_for_scene

WORLD_FILE = "WORLD.json"
IMAGE_TEMPLATE = "images/world_{image_id:06d}.png"
LICENSE = {"name": "CC0 1.0", "url": "https://creativecommons.org/publicdomain/zero/1.0/"}
INFO = {"description": "vlbench embedded world (procedurally rendered scenes)", "version": GENERATOR_VERSION,
        "year": 2024, "contributor": "vlbench", "date_created": "2024-01-01"}


@dataclass(frozen=True)
class WorldResult:
    path: Path
    status: str  # created | unchanged | replaced
    info: dict[str, Any]  # the contents of WORLD.json


def _rng(seed: int, *stream: str) -> random.Random:
    # String seeds are hashed with SHA-512 by ``random``: stable across runs, platforms and Python versions.
    # Salted by SAMPLING_STREAMS, not GENERATOR_VERSION: a version that only adds files keeps the old draws.
    return random.Random(":".join(["vlbench-world", SAMPLING_STREAMS, str(seed), *stream]))


# --- generation ---------------------------------------------------------------------------------------------

def generate_world(folder: str | Path, *, seed: int = 0, size: str | WorldSize = "tiny",
                   progress: bool = True) -> dict[str, Any]:
    """Write a complete world into ``folder`` (which should be new or empty) and return WORLD.json's contents.

    Prefer :func:`synth_world`, which adds the safe temporary-folder-and-rename around this.
    """
    world = size if isinstance(size, WorldSize) else get_size(size)
    folder = Path(folder)
    for sub in ("images", "vqa", "nlvr2", "karpathy", "coco", "meta"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    counts: dict[str, dict[str, dict[str, int]]] = {t: {} for t in ("vqa", "nlvr2", "retrieval", "coco")}
    meta: dict[str, Any] = {"images": {}, "vqa_templates": {}, "nlvr2_pairs": {}, "nlvr2_templates": {}}
    karpathy_images: list[dict[str, Any]] = []
    coco = CocoBuilder()
    bar = tqdm(total=world.total_images(), desc=f"world {world.name} seed {seed}", unit="img",
               file=sys.stderr, disable=not progress, leave=False)
    try:
        next_image_id = 1
        for split in SPLITS:
            ids = list(range(next_image_id, next_image_id + world.images[split]))
            next_image_id += len(ids)
            scene_rng = _rng(seed, "scenes", split)
            scenes = [sample_scene(scene_rng) for _ in ids]
            boxed = world.karpathy_train_images if split == "train" and world.karpathy_train_images else len(ids)
            for index, (image_id, scene) in enumerate(zip(ids, scenes, strict=True)):
                rendered = render_scene(scene, world.image_px, world.supersample)
                file_name = IMAGE_TEMPLATE.format(image_id=image_id)
                save_png(rendered.image, str(folder / file_name))
                if index < boxed:  # restval scenes have no boxes in instances_train (see WorldSize)
                    coco.add(image_id, Path(file_name).name, world.image_px, scene, rendered)
                meta["images"][str(image_id)] = {"split": split, **scene.to_json()}
                bar.update()
            coco_json = coco.to_json(split)
            _write_compact_json(folder / f"coco/instances_{split}.json", coco_json)
            counts["coco"][split] = {"images": len(coco_json["images"]),
                                     "annotations": len(coco_json["annotations"])}
            counts["vqa"][split] = _write_vqa(folder, seed, world, split, ids, scenes, meta)
            counts["retrieval"].update(_add_captions(karpathy_images, seed, world, split, ids, scenes))
            counts["nlvr2"][split] = _write_nlvr2(folder, seed, world, split, meta, bar.update)
        counts["captions"] = {split: dict(c) for split, c in counts["retrieval"].items()}  # same Karpathy file
        _write_compact_json(folder / "karpathy/dataset_world.json", {"images": karpathy_images, "dataset": "world"})
        _write_compact_json(folder / "meta/scenes.json", meta)
        _write_specs(folder, seed, world)
        info = {
            "generator": "vlbench embedded world",
            "generator_version": GENERATOR_VERSION,
            "seed": seed,
            "size": world.name,
            "image_px": world.image_px,
            "splits": list(SPLITS),
            "counts": counts,
            "specs": {"vqa": "vqa.yaml", "nlvr2": "nlvr2.yaml", "retrieval": "retrieval.yaml",
                      "captions": "captions.yaml"},
            "meta": "meta/scenes.json: each image's scene (objects, background), each question's template",
        }
        write_json(folder / WORLD_FILE, info)  # last: its presence marks a complete world
        _relax_permissions(folder)
    finally:
        bar.close()
    return info


def _write_vqa(folder: Path, seed: int, world: WorldSize, split: str, ids: list[int], scenes: list[Scene],
               meta: dict[str, Any]) -> dict[str, int]:
    question_rng, annotator_rng = _rng(seed, "vqa", split), _rng(seed, "annotators", split)
    balancer = AnswerBalancer()  # one per split: each split is balanced on its own
    questions, annotations = [], []
    for image_id, scene in zip(ids, scenes, strict=True):
        for k, q in enumerate(questions_for_scene(scene, question_rng, balancer, world.questions_per_image)):
            question_id = image_id * 10 + k  # unique across splits because image ids are
            questions.append({"image_id": image_id, "question": q.question, "question_id": question_id})
            annotations.append({"question_type": q.question_type, **annotate(q, annotator_rng),
                                "image_id": image_id, "answer_type": q.answer_type, "question_id": question_id})
            meta["vqa_templates"][str(question_id)] = q.template
    _write_compact_json(folder / f"vqa/v2_OpenEnded_world_{split}_questions.json", {
        "info": INFO, "task_type": "Open-Ended", "data_type": "world", "license": LICENSE,
        "data_subtype": split, "questions": questions})
    _write_compact_json(folder / f"vqa/v2_world_{split}_annotations.json", {
        "info": INFO, "license": LICENSE, "data_subtype": split, "data_type": "world",
        "annotations": annotations})
    return {"images": len(ids), "questions": len(questions)}


def _add_captions(karpathy_images: list[dict[str, Any]], seed: int, world: WorldSize, split: str,
                  ids: list[int], scenes: list[Scene]) -> dict[str, dict[str, int]]:
    """Karpathy entries for ``split``'s scenes; train scenes past ``world.karpathy_train_images`` go to Karpathy's
    ``restval`` split (as in the real file), so VQA can train on many scenes while retrieval keeps its budget;
    only the first ``world.karpathy_test_images`` test scenes are captioned. Returns image and caption counts per Karpathy split name."""
    rng = _rng(seed, "captions", split)
    counts: dict[str, dict[str, int]] = {}
    for index, (image_id, scene) in enumerate(zip(ids, scenes, strict=True)):
        if split == "test" and world.karpathy_test_images and index >= world.karpathy_test_images:
            break  # captioned test scenes: see WorldSize.karpathy_test_images
        imgid = len(karpathy_images)
        first = karpathy_images[-1]["sentids"][-1] + 1 if karpathy_images else 0  # sentids run on across splits
        raws = captions_for_scene(scene, rng, world.captions_per_image)
        sentids = list(range(first, first + len(raws)))
        limit = world.karpathy_train_images
        karpathy_split = "restval" if split == "train" and limit and index >= limit else split
        karpathy_images.append({
            "filepath": "images",
            "filename": Path(IMAGE_TEMPLATE.format(image_id=image_id)).name,
            "imgid": imgid,
            "split": karpathy_split,
            "cocoid": image_id,
            "sentids": sentids,
            "sentences": [{"tokens": tokenize(raw), "raw": raw, "imgid": imgid, "sentid": sentid}
                          for raw, sentid in zip(raws, sentids, strict=True)],
        })
        c = counts.setdefault(karpathy_split, {"images": 0, "captions": 0})
        c["images"] += 1
        c["captions"] += len(raws)
    return counts


def _write_nlvr2(folder: Path, seed: int, world: WorldSize, split: str, meta: dict[str, Any],
                 tick: Callable[[int], object]) -> dict[str, int]:
    rng = _rng(seed, "nlvr2", split)
    balancer = nlvr2.LabelBalancer()
    lines: list[str] = []
    for set_id, template in enumerate(nlvr2.template_cycle(rng, world.nlvr2_sets[split], world.nlvr2_templates)):
        statement = nlvr2.sample_statement(rng, template)
        for pair_id, label in enumerate(balancer.labels(rng, template, world.nlvr2_pairs_per_set)):
            left, right = nlvr2.make_pair(statement, label, rng)
            prefix = f"{split}-{set_id}-{pair_id}"
            directory = str(set_id % 10) if split == "train" else None  # real NLVR2: train only
            image_dir = folder / "nlvr2/images" / split / (directory or "")
            image_dir.mkdir(parents=True, exist_ok=True)
            for side, scene in (("img0", left), ("img1", right)):
                save_png(render_scene(scene, world.image_px, world.supersample).image,
                         str(image_dir / f"{prefix}-{side}.png"))
                tick(1)
            record: dict[str, Any] = {
                "identifier": f"{prefix}-0",
                "sentence": statement.sentence,
                "label": "True" if label else "False",
                "left_url": f"world://nlvr2/{split}/{prefix}-img0.png",
                "right_url": f"world://nlvr2/{split}/{prefix}-img1.png",
                "synset": statement.synset,
                "query": f"{template} {set_id}",
                "writer": "world",
                "validation": {},
                "extra_validations": {},
            }
            if directory is not None:
                record["directory"] = directory
            lines.append(json.dumps(record, ensure_ascii=False))
            meta["nlvr2_pairs"][prefix] = {"left": left.to_json(), "right": right.to_json()}
            meta["nlvr2_templates"][record["identifier"]] = template
    with atomic_open(folder / f"nlvr2/{split}.json", "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
    n_sets = world.nlvr2_sets[split]
    return {"sets": n_sets, "examples": len(lines), "images": 2 * len(lines)}


def _write_specs(folder: Path, seed: int, world: WorldSize) -> None:
    header = (f"# Written by `vlbench data synth` (embedded world {GENERATOR_VERSION}, seed {seed}, "
              f"size {world.name}).\n# Paths are relative to this file; the formats are the official ones.\n")

    def boxes(split: str) -> dict[str, str]:
        return {"boxes": f"coco/instances_{split}.json"}

    specs: dict[str, dict[str, Any]] = {
        "vqa": {"task": "vqa", "name": f"world-{world.name}-vqa", "splits": {
            s: {"questions": f"vqa/v2_OpenEnded_world_{s}_questions.json",
                "annotations": f"vqa/v2_world_{s}_annotations.json",
                "images": IMAGE_TEMPLATE, **boxes(s)} for s in SPLITS}},
        "nlvr2": {"task": "nlvr2", "name": f"world-{world.name}-nlvr2", "splits": {
            s: {"file": f"nlvr2/{s}.json",
                "images": f"nlvr2/images/{s}/" + ("{directory}/" if s == "train" else "")
                + "{split}-{set}-{pair}-{img}.png"} for s in SPLITS}},
    }
    for task in ("retrieval", "captions"):
        # Karpathy filepath is "images", so the image root is the world folder itself. Pre-training (captions)
        # reads train + restval, as caption pre-training on COCO does; retrieval fine-tunes on train only.
        specs[task] = {"task": task, "name": f"world-{world.name}-{task}", "splits": {
            s: {"karpathy": "karpathy/dataset_world.json", "split": s, "images": ".", **boxes(s)} for s in SPLITS}}
    if world.karpathy_train_images:
        specs["captions"]["splits"]["train"]["split"] = ["train", "restval"]
    for task, spec in specs.items():
        write_text(folder / f"{task}.yaml", header + yaml.safe_dump(spec, sort_keys=False, width=200))


def _write_compact_json(path: Path, obj: Any) -> None:
    """Compact JSON (like the official files), atomically; ``json.dumps`` uses the C encoder, ``json.dump`` not."""
    write_text(path, json.dumps(obj, ensure_ascii=False) + "\n")


def _relax_permissions(folder: Path) -> None:
    """``atomic_open`` creates files private (0600, from mkstemp); a dataset should be as readable as the PNGs."""
    umask = os.umask(0)
    os.umask(umask)
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.suffix in (".json", ".yaml"):
            os.chmod(path, 0o666 & ~umask)


# --- installing a world safely ------------------------------------------------------------------------------

def read_world_info(folder: str | Path) -> dict[str, Any] | None:
    """WORLD.json's contents if ``folder`` holds a complete world, else None."""
    try:
        info = json.loads((Path(folder) / WORLD_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(info, dict) or not {"generator_version", "seed", "size"} <= set(info):
        return None
    return info


def same_world(info: dict[str, Any] | None, seed: int, size: str) -> bool:
    return (info is not None and info.get("generator_version") == GENERATOR_VERSION and info.get("seed") == seed
            and info.get("size") == size)


def generate_to_temp(parent: Path, name: str, *, seed: int, size: str, progress: bool) -> tuple[Path, dict[str, Any]]:
    """Generate into a new hidden folder inside ``parent``; on any failure (or Ctrl-C) remove it."""
    temp = parent / f".{name}.partial-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        parent.mkdir(parents=True, exist_ok=True)
        temp.mkdir()  # plain mkdir (not mkdtemp) so the world gets the user's normal permissions
    except OSError as exc:
        raise VlbenchError(f"cannot create a folder in {parent}: {exc.strerror or exc}") from None
    try:
        info = generate_world(temp, seed=seed, size=size, progress=progress)
    except OSError as exc:  # disk full, permissions: one line, and no half world left behind
        shutil.rmtree(temp, ignore_errors=True)
        raise VlbenchError(f"writing the world into {parent} failed: {exc}") from None
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    return temp, info


def check_seed(seed: int) -> None:
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise VlbenchError(f"seed must be a non-negative integer, got {seed!r}")


def synth_world(out: str | Path, *, seed: int = 0, size: str = "tiny", progress: bool = True,
                force: bool = False) -> WorldResult:
    """Generate the world of ``seed``/``size`` at ``out``, safely.

    - ``out`` missing or empty: generate (status ``created``).
    - ``out`` already holds this exact world (same seed, size, generator version): do nothing
      (``unchanged``) unless ``force``, which regenerates it (``replaced``).
    - ``out`` holds a different world: VlbenchError unless ``force`` (then ``replaced``).
    - ``out`` is non-empty and not a world, or is a file: always VlbenchError; nothing is deleted.
    """
    check_seed(seed)
    get_size(size)
    out = Path(out).absolute()  # "." must name a real folder (its parent holds the temporary folder)
    if out.exists() and not out.is_dir():
        raise VlbenchError(f"--out {out}: exists and is not a folder")
    occupied = out.is_dir() and any(out.iterdir())
    if occupied:
        info = read_world_info(out)
        if info is None:
            raise VlbenchError(f"--out {out}: folder is not empty and holds no vlbench world (no valid {WORLD_FILE}); "
                               "choose a new or empty folder")
        if same_world(info, seed, size) and not force:
            return WorldResult(out, "unchanged", info)
        if not same_world(info, seed, size) and not force:
            raise VlbenchError(
                f"--out {out}: already holds a different world (seed {info.get('seed')}, size {info.get('size')}, "
                f"generator {info.get('generator_version')}); pass --force to replace it or choose another folder")
    temp, info = generate_to_temp(out.parent, out.name, seed=seed, size=size, progress=progress)
    try:  # an OSError here (e.g. a folder on another filesystem) is rare enough to show as is
        if occupied:
            # Move the old world aside, move the new one in, then delete the old one.
            old = out.parent / f".{out.name}.old-{os.getpid()}-{secrets.token_hex(4)}"
            os.rename(out, old)
            os.rename(temp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            if out.is_dir():
                out.rmdir()  # empty: make room for the rename
            os.rename(temp, out)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    return WorldResult(out, "replaced" if occupied else "created", info)


def summary_line(info: dict[str, Any]) -> str:
    """One line of counts, e.g. for the CLI: images, questions, NLVR2 examples, captions, boxes per split."""
    c = info["counts"]
    parts = []
    for split in info["splits"]:
        parts.append(f"{split}: {c['vqa'][split]['images']} images, {c['vqa'][split]['questions']} questions, "
                     f"{c['nlvr2'][split]['examples']} nlvr2 pairs ({c['nlvr2'][split]['sets']} sets), "
                     f"{c['retrieval'][split]['captions']} captions, {c['coco'][split]['annotations']} boxes")
    return f"world {info['size']} seed {info['seed']} ({info['generator_version']}): " + "; ".join(parts)

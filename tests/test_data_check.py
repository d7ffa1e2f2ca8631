"""``check_dataset`` and ``vlbench data check``: counts per split and every problem, not just the first."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from PIL import Image

from harness.cli.check_cmd import check
from harness.data.check import check_dataset
from harness.errors import DataError


def png(path: Path, color: tuple[int, int, int] = (10, 120, 200), fmt: str = "PNG") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    Image.new("RGB", (16, 12), color).save(buffer, format=fmt)
    path.write_bytes(buffer.getvalue())


def dump(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj), encoding="utf-8")


def vqa_dataset(root: Path) -> Path:
    """train (annotated, 3 questions on 2 images) and test (questions only)."""
    questions = [{"question_id": q, "image_id": q // 10, "question": f"Question {q}?"} for q in (10, 11, 20)]
    answers = {10: ["yes"] * 10, 11: ["2"] * 7 + ["3"] * 3, 20: ["red"] * 10}
    kinds = {10: "yes/no", 11: "number", 20: "other"}
    annotations = [{"question_id": q, "image_id": q // 10, "question_type": "what", "answer_type": kinds[q],
                    "multiple_choice_answer": answers[q][0],
                    "answers": [{"answer": a, "answer_confidence": "yes", "answer_id": i + 1}
                                for i, a in enumerate(answers[q])]} for q in answers]
    dump(root / "q_train.json", {"questions": questions})
    dump(root / "a_train.json", {"annotations": annotations})
    dump(root / "q_test.json", {"questions": [{"question_id": 30, "image_id": 3, "question": "Why?"}]})
    for image_id in (1, 2, 3):
        png(root / "images" / f"img_{image_id:04d}.png")
    spec = root / "vqa.yaml"
    spec.write_text(
        "task: vqa\nname: tiny-vqa\nsplits:\n"
        "  train: {questions: q_train.json, annotations: a_train.json, images: 'images/img_{image_id:04d}.png'}\n"
        "  test: {questions: q_test.json, images: 'images/img_{image_id:04d}.png'}\n")
    return spec


def nlvr2_lines(identifiers_labels: list[tuple[str, str]]) -> str:
    return "".join(json.dumps({"identifier": i, "sentence": "Both images show dogs.", "label": label}) + "\n"
                   for i, label in identifiers_labels)


def nlvr2_dataset(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "dev.json").write_text(nlvr2_lines([("dev-1-0-0", "True"), ("dev-1-1-0", "false"),
                                                ("dev-1-0-1", "False")]))
    for pair in (0, 1):
        for img in (0, 1):
            # JPEG bytes behind a .png name are fine: images are decoded by header.
            png(root / "dev" / f"dev-1-{pair}-img{img}.png", fmt="JPEG" if pair else "PNG")
    spec = root / "nlvr2.yaml"
    spec.write_text("task: nlvr2\nsplits:\n  dev: {file: dev.json, images: 'dev/{split}-{set}-{pair}-{img}.png'}\n")
    return spec


def karpathy_dataset(root: Path, task: str = "retrieval") -> Path:
    images = [{"filename": f"im{i}.png", "imgid": i, "split": split,
               "sentences": [{"raw": f"caption {i}.{j}", "tokens": [], "imgid": i, "sentid": 10 * i + j}
                             for j in range(n)]}
              for i, (split, n) in enumerate([("train", 5), ("test", 5), ("test", 4), ("restval", 5)])]
    dump(root / "karpathy.json", {"images": images, "dataset": "tiny"})
    for i in range(4):
        png(root / "imgs" / f"im{i}.png")
    spec = root / f"{task}.yaml"
    spec.write_text(f"task: {task}\nsplits:\n"
                    "  train: {karpathy: karpathy.json, split: [train, restval], images: imgs}\n"
                    "  test: {karpathy: karpathy.json, split: test, images: imgs}\n")
    return spec


def test_clean_datasets_report_counts_and_no_problems(tmp_path: Path) -> None:
    vqa = check_dataset(vqa_dataset(tmp_path / "vqa"))
    assert vqa.ok and vqa.problems == [] and (vqa.task, vqa.name) == ("vqa", "tiny-vqa")
    assert vqa.splits["train"] == {"examples": 3, "questions": 3, "annotations": 3, "answers": 30,
                                   "number": 1, "other": 1, "yes/no": 1, "images": 2}
    assert vqa.splits["test"] == {"examples": 1, "questions": 1, "images": 1}
    nlvr2 = check_dataset(nlvr2_dataset(tmp_path / "nlvr2"))
    assert nlvr2.ok and nlvr2.splits["dev"] == {"examples": 3, "True": 1, "False": 2, "images": 4}
    for task in ("retrieval", "captions"):
        report = check_dataset(karpathy_dataset(tmp_path / task, task))
        assert report.ok, report.problems
        assert report.splits == {"train": {"examples": 2, "captions": 10, "images": 2},
                                 "test": {"examples": 2, "captions": 9, "images": 2}}


def test_every_problem_is_reported(tmp_path: Path) -> None:
    root = tmp_path / "nlvr2"
    spec = nlvr2_dataset(root)
    (root / "dev.json").write_text(
        nlvr2_lines([("dev-1-0-0", "True"), ("dev-1-1-0", "yes"), ("dev-1-0-0", "False"), ("dev-9-0-0", "True"),
                     ("dev-1-1-1", "True")])
        + "{broken json\n"
        + json.dumps({"identifier": "dev-1-1-2", "sentence": "", "label": "True"}) + "\n"
        + json.dumps({"identifier": "dev-bad", "sentence": "x", "label": "True"}) + "\n")
    (root / "dev" / "dev-1-0-img1.png").write_text("this is not an image")
    data = (root / "dev" / "dev-1-1-img0.png").read_bytes()
    (root / "dev" / "dev-1-1-img0.png").write_bytes(data[: len(data) // 2])
    report = check_dataset(spec)
    text = "\n".join(report.problems)
    assert not report.ok
    expected = [
        r"dev: .*dev\.json: line 2 \(dev-1-1-0\): unknown label 'yes'",
        r"line 3 \(dev-1-0-0\): duplicate identifier \(first on line 1\)",
        r"line 6: malformed JSON",
        r"line 7 \(dev-1-1-2\): empty or missing sentence",
        r"line 8: malformed identifier 'dev-bad'",
        r"dev-9-0-img0\.png: image not found",
        r"dev-9-0-img1\.png: image not found",
        r"dev-1-0-img1\.png: not a recognised image format",
        r"dev-1-1-img0\.png: cannot decode image",
    ]
    for pattern in expected:
        assert any(re.search(pattern, p) for p in report.problems), (pattern, text)
    assert len(report.problems) == len(expected)
    # Lines that parsed are still counted; each image once.
    assert report.splits["dev"] == {"examples": 3, "True": 3, "False": 0, "images": 6}
    assert check_dataset(spec, probe_images=False).problems == report.problems[:5]


def test_vqa_and_karpathy_problems(tmp_path: Path) -> None:
    vqa_root = tmp_path / "vqa"
    spec = vqa_dataset(vqa_root)
    questions = json.loads((vqa_root / "q_train.json").read_text())
    questions["questions"] += [{"question_id": 10, "image_id": 1, "question": "again?"},
                               {"question_id": 12, "image_id": 1, "question": "no annotation?"}]
    dump(vqa_root / "q_train.json", questions)
    annotations = json.loads((vqa_root / "a_train.json").read_text())
    annotations["annotations"].append({**annotations["annotations"][0], "question_id": 99})
    dump(vqa_root / "a_train.json", annotations)
    (vqa_root / "q_test.json").unlink()
    (vqa_root / "images" / "img_0002.png").unlink()
    problems = check_dataset(spec).problems
    assert [p.split(": ", 1)[0] for p in problems] == ["train"] * 4 + ["test"]
    assert "question_id 10: duplicate question id" in problems[0]
    assert "question_id 99: annotation has no question" in problems[1]
    assert "question_id 12: no annotation" in problems[2]
    assert "img_0002.png: image not found" in problems[3]
    assert "q_test.json: file not found" in problems[4]

    k_root = tmp_path / "karpathy"
    spec = karpathy_dataset(k_root)
    data = json.loads((k_root / "karpathy.json").read_text())
    data["images"][1]["filepath"] = "../../outside"
    data["images"][2]["sentences"][0]["raw"] = ""
    dump(k_root / "karpathy.json", data)
    problems = check_dataset(spec).problems
    assert len(problems) == 2 and all(p.startswith("test: ") for p in problems)
    assert "points outside the image root" in problems[0] and "empty or missing 'raw'" in problems[1]


def test_boxes_file_must_exist(tmp_path: Path) -> None:
    spec = karpathy_dataset(tmp_path)
    spec.write_text(spec.read_text().replace("images: imgs}", "images: imgs, boxes: coco/instances.json}"))
    problems = check_dataset(spec).problems
    assert len(problems) == 2 and all("instances.json: boxes file not found" in p for p in problems)


def test_invalid_spec_is_an_error_not_a_report(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("task: vqa\nsplits: {train: {questions: q.json}}\n")
    with pytest.raises(DataError, match=r"bad\.yaml: splits\.train: missing key\(s\) images"):
        check_dataset(tmp_path / "bad.yaml")


# --- the command -----------------------------------------------------------------------------------------


def test_cli_exit_codes_table_and_problem_lines(tmp_path: Path) -> None:
    runner = CliRunner()
    spec = nlvr2_dataset(tmp_path)
    clean = runner.invoke(check, ["--data", str(spec)])
    assert clean.exit_code == 0, clean.output
    assert "split  examples  True  False  images" in clean.output
    assert "dev           3     1      2       4" in clean.output
    assert "OK: no problems found" in clean.output

    (tmp_path / "dev" / "dev-1-0-img0.png").unlink()
    (tmp_path / "dev" / "dev-1-1-img1.png").unlink()
    dirty = runner.invoke(check, ["--data", str(spec)])
    assert dirty.exit_code == 1
    problem_lines = [line for line in dirty.output.splitlines() if "image not found" in line]
    assert len(problem_lines) == 2 and "2 problem(s):" in dirty.output
    assert runner.invoke(check, ["--data", str(spec), "--no-images"]).exit_code == 0

    invalid = runner.invoke(check, ["--data", str(tmp_path / "missing.yaml")])
    assert isinstance(invalid.exception, DataError)  # the top-level group turns it into exit 2


def test_cli_invalid_spec_exits_2_through_the_main_group(tmp_path: Path) -> None:
    from harness.cli.main import cli

    result = CliRunner().invoke(cli, ["data", "check", "--data", str(tmp_path / "missing.yaml")])
    assert result.exit_code == 2 and "error: " in result.output and "missing.yaml" in result.output


def test_synthesised_world_loads_and_checks_clean(world: Path) -> None:
    from harness.data.karpathy import load_karpathy_split
    from harness.data.nlvr2 import load_nlvr2_split
    from harness.data.vqa import load_vqa_split

    out = world
    loaders = {"vqa": load_vqa_split, "nlvr2": load_nlvr2_split, "retrieval": load_karpathy_split,
               "captions": load_karpathy_split}
    for task, loader in loaders.items():
        spec = out / f"{task}.yaml"
        for split in ("train", "val", "test"):
            assert loader(spec, split), (task, split)
        report = check_dataset(spec)
        assert report.ok, (task, report.problems[:5])

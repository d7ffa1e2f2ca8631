"""NLVR2 JSON-lines loading, on the real dev sample and on hand-written bad lines."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from harness.data.fingerprint import nlvr2_fingerprint
from harness.data.images import load_image
from harness.data.nlvr2 import load_nlvr2_split, parse_identifier
from harness.errors import DataError

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "nlvr2_dev_sample.jsonl"
DEV_TEMPLATE = "dev/{split}-{set}-{pair}-{img}.png"
TRAIN_TEMPLATE = "images/train/{directory}/{split}-{set}-{pair}-{img}.png"


def encoded(fmt: str, color: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (12, 8), color).save(buffer, format=fmt)
    return buffer.getvalue()


def write_spec(folder: Path, lines: list[str], template: str = DEV_TEMPLATE, split: str = "dev") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{split}.json").write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    spec = folder / "nlvr2.yaml"
    spec.write_text(json.dumps({"task": "nlvr2", "name": "nlvr2",
                                "splits": {split: {"file": f"{split}.json", "images": template}}}))
    return spec


def line(identifier: str = "dev-1-0-0", label: Any = "True", sentence: str = "There are two dogs.",
         **extra: Any) -> str:
    return json.dumps({"identifier": identifier, "sentence": sentence, "label": label, **extra})


@pytest.fixture(scope="module")
def dev_sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real dev lines, unchanged, with stand-in images named by the official convention."""
    folder = tmp_path_factory.mktemp("nlvr2")
    lines = FIXTURE.read_text(encoding="utf-8").splitlines()
    spec = write_spec(folder, lines)
    jpeg, png = encoded("JPEG", (200, 20, 20)), encoded("PNG", (20, 200, 20))
    (folder / "dev").mkdir()
    for text in lines:
        prefix = json.loads(text)["identifier"].rsplit("-", 1)[0]
        is_jpeg = int(prefix.rsplit("-", 1)[1]) % 2 == 0  # even pair ids: JPEG bytes under .png, as in reality
        for img in ("img0", "img1"):
            (folder / "dev" / f"{prefix}-{img}.png").write_bytes(jpeg if is_jpeg else png)
    return spec


def test_real_dev_sample_loads(dev_sample: Path) -> None:
    examples = load_nlvr2_split(dev_sample, "dev")
    assert len(examples) == 600
    first = examples[0]
    assert (first.identifier, first.label, first.split, first.set_id, first.pair_id, first.sentence_id) == (
        "dev-850-0-0", False, "dev", 850, 0, 0)
    assert first.sentence.startswith("The right image shows a curving walkway")
    assert first.directory is None  # dev lines have no directory
    assert first.left_image == (dev_sample.parent / "dev" / "dev-850-0-img0.png").resolve()
    assert first.right_image == (dev_sample.parent / "dev" / "dev-850-0-img1.png").resolve()
    assert sum(e.label is True for e in examples) == 312 and sum(e.label is False for e in examples) == 288
    assert len({e.identifier for e in examples}) == 600
    assert all(e.left_image.is_file() and e.right_image.is_file() for e in examples)
    kinds = {e.left_image.read_bytes()[:2] for e in examples}
    assert kinds == {b"\xff\xd8", b"\x89P"}  # both JPEG and PNG bytes behind .png names


def test_jpeg_bytes_under_png_name_decode(dev_sample: Path) -> None:
    first = load_nlvr2_split(dev_sample, "dev")[0]
    assert first.left_image.read_bytes()[:3] == b"\xff\xd8\xff"  # really a JPEG
    image = load_image(first.left_image)
    assert image.mode == "RGB" and image.size == (12, 8)
    assert max(abs(a - b) for a, b in zip(image.getpixel((5, 4)), (200, 20, 20), strict=True)) < 10


def test_train_lines_use_their_directory(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, [line("train-10171-0-0", "true", directory=71),
                                 line("train-10171-1-0", "FALSE", directory="71")],
                      template=TRAIN_TEMPLATE, split="train")
    first, second = load_nlvr2_split(spec, "train")
    assert (first.label, second.label, first.directory) == (True, False, "71")
    assert first.left_image == (tmp_path / "images/train/71/train-10171-0-img0.png").resolve()
    assert second.right_image == (tmp_path / "images/train/71/train-10171-1-img1.png").resolve()


def test_unlabelled_test_lines(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, [json.dumps({"identifier": "test1-0-1-2", "sentence": "A bird."})],
                      template="test1/{identifier}-{img}.png", split="test1")
    (example,) = load_nlvr2_split(spec, "test1")
    assert example.label is None and example.label_text is None
    assert example.left_image.name == "test1-0-1-2-img0.png"


@pytest.mark.parametrize(
    ("lines", "template", "expected"),
    [
        ([line(), line("dev-1-0")], DEV_TEMPLATE, r"dev\.json: line 2: malformed identifier 'dev-1-0'"),
        ([line(), line("dev-1-x-0")], DEV_TEMPLATE, r"line 2: malformed identifier"),
        ([line(), "{not json"], DEV_TEMPLATE, r"dev\.json: line 2: malformed JSON"),
        ([line(), "[1, 2]"], DEV_TEMPLATE, r"line 2: expected a JSON object"),
        ([line(), line("dev-1-1-0", "maybe")], DEV_TEMPLATE, r"line 2 \(dev-1-1-0\): unknown label 'maybe'"),
        ([line(), line("dev-1-1-0", True)], DEV_TEMPLATE, r"line 2 \(dev-1-1-0\): unknown label True"),
        ([line(), line()], DEV_TEMPLATE, r"line 2 \(dev-1-0-0\): duplicate identifier \(first on line 1\)"),
        ([line(sentence=" ")], DEV_TEMPLATE, r"line 1 \(dev-1-0-0\): empty or missing sentence"),
        ([line()], TRAIN_TEMPLATE, r"line 1 \(dev-1-0-0\): template .* needs field\(s\) directory"),
        ([line(directory="../../etc")], TRAIN_TEMPLATE, r"line 1 \(dev-1-0-0\): template .* outside its root"),
        ([], DEV_TEMPLATE, r"dev\.json: no examples"),
    ],
)
def test_bad_lines_fail_naming_file_and_line(tmp_path: Path, lines: list[str], template: str, expected: str) -> None:
    with pytest.raises(DataError, match=expected):
        load_nlvr2_split(write_spec(tmp_path, lines, template), "dev")


def test_missing_file(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, [line()])
    (tmp_path / "dev.json").unlink()
    with pytest.raises(DataError, match=r"dev\.json: file not found"):
        load_nlvr2_split(spec, "dev")


def test_parse_identifier() -> None:
    ident = parse_identifier("test1-1043-3-2")
    assert (ident.split, ident.set_id, ident.pair_id, ident.sentence_id) == ("test1", 1043, 3, 2)
    for bad in ("", "dev-1-2", "dev-1-2-3-4", "dev--1-2-3", 17):
        with pytest.raises(DataError, match="malformed identifier"):
            parse_identifier(bad)  # type: ignore[arg-type]


def test_nlvr2_fingerprint(tmp_path: Path) -> None:
    lines = [line("dev-1-0-0", "True"), line("dev-1-1-0", "False")]
    a = load_nlvr2_split(write_spec(tmp_path / "a", lines), "dev")
    b = load_nlvr2_split(write_spec(tmp_path / "b", list(reversed(lines))), "dev")
    c = load_nlvr2_split(write_spec(tmp_path / "c", [line("dev-1-0-0", "True"), line("dev-1-1-0", "True")]), "dev")
    assert nlvr2_fingerprint(a) == nlvr2_fingerprint(b) != nlvr2_fingerprint(c)

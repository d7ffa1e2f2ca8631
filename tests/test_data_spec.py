"""Dataset specs, path templates, image decoding and split fingerprints."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from harness.data.fingerprint import split_fingerprint
from harness.data.images import load_image, probe_image
from harness.data.spec import KarpathySplitSpec, Nlvr2SplitSpec, VqaSplitSpec, load_spec
from harness.data.templates import PathTemplate
from harness.errors import DataError, VlbenchError


def image_bytes(fmt: str, size: tuple[int, int] = (24, 16), mode: str = "RGB") -> bytes:
    image = Image.new(mode, size, color=(200, 30, 90) if mode == "RGB" else 120)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def write_spec(folder: Path, text: str, name: str = "spec.yaml") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


VQA_SPEC = """\
task: vqa
name: vqa-v2
splits:
  train: {questions: q_train.json, annotations: a_train.json,
          images: "train2014/COCO_train2014_{image_id:012d}.jpg"}
  test:  {questions: q_test.json, images: "test2015/COCO_test2015_{image_id:012d}.jpg"}
"""


# --- specs -----------------------------------------------------------------------------------------------


def test_vqa_spec_paths_resolve_against_the_spec_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec_path = write_spec(tmp_path / "data", VQA_SPEC)
    monkeypatch.chdir(tmp_path)  # relative to the spec, not to the working directory
    spec = load_spec("data/spec.yaml")
    assert spec.task == "vqa" and spec.name == "vqa-v2" and list(spec.splits) == ["train", "test"]
    train = spec.split("train")
    assert isinstance(train, VqaSplitSpec)
    assert train.questions == spec_path.parent.absolute() / "q_train.json"
    assert train.annotations == spec_path.parent.absolute() / "a_train.json"
    assert spec.split("test").annotations is None  # predictions only
    assert train.images.fill(image_id=9) == (
        (tmp_path / "data" / "train2014" / "COCO_train2014_000000000009.jpg").resolve())


def test_nlvr2_and_karpathy_specs(tmp_path: Path) -> None:
    nlvr2 = load_spec(write_spec(tmp_path, """\
task: nlvr2
name: nlvr2
splits:
  train: {file: train.json, images: "images/train/{directory}/{split}-{set}-{pair}-{img}.png"}
  dev:   {file: dev.json,   images: "dev/{split}-{set}-{pair}-{img}.png", boxes: boxes.json}
""", "nlvr2.yaml"))
    dev = nlvr2.split("dev")
    assert isinstance(dev, Nlvr2SplitSpec) and dev.boxes == tmp_path / "boxes.json"
    assert dev.images.fields == {"split", "set", "pair", "img"}
    retrieval = load_spec(write_spec(tmp_path, """\
task: retrieval
name: coco-karpathy
splits:
  train: {karpathy: dataset_coco.json, split: [train, restval], images: coco_images}
  test:  {karpathy: dataset_coco.json, split: test, images: coco_images}
""", "retrieval.yaml"))
    train, test = retrieval.split("train"), retrieval.split("test")
    assert isinstance(train, KarpathySplitSpec) and train.splits == ("train", "restval")
    assert isinstance(test, KarpathySplitSpec) and test.splits == ("test",)
    assert test.images == tmp_path / "coco_images"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("task: vqa\nsplits: {}\n", "splits"),
        ("name: x\nsplits: {train: {questions: q.json, images: '{image_id}.jpg'}}\n", "missing key 'task'"),
        ("task: gqa\nsplits: {train: {}}\n", "unknown task 'gqa'"),
        ("task: vqa\nname: x\n", "missing key 'splits'"),
        ("task: vqa\nsplits: {train: {images: '{image_id}.jpg'}}\n", "splits.train: missing key(s) questions"),
        ("task: vqa\nsplits: {train: {questions: q.json, annotation: a.json, images: '{image_id}.jpg'}}\n",
         "unknown key(s) annotation"),
        ("task: vqa\nsplits: {train: {questions: q.json, images: '{question}.jpg'}}\n", "unknown field {question}"),
        ("task: nlvr2\nsplits: {dev: {file: d.json, images: '{0}.png'}}\n", "positional field"),
        ("task: nlvr2\nsplits: {dev: {file: d.json, images: '{split.__class__}.png'}}\n", "not a plain field"),
        ("task: retrieval\nsplits: {test: {karpathy: k.json, split: [], images: im}}\n", "splits.test.split"),
        ("task: retrieval\nsplits: {test: {karpathy: k.json, split: 3, images: im}}\n", "splits.test.split"),
        ("task: vqa\nsplits: [train]\n", "splits"),
        ("- just\n- a list\n", "expected a mapping"),
        ("task: vqa\nsplits: {train: {questions: [unclosed\n", "malformed YAML"),
    ],
)
def test_invalid_specs_name_the_file_and_key(tmp_path: Path, text: str, expected: str) -> None:
    path = write_spec(tmp_path, text)
    with pytest.raises(DataError) as info:
        load_spec(path)
    assert str(path) in str(info.value) and expected in str(info.value)
    assert isinstance(info.value, VlbenchError)


def test_missing_spec_and_missing_split(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        load_spec(tmp_path / "nope.yaml")
    spec = load_spec(write_spec(tmp_path, VQA_SPEC))
    with pytest.raises(DataError, match=r"no split 'val' \(available: train, test\)"):
        spec.split("val")


# --- templates -------------------------------------------------------------------------------------------


def test_template_fill_and_root(tmp_path: Path) -> None:
    template = PathTemplate.parse("images/train/{directory}/{split}-{set}-{img}.png", tmp_path,
                                  {"directory", "split", "set", "img"}, "where")
    assert template.root == (tmp_path / "images" / "train").resolve()
    assert template.fill(directory="3", split="train", set="10", img="img0") == (
        tmp_path / "images/train/3/train-10-img0.png").resolve()
    with pytest.raises(DataError, match="outside its root"):
        template.fill(directory="../../etc", split="train", set="10", img="img0")
    with pytest.raises(DataError, match="needs field"):
        template.fill(directory=None, split="train", set="10", img="img0")


def test_template_absolute_prefix_is_its_own_root(tmp_path: Path) -> None:
    template = PathTemplate.parse(f"{tmp_path}/coco/COCO_{{image_id:012d}}.jpg", tmp_path / "elsewhere",
                                  {"image_id"}, "where")
    assert template.fill(image_id=5) == (tmp_path / "coco" / "COCO_000000000005.jpg").resolve()
    with pytest.raises(DataError, match="cannot be filled"):
        template.fill(image_id="x")  # :012d on a string


def test_template_links_are_resolved_like_resolve_inside(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    (outside / "dir").mkdir(parents=True)
    (outside / "secret.png").write_bytes(b"x")
    root = tmp_path / "data" / "images"
    root.mkdir(parents=True)
    (root / "inside.png").write_bytes(b"x")
    (root / "linked.png").symlink_to(root / "inside.png")  # a link that stays inside: fine
    (root / "escape.png").symlink_to(outside / "secret.png")
    (root / "escape_dir").symlink_to(outside / "dir", target_is_directory=True)
    template = PathTemplate.parse("images/{name}", tmp_path / "data", {"name"}, "where")
    assert template.fill(name="linked.png") == (root / "inside.png").resolve()
    for name in ("escape.png", "escape_dir/x.png", "../../outside/secret.png"):
        with pytest.raises(DataError, match="outside its root"):
            template.fill(name=name)


def test_template_base_does_not_depend_on_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    template = PathTemplate.parse("imgs/{image_id}.jpg", Path("data"), {"image_id"}, "where")
    monkeypatch.chdir("/")
    assert template.fill(image_id=3) == (tmp_path / "data" / "imgs" / "3.jpg").resolve()


def test_template_rejects_nested_format_specs(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="nested"):
        PathTemplate.parse("{image_id:{image_id}}.jpg", tmp_path, {"image_id"}, "where")


# --- images ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("fmt", "mode"), [("PNG", "RGB"), ("JPEG", "RGB"), ("PNG", "L"), ("PNG", "P"),
                                           ("GIF", "P"), ("BMP", "RGB")])
def test_images_decode_by_header_whatever_the_suffix(tmp_path: Path, fmt: str, mode: str) -> None:
    path = tmp_path / "picture.png"  # same .png name for every format: the suffix is not trusted
    path.write_bytes(image_bytes(fmt, mode=mode))
    image = load_image(path)
    assert image.mode == "RGB" and image.size == (24, 16)
    assert probe_image(path) == (24, 16)


def test_rgba_png_drops_alpha(tmp_path: Path) -> None:
    path = tmp_path / "alpha.png"
    Image.new("RGBA", (4, 4), (10, 20, 30, 0)).save(path)
    assert load_image(path).getpixel((0, 0)) == (10, 20, 30)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_images_fail_naming_the_file(tmp_path: Path, fmt: str) -> None:
    data = image_bytes(fmt, size=(64, 48))
    path = tmp_path / "cut.png"
    path.write_bytes(data[: len(data) * 2 // 3])
    for function in (load_image, probe_image):
        with pytest.raises(DataError, match=r"cut\.png: cannot decode image"):
            function(path)


def test_missing_and_non_image_files(tmp_path: Path) -> None:
    for function in (load_image, probe_image):
        with pytest.raises(DataError, match=r"gone\.jpg: image not found"):
            function(tmp_path / "gone.jpg")
        (tmp_path / "text.jpg").write_text("not an image at all\n")
        with pytest.raises(DataError, match=r"text\.jpg: not a recognised image format"):
            function(tmp_path / "text.jpg")
        with pytest.raises(DataError, match="directory"):
            function(tmp_path)


# --- fingerprints ----------------------------------------------------------------------------------------


def test_split_fingerprint_is_order_independent_and_label_sensitive() -> None:
    items = [("a", "True"), ("b", "False"), ("c", "True")]
    fingerprint = split_fingerprint(items)
    assert fingerprint.startswith("sha256:") and len(fingerprint) == len("sha256:") + 64
    assert split_fingerprint(reversed(items)) == fingerprint
    assert split_fingerprint([("a", "True"), ("b", "True"), ("c", "True")]) != fingerprint
    assert split_fingerprint(items[:2]) != fingerprint
    assert split_fingerprint([("a", "TrueFalse")]) != split_fingerprint([("aTrue", "False")])  # unambiguous

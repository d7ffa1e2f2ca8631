"""Karpathy-split caption JSON for retrieval and the captions corpus."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from harness.data.fingerprint import retrieval_fingerprint
from harness.data.karpathy import RetrievalImage, load_karpathy_split, read_karpathy
from harness.errors import DataError


def image(imgid: int, split: str, captions: list[str], filepath: str | None = "val2014",
          filename: str | None = None) -> dict[str, Any]:
    item: dict[str, Any] = {
        "filename": filename or f"COCO_val2014_{imgid:012d}.jpg",
        "imgid": imgid,
        "split": split,
        "cocoid": 1000 + imgid,
        "sentids": list(range(imgid * 10, imgid * 10 + len(captions))),
        "sentences": [{"tokens": c.lower().split(), "raw": c, "imgid": imgid, "sentid": imgid * 10 + i}
                      for i, c in enumerate(captions)],
    }
    if filepath is not None:
        item["filepath"] = filepath
    return item


def write_karpathy(folder: Path, images: list[dict[str, Any]], task: str = "retrieval",
                   splits: dict[str, Any] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "dataset_coco.json").write_text(json.dumps({"images": images, "dataset": "coco"}))
    splits = splits or {"train": {"karpathy": "dataset_coco.json", "split": ["train", "restval"],
                                  "images": "coco_images"},
                        "test": {"karpathy": "dataset_coco.json", "split": "test", "images": "coco_images"}}
    spec = folder / f"{task}.yaml"
    spec.write_text(json.dumps({"task": task, "name": "coco-karpathy", "splits": splits}))
    return spec


IMAGES = [
    image(0, "test", ["A dog on a couch.", "A brown dog sleeping.  "]),
    image(1, "train", ["A red bus."]),
    image(2, "restval", ["Two cats.", "A pair of cats", "Cats on a bed"]),
    image(3, "val", ["A boat."]),
    image(4, "test", ["A man riding a horse."], filepath=None, filename="flickr_4.jpg"),
    image(5, "train", ["Pizza."]),
]


def test_split_lists_keep_file_order_and_caption_order(tmp_path: Path) -> None:
    spec = write_karpathy(tmp_path, IMAGES)
    train = load_karpathy_split(spec, "train")
    assert [(i.image_key, i.split) for i in train] == [
        ("COCO_val2014_000000000001.jpg", "train"), ("COCO_val2014_000000000002.jpg", "restval"),
        ("COCO_val2014_000000000005.jpg", "train")]
    assert train[1].captions == ("Two cats.", "A pair of cats", "Cats on a bed")
    test = load_karpathy_split(spec, "test")
    assert test[0] == RetrievalImage(
        image_key="COCO_val2014_000000000000.jpg",
        path=(tmp_path / "coco_images" / "val2014" / "COCO_val2014_000000000000.jpg").resolve(),
        captions=("A dog on a couch.", "A brown dog sleeping.  "),  # raw text unchanged
        split="test", imgid=0, cocoid=1000)
    assert test[1].path == (tmp_path / "coco_images" / "flickr_4.jpg").resolve()  # no filepath


def test_captions_corpus_uses_the_same_loader(tmp_path: Path) -> None:
    spec = write_karpathy(tmp_path, IMAGES, task="captions")
    assert [len(i.captions) for i in load_karpathy_split(spec, "train")] == [1, 3, 1]


def test_read_karpathy_without_a_spec(tmp_path: Path) -> None:
    spec = write_karpathy(tmp_path, IMAGES)
    images = read_karpathy(spec.parent / "dataset_coco.json", "test")
    assert [i.image_key for i in images] == ["COCO_val2014_000000000000.jpg", "flickr_4.jpg"]
    assert images[1].path == (tmp_path / "flickr_4.jpg").resolve()
    both = read_karpathy(spec.parent / "dataset_coco.json", ["val", "test"], images_root=tmp_path / "imgs")
    assert [i.imgid for i in both] == [0, 3, 4]
    assert both[1].path == (tmp_path / "imgs" / "val2014" / "COCO_val2014_000000000003.jpg").resolve()


@pytest.mark.parametrize(
    ("images", "expected"),
    [
        ([image(0, "test", ["ok"]), image(1, "test", ["fine", " "])],
         r"images\[1\] \(COCO_val2014_000000000001.jpg\): sentences\[1\]: empty or missing 'raw'"),
        ([image(0, "test", [])], r"images\[0\] .*: no captions"),
        ([image(0, "test", ["a"]), image(0, "test", ["b"])], r"images\[1\] .*: duplicate image \(also images\[0\]\)"),
        ([image(0, "test", ["a"], filepath="../..")], r"points outside the image root"),
        ([image(0, "test", ["a"], filepath=None, filename="/etc/passwd")], r"points outside the image root"),
        ([{**image(0, "test", ["a"]), "filename": ""}], r"images\[0\]: missing or empty 'filename'"),
        ([{"filename": "x.jpg", "sentences": []}], r"images\[0\]: missing or non-string 'split'"),
        ([image(0, "train", ["a"])], r"no images with split 'test' \(splits in the file: train\)"),
    ],
)
def test_bad_entries_fail_naming_the_image(tmp_path: Path, images: list[dict[str, Any]], expected: str) -> None:
    with pytest.raises(DataError, match=expected):
        load_karpathy_split(write_karpathy(tmp_path, images), "test")


def test_missing_malformed_and_wrong_shape(tmp_path: Path) -> None:
    spec = write_karpathy(tmp_path, IMAGES)
    path = tmp_path / "dataset_coco.json"
    path.write_text('{"images": [\n oops]}')
    with pytest.raises(DataError, match=r"dataset_coco\.json: malformed JSON at line 2"):
        load_karpathy_split(spec, "test")
    path.write_text('[{"images": []}]')
    with pytest.raises(DataError, match="expected a JSON object with an 'images' list"):
        load_karpathy_split(spec, "test")
    path.unlink()
    with pytest.raises(DataError, match=r"dataset_coco\.json: file not found"):
        load_karpathy_split(spec, "test")
    with pytest.raises(DataError, match="no split 'val'"):
        load_karpathy_split(spec, "val")


def test_retrieval_fingerprint(tmp_path: Path) -> None:
    test = load_karpathy_split(write_karpathy(tmp_path, IMAGES), "test")
    assert retrieval_fingerprint(test) == retrieval_fingerprint(list(reversed(test)))
    edited = [test[0], RetrievalImage(test[1].image_key, test[1].path, ("A man riding a pony.",))]
    assert retrieval_fingerprint(edited) != retrieval_fingerprint(test)

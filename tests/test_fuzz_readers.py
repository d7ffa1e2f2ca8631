"""Hypothesis fuzz of everything that turns an untrusted file into data: the dataset-spec parser, the official
VQA v2 / NLVR2 / Karpathy readers and the checkpoint reader. Property: a VlbenchError (one line, exit 2) or a
valid result, within a time bound per input (``deadline``); memory is bounded by the readers' size limits and
the small inputs drawn here. Any other exception (RecursionError, TypeError, a safetensors panic) fails."""

from __future__ import annotations

import json
import struct
import tempfile
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.checkpoints import load_checkpoint
from harness.data.karpathy import RetrievalImage, read_karpathy_split
from harness.data.nlvr2 import Nlvr2Example, read_nlvr2_split
from harness.data.spec import (
    DatasetSpec,
    KarpathySplitSpec,
    Nlvr2SplitSpec,
    Problems,
    VqaSplitSpec,
    load_spec,
)
from harness.data.vqa import VqaExample, read_vqa_split
from harness.errors import VlbenchError

FUZZ = settings(max_examples=120, deadline=timedelta(seconds=5), suppress_health_check=[HealthCheck.too_slow])

_scalars = (st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=True)
            | st.text(max_size=12))
json_values = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=16)
# Text that reaches the tokenizer: surrogates and control characters included.
texts = st.text(st.characters(codec=None), max_size=20) | json_values


def _maybe(strategy: st.SearchStrategy, key: str) -> st.SearchStrategy:
    """A dict field: the plausible value, anything at all, or absent."""
    return st.fixed_dictionaries({}, optional={key: strategy | json_values})


def _record(**fields: st.SearchStrategy) -> st.SearchStrategy:
    parts = [_maybe(strategy, key) for key, strategy in fields.items()]
    return st.tuples(*parts).map(lambda ds: {k: v for d in ds for k, v in d.items()}) | json_values


_ids = st.integers(0, 5)
vqa_questions = st.fixed_dictionaries({"questions": st.lists(
    _record(question_id=_ids, image_id=_ids, question=texts), max_size=5)}) | json_values
vqa_annotations = st.fixed_dictionaries({"annotations": st.lists(_record(
    question_id=_ids, image_id=_ids, answer_type=st.sampled_from(["yes/no", "other"]),
    question_type=st.just("what"), multiple_choice_answer=texts,
    answers=st.lists(_record(answer=texts, answer_id=_ids), max_size=11)), max_size=5)}) | json_values
nlvr2_lines = st.lists(_record(identifier=st.sampled_from(["dev-1-0-0", "dev-1-1-0", "x", "a-b-c-d"]),
                               sentence=texts, label=st.sampled_from(["True", "false", "maybe"])), max_size=5)
karpathy_files = st.fixed_dictionaries({"images": st.lists(_record(
    filename=st.sampled_from(["a.jpg", "../x.jpg", "/etc/passwd", ""]), filepath=st.sampled_from(["", "val"]),
    split=st.sampled_from(["test", "train"]), sentences=st.lists(_record(raw=texts), max_size=3)),
    max_size=4)}) | json_values


def _write(folder: Path, name: str, content: Any) -> Path:
    path = folder / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(json.dumps(content), encoding="utf-8")  # a lone surrogate becomes a JSON escape
    return path


def _collect(read, *args) -> tuple[list, list[str]]:
    problems = Problems(collect=True)
    return read(*args, problems), problems.messages


@FUZZ
@given(questions=vqa_questions | st.binary(max_size=64), annotations=vqa_annotations | st.binary(max_size=64))
def test_vqa_reader(questions: Any, annotations: Any) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        from harness.data.templates import PathTemplate
        entry = VqaSplitSpec(name="train", questions=_write(folder, "q.json", questions),
                             annotations=_write(folder, "a.json", annotations),
                             images=PathTemplate.parse("i/{image_id}.png", folder, {"image_id"}, "fuzz"), boxes=None)
        examples, _ = _collect(read_vqa_split, entry)
        for example in examples:
            assert isinstance(example, VqaExample) and example.question.encode("utf-8")
            assert example.answers and all(isinstance(a, str) for a in example.answers)
            assert folder in example.image_path.parents


@FUZZ
@given(lines=nlvr2_lines, junk=st.binary(max_size=32))
def test_nlvr2_reader(lines: list[Any], junk: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        from harness.data.templates import PathTemplate
        text = "\n".join(json.dumps(line) for line in lines).encode("utf-8") + b"\n" + junk
        entry = Nlvr2SplitSpec(name="dev", file=_write(folder, "dev.json", text),
                               images=PathTemplate.parse("i/{split}-{set}-{pair}-img0.png", folder,
                                                         {"split", "set", "pair", "sentence", "image"}, "fuzz"),
                               boxes=None)
        examples, _ = _collect(read_nlvr2_split, entry)
        for example in examples:
            assert isinstance(example, Nlvr2Example) and example.sentence.encode("utf-8")
            assert example.label in (True, False, None)


@FUZZ
@given(content=karpathy_files | st.binary(max_size=64), wanted=st.sampled_from([("test",), ("train", "test")]))
def test_karpathy_reader(content: Any, wanted: tuple[str, ...]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "img").mkdir()
        entry = KarpathySplitSpec(name="test", karpathy=_write(folder, "k.json", content), splits=wanted,
                                  images=folder / "img", boxes=None)
        images, _ = _collect(read_karpathy_split, entry)
        for image in images:
            assert isinstance(image, RetrievalImage) and image.captions
            assert (folder / "img") in image.path.parents


_spec_values = st.fixed_dictionaries({"task": st.sampled_from(["vqa", "nlvr2", "retrieval", "banana"])}, optional={
    "name": json_values, "splits": st.dictionaries(st.sampled_from(["train", "val", "test"]), st.fixed_dictionaries(
        {}, optional={"questions": st.sampled_from(["q.json", "../q.json", ""]) | json_values,
                      "file": st.sampled_from(["d.json"]) | json_values,
                      "images": st.sampled_from(["i/{image_id}.png", "{0}", "i/{x.y}", "i/{image_id:99999d}",
                                                 "../{image_id}", "i/{split}-{set}-{pair}-img0.png"]) | json_values,
                      "karpathy": st.just("k.json"), "split": json_values}), max_size=3)}) | json_values


@FUZZ
@given(content=_spec_values.map(lambda v: yaml.safe_dump(v)) | st.text(max_size=200)
       | st.sampled_from(["a: &x [*x]", "[" * 2000, "{a: " * 500, "x: !!python/object:os.system {}"]))
def test_spec_parser(content: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "spec.yaml"
        path.write_text(content, encoding="utf-8", errors="surrogatepass")
        try:
            spec = load_spec(path)
        except VlbenchError as exc:
            assert "\n" not in str(exc).strip()
            return
        assert isinstance(spec, DatasetSpec) and spec.splits


_dtypes = st.sampled_from(["F32", "F16", "BF16", "I64", "U8", "BOOL", "F64", "X9"])
_tensor_entry = _record(dtype=_dtypes, shape=st.lists(st.integers(-1, 4), max_size=3),
                        data_offsets=st.lists(st.integers(-1, 64), min_size=2, max_size=2))
_headers = st.fixed_dictionaries({}, optional={
    "__metadata__": st.dictionaries(st.sampled_from(["vlbench", "other"]),
                                    st.sampled_from(['{"format": "vlbench-checkpoint-v1"}', "[1]", "{", "1" * 5000,
                                                     "[" * 5000]) | st.text(max_size=8), max_size=2),
    "w": _tensor_entry, "b": _tensor_entry})


@FUZZ
@given(header=_headers | json_values, body=st.binary(max_size=64), size_lie=st.integers(-8, 8))
def test_checkpoint_reader(header: Any, body: bytes, size_lie: int) -> None:
    raw = json.dumps(header).encode("utf-8")
    data = struct.pack("<Q", max(0, len(raw) + size_lie)) + raw + body
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.safetensors"
        path.write_bytes(data)
        try:
            state, meta = load_checkpoint(path)
        except VlbenchError as exc:
            assert "\n" not in str(exc).strip()
            return
        assert isinstance(meta, dict) and meta["format"] == "vlbench-checkpoint-v1"
        assert all(not t.is_floating_point() or bool(torch.isfinite(t).all()) for t in state.values())

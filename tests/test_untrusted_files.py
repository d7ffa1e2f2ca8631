"""Issue 21's untrusted-file classes: symlink loops, FIFOs, absurd template widths, text a tokenizer cannot take,
VQA annotations the official metric cannot score, 16-bit and float images, PNGs with too little pixel data.
Each is a one-line error (exit 2), a ``data check`` problem, or a correct result; none blocks or crashes."""

from __future__ import annotations

import io
import json
import os
import shutil
import struct
import threading
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from test_data_check import karpathy_dataset, vqa_dataset

from harness.cli.main import cli
from harness.data.check import check_dataset
from harness.data.images import load_image, png_pixel_data_problem, probe_image
from harness.data.spec import load_spec
from harness.data.templates import PathTemplate
from harness.data.text import MAX_TEXT_CHARS
from harness.data.vqa import load_vqa_split
from harness.errors import DataError, PredictionsError
from harness.fileio import read_json, read_jsonl, read_untrusted, read_untrusted_npy
from harness.metrics.vqa import below_full_credit, max_attainable_accuracy, vqa_evaluate


def _within(seconds: float, call: Callable[[], Any]) -> Any:
    """``call()``, failing the test (not hanging it) when it blocks: a FIFO read never returns."""
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = call()
        except BaseException as exc:  # noqa: BLE001 - handed back to the test thread
            outcome["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"blocked for more than {seconds} s"
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


# --- paths -------------------------------------------------------------------------------------------------


def test_a_symlink_loop_is_a_problem_not_a_traceback(tmp_path: Path) -> None:
    spec = vqa_dataset(tmp_path / "file")
    image = tmp_path / "file" / "images" / "img_0001.png"
    image.unlink()
    os.symlink(image.name, image)  # a link to itself
    report = check_dataset(spec)
    assert any("img_0001.png: cannot resolve the path (symlink loop)" in p for p in report.problems), report.problems
    with pytest.raises(DataError, match="symlink loop"):
        load_vqa_split(spec, "train")

    spec = vqa_dataset(tmp_path / "root")
    shutil.rmtree(tmp_path / "root" / "images")
    os.symlink("images", tmp_path / "root" / "images")  # the image root itself
    result = CliRunner().invoke(cli, ["data", "check", "--data", str(spec)])
    assert result.exit_code == 2 and "images: cannot resolve the path (symlink loop)" in result.output
    assert "Traceback" not in result.output

    (tmp_path / "loop.json").symlink_to("loop.json")
    with pytest.raises(DataError, match="symlink loop"):
        read_json(tmp_path / "loop.json")


def test_a_fifo_or_a_directory_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    for read in (load_image, probe_image, read_json, read_jsonl, load_spec, read_untrusted_npy):
        with pytest.raises(DataError, match="not a regular file"):
            _within(10, lambda read=read: read(fifo))
    with pytest.raises(DataError, match="found a directory"):
        read_json(tmp_path)

    spec = vqa_dataset(tmp_path / "d")
    image = tmp_path / "d" / "images" / "img_0002.png"
    image.unlink()
    os.mkfifo(image)
    report = _within(30, lambda: check_dataset(spec))
    assert any("img_0002.png: not a regular file" in p for p in report.problems), report.problems


def test_files_beyond_their_bound_and_json_beyond_the_stack_are_one_line_errors(tmp_path: Path) -> None:
    path = tmp_path / "big.json"
    path.write_text("[" + "1," * 20 + "1]")
    with pytest.raises(DataError, match=r"big\.json: file of 43 bytes is larger than vlbench reads \(16 bytes\)"):
        read_untrusted(path, limit=16)
    for text, reason in (("[" * 100_000 + "]" * 100_000, "nested too deeply"), ("9" * 5000, "digits")):
        path.write_text(text)
        with pytest.raises(DataError, match=f"big\\.json: malformed JSON .*{reason}"):
            read_json(path)
    (tmp_path / "spec.yaml").write_text("a: " + "[" * 100_000)
    with pytest.raises(DataError, match="malformed YAML"):
        load_spec(tmp_path / "spec.yaml")


def test_reading_a_small_file_allocates_about_its_size_not_the_bound(tmp_path: Path) -> None:
    # read(limit + 1) makes Python allocate the whole bound (4 GiB for data files) before reading a byte.
    import tracemalloc

    path = tmp_path / "small.json"
    path.write_bytes(b"x" * 100_000)
    tracemalloc.start()
    try:
        data = read_untrusted(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert data == b"x" * 100_000
    assert peak < 1_000_000


def test_a_file_read_in_chunks_still_stops_at_its_bound(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import harness.fileio as fileio

    monkeypatch.setattr(fileio, "_READ_CHUNK", 7)
    path = tmp_path / "f.bin"
    path.write_bytes(bytes(range(50)))
    assert read_untrusted(path, limit=50) == bytes(range(50))
    with pytest.raises(DataError, match="larger than vlbench reads"):
        read_untrusted(path, limit=49)


def test_a_template_width_beyond_a_file_name_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="format width/precision 999999999 is larger than a file name"):
        PathTemplate.parse("images/{image_id:0999999999d}.png", tmp_path, {"image_id"}, "spec: images")
    template = PathTemplate.parse("images/{image_id:012d}.png", tmp_path, {"image_id"}, "spec: images")
    assert template.fill(image_id=7).name == "000000000007.png"


# --- text --------------------------------------------------------------------------------------------------


def _set_question(spec: Path, text: str) -> None:
    path = spec.parent / "q_train.json"
    data = json.loads(path.read_text())
    data["questions"][0]["question"] = text
    path.write_text(json.dumps(data))  # a lone surrogate is written as the JSON escape "\ud800"


@pytest.mark.parametrize("text, problem", [
    ("is it \ud800 red?", "question text is not valid Unicode (a lone surrogate at character 6)"),
    ("red " * (MAX_TEXT_CHARS // 4 + 1), "question text is 65,540 characters long, more than vlbench reads"),
])
def test_text_no_tokenizer_can_take_is_a_data_problem(tmp_path: Path, text: str, problem: str) -> None:
    spec = vqa_dataset(tmp_path / "d")
    _set_question(spec, text)
    report = check_dataset(spec, probe_images=False)
    assert any(problem in p for p in report.problems), report.problems
    with pytest.raises(DataError, match="question_id 10: " + problem.split(" (")[0]):
        load_vqa_split(spec, "train")  # what `run` reads: it stops with this line (exit 2)


def test_the_longest_accepted_text_and_captions_are_checked_alike(tmp_path: Path) -> None:
    spec = vqa_dataset(tmp_path / "d")
    _set_question(spec, "x" * MAX_TEXT_CHARS)
    assert check_dataset(spec, probe_images=False).ok

    spec = karpathy_dataset(tmp_path / "k")
    path = next(spec.parent.glob("*.json"))
    data = json.loads(path.read_text())
    data["images"][0]["sentences"][0]["raw"] = "a \udfff caption"
    path.write_text(json.dumps(data))
    report = check_dataset(spec, probe_images=False)
    assert any("'raw' caption is not valid Unicode" in p for p in report.problems), report.problems


def test_answers_too_long_to_normalise_are_refused(tmp_path: Path) -> None:
    spec = vqa_dataset(tmp_path / "d")
    path = spec.parent / "a_train.json"
    data = json.loads(path.read_text())
    data["annotations"][0]["answers"][3]["answer"] = "x" * (MAX_TEXT_CHARS + 1)
    path.write_text(json.dumps(data))
    with pytest.raises(DataError, match="question_id 10: answer is 65,537 characters long"):
        load_vqa_split(spec, "train")
    questions = {"questions": [{"question_id": 1, "image_id": 1, "question": "q?"}]}
    annotations = {"annotations": [{"question_id": 1, "image_id": 1, "question_type": "what", "answer_type": "other",
                                    "answers": [{"answer": "red", "answer_id": i} for i in range(10)]}]}
    with pytest.raises(PredictionsError, match="answer of 65,537 characters"):
        vqa_evaluate(questions, annotations, [{"question_id": 1, "answer": "x" * (MAX_TEXT_CHARS + 1)}])


# --- VQA answers the official metric cannot score --------------------------------------------------------


def _answers(spec: Path, count: int) -> None:
    path = spec.parent / "a_train.json"
    data = json.loads(path.read_text())
    for annotation in data["annotations"]:
        annotation["answers"] = annotation["answers"][:count]
    path.write_text(json.dumps(data))


def test_the_metric_caps_questions_with_few_answers() -> None:
    assert [max_attainable_accuracy(n) for n in (1, 2, 3, 4, 10)] == [0.0, 1 / 3, 2 / 3, 1.0, 1.0]
    assert below_full_credit([10, 1, 3, 1, 4]) == {1: 2, 3: 1}
    # The official formula itself: the gold answer of a one-answer question scores 0.
    questions = {"questions": [{"question_id": 1, "image_id": 1, "question": "q?"}]}
    annotations = {"annotations": [{"question_id": 1, "image_id": 1, "question_type": "what", "answer_type": "other",
                                    "answers": [{"answer": "red", "answer_id": 1}]}]}
    assert vqa_evaluate(questions, annotations, [{"question_id": 1, "answer": "red"}])["overall"] == 0.0


def test_data_check_refuses_single_answers_and_warns_about_few(tmp_path: Path) -> None:
    spec = vqa_dataset(tmp_path / "one")
    _answers(spec, 1)
    result = CliRunner().invoke(cli, ["data", "check", "--data", str(spec)])
    assert result.exit_code == 1, result.output
    assert "3 of 3 annotated questions have fewer than 4 human answers" in result.output
    assert "3 with 1 answer (at most 0)" in result.output

    spec = vqa_dataset(tmp_path / "two")
    _answers(spec, 2)
    result = CliRunner().invoke(cli, ["data", "check", "--data", str(spec)])
    assert result.exit_code == 0, result.output
    assert "warning: train: 3 of 3 annotated questions" in result.output and "(at most 33)" in result.output


def test_score_warns_when_gold_answers_cannot_score(tmp_path: Path) -> None:
    spec = vqa_dataset(tmp_path / "d")
    _answers(spec, 1)
    results = tmp_path / "results.json"
    results.write_text(json.dumps([{"question_id": q, "answer": "yes"} for q in (10, 11, 20)]))
    result = CliRunner().invoke(cli, ["score", "vqa", "--questions", str(spec.parent / "q_train.json"),
                                      "--annotations", str(spec.parent / "a_train.json"), "--results", str(results)])
    assert result.exit_code == 0, result.output
    assert "warning:" in result.output and "3 with 1 answer (at most 0)" in result.output


# --- image modes and incomplete pixel data ---------------------------------------------------------------


def _save(image: Image.Image, path: Path, fmt: str) -> Path:
    image.save(path, format=fmt)
    return path


def test_16_bit_images_are_scaled_not_clipped(tmp_path: Path) -> None:
    grey = np.arange(64 * 48, dtype=np.uint16).reshape(48, 64) % 256
    wide = Image.fromarray((grey * 257).astype(np.uint16))  # the same picture at 16 bits
    assert wide.mode.startswith("I;16")
    for fmt in ("PNG", "TIFF"):
        path = _save(wide, tmp_path / f"wide.{fmt.lower()}", fmt)
        decoded = np.asarray(load_image(path))
        assert decoded.shape == (48, 64, 3) and (decoded == grey[..., None]).all()
        assert probe_image(path) == (64, 48)


@pytest.mark.parametrize("mode, array, text", [
    ("F", np.linspace(0, 1, 64 * 48, dtype=np.float32).reshape(48, 64), "floating-point pixels (PIL mode F)"),
    ("I", np.arange(64 * 48, dtype=np.int32).reshape(48, 64) * 1000, "32-bit integer pixels (PIL mode I)"),
])
def test_images_without_a_defined_range_are_refused(tmp_path: Path, mode: str, array: np.ndarray, text: str) -> None:
    path = _save(Image.fromarray(array, mode=mode), tmp_path / "deep.tif", "TIFF")
    for read in (load_image, probe_image):
        with pytest.raises(DataError, match=r"deep\.tif: " + text.replace("(", r"\(").replace(")", r"\)")):
            read(path)


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _png(pixels: np.ndarray, interlace: bool = False, keep: float = 1.0) -> bytes:
    """An 8-bit RGB PNG written here, with valid CRCs; Adam7-interlaced if asked; only the first ``keep``
    share of the filtered pixel stream kept (the stream still ends cleanly: only its size is wrong)."""
    height, width, _ = pixels.shape
    passes = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))
    raw = b""
    for x0, y0, dx, dy in passes if interlace else ((0, 0, 1, 1),):
        sub = pixels[y0::dy, x0::dx]
        if sub.size:
            raw += b"".join(b"\x00" + row.tobytes() for row in sub)
    raw = raw[:int(len(raw) * keep)]
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, int(interlace))
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(raw))
            + _chunk(b"IEND", b""))


@pytest.mark.parametrize("interlace", [False, True])
@pytest.mark.parametrize("size", [(1, 1), (3, 5), (13, 9), (64, 64)])
def test_png_pixel_data_is_measured_against_its_header(tmp_path: Path, interlace: bool, size: tuple[int, int]) -> None:
    pixels = np.random.default_rng(0).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    whole = tmp_path / "whole.png"
    whole.write_bytes(_png(pixels, interlace))
    assert png_pixel_data_problem(whole.read_bytes()) is None
    assert (np.asarray(load_image(whole)) == pixels).all()  # the writer above is a real PNG writer
    short = tmp_path / "short.png"
    for keep in (0.5, 0.999):
        short.write_bytes(_png(pixels, interlace, keep))
        assert png_pixel_data_problem(short.read_bytes()).startswith("PNG pixel data ends early")
        for read in (load_image, probe_image):  # PIL notices a cut row itself, but whole missing rows it fills
            with pytest.raises(DataError, match=r"short\.png: (PNG pixel data ends early|cannot decode image)"):
                read(short)



@pytest.mark.parametrize("mode", ["1", "L", "LA", "P", "RGB", "RGBA", "I;16"])
def test_pngs_written_by_pil_are_complete(mode: str) -> None:
    rng = np.random.default_rng(1)
    for width, height in ((1, 1), (7, 3), (33, 17)):
        image = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).convert(
            "L" if mode == "I;16" else mode)
        if mode == "I;16":
            image = Image.fromarray(np.asarray(image).astype(np.uint16) * 257)
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        assert png_pixel_data_problem(buffer.getvalue()) is None, (mode, width, height)

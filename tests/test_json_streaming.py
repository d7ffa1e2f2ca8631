"""The official annotation files are read record by record: same records and errors as a whole-file parse, at a
fraction of its memory."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import pytest

from harness.data.spec import Problems, VqaSplitSpec
from harness.data.templates import PathTemplate
from harness.data.vqa import read_vqa_split
from harness.errors import DataError
from harness.fileio import NotAListFile, iter_json_list, read_json


def _annotations(n: int) -> dict:
    return {"info": {"year": 2017}, "annotations": [
        {"question_id": i, "image_id": i // 3, "answer_type": "other", "question_type": "what color is the",
         "multiple_choice_answer": "red",
         "answers": [{"answer": "red", "answer_confidence": "yes", "answer_id": k + 1} for k in range(10)]}
        for i in range(n)], "license": {}}


def test_streamed_records_equal_the_whole_parse(tmp_path: Path) -> None:
    path = tmp_path / "a.json"
    data = _annotations(50)
    data["annotations"][3]["score"] = 0.5  # floats come back as floats, as json gives them
    path.write_text(json.dumps(data))
    assert list(iter_json_list(path, "annotations")) == data["annotations"]


@pytest.mark.parametrize("text, error", [
    ('[{"question_id": 1}]', NotAListFile),  # a list, not the official object
    ('{"questions": []}', NotAListFile),  # the other file's key
    ('{"annotations": {"question_id": 1}}', NotAListFile),
])
def test_files_not_in_the_official_shape(tmp_path: Path, text: str, error: type) -> None:
    path = tmp_path / "a.json"
    path.write_text(text)
    with pytest.raises(error, match=r"a\.json: expected a JSON object with a 'annotations' list"):
        list(iter_json_list(path, "annotations"))


def test_malformed_json_names_its_line_after_the_records_before_it(tmp_path: Path) -> None:
    path = tmp_path / "a.json"
    path.write_text('{"annotations": [\n{"question_id": 1},\n{"question_id": 2,,}]}')
    items = iter_json_list(path, "annotations")
    assert next(items) == {"question_id": 1}
    with pytest.raises(DataError, match=r"a\.json: malformed JSON at line 3 column"):
        list(items)


def test_what_only_the_whole_file_parser_accepts_is_read_whole(tmp_path: Path) -> None:
    """NaN, 1e400, a 30-digit integer: json reads them, yajl does not; and yajl would turn a lone surrogate
    escape into "?" where json keeps it (so the text check can report it)."""
    path = tmp_path / "a.json"
    path.write_text('{"annotations": [{"a": 1}, {"a": NaN}, {"a": 1e400}, {"a": 123456789012345678901234567890},'
                    ' {"a": "is it \\ud800 red?"}]}')
    values = [item["a"] for item in iter_json_list(path, "annotations")]
    assert values[0] == 1 and values[1] != values[1] and values[2] == float("inf")
    assert values[3] == 123456789012345678901234567890 and values[4] == "is it \ud800 red?"


def test_reading_vqa_annotations_needs_a_fraction_of_the_parse_tree(tmp_path: Path) -> None:
    n = 6000
    questions = {"questions": [{"question_id": i, "image_id": i // 3, "question": "what color is the car?"}
                               for i in range(n)]}
    (tmp_path / "q.json").write_text(json.dumps(questions))
    (tmp_path / "a.json").write_text(json.dumps(_annotations(n)))
    entry = VqaSplitSpec(name="train", questions=tmp_path / "q.json", annotations=tmp_path / "a.json",
                         images=PathTemplate.parse("i/{image_id}.png", tmp_path, {"image_id"}, "test"), boxes=None)

    def peak(function) -> int:
        tracemalloc.start()
        try:
            result = function()
            return tracemalloc.get_traced_memory()[1], result
        finally:
            tracemalloc.stop()

    whole, _ = peak(lambda: read_json(tmp_path / "a.json"))
    streamed, examples = peak(lambda: read_vqa_split(entry, Problems()))
    assert len(examples) == n and examples[5].answers == ("red",) * 10
    # The whole parse holds 66,000 dicts at once; the streamed read: both files' bytes, the examples, one record.
    assert streamed < 0.6 * whole, (streamed, whole)  # measured: 14.2 MB against 30.7 MB

"""Shared helpers users rely on indirectly: atomic writes, paths kept inside their root, registries,
safetensors-only checkpoints."""

from __future__ import annotations

import pickle

import pytest
import torch

from harness.checkpoints import load_checkpoint, read_checkpoint_meta, save_checkpoint
from harness.errors import DataError, VlbenchError
from harness.fileio import atomic_open, read_json, read_jsonl, resolve_inside, write_json
from harness.registry import Registry


def test_atomic_write_keeps_previous_file_when_writing_fails(tmp_path):
    target = tmp_path / "run.json"
    write_json(target, {"ok": 1})
    with pytest.raises(RuntimeError):
        with atomic_open(target, "w") as handle:
            handle.write('{"half": ')
            raise RuntimeError("disk full")
    assert read_json(target) == {"ok": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["run.json"]  # no temporary left behind


@pytest.mark.parametrize("relative", ["../outside.png", "a/../../outside.png", "/etc/passwd"])
def test_resolve_inside_refuses_escapes(tmp_path, relative):
    with pytest.raises(DataError, match="outside its root"):
        resolve_inside(tmp_path / "root", relative)


def test_resolve_inside_accepts_nested(tmp_path):
    assert resolve_inside(tmp_path, "a/b/../c.png") == (tmp_path / "a" / "c.png").resolve()


def test_malformed_json_names_file_and_line(tmp_path):
    bad = tmp_path / "q.json"
    bad.write_text('{"questions": [\n  {"a": 1},,\n]}')
    with pytest.raises(DataError, match=r"q\.json: malformed JSON at line 2"):
        read_json(bad)
    lines = tmp_path / "d.jsonl"
    lines.write_text('{"a": 1}\n{broken\n')
    with pytest.raises(DataError, match=r"d\.jsonl: line 2: malformed JSON"):
        read_jsonl(lines)


def test_registry_rejects_duplicates_and_unknown_names():
    registry: Registry = Registry("model")
    registry.register("pixelbert")(object)
    with pytest.raises(ValueError, match="duplicate model name 'pixelbert'"):
        registry.register("pixelbert")(int)
    with pytest.raises(VlbenchError, match="unknown model 'regions'.*pixelbert"):
        registry.get("regions")


def test_checkpoint_round_trip(tmp_path):
    path = tmp_path / "ck.safetensors"
    weight = torch.randn(3, 4)
    save_checkpoint(path, {"w": weight, "tied": weight}, {"model": "pixelbert", "task_state": {"answers": ["yes"]}})
    state, meta = load_checkpoint(path)
    assert torch.equal(state["w"], weight) and torch.equal(state["tied"], weight)
    assert meta["model"] == "pixelbert" and meta["task_state"] == {"answers": ["yes"]}
    assert read_checkpoint_meta(path)["format"] == "vlbench-checkpoint-v1"


def test_checkpoint_refuses_pickle_files(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"w": torch.zeros(1)}, path)
    with pytest.raises(VlbenchError, match="pickle"):
        load_checkpoint(path)
    raw = tmp_path / "evil.pkl"
    raw.write_bytes(pickle.dumps({"w": 1}))
    with pytest.raises(VlbenchError, match="pickle"):
        load_checkpoint(raw)


def test_checkpoint_refuses_corrupted_and_foreign_files(tmp_path):
    path = tmp_path / "ck.safetensors"
    save_checkpoint(path, {"w": torch.zeros(100)}, {"model": "pixelbert"})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(VlbenchError, match="corrupted|not a safetensors"):
        load_checkpoint(path)
    from safetensors.torch import save_file

    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(1)}, str(foreign))
    with pytest.raises(VlbenchError, match="not a vlbench checkpoint"):
        load_checkpoint(foreign)


@pytest.mark.parametrize("length_bytes", [b"\x80\x02", b"\x80\x05", b"PK"])
def test_checkpoint_whose_header_length_reads_like_pickle_magic_loads(tmp_path, length_bytes):
    # A safetensors file opens with its header's length: 640 bytes is b"\x80\x02..." and 19,280 is b"PK...", the
    # magic of a pickle and of torch.save's zip. A resume point of that header size was once refused as a pickle.
    target = int.from_bytes(length_bytes, "little")
    path = tmp_path / "ck.safetensors"
    for pad in range(target):
        save_checkpoint(path, {"w": torch.ones(2)}, {"model": "pixelbert", "pad": "x" * pad})
        if path.read_bytes()[:2] == length_bytes:
            break
    else:
        pytest.fail(f"no padding gave a header length starting with {length_bytes!r}")
    state, meta = load_checkpoint(path)
    assert torch.equal(state["w"], torch.ones(2)) and meta["pad"] == "x" * pad

"""CompactList: the train split as DataLoader workers read it (two NumPy arrays instead of a list of objects)."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from harness.batches import ImageTensors, TextBatcher
from harness.data.compact import CompactList, worker_shared
from harness.data.spec import load_spec
from harness.data.vqa import VqaExample
from harness.tasks import TASKS, load_all
from harness.training.config import TrainConfig
from pixelbert.tokenizer import load_tokenizer


def _examples(n: int) -> list[VqaExample]:
    return [VqaExample(i, i // 3, f"question {i}?", Path(f"img/{i // 3}.png"), tuple(f"a{i % 4}" for _ in range(10)),
                       "other") for i in range(n)]


def test_behaves_as_the_list_it_was_made_from() -> None:
    items = _examples(7)
    compact = CompactList(items)
    assert len(compact) == 7 and list(compact) == items
    assert compact[0] == items[0] and compact[-1] == items[-1] and compact[2:5] == items[2:5]
    assert compact[::3] == items[::3]
    with pytest.raises(IndexError):
        compact[7]
    assert len(CompactList([])) == 0 and list(CompactList([])) == []
    assert pickle.loads(pickle.dumps(compact))[3] == items[3], "spawned workers receive it pickled"


def test_only_the_split_workers_read_is_compacted() -> None:
    items = _examples(3)
    assert isinstance(worker_shared(items, "train", num_workers=2), CompactList)
    assert worker_shared(items, "train", num_workers=0) is items, "no workers: the plain list stays"
    assert worker_shared(items, "val", num_workers=2) is items, "read in the main process only"


def test_a_task_with_workers_trains_from_the_compact_split(world: Path) -> None:
    load_all()
    config = TrainConfig(num_workers=1)
    task = TASKS.get("vqa")(load_spec(world / "vqa.yaml"), ImageTensors(64), TextBatcher(load_tokenizer(), 40), config,
                            limit=16)
    task.prepare_training()
    assert isinstance(task.examples("train"), CompactList) and isinstance(task.examples("val"), list)
    loader = DataLoader(list(range(task.train_size())), batch_size=8, collate_fn=task.collate_train, num_workers=1)
    batches = list(loader)
    assert sum(len(b["images"]) for b in batches) == 16
    assert torch.equal(batches[0]["targets"], task.collate_train(list(range(8)))["targets"])

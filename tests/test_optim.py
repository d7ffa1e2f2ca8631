"""Optimiser groups: each parameter is updated at the rate its config names, exactly once."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from harness.errors import VlbenchError
from harness.training.config import TrainConfig
from harness.training.optim import build_optimizers


def _rates(optimizers: list[torch.optim.Optimizer]) -> dict[int, float]:
    rates: dict[int, float] = {}
    for optimizer in optimizers:
        for group in optimizer.param_groups:
            for param in group["params"]:
                assert id(param) not in rates, "a parameter is in two groups"
                rates[id(param)] = group["lr"]
    return rates


@pytest.mark.parametrize("cnn_optimizer", ["adamw", "sgd"])
def test_head_learns_at_its_multiple_and_the_rest_at_their_rates(cnn_optimizer: str) -> None:
    cnn = nn.Conv2d(3, 4, 3)
    model = nn.ModuleDict({"cnn": cnn, "transformer": nn.Linear(4, 4), "norm": nn.LayerNorm(4)})
    head = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4), nn.Linear(4, 2))
    config = TrainConfig(lr=1e-4, cnn_lr=2e-3, head_lr_mult=10.0, cnn_optimizer=cnn_optimizer)
    rates = _rates(build_optimizers({"model": model, "head": head}, cnn, config))
    assert len(rates) == sum(1 for _ in model.parameters()) + sum(1 for _ in head.parameters())
    assert all(rates[id(p)] == pytest.approx(1e-3) for p in head.parameters())
    assert all(rates[id(p)] == pytest.approx(2e-3) for p in cnn.parameters())
    others = [*model["transformer"].parameters(), *model["norm"].parameters()]
    assert all(rates[id(p)] == pytest.approx(1e-4) for p in others)


def test_default_head_rate_is_the_model_rate() -> None:
    model, head = nn.Linear(4, 4), nn.Linear(4, 2)
    rates = _rates(build_optimizers({"model": model, "head": head}, None, TrainConfig(lr=3e-4)))
    assert set(rates.values()) == {3e-4}


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf")])
def test_head_lr_mult_must_be_positive_and_finite(bad: float) -> None:
    with pytest.raises(VlbenchError, match="head_lr_mult"):
        TrainConfig(head_lr_mult=bad)


def _decays(optimizers: list[torch.optim.Optimizer]) -> dict[int, float]:
    return {id(p): group["weight_decay"] for o in optimizers for group in o.param_groups for p in group["params"]}


@pytest.mark.parametrize("cnn_optimizer", ["adamw", "sgd"])
def test_the_cnn_takes_its_own_weight_decay(cnn_optimizer: str) -> None:
    cnn = nn.Conv2d(3, 4, 3)
    model = nn.ModuleDict({"cnn": cnn, "transformer": nn.Linear(4, 4)})
    config = TrainConfig(weight_decay=0.01, cnn_weight_decay=5e-4, cnn_optimizer=cnn_optimizer)
    decays = _decays(build_optimizers({"model": model, "head": nn.Linear(4, 2)}, cnn, config))
    assert decays[id(cnn.weight)] == pytest.approx(5e-4)
    assert decays[id(model["transformer"].weight)] == pytest.approx(0.01)
    same = _decays(build_optimizers({"model": model, "head": nn.Linear(4, 2)}, cnn, TrainConfig(weight_decay=0.01,
                                                                                             cnn_optimizer=cnn_optimizer)))
    assert same[id(cnn.weight)] == pytest.approx(0.01)  # None: the transformer's


def test_step_schedule_divides_by_ten_at_the_listed_epochs() -> None:
    from harness.training.optim import warmup_linear_decay

    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    schedule = warmup_linear_decay(optimizer, total_steps=40, warmup_ratio=0.05, decay_epochs=(3, 4),
                                   steps_per_epoch=10)
    rates = []
    for _ in range(40):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    assert rates[0] == pytest.approx(0.5) and rates[1] == pytest.approx(1.0)  # 2 warm-up steps
    assert rates[19] == pytest.approx(1.0) and rates[20] == pytest.approx(0.1)  # epoch 3 starts at step 20
    assert rates[29] == pytest.approx(0.1) and rates[30] == pytest.approx(0.01) and rates[39] == pytest.approx(0.01)


def test_base_preset_follows_the_papers_optimiser_and_vocabulary() -> None:
    from harness.training.config import TRAIN_PRESETS

    base = TRAIN_PRESETS["base"]
    assert base.cnn_optimizer == "sgd" and base.cnn_weight_decay == 5e-4 and base.weight_decay == 0.01
    assert base.answer_vocab_splits == ("train", "val") and base.answer_min_count == 9
    assert TRAIN_PRESETS["tiny"].answer_vocab_splits == ("train",)
    assert TrainConfig.from_dict(base.to_dict()) == base  # lists in run.json read back as tuples
    with pytest.raises(VlbenchError, match="lr_decay_epochs"):
        TrainConfig(lr_decay_epochs=(4, 2))


def test_vqa_vocabulary_can_count_train_and_val_answers(tmp_path) -> None:
    import json

    from harness.batches import ImageTensors, TextBatcher
    from harness.data.spec import load_spec
    from harness.tasks.vqa import VqaTask
    from pixelbert.tokenizer import load_tokenizer

    for split, answer, ids in (("train", "yes", (1, 2)), ("val", "blue", (3,))):
        questions = [{"question_id": q, "image_id": 1, "question": "what?"} for q in ids]
        annotations = [{"question_id": q, "image_id": 1, "question_type": "what", "answer_type": "other",
                        "multiple_choice_answer": answer,
                        "answers": [{"answer": answer, "answer_id": i} for i in range(10)]} for q in ids]
        (tmp_path / f"q_{split}.json").write_text(json.dumps({"questions": questions}))
        (tmp_path / f"a_{split}.json").write_text(json.dumps({"annotations": annotations}))
    (tmp_path / "vqa.yaml").write_text("task: vqa\nsplits:\n" + "".join(
        f"  {s}: {{questions: q_{s}.json, annotations: a_{s}.json, images: 'img_{{image_id}}.png'}}\n"
        for s in ("train", "val")))
    spec, text = load_spec(tmp_path / "vqa.yaml"), TextBatcher(load_tokenizer(), 40)
    for splits, vocabulary in ((("train",), ["yes"]), (("train", "val"), ["yes", "blue"])):
        task = VqaTask(spec, ImageTensors(8), text, TrainConfig(answer_vocab_splits=splits))
        task.prepare_training()
        assert task.answers == vocabulary

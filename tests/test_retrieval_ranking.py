"""Pixel-BERT's retrieval fine-tuning (`retrieval_objective="ranking"`, the base preset's) and `--freeze-cnn`."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from harness.cli.main import cli
from harness.errors import VlbenchError
from harness.training.config import TrainConfig, train_preset


def _task_and_model(world: Path, config: TrainConfig):
    from harness.assembly import ModelRequest, assemble, resolve_setup
    from harness.batches import ImageTensors, TextBatcher
    from harness.data.spec import load_spec
    from harness.runtime import Runtime
    from harness.tasks.retrieval import RetrievalTask
    from pixelbert.tokenizer import load_tokenizer

    torch.manual_seed(0)
    task = RetrievalTask(load_spec(world / "retrieval.yaml"), ImageTensors(64), TextBatcher(load_tokenizer(), 40),
                         config, limit=16)
    task.prepare_training()
    setup = resolve_setup(ModelRequest("pixelbert", "tiny"))
    model = assemble(setup, Runtime.start("cpu", join=False)).model
    return task, model, task.build_head(setup.transformer.hidden_size)


def test_presets_choose_the_objective() -> None:
    assert train_preset("base", "retrieval").retrieval_objective == "ranking"
    assert (train_preset("base", "retrieval").ranking_negatives, train_preset("base", "retrieval").ranking_hardest) \
        == (20, 5), "Pixel-BERT: 20 sampled negatives, the 5 hardest back-propagate"
    assert train_preset("tiny", "retrieval").retrieval_objective == "itm"
    with pytest.raises(VlbenchError):
        TrainConfig(retrieval_objective="triplet")
    with pytest.raises(VlbenchError):
        TrainConfig(ranking_negatives=3, ranking_hardest=4)


def test_ranking_loss_is_a_softmax_over_the_positive_and_its_hardest_negatives(world: Path) -> None:
    config = replace(TrainConfig(), retrieval_objective="ranking", ranking_negatives=6, ranking_hardest=2, itc=False)
    task, model, head = _task_and_model(world, config)
    batch = task.collate_train([0, 1, 2])
    assert "neg_images" not in batch and batch["neg_input_ids"].shape[0] == 3 * 6
    model.eval()  # no dropout: the selection pass and the loss pass see the same scores
    head.eval()
    visual = model.encode_images(batch["images"])
    loss = task.ranking_loss(model, head, batch, visual)

    def margin(ids, mask, rows):
        logits = head(model.fuse(ids, mask, visual.index(rows)).pooled)
        return logits[:, 1] - logits[:, 0]

    with torch.no_grad():
        expected = []
        for i in range(3):
            pos = margin(batch["input_ids"][i:i + 1], batch["attention_mask"][i:i + 1], torch.tensor([i]))
            neg = margin(batch["neg_input_ids"][6 * i:6 * i + 6], batch["neg_attention_mask"][6 * i:6 * i + 6],
                         torch.tensor([i] * 6))
            scores = torch.cat([pos, neg.topk(2).values])
            expected.append(F.cross_entropy(scores[None], torch.tensor([0])))
    assert loss.item() == pytest.approx(torch.stack(expected).mean().item(), rel=1e-4)
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in head.parameters())


def test_freeze_cnn_keeps_weights_and_batchnorm_statistics(world: Path) -> None:
    from harness.models import trainable_cnn
    from harness.training.optim import build_optimizers

    config = replace(TrainConfig(), freeze_cnn=True, itc=False)
    task, model, head = _task_and_model(world, config)
    model.visual_encoder.freeze_cnn()
    before = {k: v.clone() for k, v in model.visual_encoder.backbone.state_dict().items()}
    assert trainable_cnn(model) is None
    optimizers = build_optimizers({"model": model, "head": head}, trainable_cnn(model), config)
    model.train()
    head.train()
    assert not model.visual_encoder.backbone.training, "BatchNorm statistics stay as they were"
    loss = task.training_loss(model, head, task.collate_train([0, 1, 2, 3]))
    loss.backward()
    for opt in optimizers:
        opt.step()
    after = model.visual_encoder.backbone.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert any(p.grad is not None for p in model.transformer.parameters())


def test_run_records_the_objective_and_refuses_freezing_what_has_no_cnn(world: Path, tmp_path: Path) -> None:
    common = ["--task", "retrieval", "--data", str(world / "retrieval.yaml"), "--limit", "12", "--epochs", "1",
              "--no-progress"]
    result = CliRunner().invoke(cli, ["run", "--model", "pixelbert", *common, "--retrieval-objective", "ranking",
                                      "--freeze-cnn", "--run-dir", str(tmp_path / "ranking")])
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "ranking" / "run.json").read_text())
    assert record["config"]["train"]["retrieval_objective"] == "ranking"
    assert record["config"]["train"]["freeze_cnn"] is True
    assert all(h["loss"] == h["loss"] for h in record["train"]["history"])  # finite
    result = CliRunner().invoke(cli, ["run", "--model", "textonly", *common, "--freeze-cnn",
                                      "--run-dir", str(tmp_path / "textonly")])
    assert result.exit_code == 2 and "no trainable CNN" in result.output

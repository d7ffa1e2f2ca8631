"""Retrieval scoring batches captions by length; every cell must still be the score of its own (image, caption)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from harness.batches import ImageTensors, TextBatcher
from harness.data.spec import load_spec
from harness.models import build_model, model_setup
from harness.runtime import Runtime
from harness.tasks.retrieval import RetrievalTask, match_score
from harness.training.config import TrainConfig
from pixelbert.heads import ItmHead
from pixelbert.tokenizer import load_tokenizer


def test_length_batched_score_matrix_matches_pair_by_pair_scores(world: Path) -> None:
    torch.manual_seed(0)
    setup = model_setup("pixelbert", "tiny")
    model = build_model(setup).eval()
    config = TrainConfig(eval_batch_size=8)  # several caption batches of different padded lengths
    task = RetrievalTask(load_spec(world / "retrieval.yaml"), ImageTensors(setup.visual.image_size),
                         TextBatcher(load_tokenizer(), config.max_text_len), config, limit=4)
    head = task.build_head(setup.config.transformer.hidden_size).eval()

    # Batching must not change a score: compare in one precision (fp32).
    scores = task.score_matrix(model, head, "val", Runtime.start("cpu", "fp32", join=False), progress=False)

    images = task.examples("val")
    captions = task.texts("val")
    assert scores.shape == (4, len(captions))
    lengths = {len(task.text([c])["input_ids"][0]) for c in captions}
    assert len(lengths) > 1, "the check needs captions of different lengths"
    with torch.no_grad():
        for row, image in enumerate(images):
            visual = model.encode_images(task.images.batch([image.path]))
            for column, caption in enumerate(captions):
                tokens = task.text([caption])  # unpadded: the reference score
                logits = match_score(model, head, tokens["input_ids"], tokens["attention_mask"], visual)[0]
                assert np.isclose(scores[row, column], float(logits[1] - logits[0]), atol=1e-4), (row, column)


def test_match_scores_stay_float32_under_bf16_autocast() -> None:
    """Under bf16 autocast (CUDA, or --precision bf16 on a CPU) the ITM classifier still runs in float32: bf16
    logits gave a row of 500 caption scores only ~300 distinct values on an H100, and recall@K counts ties
    against the model."""
    torch.manual_seed(0)
    setup = model_setup("pixelbert", "tiny")
    model = build_model(setup).eval()
    head = ItmHead(setup.config.transformer.hidden_size)
    n = 256
    ids = torch.randint(1000, 5000, (n, 12))
    mask = torch.ones_like(ids)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        visual = model.encode_images(torch.randn(1, 3, 64, 64))
        logits = match_score(model, head.eval(), ids, mask, visual.index(torch.zeros(n, dtype=torch.long)))
    assert logits.dtype == torch.float32
    margins = (logits[:, 1] - logits[:, 0]).numpy()
    assert len(np.unique(margins)) > 0.95 * n

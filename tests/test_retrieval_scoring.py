"""Retrieval scoring batches captions by length; every cell must still be the score of its own (image, caption)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
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


def _itc_task(world: Path, limit: int, **config: object) -> tuple[RetrievalTask, torch.nn.Module, torch.nn.Module]:
    torch.manual_seed(0)
    setup = model_setup("pixelbert", "tiny")
    model = build_model(setup).eval()
    train_config = TrainConfig(eval_batch_size=8, itc=True, **config)  # type: ignore[arg-type]
    task = RetrievalTask(load_spec(world / "retrieval.yaml"), ImageTensors(setup.visual.image_size),
                         TextBatcher(load_tokenizer(), train_config.max_text_len), train_config, limit=limit)
    head = task.build_head(setup.config.transformer.hidden_size).eval()
    return task, model, head


def test_itc_first_stage_is_the_cosine_of_one_unimodal_pass_per_image_and_caption(world: Path) -> None:
    """Batched and length-sorted, every cell is still cos(image i's own embedding, caption j's own embedding)."""
    from pixelbert.itc import image_embeddings, text_embeddings

    task, model, head = _itc_task(world, 4)
    first = task.itc_scores(model, head, "val", Runtime.start("cpu", "fp32", join=False))
    captions = task.texts("val")
    assert first.shape == (4, len(captions)) and np.abs(first).max() <= 1 + 1e-5
    empty = task.empty_text()
    with torch.no_grad():
        texts = torch.cat([text_embeddings(model, head.itc, t["input_ids"], t["attention_mask"])
                           for t in (task.text([c]) for c in captions)])  # one unpadded caption at a time
        for row, image in enumerate(task.examples("val")):
            visual = model.encode_images(task.images.batch([image.path]))
            embedded = image_embeddings(model, head.itc, visual, empty["input_ids"], empty["attention_mask"])
            assert np.allclose(first[row], (embedded @ texts.T)[0].numpy(), atol=1e-5), row
    assert first.std() > 0, "an untrained model still gives images different embeddings"


def _scores(evaluation, out: Path) -> np.ndarray:  # type: ignore[no-untyped-def]
    out.mkdir()
    evaluation.write(out)
    return np.load(out / f"scores_{evaluation.split}.npy", allow_pickle=False)


def test_first_stage_plus_rerank_covering_every_pair_equals_full_scoring(world: Path, tmp_path: Path) -> None:
    """Above ``full_scoring_images`` the ITC first stage names the candidates; with k >= the captions every pair is
    re-scored, so the scores (and every recall) are exactly full scoring's; with a small k only the candidates
    are scored, each to its full-scoring value, and R@K for K <= k is the pipeline's. run.json's eval records it."""
    runtime = Runtime.start("cpu", "fp32", join=False)
    task, model, head = _itc_task(world, 6)  # 6 images <= full_scoring_images (100): scored in full, as val is
    full = task.evaluate(model, head, "test", runtime, progress=False)
    assert full.info == {"scoring": "full"}
    full_scores = _scores(full, tmp_path / "full")

    task, model, head = _itc_task(world, 6, full_scoring_images=5, rerank_k=30)
    covered = task.evaluate(model, head, "test", runtime, progress=False)
    assert np.array_equal(_scores(covered, tmp_path / "covered"), full_scores)
    assert covered.metrics == full.metrics
    assert covered.info["scoring"] == "rerank"
    record = covered.info["rerank"]
    assert (record["k"], record["first_stage"], record["pairs_scored"], record["pairs"]) == (30, "itc", 180, 180)
    assert set(record["first_stage_metrics"]) == {"tr_r1", "tr_r5", "tr_r10", "ir_r1", "ir_r5", "ir_r10", "rsum"}

    task, model, head = _itc_task(world, 6, full_scoring_images=5, rerank_k=2)
    small = task.evaluate(model, head, "test", runtime, progress=False)
    first = task.itc_scores(model, head, "test", runtime)
    from harness.tasks.rerank import candidate_mask

    candidates = candidate_mask(first, 2)
    assert small.info["rerank"]["pairs_scored"] == int(candidates.sum()) < 180
    assert np.allclose(_scores(small, tmp_path / "small")[candidates], full_scores[candidates], atol=1e-5)


def test_itc_rerank_needs_a_checkpoint_with_an_itc_head(world: Path) -> None:
    """`eval --rerank-k K` without --first-stage on a retrieval checkpoint trained without ITC (``--no-itc``, or
    from before ITC): a one-line error, and that checkpoint's head stays the plain ITM head it was saved with."""
    from harness.errors import VlbenchError
    from harness.tasks.rerank import Rerank

    setup = model_setup("pixelbert", "tiny")
    config = TrainConfig()  # itc False: what a checkpoint without the key reads back as
    task = RetrievalTask(load_spec(world / "retrieval.yaml"), ImageTensors(setup.visual.image_size),
                         TextBatcher(load_tokenizer(), config.max_text_len), config, limit=4)
    assert type(task.build_head(setup.config.transformer.hidden_size)) is ItmHead
    with pytest.raises(VlbenchError, match="no ITC first stage"):
        task.use_rerank(Rerank.itc(5))

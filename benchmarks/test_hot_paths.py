"""pytest-benchmark timings of the hot pieces of both pipelines (tiny preset, CPU fp32, batch 32).

Run ``nox -s benchmarks`` (or ``pytest benchmarks --benchmark-enable``); compare with the stored baseline:
``pytest benchmarks --benchmark-enable --benchmark-storage=benchmarks/baseline --benchmark-compare``.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.benchmark(min_rounds=5, warmup=True)


def test_image_decode_and_transform(benchmark, image_paths) -> None:
    """32 PNG files -> decoded, resized, float [32, 3, 64, 64] (no decoded-image cache: the cold path)."""
    from harness.batches import ImageTensors

    def load() -> torch.Tensor:
        return ImageTensors(64, cache_bytes=0).batch(image_paths)

    assert benchmark(load).shape == (32, 3, 64, 64)


def test_image_batch_from_decoded_cache(benchmark, image_paths) -> None:
    """The same batch once every file is decoded (what epochs after the first pay)."""
    from harness.batches import ImageTensors

    cached = ImageTensors(64)
    cached.batch(image_paths)
    assert benchmark(cached.batch, image_paths).shape == (32, 3, 64, 64)


def test_pixel_encoder_forward(benchmark, model, images) -> None:
    with torch.inference_mode():
        tokens = benchmark(model.encode_images, images)
    assert tokens.features.shape[:2] == (32, 16)


def test_detector_region_extraction(benchmark, detector, images) -> None:
    """Faster R-CNN backbone + RPN + box head + class-agnostic NMS + RoI features of the kept boxes."""
    from baselines.regions import extract_regions

    net, region = detector
    regions = benchmark(extract_regions, net, images, region)
    assert len(regions) == 32 and all(region.min_boxes <= len(r.boxes) <= region.max_boxes for r in regions)


def test_transformer_forward(benchmark, model, images, text) -> None:
    with torch.inference_mode():
        tokens = model.encode_images(images)
        out = benchmark(model.fuse, text["input_ids"], text["attention_mask"], tokens)
    assert out.pooled.shape == (32, model.hidden_size)


def test_retrieval_itm_scoring(benchmark, model, images, text) -> None:
    """One image's tokens against 32 captions with the ITM head (the inner loop of retrieval evaluation)."""
    from harness.tasks.retrieval import match_score
    from pixelbert.heads import ItmHead

    head = ItmHead(model.hidden_size).eval()
    with torch.inference_mode():
        tokens = model.encode_images(images[:1])
        index = torch.zeros(32, dtype=torch.long)
        scores = benchmark(match_score, model, head, text["input_ids"], text["attention_mask"], tokens.index(index))
    assert scores.shape == (32, 2)


def test_retrieval_recall_coco_1k(benchmark) -> None:
    """Recall@1/5/10 both ways on a COCO-1K-sized score matrix (1000 images x 5000 captions)."""
    from harness.metrics.retrieval import retrieval_recall

    scores = np.random.default_rng(0).standard_normal((1000, 5000)).astype(np.float32)
    metrics = benchmark(retrieval_recall, scores, [5] * 1000)
    assert 0 <= metrics["tr_r1"] <= 100


@pytest.fixture(scope="module")
def vqa_10k() -> tuple[dict, dict, list[dict]]:
    """10,000 questions in the official formats, with annotator disagreement and answers needing normalisation."""
    rng = random.Random(0)
    vocab = ["yes", "no", "2", "two", "red", "a red cube", "blue.", "Cube", "left", "3"]
    questions, annotations, results = [], [], []
    for qid in range(10_000):
        answers = [rng.choice(vocab[:4]) if qid % 2 else rng.choice(vocab) for _ in range(10)]
        questions.append({"question_id": qid, "image_id": qid // 3, "question": "how many cubes are there?"})
        annotations.append({"question_id": qid, "image_id": qid // 3, "question_type": "how many",
                            "answer_type": "number" if qid % 2 else "other", "multiple_choice_answer": answers[0],
                            "answers": [{"answer": a, "answer_id": i + 1, "answer_confidence": "yes"}
                                        for i, a in enumerate(answers)]})
        results.append({"question_id": qid, "answer": rng.choice(vocab)})
    return {"questions": questions}, {"annotations": annotations}, results


def test_vqa_official_accuracy_10k(benchmark, vqa_10k) -> None:
    from harness.metrics.vqa import vqa_evaluate

    metrics = benchmark(vqa_evaluate, *vqa_10k)
    assert 0 <= metrics["overall"] <= 100

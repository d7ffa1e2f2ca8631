"""Image-text retrieval with an image-text matching (ITM) head, as in Pixel-BERT, plus an image-text contrastive
(ITC) first stage for large splits (vlbench's addition, after ALBEF; pixelbert/itc.py).

Training: an epoch visits every image once with one of its captions drawn at random (so an epoch costs
the same whatever the captions per image). ``retrieval_objective="itm"``: each positive is paired with a negative
caption of another image and a negative image for the caption, two-class ITM on the three; optionally the negative
caption is the hardest of a few random candidates under the current model. ``"ranking"`` (Pixel-BERT's, the base
preset's): the positive against ``ranking_negatives`` captions of other images, a softmax cross-entropy over the
matching scores of the positive and the ``ranking_hardest`` highest-scoring negatives (found without gradients). With ``itc`` (on in retrieval's presets) the loss adds the symmetric InfoNCE of the
batch's positives (images with their drawn captions) in the ITC space of the model's unimodal passes.

Evaluation, the protocol recorded in run.json's ``eval.scoring`` and ``eval.rerank``: a split of at most
``full_scoring_images`` images (the tiny world's 100 val images, so checkpoint selection is unchanged) is scored in
full: every image against every caption by the cross-encoder, each image's visual tokens computed once and reused.
A larger split (the tiny world's 700 test images, 3500 captions) is ranked first by ITC cosine similarity (one
pass per image and one per caption), then the cross-encoder re-scores each image's top ``rerank_k`` captions and
each caption's top ``rerank_k`` images (harness/tasks/rerank.py, the same path as ``vlbench eval --rerank-k``); TR
and IR recall@K for K <= ``rerank_k`` are exactly those of that pipeline. Without ITC (``--no-itc``, checkpoints
from before it) every split is scored in full.
"""

from __future__ import annotations

import io
import random
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from harness.batches import images_of, to_device
from harness.data.fingerprint import retrieval_fingerprint
from harness.data.karpathy import RetrievalImage, load_karpathy_split
from harness.distributed import gather_concat, is_main, shard_range, world_size
from harness.errors import VlbenchError
from harness.fileio import write_bytes
from harness.metrics.reference import retrieval_chance
from harness.metrics.retrieval import retrieval_per_query_ranks, retrieval_recall
from harness.runtime import Runtime
from harness.tasks import TASKS
from harness.tasks.base import Evaluation, Metric, Task, finite_outputs
from harness.tasks.rerank import Rerank, candidate_mask, merge_scores
from pixelbert.heads import ItmHead
from pixelbert.itc import RetrievalHead, image_embeddings, itc_loss, text_embeddings
from pixelbert.visual import VisualTokens


def match_score(model: nn.Module, head: nn.Module, ids: torch.Tensor, mask: torch.Tensor,
                visual: VisualTokens) -> torch.Tensor:
    """ITM logits [n, 2] (index 1 = "matches"), always float32.

    The classifier runs outside autocast: bf16 logits keep 8 bits of mantissa, so a row of 500 caption scores
    collapsed to about 300 distinct values on CUDA, and recall@K counts ties against the model."""
    pooled = model.fuse(ids, mask, visual).pooled
    with torch.autocast(pooled.device.type, enabled=False):
        return head(pooled.float())


@TASKS.register("retrieval")
class RetrievalTask(Task):
    name = "retrieval"
    title = "Retrieval"
    selection_metric = "rsum"
    metrics = (*(Metric((key,), title) for key, title in (
        ("tr_r1", "TR R@1"), ("tr_r5", "TR R@5"), ("tr_r10", "TR R@10"), ("ir_r1", "IR R@1"), ("ir_r5", "IR R@5"),
        ("ir_r10", "IR R@10"))), Metric(("rsum",), "RSUM", axis="RSUM (sum of six recalls, %)"))
    significance = "bootstrap_images"
    report_order = 20
    # Scoring every val image against every val caption (100 x 500 cross-encoder passes) costs about as much as
    # an epoch of training, so the tiny budget validates once, after the last epoch (2 epochs stay at chance).
    # ITC adds a first stage so the 700-image test split is ranked in minutes (module docstring).
    # base: Pixel-BERT's ranking loss (20 negative captions, the 5 hardest back-propagate).
    preset_overrides = {"tiny": {"epochs": 4, "eval_every": 4, "itc": True},
                        "base": {"itc": True, "retrieval_objective": "ranking"}}
    pretrained_head = "itm"  # the same image-text matching classifier: fine-tuning continues it (Pixel-BERT)
    rerank: Rerank | None = None
    """Set by ``eval --rerank-k``: score only a first stage's top-k candidates on every split evaluated (the
    model's own ITC first stage when ``rerank.first_stage`` is None)."""

    def use_rerank(self, rerank: Rerank) -> None:
        if rerank.first_stage is None and not self.config.itc:
            raise VlbenchError("this checkpoint has no ITC first stage (trained without itc); give --first-stage "
                               "S.npy with --rerank-k")
        self.rerank = rerank

    @classmethod
    def accepted_spec_tasks(cls) -> tuple[str, ...]:
        return ("retrieval", "captions")

    def load_split(self, split: str) -> list[RetrievalImage]:
        return load_karpathy_split(self.spec, split)

    def fingerprint(self, split: str) -> str:
        return retrieval_fingerprint(self.examples(split))

    def image_paths(self, split: str) -> list[Path]:
        return list(dict.fromkeys([image.path for image in self.examples(split)]))

    def texts(self, split: str) -> list[str]:
        return [c for image in self.examples(split) for c in image.captions]

    def inference_inputs(self, examples: Sequence[RetrievalImage]) -> tuple[list[Path], list[str]]:
        return [e.path for e in examples], [e.captions[0] for e in examples]  # one ITM pair per image

    def summary(self, split: str) -> dict[str, Any]:
        images = self.examples(split)
        out: dict[str, Any] = {"images": len(images), "captions": sum(len(i.captions) for i in images)}
        if images and split != "train":
            out["reference"] = retrieval_chance([len(i.captions) for i in images])
        return out

    def train_size(self) -> int:
        return len(self.examples("train"))  # one item per image; its caption is drawn per batch

    def build_head(self, hidden_size: int) -> nn.Module:
        # Without ITC the plain ITM head, so checkpoints from before ITC keep loading.
        return RetrievalHead(hidden_size) if self.config.itc else ItmHead(hidden_size)

    def empty_text(self) -> dict[str, torch.Tensor]:
        """The tokens of an empty text ([1, 2]: [CLS] [SEP]), the text side of an image's ITC pass."""
        return self.text([""])

    @property
    def ranking(self) -> bool:
        return self.config.retrieval_objective == "ranking"

    def collate_train(self, indices: list[int]) -> dict[str, Any]:
        images = self.examples("train")
        # Negatives come from a generator seeded by the batch content, so a run stays repeatable.
        rng = random.Random(hash(tuple(indices)) & 0xFFFFFFFF)
        if self.ranking:
            candidates = self.config.ranking_negatives
        else:
            candidates = self.config.itm_candidates if self.config.itm_hard_negatives else 1
        positives = [(i, rng.randrange(len(images[i].captions))) for i in indices]
        neg_captions: list[str] = []
        neg_images: list[Path] = []
        for image_index, _ in positives:
            for _ in range(candidates):
                other = rng.randrange(len(images) - 1)
                other += other >= image_index  # any image but this one
                neg_captions.append(rng.choice(images[other].captions))
            if not self.ranking:
                other = rng.randrange(len(images) - 1)
                other += other >= image_index
                neg_images.append(images[other].path)
        # One tokenizer call so positives and negatives are padded to the same length.
        tokens = self.text([images[i].captions[c] for i, c in positives] + neg_captions)
        n = len(positives)
        # Positive images, then the negative ones (ITM), in one batch: one padded size when images keep their
        # aspect ratio; the losses take rows 0..n-1 as the positives.
        batch = {
            **self.images.inputs([images[i].path for i, _ in positives] + neg_images),
            "input_ids": tokens["input_ids"][:n],
            "attention_mask": tokens["attention_mask"][:n],
            "neg_input_ids": tokens["input_ids"][n:],
            "neg_attention_mask": tokens["attention_mask"][n:],
        }
        if self.config.itc:
            empty = self.empty_text()
            batch |= {"empty_input_ids": empty["input_ids"], "empty_attention_mask": empty["attention_mask"]}
        return batch

    def training_loss(self, model: nn.Module, head: nn.Module, batch: dict[str, Any]) -> torch.Tensor:
        visual = model.encode_images(**images_of(batch))
        loss = (self.ranking_loss if self.ranking else self.itm_loss)(model, head, batch, visual)
        if isinstance(head, RetrievalHead):
            loss = loss + self.itc_loss(model, head, batch, visual)
        return loss

    def itm_loss(self, model: nn.Module, head: nn.Module, batch: dict[str, Any], visual: VisualTokens) -> torch.Tensor:
        """Cross-entropy of the ITM head on each positive, its negative caption and its negative image
        (``visual``: the positives' visual tokens, then the negative images')."""
        n = batch["input_ids"].shape[0]
        own = torch.arange(n, device=batch["input_ids"].device)
        neg_ids, neg_mask = batch["neg_input_ids"], batch["neg_attention_mask"]
        candidates = neg_ids.shape[0] // n
        if candidates > 1:
            # Hard negatives: the highest-scoring of the candidate captions under the current model.
            with torch.no_grad():
                scores = match_score(model, head, neg_ids, neg_mask, visual.index(own.repeat_interleave(candidates)))
                hardest = (scores[:, 1] - scores[:, 0]).view(n, candidates).argmax(dim=1)
            pick = own * candidates + hardest
            neg_ids, neg_mask = neg_ids[pick], neg_mask[pick]
        ids = torch.cat([batch["input_ids"], neg_ids, batch["input_ids"]])
        mask = torch.cat([batch["attention_mask"], neg_mask, batch["attention_mask"]])
        rows = torch.cat([own, own, own + n])  # positive, negative caption, negative image
        logits = match_score(model, head, ids, mask, visual.index(rows)).float()
        labels = torch.cat([torch.ones(n), torch.zeros(2 * n)]).long().to(logits.device)
        return F.cross_entropy(logits, labels)

    def ranking_loss(self, model: nn.Module, head: nn.Module, batch: dict[str, Any],
                     visual: VisualTokens) -> torch.Tensor:
        """Pixel-BERT's retrieval loss: per image, softmax cross-entropy of the matching score (the ITM margin,
        what evaluation ranks by) of its caption against its ``ranking_hardest`` highest-scoring negatives among
        the ``ranking_negatives`` sampled; only those back-propagate."""
        n = batch["input_ids"].shape[0]
        own = torch.arange(n, device=batch["input_ids"].device)
        neg_ids, neg_mask = batch["neg_input_ids"], batch["neg_attention_mask"]
        sampled = neg_ids.shape[0] // n
        hardest = min(self.config.ranking_hardest, sampled)
        with torch.no_grad():
            # In chunks of the evaluation batch: at base, 256 images x 20 negatives in one pass would not fit.
            rows_of = own.repeat_interleave(sampled)
            chunk = max(self.config.eval_batch_size, 1)
            margins = []
            for begin in range(0, rows_of.shape[0], chunk):
                part = slice(begin, begin + chunk)
                logits = match_score(model, head, neg_ids[part], neg_mask[part], visual.index(rows_of[part]))
                margins.append(logits[:, 1] - logits[:, 0])
            top = torch.cat(margins).view(n, sampled).topk(hardest, dim=1).indices  # [n, hardest]
        pick = (own[:, None] * sampled + top).flatten()
        ids = torch.cat([batch["input_ids"], neg_ids[pick]])
        mask = torch.cat([batch["attention_mask"], neg_mask[pick]])
        rows = torch.cat([own, own.repeat_interleave(hardest)])
        logits = match_score(model, head, ids, mask, visual.index(rows)).float()
        margin = logits[:, 1] - logits[:, 0]
        scores = torch.cat([margin[:n, None], margin[n:].view(n, hardest)], dim=1)  # the positive is column 0
        return F.cross_entropy(scores, torch.zeros(n, dtype=torch.long, device=scores.device))

    def itc_loss(self, model: nn.Module, head: RetrievalHead, batch: dict[str, Any],
                 visual: VisualTokens) -> torch.Tensor:
        """Symmetric InfoNCE between the batch's images and their drawn captions (the other pairs of the batch are
        the negatives), on the unimodal passes (pixelbert/itc.py)."""
        n = batch["input_ids"].shape[0]
        own = torch.arange(n, device=batch["input_ids"].device)
        images = image_embeddings(model, head.itc, visual.index(own), batch["empty_input_ids"],
                                  batch["empty_attention_mask"])
        texts = text_embeddings(model, head.itc, batch["input_ids"], batch["attention_mask"])
        return itc_loss(images, texts, head.itc.temperature)

    def caption_batches(self, split: str) -> list[tuple[np.ndarray, dict[str, torch.Tensor]]]:
        """The split's captions as (column indices, tokens) batches, shortest first and each padded only to its
        own longest caption: captions vary a lot in length, and padding every pair to the split's longest one
        wastes about a third of the transformer's work on the embedded world."""
        captions = self.texts(split)
        lengths = self.text.tokenizer(captions, add_special_tokens=True, truncation=True,
                                      max_length=self.text.max_length, return_length=True)["length"]
        order = np.argsort(np.asarray(lengths), kind="stable")
        size = self.config.eval_batch_size
        return [(order[i:i + size], self.text([captions[c] for c in order[i:i + size]]))
                for i in range(0, len(order), size)]

    @torch.no_grad()
    def score_matrix(self, model: nn.Module, head: nn.Module, split: str, runtime: Runtime,
                     progress: bool = True, candidates: np.ndarray | None = None) -> np.ndarray:
        """ITM log-odds for every (image, caption) pair of the split: [n_images, n_captions].

        ``candidates`` ([n_images, n_captions] bool, re-ranking): score only those pairs, leave the rest 0."""
        model.eval()
        head.eval()
        device = runtime.device
        every_image = self.examples(split)
        rows = shard_range(len(every_image))  # several processes: each scores its rows, gathered in order below
        images = every_image[rows.start:rows.stop]
        if candidates is not None:
            candidates = candidates[rows.start:rows.stop]
        batches = [(columns, {k: v.to(device) for k, v in tokens.items()})
                   for columns, tokens in self.caption_batches(split)]
        n_captions = sum(len(columns) for columns, _ in batches)
        scores = np.zeros((len(images), n_captions), dtype=np.float32)
        pairs = len(images) * n_captions if candidates is None else int(candidates.sum())
        bar = tqdm(total=pairs, desc=f"retrieval {split}", disable=not progress or not is_main(),
                   leave=False, unit="pair", unit_scale=True)
        image_block = max(1, self.config.eval_batch_size // 8)
        for index, (block, pixels) in enumerate(self.eval_batches(images, image_block, self._pixels)):
            start = index * image_block
            with runtime.autocast():
                visual = model.encode_images(**images_of(to_device(pixels, device)))
            for offset in range(len(block)):
                for columns, tokens in batches:
                    ids, mask = tokens["input_ids"], tokens["attention_mask"]
                    if candidates is not None:
                        keep = candidates[start + offset, columns]
                        if not keep.any():
                            continue
                        picked = torch.from_numpy(np.flatnonzero(keep)).to(device)
                        columns, ids, mask = columns[keep], ids[picked], mask[picked]
                    index = torch.full((len(columns),), offset, device=device)
                    with runtime.autocast():
                        logits = finite_outputs(match_score(model, head, ids, mask, visual.index(index)), self.name,
                                                split)
                    scores[start + offset, columns] = (logits[:, 1] - logits[:, 0]).cpu().numpy()
                    bar.update(len(columns))
        bar.close()
        return np.stack(gather_concat(list(scores))) if world_size() > 1 else scores

    def _pixels(self, images: Sequence[RetrievalImage]) -> dict[str, torch.Tensor]:
        return self.images.inputs([i.path for i in images])

    @torch.no_grad()
    def itc_scores(self, model: nn.Module, head: RetrievalHead, split: str, runtime: Runtime) -> np.ndarray:
        """The ITC first stage: cosine similarity of every image and caption embedding, [n_images, n_captions]
        (n_images + n_captions unimodal passes)."""
        model.eval()
        head.eval()
        device = runtime.device
        images = self.examples(split)
        empty = {k: v.to(device) for k, v in self.empty_text().items()}
        size = self.config.eval_batch_size
        image_rows = []
        for _, pixels in self.eval_batches(images, size, self._pixels):
            with runtime.autocast():
                visual = model.encode_images(**images_of(to_device(pixels, device)))
                image_rows.append(image_embeddings(model, head.itc, visual, empty["input_ids"], empty["attention_mask"]))
        captions: list[torch.Tensor | None] = [None] * len(self.texts(split))
        for columns, tokens in self.caption_batches(split):
            with runtime.autocast():
                embedded = text_embeddings(model, head.itc, tokens["input_ids"].to(device),
                                           tokens["attention_mask"].to(device))
            for column, row in zip(columns.tolist(), embedded, strict=True):
                captions[column] = row
        similarity = torch.cat(image_rows) @ torch.stack(captions).T  # type: ignore[arg-type]
        return finite_outputs(similarity, self.name, split).cpu().numpy().astype(np.float64)

    def first_stage(self, model: nn.Module, head: nn.Module, split: str, runtime: Runtime) -> Rerank | None:
        """How ``split`` is ranked before the cross-encoder: ``eval --rerank-k``'s choice, else the ITC first stage
        with ``rerank_k`` on a split of more than ``full_scoring_images`` images, else None (score every pair)."""
        rerank = self.rerank
        if rerank is None:
            if not isinstance(head, RetrievalHead) or len(self.examples(split)) <= self.config.full_scoring_images:
                return None
            rerank = Rerank.itc(self.config.rerank_k)
        if rerank.first_stage is None:  # the model's own ITC first stage, for this split
            assert isinstance(head, RetrievalHead)  # use_rerank refused an ITC first stage without ITC
            return Rerank(k=rerank.k, first_stage=self.itc_scores(model, head, split, runtime), source="itc")
        return rerank

    def evaluate(self, model: nn.Module, head: nn.Module, split: str, runtime: Runtime,
                 progress: bool = True) -> Evaluation:
        images = self.examples(split)
        per_image = [len(i.captions) for i in images]
        info: dict[str, Any] = {}
        start = time.perf_counter()
        rerank = self.first_stage(model, head, split, runtime)
        if rerank is None:
            info["scoring"] = "full"  # every (image, caption) pair by the cross-encoder
            scores = self.score_matrix(model, head, split, runtime, progress)
        else:
            info["scoring"] = "rerank"  # the first stage's top k re-scored by the cross-encoder: eval.rerank
            first_seconds = time.perf_counter() - start
            assert rerank.first_stage is not None
            rerank.check_shape(len(images), sum(per_image))
            candidates = candidate_mask(rerank.first_stage, rerank.k)
            rescored = self.score_matrix(model, head, split, runtime, progress, candidates=candidates)
            scores = merge_scores(rerank.first_stage, candidates, rescored)
            info["rerank"] = {"k": rerank.k, "first_stage": rerank.source,
                              "first_stage_metrics": retrieval_recall(rerank.first_stage, per_image),
                              "first_stage_seconds": round(first_seconds, 3),
                              "pairs_scored": int(candidates.sum()), "pairs": int(candidates.size)}
        metrics = retrieval_recall(scores, per_image)
        ranks = retrieval_per_query_ranks(scores, per_image)
        per_example = {"kind": "ranks", "tr_best_rank": [int(r) for r in ranks["tr"]],
                       "ir_rank": [int(r) for r in ranks["ir"]],
                       # Which captions belong to which image: `compare` resamples whole images in its bootstrap.
                       "captions_per_image": per_image}

        def write(run_dir: Path) -> list[str]:
            name = f"scores_{split}.npy"
            buffer = io.BytesIO()
            np.save(buffer, scores, allow_pickle=False)
            write_bytes(run_dir / name, buffer.getvalue())
            return [name]

        return Evaluation(split=split, metrics=metrics, write=write, per_example=per_example, info=info)

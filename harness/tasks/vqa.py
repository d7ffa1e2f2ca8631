"""VQA v2: an MLP on [CLS] scores every answer of the training vocabulary; soft-score binary cross-entropy.

Targets are the official VQA accuracy of each candidate answer given the 10 human answers, so the loss
optimises the metric that is reported. Predictions are the official results list.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from harness.batches import images_of, soft_target_tensor
from harness.data.answers import build_answer_vocab, soft_target
from harness.data.compact import worker_shared
from harness.data.fingerprint import vqa_fingerprint
from harness.data.vqa import VqaExample, load_vqa_split
from harness.distributed import gather_concat, is_main, shard
from harness.errors import VlbenchError
from harness.fileio import read_json, write_json
from harness.metrics.reference import vqa_prior
from harness.metrics.vqa import (
    below_full_credit,
    below_full_credit_note,
    vqa_evaluate,
    vqa_per_question_accuracy,
)
from harness.runtime import Runtime
from harness.tasks import TASKS
from harness.tasks.base import Evaluation, Metric, Task, finite_outputs
from pixelbert.heads import VqaHead


@TASKS.register("vqa")
class VqaTask(Task):
    name = "vqa"
    title = "VQA v2"
    selection_metric = "overall"
    metrics = (Metric(("overall",), "overall", axis="VQA accuracy (%)"), *(Metric(("perAnswerType", t), t) for t in ("yes/no", "number",
                                                                                           "other")))
    open_group = "perAnswerType"
    significance = "bootstrap"
    report_order = 0
    # The tiny world's 54,000 training questions on 18,000 scenes are seen once: one pass over many distinct
    # scenes binds question words to pixels where the same steps over fewer scenes seen repeatedly do not
    # (docs/results/discriminate.md).
    preset_overrides = {"tiny": {"epochs": 1}}

    def restore_state(self, state: dict[str, Any]) -> None:
        self.answers: list[str] = list(state.get("answers", []))
        self.answer_index = {a: i for i, a in enumerate(self.answers)}

    def state(self) -> dict[str, Any]:
        return {"answers": self.answers}

    def load_split(self, split: str) -> list[VqaExample]:
        return load_vqa_split(self.spec, split)

    def fingerprint(self, split: str) -> str:
        return vqa_fingerprint(self.examples(split))

    def image_paths(self, split: str) -> list[Path]:
        return list(dict.fromkeys([e.image_path for e in self.examples(split)]))

    def texts(self, split: str) -> list[str]:
        return [e.question for e in self.examples(split)]

    def inference_inputs(self, examples: Sequence[VqaExample]) -> tuple[list[Path], list[str]]:
        return [e.image_path for e in examples], [e.question for e in examples]

    def prepare_training(self) -> None:
        train = self.examples("train")
        if any(e.answers is None for e in train):
            raise VlbenchError(f"{self.spec.path}: the train split has no annotations")
        sources = [e for split in self.config.answer_vocab_splits for e in self.examples(split)]
        self.restore_state({"answers": build_answer_vocab(sources, min_count=self.config.answer_min_count)})
        self._targets = worker_shared([soft_target(e.answers, self.answer_index) for e in train], "train",
                                      self.config.num_workers)

    def summary(self, split: str) -> dict[str, Any]:
        examples = self.examples(split)
        out: dict[str, Any] = {"examples": len(examples), "images": len({e.image_id for e in examples})}
        if self.answers and examples[0].answers is not None:
            # Questions none of whose 10 answers is in the vocabulary: their best achievable score is 0.
            out["oov_questions"] = sum(1 for e in examples if not soft_target(e.answers, self.answer_index))
            out["answer_vocabulary"] = len(self.answers)
        if examples and examples[0].answers is not None:
            few = below_full_credit(len(e.answers or ()) for e in examples)
            if few:
                out["warnings"] = [below_full_credit_note(few, len(examples))]
            files = self.spec.splits[split]
            if split != "train" and "train" in self.spec.splits and files.annotations is not None:
                questions, annotations = _restrict(read_json(files.questions), read_json(files.annotations),
                                                   {e.question_id for e in examples})
                train = [(e.question_type, e.multiple_choice_answer) for e in self.examples("train")]
                out["reference"] = vqa_prior(train, questions, annotations)
        return out

    def build_head(self, hidden_size: int) -> nn.Module:
        if not self.answers:
            raise VlbenchError("the VQA answer vocabulary is empty (no training answers?)")
        return VqaHead(hidden_size, len(self.answers))

    def collate_train(self, indices: list[int]) -> dict[str, Any]:
        examples = self.examples("train")
        batch = [examples[i] for i in indices]
        return {
            **self.images.inputs([e.image_path for e in batch]),
            **self.text([e.question for e in batch]),
            "targets": soft_target_tensor([self._targets[i] for i in indices], len(self.answers)),
        }

    def training_loss(self, model: nn.Module, head: nn.Module, batch: dict[str, Any]) -> torch.Tensor:
        pooled = model(batch["input_ids"], batch["attention_mask"], **images_of(batch)).pooled
        logits = head(pooled).float()
        # Summed over answers (UNITER / bottom-up convention) so the gradient does not shrink with the vocabulary.
        return F.binary_cross_entropy_with_logits(logits, batch["targets"], reduction="mean") * logits.shape[1]

    def _eval_batch(self, examples: Sequence[VqaExample]) -> dict[str, torch.Tensor]:
        return {**self.images.inputs([e.image_path for e in examples]), **self.text([e.question for e in examples])}

    @torch.no_grad()
    def evaluate(self, model: nn.Module, head: nn.Module, split: str, runtime: Runtime,
                 progress: bool = True) -> Evaluation:
        model.eval()
        head.eval()
        examples = self.examples(split)
        local = shard(examples)  # several processes: each predicts its share, gathered in order below
        size = self.config.eval_batch_size
        answers: list[str] = []
        for _, batch in tqdm(self.eval_batches(local, size, self._eval_batch), total=-(-len(local) // size), desc=f"vqa {split}", leave=False, unit="batch",
                             disable=not progress or not is_main()):
            batch = {k: v.to(runtime.device) for k, v in batch.items()}
            with runtime.autocast():
                logits = head(model(batch["input_ids"], batch["attention_mask"], **images_of(batch)).pooled)
            answers += [self.answers[i] for i in finite_outputs(logits, self.name, split).argmax(dim=1).tolist()]
        answers = gather_concat(answers)
        results = [{"question_id": e.question_id, "answer": a} for e, a in zip(examples, answers)]

        metrics = None
        per_example: dict[str, Any] = {}
        files = self.spec.splits[split]
        if files.annotations is not None:
            questions, annotations = _restrict(read_json(files.questions), read_json(files.annotations),
                                               {e.question_id for e in examples})
            metrics = vqa_evaluate(questions, annotations, results)
            accuracy = vqa_per_question_accuracy(questions, annotations, results)
            # answer_types lets `compare` test per-answer-type differences too (older runs lack it).
            answer_type = {a["question_id"]: a.get("answer_type") for a in annotations["annotations"]}
            per_example = {"kind": "vqa_accuracy", "ids": [str(e.question_id) for e in examples],
                           "values": [accuracy[e.question_id] for e in examples],
                           "answer_types": [answer_type.get(e.question_id) for e in examples],
                           # Questions about one image are correlated: `compare` resamples them together.
                           "clusters": [str(e.image_id) for e in examples]}

        def write(run_dir: Path) -> list[str]:
            name = f"predictions_{split}.json"
            write_json(run_dir / name, results, indent=None)
            return [name]

        return Evaluation(split=split, metrics=metrics, write=write, per_example=per_example)


def _restrict(questions: dict, annotations: dict, ids: set[int]) -> tuple[dict, dict]:
    """The official files cut down to the evaluated questions (all of them unless the run used a subset)."""
    if len(ids) == len(annotations.get("annotations", [])):
        return questions, annotations
    keep_q = [q for q in questions["questions"] if q["question_id"] in ids]
    keep_a = [a for a in annotations["annotations"] if a["question_id"] in ids]
    return {**questions, "questions": keep_q}, {**annotations, "annotations": keep_a}

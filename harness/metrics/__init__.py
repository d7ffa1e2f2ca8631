"""Official task metrics as pure functions: VQA v2 accuracy, NLVR2 accuracy/consistency, retrieval recall@K.

Each module cites the official script it reproduces; ``vlbench score`` (``harness.cli.score_cmd``) exposes
them on prediction files in the official formats.
"""

from harness.metrics.nlvr2 import (
    nlvr2_consistency_key,
    nlvr2_per_example_correct,
    nlvr2_scores,
    read_nlvr2_labels,
    read_nlvr2_predictions_csv,
)
from harness.metrics.retrieval import (
    RetrievalRanks,
    captions_per_image_from_karpathy,
    retrieval_per_query_ranks,
    retrieval_recall,
    retrieval_tie_count,
)
from harness.metrics.vqa import normalize_answer, vqa_evaluate, vqa_per_question_accuracy, vqa_soft_score

__all__ = [
    "RetrievalRanks",
    "captions_per_image_from_karpathy",
    "nlvr2_consistency_key",
    "nlvr2_per_example_correct",
    "nlvr2_scores",
    "normalize_answer",
    "read_nlvr2_labels",
    "read_nlvr2_predictions_csv",
    "retrieval_per_query_ranks",
    "retrieval_recall",
    "retrieval_tie_count",
    "vqa_evaluate",
    "vqa_per_question_accuracy",
    "vqa_soft_score",
]

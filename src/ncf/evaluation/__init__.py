"""Evaluation: ranking metrics over any scorer, sampled and full-ranking protocols."""

from ncf.evaluation.metrics import (
    auc,
    bootstrap_ci,
    coverage,
    hit_rate,
    map_at_k,
    mrr,
    ndcg,
    ndcg_at_k,
    precision_at_k,
    recall_at_k,
)
from ncf.evaluation.protocols import (
    EvaluationResult,
    Ties,
    evaluate_full,
    evaluate_labelled,
    evaluate_sampled,
)
from ncf.evaluation.scoring import DotProductScorer, Scorer, as_scorer

__all__ = [
    "DotProductScorer",
    "EvaluationResult",
    "Scorer",
    "Ties",
    "as_scorer",
    "auc",
    "bootstrap_ci",
    "coverage",
    "evaluate_full",
    "evaluate_labelled",
    "evaluate_sampled",
    "hit_rate",
    "map_at_k",
    "mrr",
    "ndcg",
    "ndcg_at_k",
    "precision_at_k",
    "recall_at_k",
]

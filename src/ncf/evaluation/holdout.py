"""Evaluate a scorer on a held-out split with both protocols, side by side.

Sampled metrics (the NCF paper's 1 + 99) are known to disagree with full-ranking ones
(Krichene & Rendle, KDD 2020), so every report carries both.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

from ncf.data.sampling import NegativeSampler
from ncf.data.split import Split
from ncf.evaluation.protocols import EvaluationResult, evaluate_full, evaluate_sampled


class PopularityScorer:
    """Scores every item by its training popularity: the baseline every model must beat."""

    def __init__(self, item_counts: np.ndarray) -> None:
        self.item_scores = np.asarray(item_counts, np.float32)

    @property
    def n_items(self) -> int:
        return len(self.item_scores)

    def score_pairs(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        return self.item_scores[np.asarray(items)]

    def score_users(self, users: np.ndarray) -> np.ndarray:
        return np.tile(self.item_scores, (len(users), 1))


def heldout_candidates(split: Split, n_candidates: int = 99, seed: int = 0) -> np.ndarray:
    """N negatives per test row, excluding every known positive (train, validation, test).

    N is lowered when a user has fewer than N items left (a small catalogue)."""
    known = split.train.csr + split.test.csr
    if split.validation is not None:
        known = known + split.validation.csr
    return NegativeSampler(sp.csr_matrix(known)).sample_candidates(
        split.test.users, n_candidates, seed, cap=True
    )


def evaluate_split(
    scorer: Any,
    split: Split,
    *,
    k: int = 10,
    n_candidates: int = 99,
    seed: int = 0,
    ci: bool = False,
    ties: str = "pessimistic",
) -> dict[str, EvaluationResult]:
    """``{"sampled": ..., "full": ...}`` on ``split.test``; train and validation items are
    excluded from full ranking. Sampled evaluation needs one test item per user (leave-one-out)
    and is skipped otherwise."""
    results: dict[str, EvaluationResult] = {}
    test = split.test
    if len(test) and np.all(test.user_counts() <= 1):
        candidates = heldout_candidates(split, n_candidates, seed)
        results["sampled"] = evaluate_sampled(
            scorer, test.users, test.items, candidates, k=k, ties=ties, seed=seed, ci=ci
        )
        if candidates.shape[1] < n_candidates:
            results["sampled"].notes.append(
                f"only {candidates.shape[1]} negatives per user: the catalogue is too small "
                f"for {n_candidates}"
            )
    results["full"] = evaluate_full(
        scorer, test.csr, split.known(), n_items=test.n_items, k=k, ties=ties, ci=ci
    )
    return results


def flat_metrics(results: dict[str, EvaluationResult]) -> dict[str, float]:
    """One flat dict: sampled metrics under their usual names (``HR@10``), full-ranking ones
    prefixed ``full_`` (``full_HR@10``)."""
    out: dict[str, float] = {}
    for protocol, result in results.items():
        prefix = "" if protocol == "sampled" else "full_"
        for name, value in result.means.items():
            out[prefix + name] = float(value)
    return out

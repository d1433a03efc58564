"""Per-user ranking metrics as vectorised free functions.

Two input shapes:

- ``ranks``: integer 0-based rank of a user's single held-out item among its candidates
  (0 = ranked first). Used by the sampled protocol and for MRR/AUC per held-out item.
- ``hits``: boolean matrix (users x k); ``hits[u, j]`` is True when the item at position ``j`` of
  user ``u``'s top-k list is relevant, with ``n_relevant[u]`` relevant items in all. Used for
  several held-out items per user (full ranking).

Every function returns a float64 array with one value per user; average, bootstrap or slice it.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "auc",
    "bootstrap_ci",
    "coverage",
    "hit_rate",
    "map_at_k",
    "mrr",
    "ndcg",
    "ndcg_at_k",
    "precision_at_k",
    "recall_at_k",
]


def _ranks(ranks: np.ndarray) -> np.ndarray:
    out = np.asarray(ranks)
    if out.size and out.min() < 0:
        raise ValueError("ranks must be 0-based and non-negative")
    return out


def _check_k(k: int) -> None:
    if int(k) < 1:
        raise ValueError(f"k must be a positive integer, got {k}")


def hit_rate(ranks: np.ndarray, k: int) -> np.ndarray:
    """1.0 where the held-out item is in the top ``k`` (rank < k), else 0.0."""
    _check_k(k)
    return (_ranks(ranks) < k).astype(np.float64)


def ndcg(ranks: np.ndarray, k: int) -> np.ndarray:
    """``1 / log2(rank + 2)`` inside the top ``k``, else 0 (one relevant item, so IDCG = 1)."""
    _check_k(k)
    r = _ranks(ranks).astype(np.float64)
    return np.where(r < k, 1.0 / np.log2(r + 2.0), 0.0)


def mrr(ranks: np.ndarray) -> np.ndarray:
    """Reciprocal rank ``1 / (rank + 1)``, not truncated at k."""
    return 1.0 / (_ranks(ranks).astype(np.float64) + 1.0)


def auc(ranks: np.ndarray, n_candidates: np.ndarray | int) -> np.ndarray:
    """Fraction of the ``n_candidates - 1`` negatives ranked below the held-out item.

    ``n_candidates`` counts the held-out item plus its negatives (scalar or per user); with no
    negatives the AUC is 1.
    """
    r = _ranks(ranks).astype(np.float64)
    n_neg = np.asarray(n_candidates, dtype=np.float64) - 1.0
    if np.any(r > np.maximum(n_neg, 0.0)):
        raise ValueError("a rank exceeds the number of negatives (n_candidates - 1)")
    return 1.0 - r / np.maximum(n_neg, 1.0)


def _hits(hits: np.ndarray, n_relevant: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    h = np.asarray(hits, dtype=bool)
    if h.ndim != 2 or h.shape[1] < 1:
        raise ValueError(f"hits must be a 2-D boolean matrix (users x k), got shape {h.shape}")
    if n_relevant is None:
        return h, np.empty(0)
    n = np.asarray(n_relevant, dtype=np.float64).reshape(-1)
    if n.shape[0] != h.shape[0]:
        raise ValueError(f"n_relevant has {n.shape[0]} entries, hits has {h.shape[0]} rows")
    if np.any(h.sum(1) > n):
        raise ValueError("a row of hits has more hits than its n_relevant")
    return h, n


def precision_at_k(hits: np.ndarray) -> np.ndarray:
    """Relevant items in the top k divided by k (k = ``hits.shape[1]``)."""
    h, _ = _hits(hits)
    return h.sum(1) / h.shape[1]


def recall_at_k(hits: np.ndarray, n_relevant: np.ndarray) -> np.ndarray:
    """Relevant items in the top k divided by all of the user's relevant items (0 if none)."""
    h, n = _hits(hits, n_relevant)
    return np.divide(h.sum(1), n, out=np.zeros(h.shape[0]), where=n > 0)


def map_at_k(hits: np.ndarray, n_relevant: np.ndarray) -> np.ndarray:
    """Average precision at k: sum of precision@j at each hit j, over ``min(n_relevant, k)``."""
    h, n = _hits(hits, n_relevant)
    k = h.shape[1]
    prec = np.cumsum(h, axis=1) / np.arange(1, k + 1)
    denom = np.minimum(n, k)
    return np.divide((prec * h).sum(1), denom, out=np.zeros(h.shape[0]), where=denom > 0)


def ndcg_at_k(hits: np.ndarray, n_relevant: np.ndarray) -> np.ndarray:
    """Binary NDCG@k: DCG of the hits over the DCG of ``min(n_relevant, k)`` leading hits."""
    h, n = _hits(hits, n_relevant)
    k = h.shape[1]
    gains = 1.0 / np.log2(np.arange(k) + 2.0)
    dcg = (h * gains).sum(1)
    ideal = np.concatenate([[0.0], np.cumsum(gains)])[np.minimum(n, k).astype(np.int64)]
    return np.divide(dcg, ideal, out=np.zeros(h.shape[0]), where=ideal > 0)


def coverage(topk_items: np.ndarray, n_items: int) -> float:
    """Share of the catalogue that appears in at least one recommended list (ids < 0 ignored)."""
    if n_items < 1:
        raise ValueError(f"n_items must be positive, got {n_items}")
    items = np.asarray(topk_items).reshape(-1)
    items = items[(items >= 0) & (items < n_items)]
    return float(np.count_nonzero(np.bincount(items, minlength=n_items)) / n_items)


def bootstrap_ci(
    values: np.ndarray,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int | np.random.Generator | None = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval for the mean of ``values`` (resampled users).

    Resamples in chunks so memory stays near 8 M draws whatever the number of users.
    """
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    v = v[~np.isnan(v)]
    if v.size == 0:
        return (float("nan"), float("nan"))
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be positive, got {n_boot}")
    rng = np.random.default_rng(seed)
    chunk = max(1, 8_000_000 // v.size)
    means = np.empty(n_boot)
    for start in range(0, n_boot, chunk):
        stop = min(n_boot, start + chunk)
        idx = rng.integers(0, v.size, size=(stop - start, v.size))
        means[start:stop] = v[idx].mean(1)
    low, high = np.quantile(means, [alpha / 2.0, 1.0 - alpha / 2.0])
    return (float(low), float(high))

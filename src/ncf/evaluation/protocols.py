"""Evaluation protocols: sampled (1 + N negatives), full ranking, and labelled pairs.

Ties. The rank of a held-out item is the number of negatives scored strictly higher, plus:
``"pessimistic"`` (default) every tied negative, ``"optimistic"`` none, ``"random"`` a uniform
draw in ``0..n_tied`` (``seed``). Ties never favour the held-out item by default.

He et al.'s ``evaluate.py`` fills a dict ``{item: score}`` with the 99 negatives, then the
positive, and takes ``heapq.nlargest(K, d, key=d.get)``, which equals the stable
``sorted(d, key=d.get, reverse=True)[:K]``: tied items keep dict order. On Python 3.7+ dicts keep
insertion order, so the positive (inserted last) loses every tie: ``"pessimistic"``. The code was
written for Python 2, whose dicts iterate in hash-slot order (about item id modulo table size):
there ties fell in an arbitrary, fixed order. A positive that also appears among the negatives
is a single dict key, so that duplicate is dropped there too (98 negatives), as here; on
Python 3 the key keeps the negative's earlier slot, so the positive wins ties with later items.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp
import torch

from ncf.evaluation import metrics as M
from ncf.evaluation.scoring import as_scorer, score_candidate_block, score_user_block, to_numpy

__all__ = ["EvaluationResult", "Ties", "evaluate_full", "evaluate_labelled", "evaluate_sampled"]

Ties = Literal["pessimistic", "optimistic", "random"]
_TIES = ("pessimistic", "optimistic", "random")
_BLOCK = 1 << 25  # float32 scores per full-ranking batch (128 MiB)


@dataclass
class EvaluationResult:
    """Per-user metric values, their means and optional bootstrap intervals."""

    k: int
    protocol: str
    per_user: dict[str, np.ndarray]
    users: np.ndarray
    means: dict[str, float]
    ci: dict[str, tuple[float, float]] | None = None
    notes: list[str] = field(default_factory=list)
    n_dropped_duplicates: int = 0

    @property
    def n_users(self) -> int:
        return int(self.users.shape[0])

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary (no per-user arrays)."""
        return {
            "protocol": self.protocol,
            "k": self.k,
            "n_users": self.n_users,
            "means": dict(self.means),
            "ci": None if self.ci is None else {m: list(v) for m, v in self.ci.items()},
            "notes": list(self.notes),
            "n_dropped_duplicates": self.n_dropped_duplicates,
        }


def _check(k: int, ties: str, batch_size: int | None) -> None:
    if ties not in _TIES:
        raise ValueError(f"ties must be one of {_TIES}, got {ties!r}")
    if int(k) < 1:
        raise ValueError(f"k must be a positive integer, got {k}")
    if batch_size is not None and int(batch_size) < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size}")


def block_ranks(
    scores: np.ndarray,
    valid: np.ndarray | None = None,
    ties: Ties = "pessimistic",
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """0-based rank of column 0 (the held-out item) among the other columns of each row of
    ``scores``; ``valid`` masks candidate columns out; ``ties`` as in `evaluate_sampled`."""
    s_pos, s_neg = scores[:, :1], scores[:, 1:]
    v = np.ones(s_neg.shape, bool) if valid is None else valid
    gt = np.count_nonzero((s_neg > s_pos) & v, axis=1)
    ge = None if ties == "optimistic" else np.count_nonzero((s_neg >= s_pos) & v, axis=1)
    return _rank(gt, ge, ties, rng if rng is not None else np.random.default_rng(0))


def _rank(gt: np.ndarray, ge: np.ndarray | None, ties: str, rng: np.random.Generator) -> np.ndarray:
    if ties == "optimistic" or ge is None:
        return gt
    if ties == "pessimistic":
        return ge
    return gt + rng.integers(0, ge - gt + 1)


def _summary(
    per_user: dict[str, np.ndarray], ci: bool, seed: int
) -> tuple[dict[str, float], dict[str, tuple[float, float]] | None]:
    means = {name: float(np.mean(v)) if v.size else float("nan") for name, v in per_user.items()}
    intervals = {name: M.bootstrap_ci(v, seed=seed) for name, v in per_user.items()} if ci else None
    return means, intervals


def evaluate_sampled(
    scorer: Any,
    users: np.ndarray,
    pos_items: np.ndarray,
    candidates: np.ndarray,
    k: int = 10,
    ties: Ties = "pessimistic",
    seed: int = 0,
    batch_size: int = 8192,
    ci: bool = False,
) -> EvaluationResult:
    """Rank each held-out item among its N sampled negatives (the NCF paper's protocol).

    ``candidates`` (n, N) holds negative item indices; an entry equal to the row's held-out item
    is dropped (masked) and counted in ``n_dropped_duplicates`` and ``notes``. Reports HR@k,
    NDCG@k, MRR and AUC per user. NaN scores raise ``ValueError``.
    """
    _check(k, ties, batch_size)
    scorer = as_scorer(scorer)
    users = np.asarray(users, dtype=np.int64).reshape(-1)
    pos = np.asarray(pos_items, dtype=np.int64).reshape(-1)
    cand = np.asarray(candidates, dtype=np.int64)
    if cand.ndim != 2 or not users.shape[0] == pos.shape[0] == cand.shape[0]:
        raise ValueError(
            f"expected users (n,), pos_items (n,), candidates (n, N); got {users.shape}, "
            f"{pos.shape}, {cand.shape}"
        )
    if cand.size and cand.min() < 0:
        raise ValueError("candidates must be non-negative item indices")
    valid = cand != pos[:, None]
    n_dup = int(valid.size - np.count_nonzero(valid))
    rng = np.random.default_rng(seed)
    ranks = np.empty(users.shape[0], dtype=np.int64)
    for start in range(0, users.shape[0], batch_size):
        sl = slice(start, start + batch_size)
        items = np.concatenate([pos[sl, None], cand[sl]], axis=1)
        scores = score_candidate_block(scorer, users[sl], items)
        if np.isnan(scores).any():
            raise ValueError("scorer returned NaN scores; has the model diverged?")
        ranks[sl] = block_ranks(scores, valid[sl], ties, rng)
    n_candidates = valid.sum(1) + 1
    per_user = {
        f"HR@{k}": M.hit_rate(ranks, k),
        f"NDCG@{k}": M.ndcg(ranks, k),
        "MRR": M.mrr(ranks),
        "AUC": M.auc(ranks, n_candidates),
    }
    notes = [f"ties: {ties}"]
    if n_dup:
        notes.append(f"dropped {n_dup} candidate(s) equal to the user's held-out item")
    means, intervals = _summary(per_user, ci, seed)
    return EvaluationResult(k, "sampled", per_user, users, means, intervals, notes, n_dup)


def _binary_csr(m: Any, shape: tuple[int, int], name: str) -> sp.csr_matrix:
    out = sp.csr_matrix(m, dtype=np.float32, copy=True)
    if out.shape != shape:
        raise ValueError(f"{name} has shape {out.shape}, expected {shape}")
    out.sum_duplicates()
    out.eliminate_zeros()
    out.data[:] = 1.0
    return out


def _coords(m: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
    return np.repeat(np.arange(m.shape[0]), np.diff(m.indptr)), m.indices


def evaluate_full(
    scorer: Any,
    test: sp.spmatrix,
    exclude: sp.spmatrix | list[sp.spmatrix] | None,
    n_items: int | None = None,
    k: int = 10,
    ties: Ties = "pessimistic",
    batch_size: int | None = None,
    ci: bool = False,
    *,
    seed: int = 0,
) -> EvaluationResult:
    """Rank every held-out item among all items the user has not seen (full ranking).

    ``test`` (users x items CSR) holds one or several held-out items per user; users without any
    are skipped. Items in ``exclude`` (CSR or list of CSRs: train, validation) are never ranked;
    a test item also listed there is kept as a test item (noted). Negatives are all remaining
    items. Reports HR, NDCG, Recall, Precision, MAP at k, MRR, AUC per user and catalogue
    coverage of the top-k lists. Ties between a held-out item and negatives follow ``ties``.
    """
    _check(k, ties, batch_size)
    scorer = as_scorer(scorer)
    shape = tuple(test.shape)
    if n_items is not None and n_items != shape[1]:
        raise ValueError(f"n_items={n_items} but test has {shape[1]} item columns")
    n_items = int(shape[1])
    test = _binary_csr(test, shape, "test")
    parts = exclude if isinstance(exclude, list | tuple) else [] if exclude is None else [exclude]
    excl = sp.csr_matrix(shape, dtype=np.float32)
    for i, part in enumerate(parts):
        excl = excl + _binary_csr(part, shape, f"exclude[{i}]")
    excl = _binary_csr(excl, shape, "exclude")
    overlap = excl.multiply(test).tocsr()
    notes = [f"ties: {ties}"]
    if overlap.nnz:
        excl = _binary_csr(excl - overlap, shape, "exclude")
        notes.append(f"{overlap.nnz} test item(s) also in exclude were kept as test items")
    users = np.flatnonzero(np.diff(test.indptr)).astype(np.int64)
    n_rel = np.diff(test.indptr)[users]
    n_neg = n_items - np.diff(excl.indptr)[users] - n_rel
    kk = min(k, n_items)
    bs = int(batch_size) if batch_size else max(1, _BLOCK // n_items)
    rng = np.random.default_rng(seed)
    rows_all, ranks_all, tops = [], [], []
    for start in range(0, users.shape[0], bs):
        bu = users[start : start + bs]
        block = score_user_block(scorer, bu, n_items)  # float32 numpy, ours to modify
        if np.isnan(block).any():
            raise ValueError("scorer returned NaN scores; has the model diverged?")
        block[_coords(excl[bu])] = -np.inf
        val, idx = torch.topk(torch.from_numpy(block), kk, dim=1)
        tops.append(torch.where(val > -torch.inf, idx, -1).numpy().astype(np.int32))
        sub = test[bu]
        counts = np.diff(sub.indptr)
        trow, tcol = _coords(sub)
        slot = np.arange(trow.shape[0]) - sub.indptr[trow]
        s_pos = block[trow, tcol]
        block[trow, tcol] = -np.inf  # only negatives are left in the block
        gt = np.empty(trow.shape[0], dtype=np.int64)
        ge = None if ties == "optimistic" else np.empty_like(gt)
        for j in range(int(counts.max())):  # one pass per test-item slot, not per user
            sel = np.flatnonzero(slot == j)
            part = block if sel.shape[0] == bu.shape[0] else block[trow[sel]]
            s = s_pos[sel][:, None]
            if ties != "pessimistic":
                gt[sel] = np.count_nonzero(part > s, axis=1)
            if ge is not None:
                ge[sel] = np.count_nonzero(part >= s, axis=1)
        rank = np.minimum(_rank(gt, ge, ties, rng), n_neg[start + trow])
        rows_all.append(start + trow)
        ranks_all.append(rank)
    rows = np.concatenate(rows_all) if rows_all else np.empty(0, np.int64)
    ranks = np.concatenate(ranks_all) if ranks_all else np.empty(0, np.int64)
    order = np.lexsort((ranks, rows))
    rows, ranks = rows[order], ranks[order]
    first = np.cumsum(n_rel) - n_rel
    position = ranks + np.arange(rows.shape[0]) - first[rows]  # positives sorted by rank
    hits = np.zeros((users.shape[0], kk), dtype=bool)
    inside = position < kk
    hits[rows[inside], position[inside]] = True
    auc_each = M.auc(ranks, n_neg[rows] + 1)
    per_user = {
        f"HR@{k}": hits.any(1).astype(np.float64),
        f"NDCG@{k}": M.ndcg_at_k(hits, n_rel),
        f"Recall@{k}": M.recall_at_k(hits, n_rel),
        f"Precision@{k}": M.precision_at_k(hits) * kk / k,
        f"MAP@{k}": M.map_at_k(hits, n_rel),
        "MRR": M.mrr(ranks[first]) if rows.size else np.empty(0),
        "AUC": np.bincount(rows, weights=auc_each, minlength=users.shape[0]) / np.maximum(n_rel, 1),
    }
    top = np.concatenate(tops) if tops else np.empty((0, kk), np.int32)
    means, intervals = _summary(per_user, ci, seed)
    means[f"Coverage@{k}"] = M.coverage(top, n_items)
    return EvaluationResult(k, "full", per_user, users, means, intervals, notes)


def evaluate_labelled(
    scorer: Any,
    users: np.ndarray,
    items: np.ndarray,
    labels: np.ndarray,
    batch_size: int = 65536,
    logits: bool = True,
) -> dict[str, float]:
    """Binary cross-entropy and accuracy on labelled (user, item, 0/1) rows.

    ``logits=True`` reads scores as logits (stable ``log(1 + e^s) - y s``); otherwise as
    probabilities in [0, 1] (clipped by 1e-7). Accuracy predicts 1 where the probability is
    at least 0.5. Returns ``{"loss", "accuracy", "n"}``.
    """
    scorer = as_scorer(scorer)
    users = np.asarray(users, dtype=np.int64).reshape(-1)
    items = np.asarray(items, dtype=np.int64).reshape(-1)
    y = np.asarray(labels, dtype=np.float64).reshape(-1)
    if not users.shape == items.shape == y.shape:
        raise ValueError(
            f"users, items and labels differ in length: {users.shape}, {items.shape}, {y.shape}"
        )
    if users.size == 0 or not np.isin(y, (0.0, 1.0)).all():
        raise ValueError("labels must be 0 or 1, and at least one row is needed")
    _check(1, "pessimistic", batch_size)
    loss, correct = 0.0, 0
    for start in range(0, users.shape[0], batch_size):
        sl = slice(start, start + batch_size)
        s = np.asarray(to_numpy(scorer.score_pairs(users[sl], items[sl])), np.float64).ravel()
        t = y[sl]
        if s.shape != t.shape or np.isnan(s).any():
            raise ValueError("scorer returned NaN or a wrong number of scores")
        if logits:
            loss += float(np.sum(np.logaddexp(0.0, s) - t * s))
            pred = s >= 0.0
        else:
            if s.min() < 0.0 or s.max() > 1.0:
                raise ValueError("logits=False expects probabilities in [0, 1]")
            p = np.clip(s, 1e-7, 1.0 - 1e-7)
            loss -= float(np.sum(t * np.log(p) + (1.0 - t) * np.log1p(-p)))
            pred = s >= 0.5
        correct += int(np.count_nonzero(pred == (t > 0.5)))
    n = users.shape[0]
    return {"loss": loss / n, "accuracy": correct / n, "n": n}

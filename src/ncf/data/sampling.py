"""Exact, vectorised negative sampling.

A sampled negative is never one of the user's positives. Uniform sampling is exact by
construction: it draws a rank ``r`` in the user's complement (``n_items - degree`` items) and
maps it to the r-th item the user has not touched with one vectorised binary search over the
CSR rows. Popularity-weighted sampling draws from ``popularity ** alpha`` and redraws hits on
positives; rows that keep hitting positives fall back to an exact per-user draw.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

from ncf.errors import SplitError

_CHUNK = 1 << 20  # rows per vectorised chunk: bounds temporary memory


def _searchsorted(sorted_keys: np.ndarray, queries: np.ndarray, right: bool = False) -> np.ndarray:
    """Binary search; torch's kernel is several times faster than numpy's on unsorted queries."""
    return torch.searchsorted(
        torch.from_numpy(sorted_keys), torch.from_numpy(queries), right=right
    ).numpy()


def _as_rng(seed: int | np.random.Generator | None) -> np.random.Generator:
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


class NegativeSampler:
    """Draws items a user has not interacted with.

    Args:
        positives: user x item CSR of every item that must never be sampled for the user
            (for evaluation candidates this is train + validation + test).
        alpha: 0 for uniform sampling; otherwise items are drawn proportionally to
            ``popularity ** alpha`` (word2vec uses 0.75).
        popularity: item counts used when ``alpha > 0``; defaults to the column sums.
    """

    def __init__(
        self,
        positives: sp.csr_matrix,
        alpha: float = 0.0,
        popularity: np.ndarray | None = None,
    ) -> None:
        csr = sp.csr_matrix(positives, copy=False)
        csr.sort_indices()
        self.n_users, self.n_items = csr.shape
        self.indptr = csr.indptr.astype(np.int64)
        self.indices = csr.indices.astype(np.int64)
        self.degree = np.diff(self.indptr)
        # Per user, positive p_k (sorted) minus k: the number of non-positives below p_k.
        # Offsetting by user * n_items makes the array globally sorted for one searchsorted.
        within = np.arange(len(self.indices)) - np.repeat(self.indptr[:-1], self.degree)
        row_of = np.repeat(np.arange(self.n_users, dtype=np.int64), self.degree)
        self._gap_keys = row_of * self.n_items + (self.indices - within)
        self._pair_keys = row_of * self.n_items + self.indices
        self.alpha = float(alpha)
        if self.alpha:
            pop = np.asarray(csr.sum(axis=0)).ravel() if popularity is None else popularity
            weights = np.asarray(pop, np.float64) ** self.alpha
            if not np.isfinite(weights).all() or weights.sum() <= 0:
                raise ValueError("popularity ** alpha must be finite with a positive sum")
            self._cdf = np.cumsum(weights) / weights.sum()
            self._weights = weights

    def is_positive(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Boolean mask: is (user, item) one of the positives?"""
        keys = np.asarray(users, np.int64) * self.n_items + np.asarray(items, np.int64)
        pos = _searchsorted(self._pair_keys, keys)
        pos = np.minimum(pos, len(self._pair_keys) - 1)
        return self._pair_keys[pos] == keys if len(self._pair_keys) else np.zeros(len(keys), bool)

    def sample(
        self,
        users: np.ndarray,
        seed: int | np.random.Generator | None = None,
        out: np.ndarray | None = None,
    ) -> np.ndarray:
        """One negative item per entry of ``users`` (repeat users for several).

        Writes into ``out`` when given (any integer dtype wide enough), else returns int64.
        """
        users = np.asarray(users)
        rng = _as_rng(seed)
        if len(users) and (self.n_items - self.degree).min() <= 0:
            full = np.flatnonzero(self.degree >= self.n_items)
            if np.isin(users, full).any():
                bad = users[np.isin(users, full)][0]
                raise SplitError(f"user index {bad} has interacted with every item: no negatives")
        if out is None:
            out = np.empty(len(users), np.int64)
        for start in range(0, len(users), _CHUNK):
            chunk = users[start : start + _CHUNK].astype(np.int64)
            if self.alpha:
                out[start : start + _CHUNK] = self._sample_popular(chunk, rng)
            else:
                out[start : start + _CHUNK] = self._sample_uniform(chunk, rng)
        return out

    def _sample_uniform(self, users: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        free = self.n_items - self.degree[users]
        ranks = (rng.random(len(users)) * free).astype(np.int64)
        ranks = np.minimum(ranks, free - 1)
        keys = users * self.n_items + ranks
        below = _searchsorted(self._gap_keys, keys, right=True) - self.indptr[users]
        return ranks + below

    def _sample_popular(self, users: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        items = np.searchsorted(self._cdf, rng.random(len(users)), side="right")
        items = np.minimum(items, self.n_items - 1)
        todo = np.flatnonzero(self.is_positive(users, items))
        for _ in range(20):
            if not len(todo):
                return items
            redraw = np.searchsorted(self._cdf, rng.random(len(todo)), side="right")
            items[todo] = np.minimum(redraw, self.n_items - 1)
            todo = todo[self.is_positive(users[todo], items[todo])]
        # Users whose positives hold most of the popularity mass: exact draw per user.
        for user in np.unique(users[todo]):
            rows = todo[users[todo] == user]
            weights = self._weights.copy()
            weights[self.indices[self.indptr[user] : self.indptr[user + 1]]] = 0.0
            items[rows] = rng.choice(self.n_items, size=len(rows), p=weights / weights.sum())
        return items

    def sample_per_positive(
        self,
        users: np.ndarray,
        n_negatives: int,
        seed: int | np.random.Generator | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """``n_negatives`` negatives for each positive's user.

        Returns int32 ``(neg_users, neg_items)``: all first negatives, then all second
        negatives, ..., which keeps memory access sequential. Positives of users who have
        interacted with every item cannot have negatives and are left out.
        """
        users = np.asarray(users, np.int32)
        saturated = self.degree >= self.n_items
        if saturated.any():
            users = users[~saturated[users]]
        rng = _as_rng(seed)
        n = len(users)
        neg_items = np.empty(n * n_negatives, np.int32)
        for j in range(n_negatives):
            self.sample(users, rng, out=neg_items[j * n : (j + 1) * n])
        return np.tile(users, n_negatives), neg_items

    def sample_candidates(
        self,
        users: np.ndarray,
        n_candidates: int = 99,
        seed: int | np.random.Generator | None = None,
        *,
        cap: bool = False,
    ) -> np.ndarray:
        """``n_candidates`` distinct negatives per user: an int64 array (len(users), N).

        With ``cap``, N is lowered to the fewest non-interacted items any of these users has
        (small catalogues); otherwise that case raises SplitError.
        """
        users = np.asarray(users, np.int64)
        rng = _as_rng(seed)
        free = self.n_items - self.degree[users]
        if cap and len(users):
            n_candidates = max(1, min(n_candidates, int(free.min())))
        if len(users) and free.min() < n_candidates:
            bad = users[np.argmin(free)]
            raise SplitError(
                f"user index {bad} has only {free.min()} non-interacted items; "
                f"{n_candidates} evaluation candidates were requested"
            )
        grid = np.repeat(users, n_candidates)
        cands = self.sample(grid, rng).reshape(len(users), n_candidates)
        for _ in range(1000):
            dup = _duplicate_mask(cands)
            if not dup.any():
                return cands
            rows = np.nonzero(dup)
            cands[rows] = self.sample(users[rows[0]], rng)
        raise RuntimeError("could not draw distinct candidates")  # pragma: no cover


def _duplicate_mask(cands: np.ndarray) -> np.ndarray:
    """True where a value repeats an earlier value in the same row."""
    order = np.argsort(cands, axis=1, kind="stable")
    sorted_vals = np.take_along_axis(cands, order, axis=1)
    dup_sorted = np.zeros_like(sorted_vals, dtype=bool)
    dup_sorted[:, 1:] = sorted_vals[:, 1:] == sorted_vals[:, :-1]
    mask = np.zeros_like(dup_sorted)
    np.put_along_axis(mask, order, dup_sorted, axis=1)
    return mask


def sample_negatives(
    positives: sp.csr_matrix,
    users: np.ndarray,
    n_negatives: int = 4,
    *,
    alpha: float = 0.0,
    seed: int | np.random.Generator | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Convenience wrapper: ``n_negatives`` exact negatives per positive (see NegativeSampler)."""
    return NegativeSampler(positives, alpha=alpha).sample_per_positive(users, n_negatives, seed)

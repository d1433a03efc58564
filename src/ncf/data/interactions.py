"""The `Interactions` object: implicit feedback with id vocabularies and a CSR view."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from ncf.data.vocabulary import Vocabulary
from ncf.errors import DataError

DUPLICATE_RULE = (
    "duplicate (user, item) pairs collapse to one interaction: the latest timestamp is kept with "
    "its rating, and weights are summed"
)


class Interactions:
    """Validated implicit feedback: one row per distinct (user, item) pair.

    Rows are stored in a canonical order: by user index, then timestamp (when present), then
    the order in which they were given. This order makes leave-one-out splits deterministic:
    the last row of each user is the latest interaction, ties broken by input order.

    Attributes:
        users, items: int64 index arrays (one entry per positive).
        timestamps, ratings: optional float64 arrays aligned with users/items.
        weights: float32 confidence weights (1 unless given or summed from duplicates).
        user_vocab, item_vocab: two-way raw id <-> index mappings.
        negatives: optional (users, items) index arrays of explicit negatives given as labelled
            rows (label 0), kept for training as given.
    """

    def __init__(
        self,
        users: np.ndarray,
        items: np.ndarray,
        user_vocab: Vocabulary,
        item_vocab: Vocabulary,
        *,
        timestamps: np.ndarray | None = None,
        ratings: np.ndarray | None = None,
        weights: np.ndarray | None = None,
        negatives: tuple[np.ndarray, np.ndarray] | None = None,
        source: str | None = None,
    ) -> None:
        users = np.asarray(users, dtype=np.int64)
        items = np.asarray(items, dtype=np.int64)
        n = len(users)
        if len(items) != n:
            raise DataError(f"users and items differ in length ({n} vs {len(items)})", path=source)
        for name, arr in (("timestamp", timestamps), ("rating", ratings), ("weight", weights)):
            if arr is not None and len(arr) != n:
                raise DataError(f"{name} array has length {len(arr)}, expected {n}", path=source)
        _check_index_range(users, len(user_vocab), "user", source)
        _check_index_range(items, len(item_vocab), "item", source)
        self.user_vocab = user_vocab
        self.item_vocab = item_vocab
        self.source = source
        ts = None if timestamps is None else np.asarray(timestamps, dtype=np.float64)
        rt = None if ratings is None else np.asarray(ratings, dtype=np.float64)
        wt = np.ones(n, np.float32) if weights is None else np.asarray(weights, np.float32)
        for name, arr in (("timestamp", ts), ("rating", rt), ("weight", wt)):
            if arr is not None and arr.size and not np.all(np.isfinite(arr)):
                bad = int(np.flatnonzero(~np.isfinite(arr))[0])
                raise DataError(f"{name} is NaN or infinite at row {bad}", path=source, field=name)
        self.users, self.items, self.timestamps, self.ratings, self.weights = _canonicalise(
            users, items, ts, rt, wt, len(item_vocab)
        )
        if negatives is not None:
            nu, ni = (np.asarray(a, dtype=np.int64) for a in negatives)
            _check_index_range(nu, len(user_vocab), "negative user", source)
            _check_index_range(ni, len(item_vocab), "negative item", source)
            negatives = (nu, ni)
        self.negatives = negatives
        self._csr: sp.csr_matrix | None = None

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_arrays(
        cls,
        users: Any,
        items: Any,
        *,
        timestamps: Any = None,
        ratings: Any = None,
        weights: Any = None,
        labels: Any = None,
        rating_threshold: float | None = None,
        source: str | None = None,
    ) -> Interactions:
        """Build from raw ids (strings or integers). See `from_frame` for the options."""
        frame = pd.DataFrame({"user": np.asarray(users), "item": np.asarray(items)})
        for name, values in (
            ("timestamp", timestamps),
            ("rating", ratings),
            ("weight", weights),
            ("label", labels),
        ):
            if values is not None:
                frame[name] = np.asarray(values)
        return cls.from_frame(frame, rating_threshold=rating_threshold, source=source)

    @classmethod
    def from_frame(
        cls,
        frame: pd.DataFrame,
        *,
        user_col: str = "user",
        item_col: str = "item",
        timestamp_col: str | None = "timestamp",
        rating_col: str | None = "rating",
        weight_col: str | None = "weight",
        label_col: str | None = "label",
        rating_threshold: float | None = None,
        source: str | None = None,
    ) -> Interactions:
        """Build from a DataFrame of raw ids.

        Optional columns (used when present): timestamp, rating, weight, label. With a label
        column, rows labelled 1 are the positives and rows labelled 0 are kept as given
        negatives. With ``rating_threshold``, only ratings >= threshold count as positives;
        by default every interaction counts.
        """
        for col in (user_col, item_col):
            if col not in frame.columns:
                raise DataError(
                    f"missing column {col!r}; columns present: {list(frame.columns)}",
                    path=source,
                    field=col,
                )
        if len(frame) == 0:
            raise DataError("no interactions: the data is empty", path=source)
        if frame[user_col].isna().any() or frame[item_col].isna().any():
            col = user_col if frame[user_col].isna().any() else item_col
            row = int(np.flatnonzero(frame[col].isna().to_numpy())[0])
            raise DataError(f"empty id at row {row}", path=source, field=col)

        def opt(col: str | None) -> np.ndarray | None:
            if col is None or col not in frame.columns:
                return None
            return _numeric(frame[col], col, source)

        ts, rt, wt, lb = opt(timestamp_col), opt(rating_col), opt(weight_col), opt(label_col)
        user_vocab, user_codes = Vocabulary.from_values(frame[user_col].to_numpy(), "user")
        item_vocab, item_codes = Vocabulary.from_values(frame[item_col].to_numpy(), "item")
        keep = np.ones(len(frame), dtype=bool)
        negatives = None
        if lb is not None:
            if not np.isin(lb, (0.0, 1.0)).all():
                row = int(np.flatnonzero(~np.isin(lb, (0.0, 1.0)))[0])
                raise DataError(f"label must be 0 or 1 at row {row}", path=source, field=label_col)
            keep &= lb == 1
            negatives = (user_codes[lb == 0], item_codes[lb == 0])
        if rating_threshold is not None:
            if rt is None:
                raise DataError("rating_threshold given but there is no rating column", path=source)
            keep &= rt >= rating_threshold
        if not keep.any():
            raise DataError("no positive interactions remain after filtering", path=source)

        def sub(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else a[keep]

        return cls(
            user_codes[keep],
            item_codes[keep],
            user_vocab,
            item_vocab,
            timestamps=sub(ts),
            ratings=sub(rt),
            weights=sub(wt),
            negatives=negatives,
            source=source,
        )

    # ------------------------------------------------------------------ views
    @property
    def n_users(self) -> int:
        return len(self.user_vocab)

    @property
    def n_items(self) -> int:
        return len(self.item_vocab)

    @property
    def shape(self) -> tuple[int, int]:
        return (self.n_users, self.n_items)

    def __len__(self) -> int:
        return len(self.users)

    def __repr__(self) -> str:
        return (
            f"Interactions(users={self.n_users}, items={self.n_items}, "
            f"interactions={len(self)}, timestamps={self.timestamps is not None})"
        )

    @property
    def csr(self) -> sp.csr_matrix:
        """User x item CSR matrix of weights, indices sorted within each row."""
        if self._csr is None:
            counts = np.bincount(self.users, minlength=self.n_users)
            indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
            order = _stable_argsort(self.users * self.n_items + self.items)
            self._csr = sp.csr_matrix(
                (self.weights[order], self.items[order], indptr), shape=self.shape
            )
        return self._csr

    def user_counts(self) -> np.ndarray:
        return np.bincount(self.users, minlength=self.n_users)

    def item_counts(self) -> np.ndarray:
        """Number of users per item (popularity)."""
        return np.bincount(self.items, minlength=self.n_items)

    def subset(self, mask: np.ndarray) -> Interactions:
        """Rows selected by a boolean mask, sharing this object's vocabularies."""
        return Interactions(
            self.users[mask],
            self.items[mask],
            self.user_vocab,
            self.item_vocab,
            timestamps=None if self.timestamps is None else self.timestamps[mask],
            ratings=None if self.ratings is None else self.ratings[mask],
            weights=self.weights[mask],
            source=self.source,
        )

    def to_frame(self, raw_ids: bool = True) -> pd.DataFrame:
        """The interactions as a DataFrame (raw ids by default)."""
        users = self.user_vocab.raw(self.users) if raw_ids else self.users
        items = self.item_vocab.raw(self.items) if raw_ids else self.items
        frame = pd.DataFrame({"user": users, "item": items})
        if self.timestamps is not None:
            frame["timestamp"] = self.timestamps
        if self.ratings is not None:
            frame["rating"] = self.ratings
        frame["weight"] = self.weights
        return frame

    def summary(self) -> dict[str, Any]:
        """Counts and density, for `ncf data stats`."""
        uc, ic = self.user_counts(), self.item_counts()
        return {
            "users": self.n_users,
            "items": self.n_items,
            "interactions": len(self),
            "density": len(self) / max(1, self.n_users * self.n_items),
            "min_user_interactions": int(uc.min()),
            "median_user_interactions": float(np.median(uc)),
            "max_item_popularity": int(ic.max()),
            "cold_items": int((ic == 0).sum()),
            "has_timestamps": self.timestamps is not None,
            "given_negatives": 0 if self.negatives is None else len(self.negatives[0]),
        }


def _check_index_range(idx: np.ndarray, size: int, name: str, source: str | None) -> None:
    if idx.size and (idx.min() < 0 or idx.max() >= size):
        raise DataError(f"{name} index out of range [0, {size})", path=source)


def _numeric(series: pd.Series, col: str, source: str | None) -> np.ndarray:
    values = pd.to_numeric(series, errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isfinite(values)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"expected a finite number, got {series.iloc[row]!r} at row {row}",
            path=source,
            field=col,
        )
    return values


def _stable_argsort(keys: np.ndarray) -> np.ndarray:
    """Stable argsort; torch's is several times faster than numpy's on large arrays."""
    return torch.sort(torch.from_numpy(np.ascontiguousarray(keys)), stable=True)[1].numpy()


def _canonicalise(
    users: np.ndarray,
    items: np.ndarray,
    ts: np.ndarray | None,
    rt: np.ndarray | None,
    wt: np.ndarray,
    n_items: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None, np.ndarray]:
    """Sort rows by (user, timestamp, input order) and collapse duplicate pairs."""
    if ts is None:
        order = _stable_argsort(users)
    else:
        by_time = _stable_argsort(ts)
        order = by_time[_stable_argsort(users[by_time])]
    users, items, wt = users[order], items[order], wt[order]
    ts = None if ts is None else ts[order]
    rt = None if rt is None else rt[order]
    pair = users * n_items + items
    sorted_pairs = np.sort(pair)
    if not (sorted_pairs[1:] == sorted_pairs[:-1]).any():
        return users, items, ts, rt, wt
    # The last occurrence of a pair in canonical order is the latest one: keep it.
    rev_unique, rev_first = np.unique(pair[::-1], return_index=True)
    keep = np.sort(len(pair) - 1 - rev_first)
    weight_sum = np.zeros(len(rev_unique), np.float64)
    np.add.at(weight_sum, np.searchsorted(rev_unique, pair), wt)
    new_wt = weight_sum[np.searchsorted(rev_unique, pair[keep])].astype(np.float32)
    return (
        users[keep],
        items[keep],
        None if ts is None else ts[keep],
        None if rt is None else rt[keep],
        new_wt,
    )

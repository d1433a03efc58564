"""Two-way mapping between raw ids (strings or integers) and contiguous indices."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from ncf.errors import UnknownIdError


class Vocabulary:
    """Raw id <-> index mapping.

    Index ``i`` corresponds to ``ids[i]``. Ids are kept as a numpy array of integers when every
    raw id is an integer, and of Python strings otherwise, so that a saved vocabulary round-trips
    through JSON without changing type.
    """

    def __init__(self, ids: Sequence[Any] | np.ndarray, name: str = "id") -> None:
        arr = _normalise_ids(np.asarray(ids))
        self.name = name
        self.ids = arr
        self._index = pd.Index(arr)
        if not self._index.is_unique:
            dup = self._index[self._index.duplicated()][0]
            raise ValueError(f"{name} vocabulary has a duplicate raw id: {dup!r}")

    @classmethod
    def from_values(cls, values: np.ndarray, name: str = "id") -> tuple[Vocabulary, np.ndarray]:
        """Build a vocabulary of the sorted distinct raw values; return the codes too.

        Sorting makes contiguous 0-based integer ids map to themselves (index == id).
        """
        codes, uniques = pd.factorize(_normalise_ids(np.asarray(values)), sort=True)
        return cls(np.asarray(uniques), name=name), codes.astype(np.int64)

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, raw: Any) -> bool:
        return raw in self._index

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocabulary) and np.array_equal(self.ids, other.ids)

    def __repr__(self) -> str:
        return f"Vocabulary({self.name!r}, size={len(self)})"

    @property
    def is_integer(self) -> bool:
        return self.ids.dtype.kind in "iu"

    def index(self, raw: Any, *, missing: str = "raise") -> np.ndarray:
        """Map raw ids to indices; unknown ids raise UnknownIdError, or give -1 with "mask"."""
        values = np.atleast_1d(np.asarray(raw, dtype=object))
        if self.is_integer:
            # Element-wise: integers (or integral strings) look up; anything else is unknown.
            numeric = pd.to_numeric(pd.Series(values, dtype=object), errors="coerce")
            ok = numeric.notna().to_numpy() & (numeric == numeric.round()).to_numpy()
            lookup = np.where(ok, numeric.fillna(-1).to_numpy(), -1).astype(np.int64)
            codes = np.where(ok, self._index.get_indexer(lookup), -1)
        else:
            codes = self._index.get_indexer(values.astype(str).astype(object))
        if missing == "raise" and (codes < 0).any():
            unknown = values[codes < 0][:5].tolist()
            raise UnknownIdError(f"unknown {self.name} id(s): {unknown}")
        return codes.astype(np.int64)

    def raw(self, index: np.ndarray | int) -> np.ndarray:
        """Map indices back to raw ids."""
        return self.ids[np.asarray(index)]

    def to_list(self) -> list[Any]:
        """JSON-serialisable list of raw ids in index order."""
        return self.ids.tolist()


def _normalise_ids(values: np.ndarray) -> np.ndarray:
    """Integers stay int64; anything else becomes an object array of str."""
    if values.dtype.kind in "iu":
        return values.astype(np.int64)
    if values.dtype.kind == "b":
        raise ValueError("ids must be integers or strings, got booleans")
    if values.dtype.kind == "f":
        if values.size and not np.all(np.isfinite(values)):
            raise ValueError("ids must not be NaN or infinite")
        if values.size and np.all(values == np.round(values)):
            return values.astype(np.int64)
        raise ValueError("ids must be integers or strings, got non-integral floats")
    if (
        values.dtype.kind == "O"
        and values.size
        and all(isinstance(v, int | np.integer) for v in values[:1000])
    ):
        try:
            return values.astype(np.int64)
        except (TypeError, ValueError):
            pass
    return values.astype(str).astype(object)

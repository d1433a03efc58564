"""Compiled (numba) CPU loops for embedding gradients, where torch's kernels are slow.

torch's ``index_add_``/``scatter_add_`` (the backward of a row gather) costs several times
more than a plain loop on CPU for the narrow rows of recommender embeddings; these loops
are that plain loop. They are compiled on first use in each process (under a second) and
not cached on disk: processes compiling into numba's cache at the same time (the ranks of a
distributed run) can corrupt it and crash (numba issue 4807).
"""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(nogil=True, fastmath=True)
def scatter_add_rows(idx: np.ndarray, rows: np.ndarray, out: np.ndarray) -> None:
    """``out[idx[r]] += rows[r]`` for every r, in order (duplicates accumulate)."""
    d = rows.shape[1]
    for r in range(idx.shape[0]):
        i = idx[r]
        for k in range(d):
            out[i, k] += rows[r, k]


@numba.njit(nogil=True)
def sum_rows(idx, grad, slot, touched, compact):  # noqa: ANN001, ANN201
    """Sum gradient rows per table row into ``compact`` (last column: how often the row
    occurs). ``slot`` maps a table row to its place (-1 between calls). Returns the number
    of distinct rows; ``touched`` lists them in order of first occurrence."""
    d = grad.shape[1]
    count = 0
    for r in range(idx.shape[0]):
        i = idx[r]
        s = slot[i]
        if s < 0:
            s = count
            slot[i] = s
            touched[s] = i
            count += 1
            for k in range(d + 1):
                compact[s, k] = 0.0
        for k in range(d):
            compact[s, k] += grad[r, k]
        compact[s, d] += 1.0
    for s in range(count):
        slot[touched[s]] = -1
    return count

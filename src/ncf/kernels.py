"""Compiled (numba) CPU loops over embedding rows, where torch's kernels are slow or need
several passes.

torch's ``index_add_``/``scatter_add_`` (the backward of a row gather) costs several times
more than a plain loop on CPU for the narrow rows of recommender embeddings; these loops
are that plain loop. The hand-written training step (``ncf.training.fast_step``) also
gathers and sums rows of two tables, and computes NeuMF's GMF term and its gradients, in
one pass each instead of materialising batch-sized intermediates.

The loops are compiled on first use in each process (about 1.3 s for all of them) and not
cached on disk: processes compiling into numba's cache at the same time (the ranks of a
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


@numba.njit(nogil=True, fastmath=True)
def gather_sum_rows(a: np.ndarray, ia: np.ndarray, b: np.ndarray, ib: np.ndarray, out: np.ndarray):
    """``out[r] = a[ia[r]] + b[ib[r]]``: a linear layer's two halves, projected per table."""
    d = out.shape[1]
    for r in range(ia.shape[0]):
        x, y = ia[r], ib[r]
        for k in range(d):
            out[r, k] = a[x, k] + b[y, k]


@numba.njit(nogil=True, fastmath=True)
def add_gathered_rows(table: np.ndarray, idx: np.ndarray, out: np.ndarray) -> None:
    """``out[r] += table[idx[r]]`` for every r."""
    d = out.shape[1]
    for r in range(idx.shape[0]):
        i = idx[r]
        for k in range(d):
            out[r, k] += table[i, k]


@numba.njit(nogil=True, fastmath=True)
def weighted_dots(a, ia, b, ib, w, out):  # noqa: ANN001, ANN201
    """``out[r] = sum_k a[ia[r], k] * b[ib[r], k] * w[k]`` (GMF's output term)."""
    d = a.shape[1]
    for r in range(ia.shape[0]):
        x, y = ia[r], ib[r]
        s = 0.0
        for k in range(d):
            s += a[x, k] * b[y, k] * w[k]
        out[r] = s


@numba.njit(nogil=True, fastmath=True)
def weighted_dots_backward(a, ia, b, ib, w, grad, ga, gb, gw):  # noqa: ANN001, ANN201
    """Gradients of ``weighted_dots`` for upstream ``grad`` (one value per row), added into
    ``ga``, ``gb`` (tables, rows accumulate) and ``gw``."""
    d = a.shape[1]
    acc = np.zeros(d, np.float64)
    for r in range(ia.shape[0]):
        x, y, g = ia[r], ib[r], grad[r]
        for k in range(d):
            av, bv = a[x, k], b[y, k]
            ga[x, k] += g * w[k] * bv
            gb[y, k] += g * w[k] * av
            acc[k] += g * av * bv
    for k in range(d):
        gw[k] += acc[k]


@numba.njit(nogil=True, fastmath=True)
def weighted_dots_row_grads(a, ia, b, ib, w, grad, ra, rb, gw):  # noqa: ANN001, ANN201
    """Per-row gradients of ``weighted_dots`` (``ra[r]`` for ``a[ia[r]]``, ``rb[r]`` for
    ``b[ib[r]]``), for tables whose gradients stay sparse; ``gw`` as in the fused form."""
    d = a.shape[1]
    acc = np.zeros(d, np.float64)
    for r in range(ia.shape[0]):
        x, y, g = ia[r], ib[r], grad[r]
        for k in range(d):
            av, bv = a[x, k], b[y, k]
            ra[r, k] = g * w[k] * bv
            rb[r, k] = g * w[k] * av
            acc[k] += g * av * bv
    for k in range(d):
        gw[k] += acc[k]

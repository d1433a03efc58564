"""Scorer protocol and adapters: what the evaluation layer needs from a model.

A scorer returns one float per (user index, item index) pair; higher means more relevant.
Scores may be logits or probabilities: ranking metrics only use their order.

Optional fast paths, used by the protocols when present:

- ``score_users(users) -> (len(users), n_items)``: a dense block for full ranking. Return a
  fresh array: the evaluation writes ``-inf`` into it (arrays that do not own their memory
  are copied first).
- ``score_candidates(users, items) -> (len(users), items.shape[1])``: scores for a 2-D block of
  candidate items per user, for sampled ranking (saves repeating each user's row).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "DotProductScorer",
    "Scorer",
    "as_scorer",
    "score_candidate_block",
    "score_user_block",
    "to_numpy",
]

_PAIRS = 1 << 22  # pairs per score_pairs call when building blocks from pairs
_CACHE = 1 << 21  # gathered factor values per chunk in DotProductScorer (8 MiB)


@runtime_checkable
class Scorer(Protocol):
    """Anything with ``score_pairs``; ``score_users`` is optional (see module docstring)."""

    def score_pairs(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Return a 1-D float array of scores, one per (users[i], items[i]) pair."""
        ...


def to_numpy(values: Any) -> np.ndarray:
    """Convert a torch tensor, numpy array or sequence to a numpy array (no copy if possible)."""
    if isinstance(values, torch.Tensor):
        return values.detach().cpu().numpy()
    return np.asarray(values)


class _CallableScorer:
    """Wraps ``f(users, items) -> scores`` (numpy in, array-like out)."""

    def __init__(self, func: Callable[[np.ndarray, np.ndarray], Any]) -> None:
        self.func = func

    def score_pairs(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        return to_numpy(self.func(users, items)).reshape(-1)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.func!r})"


class _ModuleScorer:
    """Wraps a ``torch.nn.Module`` called as ``module(users, items)`` on int64 tensors."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.module = module

    def score_pairs(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        param = next(self.module.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        u = torch.as_tensor(np.asarray(users, dtype=np.int64), device=device)
        i = torch.as_tensor(np.asarray(items, dtype=np.int64), device=device)
        with torch.no_grad():
            return to_numpy(self.module(u, i)).reshape(-1)


def as_scorer(obj: Any) -> Scorer:
    """Return ``obj`` if it has ``score_pairs``, else wrap a ``torch.nn.Module`` or a callable.

    A callable is called as ``f(users, items)`` with int64 numpy arrays and may return a numpy
    array or a tensor. A module is called with int64 tensors on its own device, under no_grad.
    """
    if callable(getattr(obj, "score_pairs", None)):
        return obj
    if isinstance(obj, torch.nn.Module):
        return _ModuleScorer(obj)
    if callable(obj):
        return _CallableScorer(obj)
    raise TypeError(
        f"expected an object with score_pairs(users, items) or a callable f(users, items), "
        f"got {type(obj).__name__}"
    )


def score_candidate_block(scorer: Any, users: np.ndarray, items: np.ndarray) -> np.ndarray:
    """Scores for ``items`` (b, M) of ``users`` (b,): ``score_candidates`` or flattened pairs."""
    if callable(getattr(scorer, "score_candidates", None)):
        out = to_numpy(scorer.score_candidates(users, items))
    else:
        out = to_numpy(scorer.score_pairs(np.repeat(users, items.shape[1]), items.reshape(-1)))
    if out.size != items.size:
        raise ValueError(f"scorer returned {out.size} scores for {items.size} pairs")
    return out.reshape(items.shape)


def score_user_block(scorer: Any, users: np.ndarray, n_items: int) -> np.ndarray:
    """A fresh, writable float32 (len(users), n_items) block of scores.

    Uses ``score_users`` when present (copying arrays that do not own their memory), else
    ``score_pairs`` over the users x all-items grid in bounded chunks.
    """
    if callable(getattr(scorer, "score_users", None)):
        raw = scorer.score_users(users)
        fresh = isinstance(raw, np.ndarray) and raw.flags.owndata
        arr = to_numpy(raw)
        block = np.require(arr if fresh else arr.copy(), np.float32, ["C", "W"])
    else:
        block = np.empty((users.shape[0], n_items), dtype=np.float32)
        step = max(1, _PAIRS // max(n_items, 1))
        grid = np.arange(n_items, dtype=np.int64)
        for s in range(0, users.shape[0], step):
            u = users[s : s + step]
            flat = to_numpy(scorer.score_pairs(np.repeat(u, n_items), np.tile(grid, u.shape[0])))
            block[s : s + step] = np.asarray(flat, np.float32).reshape(u.shape[0], n_items)
    if block.shape != (users.shape[0], n_items):
        raise ValueError(
            f"scorer returned a block of {block.shape}, expected {(users.shape[0], n_items)}"
        )
    return block


class DotProductScorer:
    """Scores ``u . v + b_u + b_i`` from factor matrices (numpy arrays or tensors).

    Implements ``score_pairs``, ``score_users`` and ``score_candidates`` in float32.
    """

    def __init__(
        self,
        user_factors: Any,
        item_factors: Any,
        user_bias: Any | None = None,
        item_bias: Any | None = None,
    ) -> None:
        self.user_factors = torch.as_tensor(to_numpy(user_factors), dtype=torch.float32)
        self.item_factors = torch.as_tensor(to_numpy(item_factors), dtype=torch.float32)
        if self.user_factors.ndim != 2 or self.item_factors.ndim != 2:
            raise ValueError("user_factors and item_factors must be 2-D (rows x factors)")
        if self.user_factors.shape[1] != self.item_factors.shape[1]:
            raise ValueError(
                f"factor sizes differ: users have {self.user_factors.shape[1]}, "
                f"items have {self.item_factors.shape[1]}"
            )
        self.user_bias = self._bias(user_bias, self.user_factors.shape[0], "user_bias")
        self.item_bias = self._bias(item_bias, self.item_factors.shape[0], "item_bias")

    @staticmethod
    def _bias(bias: Any | None, n: int, name: str) -> torch.Tensor | None:
        if bias is None:
            return None
        out = torch.as_tensor(to_numpy(bias), dtype=torch.float32).reshape(-1)
        if out.shape[0] != n:
            raise ValueError(f"{name} has {out.shape[0]} entries, expected {n}")
        return out

    @property
    def n_items(self) -> int:
        return int(self.item_factors.shape[0])

    def score_pairs(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        return self.score_candidates(np.asarray(users), np.asarray(items)[:, None]).reshape(-1)

    def score_candidates(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        u = torch.as_tensor(np.asarray(users, dtype=np.int64))
        i = torch.as_tensor(np.asarray(items, dtype=np.int64))
        out = torch.empty(i.shape, dtype=torch.float32)
        step = max(1, _CACHE // max(1, i.shape[1] * self.item_factors.shape[1]))
        for s in range(0, u.shape[0], step):  # small chunks keep the gathered rows in cache
            uu, ii = u[s : s + step], i[s : s + step]
            vecs = F.embedding(ii, self.item_factors)
            dots = torch.bmm(vecs, F.embedding(uu, self.user_factors).unsqueeze(2)).squeeze(2)
            out[s : s + step] = self._add_bias(dots, uu[:, None], ii)
        return out.numpy()

    def score_users(self, users: np.ndarray) -> np.ndarray:
        u = np.asarray(users, dtype=np.int64)
        out = self.user_factors.numpy()[u] @ self.item_factors.numpy().T  # a fresh array
        if self.user_bias is not None:
            out += self.user_bias.numpy()[u][:, None]
        if self.item_bias is not None:
            out += self.item_bias.numpy()[None, :]
        return out

    def _add_bias(self, out: torch.Tensor, u: torch.Tensor, i: torch.Tensor) -> torch.Tensor:
        if self.user_bias is not None:
            out = out + self.user_bias[u]
        if self.item_bias is not None:
            out = out + self.item_bias[i]
        return out

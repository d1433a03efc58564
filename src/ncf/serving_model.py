"""A loaded model prepared for serving: id lookup, top-k caches and fast scoring paths.

`ServingModel.load(model_dir)` wraps a `Recommender` with what a request needs precomputed:

- raw id lookup as a plain dict (URL ids are strings; an integer vocabulary also accepts
  integral strings such as ``"007"``);
- the popularity fallback ranking for unknown users (top ``max_k``);
- MF and GMF (models whose logits are ``U @ V.T``): the factors, so a request is one
  matrix product (a batch is one matrix product too);
- MLP and NeuMF: the top ``max_k`` unseen items of every known user, computed at load with
  batched ``score_users``, so a request with ``exclude_seen=true`` is a slice. The cache costs
  ``n_users * max_k * 8`` bytes (int32 index + float32 score; 7.5 MB for ML-100K); above
  ``cache_max_bytes`` the model is scored on request instead, one batched ``score_users`` call
  per request. ``exclude_seen=false`` is always scored on request;
- unit-normalised item vectors for ``similar``.

A `ServingModel` is immutable once built; the service swaps whole objects to reload.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ncf.recommender import Recommender

MAX_K = 1000
DEFAULT_CACHE_BYTES = 512 * 2**20
_BLOCK = 256  # users per scoring block while building the cache
_INT = re.compile(r"[+-]?\d{1,18}")


@dataclass
class Ranked:
    """One user's result: item indices and probabilities, best first."""

    user: Any
    fallback: bool
    items: list[int]
    scores: list[float]


class ServingModel:
    """A `Recommender` plus the lookups and caches that make a request cheap."""

    def __init__(
        self,
        rec: Recommender,
        model_dir: Path,
        *,
        max_k: int = MAX_K,
        cache_max_bytes: int = DEFAULT_CACHE_BYTES,
        generation: int = 0,
    ) -> None:
        started = time.perf_counter()
        self.rec = rec
        self.model_dir = model_dir
        self.generation = generation
        self.kind = rec.kind_
        self.n_users = len(rec.user_vocab_)
        self.n_items = len(rec.item_vocab_)
        self.max_k = min(int(max_k), self.n_items)
        self.version = str(rec.config_.get("weights_sha256", ""))[:12] or "unknown"
        self.loaded_at = time.time()
        self._int_users = rec.user_vocab_.is_integer
        self._int_items = rec.item_vocab_.is_integer
        self._users = {str(raw): i for i, raw in enumerate(rec.user_vocab_.to_list())}
        self._items = {str(raw): i for i, raw in enumerate(rec.item_vocab_.to_list())}
        self.user_ids: list[Any] = rec.user_vocab_.to_list()
        self.item_ids: list[Any] = rec.item_vocab_.to_list()
        titles = [rec.title(raw) for raw in self.item_ids]
        self.titles: list[str | None] | None = titles if any(titles) else None
        seen = rec._seen  # the facade's CSR of training items; read-only here
        self._indptr = seen.indptr.astype(np.int64)
        self._indices_np = seen.indices.astype(np.int64)
        self._indices = torch.from_numpy(self._indices_np)
        pop = rec.item_popularity_.astype(np.float32)
        pop_scores = torch.from_numpy(pop / max(1.0, float(pop.max())))
        values, index = torch.topk(pop_scores, self.max_k)
        self._pop_items, self._pop_scores = index.tolist(), values.tolist()
        with torch.inference_mode():
            factors = rec.model_.user_item_factors()
            self._u = self._v = None
            if factors is not None:
                self._u, self._v = (f.detach().float().contiguous() for f in factors)
                self._u_np, self._v_np = self._u.numpy(), self._v.numpy()
            rep = rec.model_.item_representation().float()
            self._item_rep = torch.nn.functional.normalize(rep, dim=1).contiguous()
        self.cache_bytes = self.n_users * self.max_k * 8
        self._cache_idx: np.ndarray | None = None
        if self._u is not None:
            self.strategy = "factorised: one matrix product per request"
        elif self.cache_bytes <= cache_max_bytes:
            self._build_cache()
            self.strategy = f"cached top-{self.max_k} per user, built at load"
        else:
            self.strategy = "scored on request (cache would exceed cache_max_bytes)"
        self.prepare_seconds = time.perf_counter() - started

    @classmethod
    def load(cls, model_dir: str | Path, **kwargs: Any) -> ServingModel:
        """Load and verify a model directory (see `ncf.persistence`) and prepare it."""
        path = Path(model_dir)
        return cls(Recommender.load(path), path, **kwargs)

    # ------------------------------------------------------------------ ids
    def user_index(self, raw: Any) -> int:
        """Index of a raw user id (a URL string or a JSON int/str); -1 when unknown."""
        return _lookup(self._users, raw, self._int_users)

    def item_index(self, raw: Any) -> int:
        """Index of a raw item id; -1 when unknown."""
        return _lookup(self._items, raw, self._int_items)

    def public_user(self, raw: Any, index: int) -> Any:
        """The id to echo back: the model's raw id when known, else what the client sent."""
        return self.user_ids[index] if index >= 0 else raw

    # ------------------------------------------------------------------ recommend
    @property
    def needs_thread(self) -> bool:
        """True when a request may run a neural network forward (best off the event loop)."""
        return self._u is None

    def is_fast(self, exclude_seen: bool) -> bool:
        """True when a request is a cache slice or a small matrix product."""
        return self._u is not None or (exclude_seen and self._cache_idx is not None)

    def recommend(self, raw_users: Sequence[Any], k: int, exclude_seen: bool) -> list[Ranked]:
        """Top-k for each raw user id; unknown users get the popularity ranking, flagged."""
        k = min(k, self.n_items)
        index = [self.user_index(u) for u in raw_users]
        out: list[Ranked | None] = [None] * len(index)
        todo = []
        for row, (raw, i) in enumerate(zip(raw_users, index, strict=True)):
            if i < 0:
                out[row] = Ranked(raw, True, self._pop_items[:k], self._pop_scores[:k])
            elif exclude_seen and self._cache_idx is not None:
                n = min(k, int(self._cache_count[i]))
                items, scores = self._cache_idx[i, :n].tolist(), self._cache_scores[i, :n].tolist()
                out[row] = Ranked(self.user_ids[i], False, items, scores)
            else:
                todo.append(row)
        if todo:
            users = np.asarray([index[r] for r in todo], np.int64)
            items, scores, counts = self._score_top(users, k, exclude_seen)
            for j, row in enumerate(todo):
                n = int(counts[j])
                out[row] = Ranked(self.user_ids[users[j]], False, items[j][:n], scores[j][:n])
        return out  # type: ignore[return-value]

    @torch.inference_mode()
    def _score_top(
        self, users: np.ndarray, k: int, exclude_seen: bool
    ) -> tuple[list[list[int]], list[list[float]], np.ndarray]:
        if self._u is not None and len(users) == 1:
            return self._score_top_one(int(users[0]), k, exclude_seen)
        logits = self._logits(users)
        counts = np.full(len(users), k)
        if exclude_seen:
            n_seen = self._mask_seen(logits, users)
            counts = np.minimum(k, self.n_items - n_seen)
        values, index = torch.topk(logits, k, dim=1)
        return index.tolist(), torch.sigmoid(values).tolist(), counts

    def _score_top_one(
        self, user: int, k: int, exclude_seen: bool
    ) -> tuple[list[list[int]], list[list[float]], np.ndarray]:
        """One user of a factorised model in numpy: a third of torch's per-call overhead."""
        logits = self._v_np @ self._u_np[user]
        n = k
        if exclude_seen:
            seen = self._indices_np[self._indptr[user] : self._indptr[user + 1]]
            logits[seen] = -np.inf
            n = min(k, self.n_items - len(seen))
        top = np.argpartition(logits, self.n_items - k)[self.n_items - k :]
        top = top[np.argsort(-logits[top], kind="stable")][:n]
        scores = 1.0 / (1.0 + np.exp(-np.clip(logits[top].astype(np.float64), -500, 500)))
        return [top.tolist()], [scores.tolist()], np.array([n])

    def _logits(self, users: np.ndarray) -> torch.Tensor:
        """Logits for known user indices against every item: one product or one batched call."""
        if self._u is not None:
            return self._u[torch.from_numpy(users)] @ self._v.T
        return self.rec.model_.score_users(torch.from_numpy(users)).float()

    def _mask_seen(self, logits: torch.Tensor, users: np.ndarray) -> np.ndarray:
        """Set seen items to -inf in place; return how many each user has seen."""
        starts, ends = self._indptr[users], self._indptr[users + 1]
        n_seen = ends - starts
        if len(users) == 1:  # the common single-user request: one slice, no gathering
            logits[0, self._indices[starts[0] : ends[0]]] = -torch.inf
        elif n_seen.sum():
            rows = np.repeat(np.arange(len(users)), n_seen)
            cols = torch.cat([self._indices[s:e] for s, e in zip(starts, ends, strict=True)])
            logits[torch.from_numpy(rows), cols] = -torch.inf
        return n_seen

    def _build_cache(self) -> None:
        k = self.max_k
        idx = np.empty((self.n_users, k), np.int32)
        scores = np.empty((self.n_users, k), np.float32)
        counts = np.empty(self.n_users, np.int32)
        with torch.inference_mode():
            for s in range(0, self.n_users, _BLOCK):
                users = np.arange(s, min(s + _BLOCK, self.n_users))
                logits = self._logits(users)
                n_seen = self._mask_seen(logits, users)
                values, index = torch.topk(logits, k, dim=1)
                idx[users] = index.numpy()
                scores[users] = torch.sigmoid(values).numpy()
                counts[users] = np.minimum(k, self.n_items - n_seen)
        self._cache_idx, self._cache_scores, self._cache_count = idx, scores, counts

    # ------------------------------------------------------------------ similar
    @torch.inference_mode()
    def similar(self, item: int, k: int) -> tuple[list[int], list[float]]:
        """The k items nearest to item index ``item`` by cosine, the item itself excluded."""
        k = min(k, self.n_items - 1)
        sims = self._item_rep @ self._item_rep[item]
        sims[item] = -torch.inf
        values, index = torch.topk(sims, k)
        return index.tolist(), values.tolist()

    # ------------------------------------------------------------------ describe
    def summary(self) -> dict[str, Any]:
        """What `GET /model` returns: the config summary, version and serving strategy."""
        config = self.rec.config_
        meta = config.get("model", {})
        return {
            "version": self.version,
            "weights_sha256": config.get("weights_sha256"),
            "generation": self.generation,
            "model_dir": self.model_dir.name,
            "loaded_at": self.loaded_at,
            "kind": self.kind,
            "name": meta.get("name"),
            "hyperparameters": meta.get("hyperparameters", {}),
            "n_users": self.n_users,
            "n_items": self.n_items,
            "library_version": config.get("library_version"),
            "format_version": config.get("format_version"),
            "metrics": config.get("metrics", {}),
            "training": config.get("training", {}).get("summary", {}),
            "serving": {
                "strategy": self.strategy,
                "max_k": self.max_k,
                "cache_bytes": self.cache_bytes if self._cache_idx is not None else 0,
                "prepare_seconds": round(self.prepare_seconds, 4),
            },
        }


def _lookup(table: dict[str, int], raw: Any, integer_vocab: bool) -> int:
    key = str(raw)
    index = table.get(key)
    if index is not None:
        return index
    if integer_vocab and isinstance(raw, str) and _INT.fullmatch(raw.strip()):
        return table.get(str(int(raw)), -1)
    return -1

"""``ModelScorer``: the evaluation layer's Scorer protocol over any ``RecModel``."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn


class ModelScorer:
    """Scores (logits) from a model in eval mode under no_grad; training mode is restored.

    Implements ``score_pairs``, ``score_candidates`` and ``score_users`` (the model's fast
    path: one matmul for MF/GMF, item-batched towers for MLP/NeuMF).
    """

    def __init__(self, model: nn.Module, batch_size: int = 1 << 16) -> None:
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size}")
        self.model = model
        self.batch_size = int(batch_size)

    @property
    def n_items(self) -> int:
        return int(self.model.n_items)

    def _run(self, fn: Any) -> Any:
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                return fn()
        finally:
            self.model.train(was_training)

    def _device(self) -> torch.device:
        return next(self.model.parameters()).device

    def pairs_tensor(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Logits for aligned index tensors, in batches (no mode change: caller's job)."""
        out = torch.empty(len(users), device=users.device)
        for s in range(0, len(users), self.batch_size):
            out[s : s + self.batch_size] = self.model(
                users[s : s + self.batch_size], items[s : s + self.batch_size]
            )
        return out

    def score_pairs(self, users: Any, items: Any) -> np.ndarray:
        dev = self._device()
        u = torch.as_tensor(np.asarray(users, np.int64), device=dev).reshape(-1)
        i = torch.as_tensor(np.asarray(items, np.int64), device=dev).reshape(-1)
        if u.shape != i.shape:
            raise ValueError(f"users and items differ in length: {len(u)} vs {len(i)}")
        return self._run(lambda: self.pairs_tensor(u, i)).cpu().numpy()

    def score_candidates(self, users: Any, items: Any) -> np.ndarray:
        items = np.asarray(items, np.int64)
        users = np.asarray(users, np.int64)
        flat = self.score_pairs(np.repeat(users, items.shape[1]), items.reshape(-1))
        return flat.reshape(items.shape)

    def score_users(self, users: Any) -> np.ndarray:
        u = torch.as_tensor(np.asarray(users, np.int64), device=self._device())
        return self._run(lambda: self.model.score_users(u)).cpu().numpy()

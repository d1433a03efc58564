"""Lazy (row-wise) embedding updates: each step touches only the rows its batch used.

Dense Adam on an embedding table reads and writes every row of the table, its gradient and
both moments at every step: on an ML-20M-sized catalogue (138k users, 27k items) that is
hundreds of MB of memory traffic per step for the few thousand rows a batch uses. Here the
tables produce sparse gradients (``nn.Embedding(sparse=True)``: the batch's row indices and
gradient rows, not coalesced) and ``RowAdam`` updates only those rows: one compiled pass
(numba) sums duplicate rows, then torch's vectorised ops update each touched row's moments
and weights once. The arithmetic is ``torch.optim.SparseAdam``'s ("lazy Adam": rows a batch
does not use keep their moments and weights), which ``tests/test_training_scale.py`` checks.

``RowAdam`` also folds in the trainer's per-example L2 (``row_decay``: added once per
occurrence of a row, as the dense path does) and the non-negative clip (``clamp_min``), so
neither needs a pass over whole tables.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import nn

from ncf.kernels import sum_rows

LAZY_OPTIMIZERS = ("adam", "adagrad")
# Below ~1M parameters (4 MB) a table stays in cache and a dense step over it costs less
# than a row-wise one's fixed overhead, whatever the batch size.
LAZY_MIN_PARAMETERS = 1 << 20


class RowAdam(torch.optim.Optimizer):
    """Adam for parameters with sparse (row) gradients, updating only the rows in the batch.

    Same update as ``torch.optim.SparseAdam`` (bias-corrected step size, ``eps`` added to
    ``sqrt(v)``), without coalescing the gradient first. Extra group options:
    ``row_decay`` (gradient ``row_decay * w`` added per occurrence of a row: the trainer's
    per-example L2) and ``clamp_min`` (clip updated rows from below: the non-negative
    constraint). State names match torch's: ``step``, ``exp_avg``, ``exp_avg_sq``.
    """

    def __init__(
        self,
        params: Any,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        row_decay: float = 0.0,
        clamp_min: float | None = None,
    ) -> None:
        if not lr > 0.0 or not 0.0 <= betas[0] < 1.0 or not 0.0 <= betas[1] < 1.0:
            raise ValueError(f"invalid Adam settings lr={lr}, betas={betas}")
        defaults = {
            "lr": lr,
            "betas": tuple(betas),
            "eps": eps,
            "row_decay": row_decay,
            "clamp_min": clamp_min,
        }
        super().__init__(params, defaults)
        self._scratch: dict[int, tuple[np.ndarray, ...]] = {}

    def _buffers(self, p: torch.Tensor, batch: int) -> tuple[np.ndarray, ...]:
        """Per-table scratch: row -> slot map (-1 between steps), touched rows, summed
        gradient (+ occurrence count) per slot."""
        rows, dim = p.shape
        key = id(p)
        if key not in self._scratch or len(self._scratch[key][1]) < min(rows, batch):
            size = min(rows, max(batch, 1024))
            self._scratch[key] = (
                np.full(rows, -1, np.int32),
                np.empty(size, np.int64),
                np.empty((size, dim + 1), np.float32),
            )
        return self._scratch[key]

    @torch.no_grad()
    def step(self, closure: Any = None) -> None:  # noqa: ARG002 - no closure support needed
        for group in self.param_groups:
            b1, b2 = group["betas"]
            clamp_min = group["clamp_min"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                if not grad.is_sparse:
                    raise RuntimeError("RowAdam needs sparse gradients (nn.Embedding(sparse=True))")
                if p.dim() != 2 or p.dtype != torch.float32 or not p.is_contiguous():
                    raise RuntimeError("RowAdam updates contiguous float32 2-D tables only")
                state = self.state[p]
                if not state:
                    state["step"] = torch.tensor(0.0)
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.contiguous_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.contiguous_format)
                state["step"] += 1
                t = float(state["step"])
                step_size = group["lr"] * math.sqrt(1.0 - b2**t) / (1.0 - b1**t)
                idx = grad._indices()[0].contiguous().numpy()
                values = grad._values().contiguous().numpy().reshape(len(idx), -1)
                slot, touched, compact = self._buffers(p, len(idx))
                count = sum_rows(idx, values, slot, touched, compact)
                rows = torch.from_numpy(touched[:count])
                dim = p.shape[1]
                grads = torch.from_numpy(compact[:count, :dim])
                table = p.detach()
                w_rows = table.index_select(0, rows)
                exp_avg = state["exp_avg"].index_select(0, rows)
                exp_avg_sq = state["exp_avg_sq"].index_select(0, rows)
                if group["row_decay"]:
                    occurrences = torch.from_numpy(compact[:count, dim:])
                    grads.addcmul_(w_rows, occurrences, value=group["row_decay"])
                exp_avg.lerp_(grads, 1.0 - b1)
                exp_avg_sq.mul_(b2).addcmul_(grads, grads, value=1.0 - b2)
                w_rows.addcdiv_(exp_avg, exp_avg_sq.sqrt().add_(group["eps"]), value=-step_size)
                if clamp_min is not None:
                    w_rows.clamp_(min=clamp_min)
                state["exp_avg"].index_copy_(0, rows, exp_avg)
                state["exp_avg_sq"].index_copy_(0, rows, exp_avg_sq)
                table.index_copy_(0, rows, w_rows)


def lazy_tables(model: nn.Module, config: Any) -> list[nn.Embedding]:
    """The embedding tables updated row-wise (see ``TrainConfig.embedding_updates``).

    "lazy": every table; "dense": none; "auto": each table with more than 4 rows per batch
    row and at least ``LAZY_MIN_PARAMETERS`` parameters, where a dense step would cost more
    than a row-wise one (ML-20M's 138k x 32 users at batch 16384; its 27k items, ML-1M and
    ML-100K stay dense), provided the optimiser has a lazy form (Adam, Adagrad) and nothing
    needs whole tables every step (an L2 on whole tables, weight decay).
    Tables the model already built sparse are not listed (they always are).
    """
    mode = config.embedding_updates
    tables = [m for m in model.modules() if isinstance(m, nn.Embedding) and not m.sparse]
    if mode == "dense" or not tables:
        return []
    reasons = []
    if config.optimizer not in LAZY_OPTIMIZERS:
        reasons.append(f"optimizer {config.optimizer!r} (lazy updates: {LAZY_OPTIMIZERS})")
    if config.l2 and config.l2_scope == "table":
        reasons.append("l2_scope='table' (an L2 on whole tables touches every row)")
    if config.weight_decay:
        reasons.append("weight_decay (decays every row every step)")
    if any(m.weight.device.type != "cpu" for m in tables):
        reasons.append("tables off the CPU (RowAdam runs on the CPU)")
    if mode == "lazy":
        if reasons:
            raise ValueError("embedding_updates='lazy' does not work with " + "; ".join(reasons))
        return tables
    if reasons:
        return []
    return [
        m
        for m in tables
        if m.num_embeddings > 4 * config.batch_size and m.weight.numel() >= LAZY_MIN_PARAMETERS
    ]


@contextlib.contextmanager
def sparse_embeddings(tables: list[nn.Embedding]) -> Iterator[None]:
    """Make these embedding tables emit sparse (row) gradients while training."""
    for m in tables:
        m.sparse = True
    try:
        yield
    finally:
        for m in tables:
            m.sparse = False

"""Optimiser construction, including the sparse-gradient path for large catalogues."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ncf.training.config import TrainConfig


def _sparse_params(model: nn.Module) -> list[torch.nn.Parameter]:
    return [
        m.weight
        for m in model.modules()
        if isinstance(m, nn.Embedding) and m.sparse and m.weight.requires_grad
    ]


def make_optimizers(model: nn.Module, config: TrainConfig) -> list[torch.optim.Optimizer]:
    """One optimiser, or SparseAdam for sparse embeddings + Adam for the dense rest.

    Dense models use the fused (Adam, AdamW, SGD, Adagrad) or foreach (Adadelta) kernels,
    which cut per-step Python overhead for small batches.
    """
    name, lr, wd = config.optimizer, config.learning_rate, config.weight_decay
    kw: dict[str, Any] = dict(config.optimizer_params)
    sparse = _sparse_params(model)
    ids = {id(p) for p in sparse}
    dense = [p for p in model.parameters() if p.requires_grad and id(p) not in ids]
    if sparse:
        if name in ("adam", "sparse_adam"):
            if wd:
                raise ValueError(
                    "weight_decay is not supported with sparse embeddings and Adam; "
                    "use l2 (l2_scope='batch') instead"
                )
            opts: list[torch.optim.Optimizer] = [torch.optim.SparseAdam(sparse, lr=lr, **kw)]
            if dense:
                opts.append(torch.optim.Adam(dense, lr=lr, **kw))
            return opts
        if name == "adagrad":
            if wd:
                raise ValueError("weight_decay is not supported with sparse gradients; use l2")
            return [torch.optim.Adagrad([*sparse, *dense], lr=lr, **kw)]
        raise ValueError(
            f"a model with sparse=True needs optimizer 'sparse_adam', 'adam' or 'adagrad', "
            f"got {name!r}"
        )
    if name == "sparse_adam":
        raise ValueError("optimizer 'sparse_adam' needs a model built with sparse=True")
    if name == "adam":
        return [torch.optim.Adam(dense, lr=lr, weight_decay=wd, fused=True, **kw)]
    if name == "adamw":
        return [torch.optim.AdamW(dense, lr=lr, weight_decay=wd, fused=True, **kw)]
    if name == "adagrad":
        return [torch.optim.Adagrad(dense, lr=lr, weight_decay=wd, fused=True, **kw)]
    if name == "adadelta":
        return [torch.optim.Adadelta(dense, lr=lr, weight_decay=wd, foreach=True, **kw)]
    kw.setdefault("momentum", config.momentum)
    return [torch.optim.SGD(dense, lr=lr, weight_decay=wd, fused=True, **kw)]

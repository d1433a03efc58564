"""Optimiser construction, including the sparse-gradient path for large catalogues."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ncf.training.config import TrainConfig
from ncf.training.lazy import RowAdam


def _sparse_params(model: nn.Module) -> list[torch.nn.Parameter]:
    return [
        m.weight
        for m in model.modules()
        if isinstance(m, nn.Embedding) and m.sparse and m.weight.requires_grad
    ]


class FlatParameters:
    """Packs dense trainable parameters into one buffer (and their gradients into another).

    Each parameter becomes a view into ``flat`` and its ``.grad`` a view into ``grad``;
    autograd accumulates into existing gradients in place, so the optimiser can update one
    tensor per step instead of one per parameter: with batch 16 the per-step Python and
    dispatch overhead, not arithmetic, is the cost. ``unpack`` gives every parameter its own
    memory back (safetensors refuses tensors that share memory).
    """

    def __init__(self, params: list[torch.nn.Parameter]) -> None:
        self.params = params
        total = sum(p.numel() for p in params)
        flat = torch.empty(total, dtype=params[0].dtype, device=params[0].device)
        self.grad = torch.zeros_like(flat)
        offset = 0
        for p in params:
            n = p.numel()
            flat[offset : offset + n].copy_(p.detach().reshape(-1))
            p.data = flat[offset : offset + n].view_as(p)
            p.grad = self.grad[offset : offset + n].view_as(p)
            offset += n
        self.param = nn.Parameter(flat)
        self.param.grad = self.grad

    def region(self, params: list) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(values, grads) flat views covering exactly ``params`` if they are contiguous."""
        ids = {id(p) for p in params}
        spans, offset = [], 0
        for p in self.params:
            if id(p) in ids:
                spans.append((offset, offset + p.numel()))
            offset += p.numel()
        contiguous = all(a[1] == b[0] for a, b in zip(spans, spans[1:], strict=False))
        if len(spans) != len(params) or not spans or not contiguous:
            return None
        lo, hi = spans[0][0], spans[-1][1]
        return self.param.data[lo:hi], self.grad[lo:hi]

    def intact(self) -> bool:
        """True while every parameter's gradient is still a view into the flat buffer."""
        ptr = self.grad.untyped_storage().data_ptr()
        return all(
            p.grad is not None and p.grad.untyped_storage().data_ptr() == ptr for p in self.params
        )

    def unpack(self) -> None:
        with torch.no_grad():
            for p in self.params:
                p.data = p.data.clone()
                p.grad = None


class FlatAdadelta(torch.optim.Optimizer):
    """Adadelta (Zeiler 2012; Keras' and torch's update) for one flat parameter, lean per step.

    ``torch.optim.Adadelta`` spends most of a batch-16 step in Python bookkeeping; this one
    issues nine in-place tensor ops into preallocated buffers. Same state names as torch's.
    """

    def __init__(
        self,
        params: list,
        lr: float = 1.0,
        rho: float = 0.9,
        eps: float = 1e-6,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__(params, {"lr": lr, "rho": rho, "eps": eps, "weight_decay": weight_decay})
        if len(self.param_groups) != 1 or len(self.param_groups[0]["params"]) != 1:
            raise ValueError("FlatAdadelta takes exactly one (flat) parameter")

    @torch.no_grad()
    def step(self, closure: Any = None) -> None:  # noqa: ARG002 - no closure support needed
        group = self.param_groups[0]
        p = group["params"][0]
        state = self.state[p]
        if not state:
            state["step"] = 0
            state["square_avg"] = torch.zeros_like(p)
            state["acc_delta"] = torch.zeros_like(p)
            state["_std"] = torch.empty_like(p)
            state["_delta"] = torch.empty_like(p)
        rho, eps, lr, wd = group["rho"], group["eps"], group["lr"], group["weight_decay"]
        g = p.grad
        if wd:
            g = g.add(p, alpha=wd)
        sq, acc, std, delta = (
            state["square_avg"],
            state["acc_delta"],
            state["_std"],
            state["_delta"],
        )
        sq.mul_(rho).addcmul_(g, g, value=1.0 - rho)
        torch.add(sq, eps, out=std)
        torch.add(acc, eps, out=delta).div_(std).sqrt_().mul_(g)  # sqrt(acc+eps)/sqrt(sq+eps)*g
        acc.mul_(rho).addcmul_(delta, delta, value=1.0 - rho)
        p.add_(delta, alpha=-lr)
        state["step"] += 1


def make_optimizers(
    model: nn.Module, config: TrainConfig, flat: bool = True
) -> tuple[list[torch.optim.Optimizer], FlatParameters | None]:
    """Optimisers, and the flat parameter packing used for dense models (else None).

    Dense models: all trainable parameters are packed into one tensor (``FlatParameters``)
    and the optimiser runs its fused (Adam, AdamW, SGD, Adagrad) or foreach (Adadelta)
    kernel on it. Tables made sparse for lazy updates (``lazy.sparse_embeddings``): RowAdam
    (or sparse Adagrad) for them, the packed fused optimiser for the rest. Models built
    ``sparse=True``: SparseAdam for their tables and Adam for the rest, or Adagrad.
    """
    name = config.optimizer
    sparse = _sparse_params(model)
    ids = {id(p) for p in sparse}
    dense = [p for p in model.parameters() if p.requires_grad and id(p) not in ids]
    # Tables the trainer made sparse for lazy updates get RowAdam and the dense rest is
    # packed; a model built sparse=True keeps torch's SparseAdam / Adagrad (the layout the
    # distributed trainer shares checkpoints with).
    lazy = bool(sparse) and not getattr(model, "sparse", False)
    if flat and dense and name != "sparse_adam" and (lazy or not sparse):
        packed = FlatParameters(dense)
        return _make(model, config, sparse, [packed.param], lazy), packed
    return _make(model, config, sparse, dense, lazy), None


def _make(
    model: nn.Module, config: TrainConfig, sparse: list, dense: list, lazy: bool = False
) -> list[torch.optim.Optimizer]:
    name, lr, wd = config.optimizer, config.learning_rate, config.weight_decay
    kw: dict[str, Any] = dict(config.optimizer_params)
    if sparse:
        if name in ("adam", "sparse_adam"):
            if wd:
                raise ValueError(
                    "weight_decay is not supported with sparse embeddings and Adam; "
                    "use l2 (l2_scope='batch') instead"
                )
            if lazy and name == "adam":
                clamp = {"clamp_min": 0.0} if getattr(model, "nonneg", False) else {}
                opts: list[torch.optim.Optimizer] = [RowAdam(sparse, lr=lr, **kw, **clamp)]
                if dense:
                    opts.append(torch.optim.Adam(dense, lr=lr, fused=True, **kw))
                return opts
            opts = [torch.optim.SparseAdam(sparse, lr=lr, **kw)]
            if dense:
                opts.append(torch.optim.Adam(dense, lr=lr, **kw))
            return opts
        if name == "adagrad":
            if wd:
                raise ValueError("weight_decay is not supported with sparse gradients; use l2")
            if lazy:
                opts = [torch.optim.Adagrad(sparse, lr=lr, **kw)]
                if dense:
                    opts.append(torch.optim.Adagrad(dense, lr=lr, fused=True, **kw))
                return opts
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
        if len(dense) == 1 and not sparse:
            return [FlatAdadelta(dense, lr=lr, weight_decay=wd, **kw)]
        return [torch.optim.Adadelta(dense, lr=lr, weight_decay=wd, foreach=True, **kw)]
    kw.setdefault("momentum", config.momentum)
    return [torch.optim.SGD(dense, lr=lr, weight_decay=wd, fused=True, **kw)]

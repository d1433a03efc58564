"""A hand-written training step for the tower models (MLP and NeuMF): forward and exact
gradients in plain tensor ops and compiled loops under ``no_grad``.

Two regimes make autograd's generic step costly. With batch 16 (the seed recipe) a step is a
few dozen tiny kernels and autograd's graph building and ``nn.Module`` calls cost more than
the arithmetic. With batch 16384 (our NeuMF preset) every intermediate is a 2 MB tensor
that falls out of cache between ops, so each extra pass over one costs real time. This step
computes the same forward pass (batch-norm statistics and running averages included) and
the same gradients as autograd, adding them into the parameters' ``.grad`` tensors, with:

- the first layer applied per table: ``W [e_u; e_i] + b = (E_u W_u^T)[u] + (E_i W_i^T + b)[i]``.
  A table with no more rows than the batch is projected whole, so the first layer's three
  matmuls cost the table's rows instead of the batch's; the two projected rows are gathered
  and summed in one compiled pass. Larger tables are gathered, then multiplied.
- NeuMF's GMF term ``sum_k p_uk q_ik w_k`` and its gradients in one compiled pass each,
  never materialising the gathered rows or their product.

``tests/test_training.py`` checks logits, gradients and batch-norm buffers against autograd
for MLP and NeuMF, with and without per-row loss weights, in both first-layer regimes.
Dropout masks are either drawn like the ``Dropout`` modules (``masks=None``) or passed in,
so the trainer can draw them for many batches in one call.
"""

from __future__ import annotations

import torch
from torch import nn

from ncf.kernels import (
    add_gathered_rows,
    gather_sum_rows,
    scatter_add_rows,
    weighted_dots,
    weighted_dots_backward,
    weighted_dots_row_grads,
)
from ncf.models.base import Dropout, projects_whole
from ncf.models.gmf import GMF
from ncf.models.mf import MF
from ncf.models.mlp import MLP
from ncf.models.neumf import NeuMF

_threshold_backward = torch.ops.aten.threshold_backward


def supports_fast_step(model: nn.Module) -> bool:
    """MF, GMF, and MLP / NeuMF whose tower uses only our Dropout, BatchNorm1d and Identity,
    on the CPU in float32. Tables the trainer made sparse for lazy updates get sparse row
    gradients; models built ``sparse=True`` (SparseAdam) keep autograd."""
    if type(model) not in (MF, GMF, MLP, NeuMF) or model.sparse:
        return False
    if any(p.device.type != "cpu" or p.dtype != torch.float32 for p in model.parameters()):
        return False
    if type(model) in (MF, GMF):
        return True
    mods = [*model.tower.norms, *model.tower.drops]
    return all(isinstance(m, nn.BatchNorm1d | nn.Identity | Dropout) for m in mods)


def make_fast_step(model: nn.Module) -> TowerStep | FactorStep | None:
    """The hand-written step for ``model`` (None where autograd's is used). Build it after
    the parameters' ``.grad`` tensors exist (it keeps references to them)."""
    if not supports_fast_step(model):
        return None
    return FactorStep(model) if type(model) in (MF, GMF) else TowerStep(model)


def _bce_grad(logit: torch.Tensor, y: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    """d(mean, optionally weighted, binary cross-entropy with logits)/d logit."""
    dlogit = torch.sigmoid(logit).sub_(y)
    if weights is not None:
        dlogit.mul_(weights)
    return dlogit.div_(len(y))


class _DotTerm:
    """``sum_k p[u, k] q[i, k] w[k]`` over two embedding tables (GMF's output, NeuMF's GMF
    half, MF's dot product with ``w = 1``), forward and gradients in one compiled pass each;
    ``gw`` (the gradient of ``w``) may be None."""

    def __init__(
        self, p: nn.Embedding, q: nn.Embedding, w: torch.Tensor, gw: torch.Tensor | None
    ) -> None:
        self.p, self.q, self.w = p, q, w
        self.gw = gw if gw is not None else torch.zeros_like(w)  # scratch when w is fixed
        self.sparse = p.sparse or q.sparse

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        out = torch.empty(len(users))
        p, q = self.p.weight.detach(), self.q.weight.detach()
        weighted_dots(_np(p), _np(users), _np(q), _np(items), _np(self.w), _np(out))
        return out

    def backward(self, users: torch.Tensor, items: torch.Tensor, dlogit: torch.Tensor) -> None:
        """Fused into dense tables, or per row (then scattered or kept sparse) when a table
        is updated lazily."""
        p, q = self.p.weight, self.q.weight
        args = [_np(t) for t in (p.detach(), users, q.detach(), items, self.w, dlogit)]
        if not self.sparse:
            weighted_dots_backward(*args, _np(p.grad), _np(q.grad), _np(self.gw))
            return
        rows_p, rows_q = torch.empty(len(users), p.shape[1]), torch.empty(len(items), q.shape[1])
        weighted_dots_row_grads(*args, _np(rows_p), _np(rows_q), _np(self.gw))
        add_row_grads(self.p, users, rows_p)
        add_row_grads(self.q, items, rows_q)


class FactorStep:
    """The step for GMF (``h . (p_u * q_i) + b``) and MF (``<p_u, q_i> + b_u + b_i + b``):
    same call and gradients as ``TowerStep`` (these models have no dropout masks)."""

    def __init__(self, model: MF | GMF) -> None:
        self.biases: list[nn.Embedding] = []
        if isinstance(model, GMF):
            w, gw = model.output.weight.detach()[0], model.output.weight.grad[0]
            self.dot = _DotTerm(model.user_embedding, model.item_embedding, w, gw)
            self.bias = model.output.bias
        else:
            ones = torch.ones(model.user_factors.embedding_dim)
            self.dot = _DotTerm(model.user_factors, model.item_factors, ones, None)
            self.bias = model.global_bias if model.use_bias else None
            if model.use_bias:
                self.biases = [model.user_bias, model.item_bias]

    @torch.no_grad()
    def __call__(
        self,
        users: torch.Tensor,
        items: torch.Tensor,
        y: torch.Tensor,
        masks: list | None = None,  # noqa: ARG002 - no dropout in these models
        weights: torch.Tensor | None = None,
    ) -> torch.Tensor:
        users, items = users.contiguous(), items.contiguous()
        logit = self.dot.forward(users, items)
        if self.biases:
            bu, bi = (e.weight.detach() for e in self.biases)
            logit.add_(bu.index_select(0, users).squeeze(1)).add_(
                bi.index_select(0, items).squeeze(1)
            )
        if self.bias is not None:
            logit.add_(self.bias.detach())
        dlogit = _bce_grad(logit, y, weights)
        self.dot.backward(users, items, dlogit)
        if self.bias is not None:
            self.bias.grad.add_(dlogit.sum())
        for emb, idx in zip(self.biases, (users, items), strict=False):
            add_row_grads(emb, idx, dlogit.unsqueeze(1))
        return logit

    def draw_masks(self, rows: int, generator: torch.Generator) -> list[torch.Tensor | None]:  # noqa: ARG002
        return []


class _Layer:
    def __init__(self, lin: nn.Linear, bn: nn.Module, drop: nn.Module) -> None:
        self.w = lin.weight.detach()
        self.wt = self.w.t()
        self.b = lin.bias.detach()
        self.gw, self.gb = lin.weight.grad, lin.bias.grad
        self.bn = None if isinstance(bn, nn.Identity) else bn
        if self.bn is not None:
            self.gamma, self.beta = bn.weight.detach(), bn.bias.detach()
            self.ggamma, self.gbeta = bn.weight.grad, bn.bias.grad
        self.p = drop.p if isinstance(drop, Dropout) else 0.0
        self.drop = drop


class _Side:
    """One half of the first layer: an embedding table and its columns of the first weight."""

    def __init__(self, emb: nn.Embedding, lin: nn.Linear, cols: slice) -> None:
        self.emb = emb
        self.table, self.gtable = emb.weight.detach(), emb.weight.grad
        self.w, self.gw = lin.weight.detach()[:, cols], lin.weight.grad[:, cols]

    def projected(self, batch: int) -> bool:
        return projects_whole(self.emb, batch)


def add_row_grads(emb: nn.Embedding, idx: torch.Tensor, rows: torch.Tensor) -> None:
    """``grad[idx] += rows`` (duplicates accumulate); tables updated lazily (``emb.sparse``)
    get the rows as their sparse gradient (uncoalesced, as ``nn.Embedding(sparse=True)``)."""
    param = emb.weight
    if emb.sparse:
        param.grad = torch.sparse_coo_tensor(
            idx.unsqueeze(0), rows, param.shape, check_invariants=False
        )
    else:
        scatter_add_rows(_np(idx), _np(rows), _np(param.grad))


def _np(t: torch.Tensor):  # noqa: ANN202
    return t.numpy()


class TowerStep:
    """``step(users, items, labels, masks=None, weights=None) -> logits``; gradients are
    added to ``.grad`` (of the mean, optionally weighted, binary cross-entropy).

    Built once per epoch, after the parameters' ``.grad`` tensors exist (it keeps references
    to them and to weight views).
    """

    def __init__(self, model: MLP | NeuMF) -> None:
        t = model.tower
        self.layers = [_Layer(*mods) for mods in zip(t.linears, t.norms, t.drops, strict=True)]
        self.bn_before = t.bn_before
        lin = t.linears[0]
        wo, gwo = model.output.weight.detach(), model.output.weight.grad
        if isinstance(model, NeuMF):
            user, item = model.mlp_user, model.mlp_item
            k = model.gmf_user.embedding_dim
            self.gmf = _DotTerm(model.gmf_user, model.gmf_item, wo[0, :k], gwo[0, :k])
        else:
            user, item = model.user_embedding, model.item_embedding
            k = 0
            self.gmf = None
        d = user.embedding_dim
        self.user = _Side(user, lin, slice(0, d))
        self.item = _Side(item, lin, slice(d, 2 * d))
        self.wo, self.gwo = wo[:, k:], gwo[:, k:]  # NeuMF: the MLP half of the output layer
        self.bo, self.gbo = model.output.bias.detach(), model.output.bias.grad
        self.widths = [lay.w.shape[0] for lay in self.layers]
        self.dropout = [lay.p for lay in self.layers]

    # ------------------------------------------------------------------ first layer
    def _first_forward(self, users: torch.Tensor, items: torch.Tensor) -> tuple:
        n, bias = len(users), self.layers[0].b
        u, i = self.user, self.item
        proj_u = u.table @ u.w.t() if u.projected(n) else None
        proj_i = torch.addmm(bias, i.table, i.w.t()) if i.projected(n) else None
        x_u = None if proj_u is not None else u.table.index_select(0, users)
        x_i = None if proj_i is not None else i.table.index_select(0, items)
        if proj_u is not None and proj_i is not None:
            z = torch.empty(n, len(bias))
            gather_sum_rows(_np(proj_u), _np(users), _np(proj_i), _np(items), _np(z))
        elif proj_i is not None:
            z = x_u @ u.w.t()
            add_gathered_rows(_np(proj_i), _np(items), _np(z))
        else:
            z = torch.addmm(bias, x_i, i.w.t())
            if proj_u is not None:
                add_gathered_rows(_np(proj_u), _np(users), _np(z))
            else:
                z.addmm_(x_u, u.w.t())
        return z, (x_u, x_i)

    def _first_backward(
        self, dz: torch.Tensor, users: torch.Tensor, items: torch.Tensor, inputs: tuple
    ) -> None:
        self.layers[0].gb.add_(dz.sum(0))
        dz_np = _np(dz)
        for side, idx, x in ((self.user, users, inputs[0]), (self.item, items, inputs[1])):
            if x is None:  # projected: gradient per table row, then the table's matmuls
                g_rows = torch.zeros(side.table.shape[0], dz.shape[1])
                scatter_add_rows(_np(idx), dz_np, _np(g_rows))
                side.gw.addmm_(g_rows.t(), side.table)
                side.gtable.addmm_(g_rows, side.w)
            else:
                side.gw.addmm_(dz.t(), x)
                add_row_grads(side.emb, idx, dz @ side.w)

    # ------------------------------------------------------------------ batch norm
    @staticmethod
    def _bn_forward(z: torch.Tensor, lay: _Layer) -> tuple[torch.Tensor, tuple]:
        bn, n = lay.bn, z.shape[0]
        var, mean = torch.var_mean(z, 0, correction=0)
        invstd = (var + bn.eps).rsqrt_()
        xhat = (z - mean).mul_(invstd)
        out = torch.addcmul(lay.beta, xhat, lay.gamma)
        bn.running_mean.lerp_(mean, bn.momentum)
        bn.running_var.lerp_(var.mul_(n / max(n - 1, 1)), bn.momentum)
        bn.num_batches_tracked.add_(1)
        return out, (xhat, invstd)

    @staticmethod
    def _bn_backward(dy: torch.Tensor, lay: _Layer, saved: tuple) -> torch.Tensor:
        xhat, invstd = saved
        n = dy.shape[0]
        sdy, sdyx = dy.sum(0), (dy * xhat).sum(0)
        lay.gbeta.add_(sdy)
        lay.ggamma.add_(sdyx)
        # dx = gamma * invstd / n * (n dy - sum(dy) - xhat sum(dy xhat))
        dx = (dy * n).sub_(sdy).sub_(xhat * sdyx)
        return dx.mul_(lay.gamma * invstd / n)

    # ------------------------------------------------------------------ the step
    @torch.no_grad()
    def __call__(
        self,
        users: torch.Tensor,
        items: torch.Tensor,
        y: torch.Tensor,
        masks: list[torch.Tensor | None] | None = None,
        weights: torch.Tensor | None = None,
    ) -> torch.Tensor:
        users, items = users.contiguous(), items.contiguous()
        saved = []
        x = first_inputs = None
        for k, lay in enumerate(self.layers):
            if k == 0:
                z, first_inputs = self._first_forward(users, items)
            else:
                z = torch.addmm(lay.b, x, lay.wt)
            # ReLU in place: its output is positive exactly where its input was, so it
            # serves as the backward's mask (one 2 MB tensor fewer per layer at batch 16384)
            bn_saved = None
            if lay.bn is not None and self.bn_before:
                z, bn_saved = self._bn_forward(z, lay)
                h = z = z.relu_()
            else:
                h = z = z.relu_()
                if lay.bn is not None:
                    h, bn_saved = self._bn_forward(h, lay)
            mask = masks[k] if masks is not None else None
            if mask is None and lay.p:
                mask = torch.empty_like(h).bernoulli_(1.0 - lay.p, generator=lay.drop.generator)
                mask.div_(1.0 - lay.p)
            saved.append((x, z, bn_saved, mask))
            x = h * mask if mask is not None else h
        logit = torch.addmm(self.bo, x, self.wo.t()).squeeze(1)
        if self.gmf is not None:
            logit.add_(self.gmf.forward(users, items))
        dlogit = _bce_grad(logit, y, weights).unsqueeze(1)
        self.gwo.addmm_(dlogit.t(), x)
        self.gbo.add_(dlogit.sum(0))
        if self.gmf is not None:
            self.gmf.backward(users, items, dlogit.squeeze(1))
        dx = dlogit @ self.wo
        for k in range(len(self.layers) - 1, -1, -1):
            lay, (x_in, z, bn_saved, mask) = self.layers[k], saved[k]
            dh = dx * mask if mask is not None else dx
            if lay.bn is not None and self.bn_before:
                dz = self._bn_backward(_threshold_backward(dh, z, 0.0), lay, bn_saved)
            elif lay.bn is not None:  # ReLU before BN: z is the ReLU's input
                dz = _threshold_backward(self._bn_backward(dh, lay, bn_saved), z, 0.0)
            else:
                dz = _threshold_backward(dh, z, 0.0)
            if k == 0:
                self._first_backward(dz.contiguous(), users, items, first_inputs)
            else:
                lay.gw.addmm_(dz.t(), x_in)
                lay.gb.add_(dz.sum(0))
                dx = dz @ lay.w
        return logit

    def draw_masks(self, rows: int, generator: torch.Generator) -> list[torch.Tensor | None]:
        """Scaled dropout masks for ``rows`` rows per layer (slice them per batch)."""
        out: list[torch.Tensor | None] = []
        for width, p in zip(self.widths, self.dropout, strict=True):
            if not p:
                out.append(None)
                continue
            mask = torch.empty(rows, width).bernoulli_(1.0 - p, generator=generator)
            out.append(mask.div_(1.0 - p))
        return out

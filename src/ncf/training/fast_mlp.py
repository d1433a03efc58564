"""A hand-written training step for dense MLP models: forward and exact gradients in plain
tensor ops under ``no_grad``.

With batch 16 (the seed recipe) a step is a few dozen tiny kernels, and autograd's graph
building and ``nn.Module`` call overhead cost more than the arithmetic. This step computes the
same forward pass (batch-norm statistics and running averages included) and the same
gradients as autograd, adding them into the parameters' ``.grad`` tensors;
``tests/test_training.py`` checks it against autograd. Dropout masks are either drawn like
the ``Dropout`` modules (``masks=None``) or passed in, so the trainer can draw them for many
batches in one call.
"""

from __future__ import annotations

import torch
from torch import nn

from ncf.models.base import Dropout
from ncf.models.mlp import MLP

_threshold_backward = torch.ops.aten.threshold_backward


def supports_fast_step(model: nn.Module) -> bool:
    """Dense ``MLP`` models whose tower uses only our Dropout, BatchNorm1d and Identity."""
    if type(model) is not MLP or model.sparse or any(e.sparse for e in model.embeddings()):
        return False  # sparse (lazily updated) tables take autograd's sparse gradients
    mods = [*model.tower.norms, *model.tower.drops]
    return all(isinstance(m, nn.BatchNorm1d | nn.Identity | Dropout) for m in mods)


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


class MLPStep:
    """``step(users, items, labels, masks=None) -> logits``; gradients are added to ``.grad``.

    Built once per epoch, after the parameters' ``.grad`` tensors exist (it keeps references
    to them and to transposed weight views).
    """

    def __init__(self, model: MLP) -> None:
        self.model = model
        t = model.tower
        self.layers = [_Layer(*mods) for mods in zip(t.linears, t.norms, t.drops, strict=True)]
        self.bn_before = t.bn_before
        self.d = model.user_embedding.embedding_dim
        self.ue, self.ie = (
            model.user_embedding.weight.detach(),
            model.item_embedding.weight.detach(),
        )
        self.gue, self.gie = model.user_embedding.weight.grad, model.item_embedding.weight.grad
        self.wo, self.bo = model.output.weight.detach(), model.output.bias.detach()
        self.wot = self.wo.t()
        self.gwo, self.gbo = model.output.weight.grad, model.output.bias.grad
        self.widths = [lay.w.shape[0] for lay in self.layers]
        self.dropout = [lay.p for lay in self.layers]

    def _bn_forward(self, z: torch.Tensor, lay: _Layer) -> tuple[torch.Tensor, tuple]:
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

    @torch.no_grad()
    def __call__(
        self,
        users: torch.Tensor,
        items: torch.Tensor,
        y: torch.Tensor,
        masks: list[torch.Tensor | None] | None = None,
    ) -> torch.Tensor:
        x = torch.cat([self.ue.index_select(0, users), self.ie.index_select(0, items)], 1)
        saved = []
        for k, lay in enumerate(self.layers):
            z = torch.addmm(lay.b, x, lay.wt)
            bn_saved = None
            if lay.bn is not None and self.bn_before:
                z, bn_saved = self._bn_forward(z, lay)
                h = torch.relu(z)
            else:
                h = torch.relu(z)
                if lay.bn is not None:
                    h, bn_saved = self._bn_forward(h, lay)
            mask = masks[k] if masks is not None else None
            if mask is None and lay.p:
                mask = torch.empty_like(h).bernoulli_(1.0 - lay.p, generator=lay.drop.generator)
                mask.div_(1.0 - lay.p)
            saved.append((x, z, bn_saved, mask))
            x = h * mask if mask is not None else h
        logit = torch.addmm(self.bo, x, self.wot).squeeze(1)
        # backward of the mean binary cross-entropy with logits
        dlogit = (torch.sigmoid(logit) - y).div_(len(y)).unsqueeze(1)
        self.gwo.addmm_(dlogit.t(), x)
        self.gbo.add_(dlogit.sum(0))
        dx = dlogit @ self.wo
        for lay, (x_in, z, bn_saved, mask) in zip(
            reversed(self.layers), reversed(saved), strict=True
        ):
            dh = dx * mask if mask is not None else dx
            if lay.bn is not None and self.bn_before:
                dz = self._bn_backward(_threshold_backward(dh, z, 0.0), lay, bn_saved)
            elif lay.bn is not None:  # ReLU before BN: z is the ReLU's input
                dz = _threshold_backward(self._bn_backward(dh, lay, bn_saved), z, 0.0)
            else:
                dz = _threshold_backward(dh, z, 0.0)
            lay.gw.addmm_(dz.t(), x_in)
            lay.gb.add_(dz.sum(0))
            dx = dz @ lay.w
        self.gue.index_add_(0, users, dx[:, : self.d])
        self.gie.index_add_(0, items, dx[:, self.d :])
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

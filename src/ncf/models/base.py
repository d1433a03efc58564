"""The model contract shared by MF, GMF, MLP and NeuMF, plus layers they share.

Every model is a ``RecModel``: an ``nn.Module`` built from ``(n_users, n_items, **hp)`` whose
``forward(users, items)`` returns one logit per pair (sigmoid is applied only when scoring).
Parameters are initialised from a local generator seeded by the ``seed`` hyper-parameter, so a
model is reproducible without touching torch's global RNG. Dropout draws its masks from a
generator the trainer installs (``set_generator``), for the same reason.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn
from torch.nn.utils import skip_init

from ncf.kernels import scatter_add_rows
from ncf.models.init import check_initialiser, initialise

_SCORE_BLOCK = 1 << 22  # (user, item) pairs per chunk in the generic score_users


def check_positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def check_layers(layers: Any, name: str = "layers") -> list[int]:
    try:
        out = [int(w) for w in layers]
    except TypeError:
        raise ValueError(f"{name} must be a list of positive integers, got {layers!r}") from None
    if not out or any(w < 1 for w in out) or any(int(w) != w for w in layers):
        raise ValueError(f"{name} must be a non-empty list of positive integers, got {layers!r}")
    return out


def linear(n_in: int, n_out: int) -> nn.Linear:
    """An ``nn.Linear`` built without drawing from torch's global RNG (we initialise it)."""
    return skip_init(nn.Linear, n_in, n_out)


def embedding(rows: int, dim: int, sparse: bool = False) -> nn.Embedding:
    """An ``nn.Embedding`` built without drawing from torch's global RNG (we initialise it)."""
    return skip_init(nn.Embedding, rows, dim, sparse=sparse)


class _GatherRows(torch.autograd.Function):
    """``weight[idx]`` whose backward is one compiled scatter-add loop (CPU float32)."""

    @staticmethod
    def forward(ctx: Any, weight: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(idx)
        ctx.rows = weight.shape[0]
        return weight.index_select(0, idx)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (idx,) = ctx.saved_tensors
        out = torch.zeros(ctx.rows, grad.shape[1])
        scatter_add_rows(idx.numpy(), grad.contiguous().numpy(), out.numpy())
        return out, None


def _gather_rows(weight: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``weight[idx]``, with the compiled scatter-add backward where it applies."""
    if (
        weight.requires_grad
        and torch.is_grad_enabled()
        and weight.device.type == "cpu"
        and (weight.dtype == torch.float32 and idx.dtype == torch.int64)
    ):
        return _GatherRows.apply(weight, idx)
    return weight.index_select(0, idx)


def lookup(emb: nn.Embedding, idx: torch.Tensor) -> torch.Tensor:
    """Rows ``idx`` of ``emb``. Sparse tables use ``embedding`` (sparse gradients). Dense
    tables use a gather whose backward is a compiled scatter-add on CPU (torch's
    ``index_add``/``embedding`` backward cost several times more for narrow rows), else
    ``index_select``."""
    if emb.sparse:
        return emb(idx)
    return _gather_rows(emb.weight, idx)


def projects_whole(table: nn.Embedding, batch: int) -> bool:
    """Whether a linear layer over ``batch`` rows of ``table`` is cheaper applied to the whole
    table and gathered: a dense table with no more rows than the batch (a sparse table's
    gradient must stay sparse)."""
    return not table.sparse and table.num_embeddings <= batch


class RecModel(nn.Module):
    """Base class: construction from hyper-parameters, regularisation hooks, fast scoring."""

    kind: ClassVar[str] = ""

    def __init__(
        self,
        n_users: int,
        n_items: int,
        *,
        seed: int = 0,
        nonneg: bool = False,
        sparse: bool = False,
    ) -> None:
        super().__init__()
        self.n_users = check_positive_int(n_users, "n_users")
        self.n_items = check_positive_int(n_items, "n_items")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"seed must be an integer, got {seed!r}")
        self.nonneg = bool(nonneg)
        self.sparse = bool(sparse)
        self._hp: dict[str, Any] = {}

    # ------------------------------------------------------------------ construction helpers
    def _record(self, **hp: Any) -> None:
        self._hp.update(hp)

    def hyperparameters(self) -> dict[str, Any]:
        """JSON-ready kwargs: ``build_model(self.kind, n_users, n_items, **hp)`` rebuilds it."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in self._hp.items()}

    def _embedding(
        self, rows: int, dim: int, init: str, gen: torch.Generator, std: float, scale: float
    ) -> nn.Embedding:
        emb = embedding(rows, dim, sparse=self.sparse)
        initialise(
            emb.weight,
            check_initialiser(init, "embedding init"),
            gen,
            std=std,
            scale=scale,
            embedding=True,
        )
        if self.nonneg:
            emb.weight.data.clamp_(min=0.0)
        return emb

    # ------------------------------------------------------------------ training hooks
    def embeddings(self) -> list[nn.Embedding]:
        """Embedding tables (targets of the L2 penalty and the non-negative constraint)."""
        return [m for m in self.modules() if isinstance(m, nn.Embedding)]

    def embedding_pairs(self) -> list[tuple[nn.Embedding, str]]:
        """(table, "user" | "item") for each embedding, to regularise the rows in a batch."""
        raise NotImplementedError

    def l2_batch(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Sum of squares of the embedding rows used by this batch (one term per occurrence)."""
        total = None
        for emb, side in self.embedding_pairs():
            rows = lookup(emb, users if side == "user" else items)
            term = rows.pow(2).sum()
            total = term if total is None else total + term
        return total

    @torch.no_grad()
    def apply_constraints(self) -> None:
        """Clip embeddings at 0 after a step when ``nonneg`` (as Keras' NonNeg does)."""
        if self.nonneg:
            for emb in self.embeddings():
                emb.weight.clamp_(min=0.0)

    def set_generator(self, generator: torch.Generator | None) -> None:
        """Install the generator dropout masks are drawn from."""
        for m in self.modules():
            if isinstance(m, Dropout):
                m.generator = generator

    # ------------------------------------------------------------------ scoring
    def _user_index(self, users: Any) -> torch.Tensor:
        return torch.as_tensor(users, dtype=torch.int64, device=self._device())

    def _device(self) -> torch.device:
        return next(self.parameters()).device

    def score_users(self, users: Any) -> torch.Tensor:
        """Logits (len(users), n_items). Generic version: forward over chunks of pairs."""
        users = self._user_index(users)
        n = self.n_items
        out = torch.empty(len(users), n, device=users.device)
        step = max(1, _SCORE_BLOCK // n)
        all_items = torch.arange(n, device=users.device)
        for s in range(0, len(users), step):
            u = users[s : s + step]
            out[s : s + step] = self(u.repeat_interleave(n), all_items.repeat(len(u))).view(-1, n)
        return out

    def item_representation(self) -> torch.Tensor:
        raise NotImplementedError

    def user_item_factors(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(U, V) with ``U @ V.T`` equal to the logits, for models that split that way."""
        return None

    def extra_repr(self) -> str:
        return f"n_users={self.n_users}, n_items={self.n_items}, " + ", ".join(
            f"{k}={v!r}" for k, v in self._hp.items()
        )


class Dropout(nn.Module):
    """Inverted dropout whose masks come from a local generator (set by the trainer)."""

    def __init__(self, p: float) -> None:
        super().__init__()
        if not 0.0 <= float(p) < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {p!r}")
        self.p = float(p)
        self.generator: torch.Generator | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        mask = torch.empty_like(x).bernoulli_(1.0 - self.p, generator=self.generator)
        return x * mask.div_(1.0 - self.p)


BATCH_NORM = ("none", "first", "all")
BN_POSITION = ("after", "before")


class Tower(nn.Module):
    """Fully connected ReLU layers with optional batch norm and dropout after each.

    ``batch_norm``: "none", "first" (after the first layer only, as the seed recipe) or "all".
    ``bn_position``: "after" the ReLU (the seed: Dense(relu) -> BatchNorm) or "before" it.
    Dropout follows each layer. BatchNorm uses Keras' momentum (0.99) and epsilon (1e-3).
    """

    def __init__(
        self,
        in_dim: int,
        layers: list[int],
        gen: torch.Generator,
        *,
        dropout: float = 0.0,
        batch_norm: str = "none",
        bn_position: str = "after",
        init: str = "he_uniform",
    ) -> None:
        super().__init__()
        if batch_norm not in BATCH_NORM:
            raise ValueError(f"batch_norm must be one of {BATCH_NORM}, got {batch_norm!r}")
        if bn_position not in BN_POSITION:
            raise ValueError(f"bn_position must be one of {BN_POSITION}, got {bn_position!r}")
        check_initialiser(init, "hidden_init")
        self.linears = nn.ModuleList()
        self.norms = nn.ModuleList()
        self.drops = nn.ModuleList()
        self.bn_before = bn_position == "before"
        dims = [in_dim, *layers]
        for k in range(len(layers)):
            lin = linear(dims[k], dims[k + 1])
            initialise(lin.weight, init, gen)
            if init == "torch_default":
                initialise(lin.bias, "torch_default", gen)
            else:
                lin.bias.data.zero_()
            self.linears.append(lin)
            use_bn = batch_norm == "all" or (batch_norm == "first" and k == 0)
            bn = nn.BatchNorm1d(dims[k + 1], eps=1e-3, momentum=0.01)
            self.norms.append(bn if use_bn else nn.Identity())
            self.drops.append(Dropout(dropout) if dropout else nn.Identity())
        self.out_dim = dims[-1]

    def forward(self, x: torch.Tensor, first: torch.Tensor | None = None) -> torch.Tensor:
        """Run the tower; ``first`` is a precomputed first-layer pre-activation (skips layer 0)."""
        for k, (lin, norm, drop) in enumerate(
            zip(self.linears, self.norms, self.drops, strict=True)
        ):
            h = first if (k == 0 and first is not None) else lin(x)
            h = torch.relu(norm(h)) if self.bn_before else norm(torch.relu(h))
            x = drop(h)
        return x

    def forward_tables(
        self,
        user_table: nn.Embedding,
        item_table: nn.Embedding,
        users: torch.Tensor,
        items: torch.Tensor,
    ) -> torch.Tensor:
        """``forward(cat([user_table[users], item_table[items]], 1))`` without building the
        concatenation: the first layer is applied to each table's half.

        The first layer is linear, so ``W [e_u; e_i] + b = (E_u W_u^T)[u] + (E_i W_i^T)[i] + b``.
        A table with no more rows than the batch is projected whole and the batch gathers the
        projected rows: the first layer's matmuls (forward and both backward ones) then cost
        the table's rows instead of the batch's (ML-100K's 943 users and 1,682 items against
        batches of 16,384). Larger or sparse tables are gathered, then multiplied.
        """
        lin = self.linears[0]
        d = user_table.embedding_dim
        pre = lin.bias
        for table, idx, w in (
            (user_table, users, lin.weight[:, :d]),
            (item_table, items, lin.weight[:, d:]),
        ):
            if projects_whole(table, len(idx)):
                pre = pre + _gather_rows(table.weight @ w.t(), idx)
            else:
                pre = torch.addmm(pre, lookup(table, idx), w.t())
        return self.forward(pre, first=pre)

    def forward_items(self, user_part: torch.Tensor, item_part: torch.Tensor) -> torch.Tensor:
        """Outputs for every (user, item) combination: (B, n_items, out_dim).

        ``user_part`` (B, h) and ``item_part`` (n_items, h) are the two halves of the first
        layer's pre-activation (bias included once); broadcasting avoids repeating inputs.
        """
        b, n = user_part.shape[0], item_part.shape[0]
        first = (user_part[:, None, :] + item_part[None, :, :]).reshape(b * n, -1)
        return self.forward(first, first=first).reshape(b, n, -1)

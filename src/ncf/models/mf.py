"""Matrix factorisation: ``<p_u, q_i> + b_u + b_i + b``.

Rendle et al. (2020, "Neural Collaborative Filtering vs. Matrix Factorization Revisited") show
that this dot product, well tuned, beats the learned similarities of NCF.
"""

from __future__ import annotations

import torch
from torch import nn

from ncf.models.base import RecModel, check_positive_int, embedding, lookup
from ncf.models.init import make_generator


class MF(RecModel):
    """Dot product of user and item factors plus user, item and global biases.

    item_representation: the item factor table ``q_i`` (biases left out).
    """

    kind = "mf"

    def __init__(
        self,
        n_users: int,
        n_items: int,
        *,
        factors: int = 64,
        init: str = "normal",
        init_std: float = 0.01,
        init_scale: float = 0.05,
        use_bias: bool = True,
        nonneg: bool = False,
        sparse: bool = False,
        seed: int = 0,
    ) -> None:
        super().__init__(n_users, n_items, seed=seed, nonneg=nonneg, sparse=sparse)
        factors = check_positive_int(factors, "factors")
        self._record(
            factors=factors,
            init=init,
            init_std=init_std,
            init_scale=init_scale,
            use_bias=bool(use_bias),
            nonneg=self.nonneg,
            sparse=self.sparse,
            seed=seed,
        )
        gen = make_generator(seed)
        self.user_factors = self._embedding(n_users, factors, init, gen, init_std, init_scale)
        self.item_factors = self._embedding(n_items, factors, init, gen, init_std, init_scale)
        self.use_bias = bool(use_bias)
        self.user_bias = embedding(n_users, 1, sparse=self.sparse)
        self.item_bias = embedding(n_items, 1, sparse=self.sparse)
        nn.init.zeros_(self.user_bias.weight)
        nn.init.zeros_(self.item_bias.weight)
        self.global_bias = nn.Parameter(torch.zeros(1))
        if not self.use_bias:
            for p in (self.user_bias.weight, self.item_bias.weight, self.global_bias):
                p.requires_grad_(False)

    def embeddings(self) -> list[nn.Embedding]:
        return [self.user_factors, self.item_factors]

    def embedding_pairs(self) -> list[tuple[nn.Embedding, str]]:
        return [(self.user_factors, "user"), (self.item_factors, "item")]

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        dot = (lookup(self.user_factors, users) * lookup(self.item_factors, items)).sum(1)
        if not self.use_bias:
            return dot
        bias = lookup(self.user_bias, users) + lookup(self.item_bias, items)
        return dot + bias.squeeze(1) + self.global_bias

    def user_item_factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """U = [p_u, b_u + b, 1], V = [q_i, 1, b_i]: ``U @ V.T`` equals the logits."""
        with torch.no_grad():
            ones_u = torch.ones(self.n_users, 1, device=self._device())
            ones_i = torch.ones(self.n_items, 1, device=self._device())
            u = torch.cat(
                [self.user_factors.weight, self.user_bias.weight + self.global_bias, ones_u], 1
            )
            v = torch.cat([self.item_factors.weight, ones_i, self.item_bias.weight], 1)
        return u, v

    def score_users(self, users: object) -> torch.Tensor:
        users = self._user_index(users)
        out = self.user_factors(users) @ self.item_factors.weight.T
        if self.use_bias:
            out += self.user_bias(users) + self.global_bias
            out += self.item_bias.weight.T
        return out

    def item_representation(self) -> torch.Tensor:
        return self.item_factors.weight.detach()

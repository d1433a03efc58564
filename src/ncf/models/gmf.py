"""Generalised matrix factorisation (He et al. 2017): ``h . (p_u * q_i) + b``."""

from __future__ import annotations

import torch
from torch import nn

from ncf.models.base import RecModel, check_positive_int, linear, lookup
from ncf.models.init import check_initialiser, initialise, make_generator


class GMF(RecModel):
    """Element-wise product of user and item embeddings, then a linear output layer.

    item_representation: the item embedding scaled element-wise by the output weights ``h``.
    """

    kind = "gmf"

    def __init__(
        self,
        n_users: int,
        n_items: int,
        *,
        factors: int = 8,
        init: str = "normal",
        init_std: float = 0.01,
        init_scale: float = 0.05,
        output_init: str = "lecun_uniform",
        nonneg: bool = False,
        sparse: bool = False,
        seed: int = 0,
    ) -> None:
        super().__init__(n_users, n_items, seed=seed, nonneg=nonneg, sparse=sparse)
        factors = check_positive_int(factors, "factors")
        check_initialiser(output_init, "output_init")
        self._record(
            factors=factors,
            init=init,
            init_std=init_std,
            init_scale=init_scale,
            output_init=output_init,
            nonneg=self.nonneg,
            sparse=self.sparse,
            seed=seed,
        )
        gen = make_generator(seed)
        self.user_embedding = self._embedding(n_users, factors, init, gen, init_std, init_scale)
        self.item_embedding = self._embedding(n_items, factors, init, gen, init_std, init_scale)
        self.output = linear(factors, 1)
        initialise(self.output.weight, output_init, gen)
        nn.init.zeros_(self.output.bias)

    def embedding_pairs(self) -> list[tuple[nn.Embedding, str]]:
        return [(self.user_embedding, "user"), (self.item_embedding, "item")]

    def features(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """The predictive factors fed to the output layer (used by NeuMF)."""
        return lookup(self.user_embedding, users) * lookup(self.item_embedding, items)

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return self.output(self.features(users, items)).squeeze(1)

    def score_users(self, users: object) -> torch.Tensor:
        users = self._user_index(users)
        u = self.user_embedding(users) * self.output.weight
        return u @ self.item_embedding.weight.T + self.output.bias

    def user_item_factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """U = [p_u * h, b], V = [q_i, 1]: ``U @ V.T`` equals the logits."""
        with torch.no_grad():
            u = self.user_embedding.weight * self.output.weight
            b = self.output.bias.expand(self.n_users, 1)
            ones = torch.ones(self.n_items, 1, device=self._device())
            return torch.cat([u, b], 1), torch.cat([self.item_embedding.weight, ones], 1)

    def item_representation(self) -> torch.Tensor:
        return (self.item_embedding.weight * self.output.weight).detach()

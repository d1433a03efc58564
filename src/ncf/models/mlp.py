"""Multi-layer perceptron over concatenated user and item embeddings (He et al. 2017)."""

from __future__ import annotations

import torch
from torch import nn

from ncf.models.base import RecModel, Tower, check_layers, check_positive_int, linear
from ncf.models.init import check_initialiser, initialise, make_generator

_SCORE_PAIRS = 1 << 20  # (user, item) pairs per chunk in score_users


class MLP(RecModel):
    """User and item embeddings, concatenated, through a ReLU tower, then a linear output.

    ``layers`` are the hidden widths (the NCF paper's "[64, 32, 16, 8]" is
    ``embedding_size=32, layers=[32, 16, 8]``: 64 is the concatenated input).
    item_representation: the item embedding of the MLP.
    """

    kind = "mlp"

    def __init__(
        self,
        n_users: int,
        n_items: int,
        *,
        embedding_size: int = 32,
        layers: list[int] = (64, 32, 16),
        dropout: float = 0.0,
        batch_norm: str = "none",
        bn_position: str = "after",
        init: str = "normal",
        init_std: float = 0.1,
        init_scale: float = 0.05,
        hidden_init: str = "he_uniform",
        output_init: str = "glorot_uniform",
        nonneg: bool = False,
        sparse: bool = False,
        seed: int = 0,
    ) -> None:
        super().__init__(n_users, n_items, seed=seed, nonneg=nonneg, sparse=sparse)
        embedding_size = check_positive_int(embedding_size, "embedding_size")
        layers = check_layers(layers)
        check_initialiser(output_init, "output_init")
        self._record(
            embedding_size=embedding_size,
            layers=layers,
            dropout=float(dropout),
            batch_norm=batch_norm,
            bn_position=bn_position,
            init=init,
            init_std=init_std,
            init_scale=init_scale,
            hidden_init=hidden_init,
            output_init=output_init,
            nonneg=self.nonneg,
            sparse=self.sparse,
            seed=seed,
        )
        gen = make_generator(seed)
        d = embedding_size
        self.user_embedding = self._embedding(n_users, d, init, gen, init_std, init_scale)
        self.item_embedding = self._embedding(n_items, d, init, gen, init_std, init_scale)
        self.tower = Tower(
            2 * d,
            layers,
            gen,
            dropout=dropout,
            batch_norm=batch_norm,
            bn_position=bn_position,
            init=hidden_init,
        )
        self.output = linear(self.tower.out_dim, 1)
        initialise(self.output.weight, output_init, gen)
        nn.init.zeros_(self.output.bias)

    def embedding_pairs(self) -> list[tuple[nn.Embedding, str]]:
        return [(self.user_embedding, "user"), (self.item_embedding, "item")]

    def features(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """The last hidden layer's output (used by NeuMF)."""
        return self.tower.forward_tables(self.user_embedding, self.item_embedding, users, items)

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return self.output(self.features(users, items)).squeeze(1)

    def features_all_items(self, users: torch.Tensor) -> torch.Tensor:
        """(B, n_items, out_dim) tower outputs: the first layer is split into user/item parts."""
        first = self.tower.linears[0]
        d = self.user_embedding.embedding_dim
        w_u, w_i = first.weight[:, :d], first.weight[:, d:]
        user_part = self.user_embedding(users) @ w_u.T + first.bias
        item_part = self.item_embedding.weight @ w_i.T
        return self.tower.forward_items(user_part, item_part)

    def score_users(self, users: object) -> torch.Tensor:
        users = self._user_index(users)
        out = torch.empty(len(users), self.n_items, device=users.device)
        step = max(1, _SCORE_PAIRS // self.n_items)
        for s in range(0, len(users), step):
            feats = self.features_all_items(users[s : s + step])
            out[s : s + step] = self.output(feats).squeeze(2)
        return out

    def item_representation(self) -> torch.Tensor:
        return self.item_embedding.weight.detach()

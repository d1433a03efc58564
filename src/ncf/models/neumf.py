"""NeuMF (He et al. 2017): GMF and MLP branches with separate embeddings, fused at the output."""

from __future__ import annotations

import torch
from torch import nn

from ncf.models.base import RecModel, Tower, check_layers, check_positive_int, linear, lookup
from ncf.models.gmf import GMF
from ncf.models.init import check_initialiser, initialise, make_generator
from ncf.models.mlp import MLP

_SCORE_PAIRS = 1 << 20


class NeuMF(RecModel):
    """Concatenates the GMF product (``factors``) and the MLP's last layer into one output.

    Can start from a trained GMF and MLP (``from_pretrained``), mixing their output layers
    with ``alpha`` as in the paper. item_representation: concat of the GMF and MLP item
    embeddings.
    """

    kind = "neumf"

    def __init__(
        self,
        n_users: int,
        n_items: int,
        *,
        factors: int = 8,
        mlp_embedding_size: int = 32,
        layers: list[int] = (32, 16, 8),
        dropout: float = 0.0,
        batch_norm: str = "none",
        bn_position: str = "after",
        init: str = "normal",
        init_std: float = 0.01,
        mlp_init_std: float = 0.1,
        init_scale: float = 0.05,
        hidden_init: str = "he_uniform",
        output_init: str = "lecun_uniform",
        nonneg: bool = False,
        sparse: bool = False,
        seed: int = 0,
    ) -> None:
        super().__init__(n_users, n_items, seed=seed, nonneg=nonneg, sparse=sparse)
        factors = check_positive_int(factors, "factors")
        d = check_positive_int(mlp_embedding_size, "mlp_embedding_size")
        layers = check_layers(layers)
        check_initialiser(output_init, "output_init")
        self._record(
            factors=factors,
            mlp_embedding_size=d,
            layers=layers,
            dropout=float(dropout),
            batch_norm=batch_norm,
            bn_position=bn_position,
            init=init,
            init_std=init_std,
            mlp_init_std=mlp_init_std,
            init_scale=init_scale,
            hidden_init=hidden_init,
            output_init=output_init,
            nonneg=self.nonneg,
            sparse=self.sparse,
            seed=seed,
        )
        gen = make_generator(seed)
        self.gmf_user = self._embedding(n_users, factors, init, gen, init_std, init_scale)
        self.gmf_item = self._embedding(n_items, factors, init, gen, init_std, init_scale)
        self.mlp_user = self._embedding(n_users, d, init, gen, mlp_init_std, init_scale)
        self.mlp_item = self._embedding(n_items, d, init, gen, mlp_init_std, init_scale)
        self.tower = Tower(
            2 * d,
            layers,
            gen,
            dropout=dropout,
            batch_norm=batch_norm,
            bn_position=bn_position,
            init=hidden_init,
        )
        self.output = linear(factors + self.tower.out_dim, 1)
        initialise(self.output.weight, output_init, gen)
        nn.init.zeros_(self.output.bias)

    def embedding_pairs(self) -> list[tuple[nn.Embedding, str]]:
        return [
            (self.gmf_user, "user"),
            (self.gmf_item, "item"),
            (self.mlp_user, "user"),
            (self.mlp_item, "item"),
        ]

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        g = lookup(self.gmf_user, users) * lookup(self.gmf_item, items)
        m = self.tower.forward_tables(self.mlp_user, self.mlp_item, users, items)
        # output([g, m]) without the concatenation: one matmul per half
        w, k = self.output.weight, g.shape[1]
        out = torch.addmm(torch.addmm(self.output.bias, g, w[:, :k].t()), m, w[:, k:].t())
        return out.squeeze(1)

    def score_users(self, users: object) -> torch.Tensor:
        users = self._user_index(users)
        k = self.gmf_user.embedding_dim
        w_g, w_m = self.output.weight[0, :k], self.output.weight[0, k:]
        first = self.tower.linears[0]
        d = self.mlp_user.embedding_dim
        item_part = self.mlp_item.weight @ first.weight[:, d:].T
        out = torch.empty(len(users), self.n_items, device=users.device)
        step = max(1, _SCORE_PAIRS // self.n_items)
        for s in range(0, len(users), step):
            u = users[s : s + step]
            gmf = (self.gmf_user(u) * w_g) @ self.gmf_item.weight.T
            user_part = self.mlp_user(u) @ first.weight[:, :d].T + first.bias
            mlp = self.tower.forward_items(user_part, item_part) @ w_m
            out[s : s + step] = gmf + mlp + self.output.bias
        return out

    def item_representation(self) -> torch.Tensor:
        return torch.cat([self.gmf_item.weight, self.mlp_item.weight], 1).detach()

    @torch.no_grad()
    def load_pretrained(self, gmf: GMF, mlp: MLP, alpha: float = 0.5) -> NeuMF:
        """Copy a trained GMF's and MLP's weights in; output = [alpha h_gmf, (1-alpha) h_mlp]."""
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        if gmf.user_embedding.weight.shape != self.gmf_user.weight.shape or (
            gmf.item_embedding.weight.shape != self.gmf_item.weight.shape
        ):
            raise ValueError("the GMF's factors or sizes do not match this NeuMF's")
        mine = {k: v.shape for k, v in self.tower.state_dict().items()}
        theirs = {k: v.shape for k, v in mlp.tower.state_dict().items()}
        if mine != theirs or mlp.user_embedding.weight.shape != self.mlp_user.weight.shape:
            raise ValueError("the MLP's embedding size or layers do not match this NeuMF's")
        self.gmf_user.weight.copy_(gmf.user_embedding.weight)
        self.gmf_item.weight.copy_(gmf.item_embedding.weight)
        self.mlp_user.weight.copy_(mlp.user_embedding.weight)
        self.mlp_item.weight.copy_(mlp.item_embedding.weight)
        self.tower.load_state_dict(mlp.tower.state_dict())
        k = self.gmf_user.embedding_dim
        self.output.weight[:, :k] = alpha * gmf.output.weight
        self.output.weight[:, k:] = (1.0 - alpha) * mlp.output.weight
        self.output.bias.copy_(alpha * gmf.output.bias + (1.0 - alpha) * mlp.output.bias)
        return self

    def component_params(self) -> tuple[dict, dict]:
        """Hyper-parameters of the GMF and the MLP whose weights fit this NeuMF."""
        hp = self._hp
        common = {
            "nonneg": hp["nonneg"],
            "sparse": hp["sparse"],
            "seed": hp["seed"],
            "init": hp["init"],
            "init_scale": hp["init_scale"],
        }
        gmf = {"factors": hp["factors"], "init_std": hp["init_std"], **common}
        mlp = {
            "embedding_size": hp["mlp_embedding_size"],
            "layers": hp["layers"],
            "dropout": hp["dropout"],
            "batch_norm": hp["batch_norm"],
            "bn_position": hp["bn_position"],
            "init_std": hp["mlp_init_std"],
            "hidden_init": hp["hidden_init"],
            **common,
        }
        return gmf, mlp

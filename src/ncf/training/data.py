"""Per-epoch training tensors and the validation set used for early stopping.

Every epoch's negatives, shuffle and dropout masks come from seeds derived from
``(seed, epoch)``: a run resumed at epoch e draws exactly what an uninterrupted run draws.
"""

from __future__ import annotations

import numpy as np
import torch

from ncf.data import Interactions, NegativeSampler
from ncf.evaluation import evaluate_labelled, evaluate_sampled
from ncf.training.config import TrainConfig
from ncf.training.scorer import ModelScorer

SAMPLING, SHUFFLE, DROPOUT, EVAL, PROBE = range(5)  # independent random streams


def derive_seed(seed: int, epoch: int, stream: int) -> int:
    """A 63-bit seed for ``stream`` at ``epoch``, derived from the run's seed."""
    state = np.random.SeedSequence([int(seed), int(epoch), int(stream)]).generate_state(2)
    return int((int(state[0]) << 32 | int(state[1])) & (2**63 - 1))


def generator(seed: int, epoch: int, stream: int) -> torch.Generator:
    gen = torch.Generator()
    gen.manual_seed(derive_seed(seed, epoch, stream))
    return gen


class EpochData:
    """Builds each epoch's shuffled (users, items, labels) tensors in one go."""

    def __init__(self, train: Interactions, config: TrainConfig) -> None:
        self.config = config
        self.pos_users = torch.from_numpy(train.users.astype(np.int64))
        self.pos_items = torch.from_numpy(train.items.astype(np.int64))
        self.labelled = train.negatives is not None and len(train.negatives[0]) > 0
        self.sampler = None
        self._fixed: tuple[torch.Tensor, torch.Tensor] | None = None
        if self.labelled:
            nu, ni = train.negatives
            self._fixed = (
                torch.from_numpy(nu.astype(np.int64)),
                torch.from_numpy(ni.astype(np.int64)),
            )
        elif config.negatives:
            self.sampler = NegativeSampler(train.csr, alpha=config.sampling_alpha)
        n_neg = len(self._fixed[0]) if self._fixed else len(self.pos_users) * config.negatives
        self.n_rows = len(self.pos_users) + n_neg
        self.positive_fraction = len(self.pos_users) / self.n_rows

    def _negatives(self, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self._fixed is not None:
            return self._fixed
        if self.sampler is None:
            return torch.empty(0, dtype=torch.int64), torch.empty(0, dtype=torch.int64)
        draw_epoch = epoch if self.config.resample_negatives else 0
        seed = derive_seed(self.config.seed, draw_epoch, SAMPLING)
        nu, ni = self.sampler.sample_per_positive(
            self.pos_users.numpy(), self.config.negatives, seed
        )
        return torch.from_numpy(nu).long(), torch.from_numpy(ni).long()

    def epoch(self, epoch: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Shuffled int64 users, int64 items and float32 labels for ``epoch``."""
        if self._fixed is None and not self.config.resample_negatives:
            if not hasattr(self, "_once"):
                self._once = self._negatives(0)
            nu, ni = self._once
        else:
            nu, ni = self._negatives(epoch)
        users = torch.cat([self.pos_users, nu])
        items = torch.cat([self.pos_items, ni])
        labels = torch.zeros(len(users))
        labels[: len(self.pos_users)] = 1.0
        perm = torch.randperm(len(users), generator=generator(self.config.seed, epoch, SHUFFLE))
        return users[perm], items[perm], labels[perm]


class ValidationSet:
    """Validation positives with candidates drawn once (seeded) from train + validation."""

    def __init__(self, train: Interactions, validation: Interactions, config: TrainConfig) -> None:
        if validation.shape != train.shape:
            raise ValueError(
                f"validation has shape {validation.shape} but train has {train.shape}: both must "
                "share the same vocabularies (carve validation from the training data)"
            )
        self.users = validation.users.astype(np.int64)
        self.items = validation.items.astype(np.int64)
        self.n_candidates = config.n_eval_candidates
        known = (train.csr + validation.csr).tocsr()
        seed = derive_seed(config.seed, 0, EVAL)
        self.candidates = NegativeSampler(known).sample_candidates(
            self.users, self.n_candidates, seed
        )
        n = len(self.users)
        self.loss_users = np.concatenate([self.users, np.repeat(self.users, self.n_candidates)])
        self.loss_items = np.concatenate([self.items, self.candidates.reshape(-1)])
        self.loss_labels = np.concatenate([np.ones(n), np.zeros(n * self.n_candidates)])
        rng = np.random.default_rng(derive_seed(config.seed, 0, PROBE))
        self.probe = rng.choice(n, size=min(n, 256), replace=False)

    @property
    def n_users(self) -> int:
        return len(np.unique(self.users))

    def evaluate(self, model: torch.nn.Module) -> dict[str, float]:
        """Sampled HR@10 / NDCG@10, validation loss, and the spread of scores across items."""
        scorer = ModelScorer(model)
        res = evaluate_sampled(scorer, self.users, self.items, self.candidates, k=10)
        lab = evaluate_labelled(scorer, self.loss_users, self.loss_items, self.loss_labels)
        p = self.probe
        block = scorer.score_candidates(
            self.users[p], np.concatenate([self.items[p, None], self.candidates[p]], axis=1)
        )
        return {
            "HR@10": res.means["HR@10"],
            "NDCG@10": res.means["NDCG@10"],
            "loss": lab["loss"],
            "score_spread": float(block.std(axis=1).mean()),
        }


def probe_spread(model: torch.nn.Module, train: Interactions, seed: int) -> float:
    """Score spread across random items for a sample of users (when there is no validation)."""
    rng = np.random.default_rng(derive_seed(seed, 0, PROBE))
    users = rng.integers(0, train.n_users, 256)
    items = rng.integers(0, train.n_items, (256, 100))
    return float(ModelScorer(model).score_candidates(users, items).std(axis=1).mean())

"""Per-epoch training tensors and the validation set used for early stopping.

Every epoch's negatives, shuffle and dropout masks come from seeds derived from
``(seed, epoch)``: a run resumed at epoch e draws exactly what an uninterrupted run draws.
"""

from __future__ import annotations

import numpy as np
import torch

from ncf.data import Interactions, NegativeSampler
from ncf.evaluation import metrics as M
from ncf.evaluation.protocols import block_ranks
from ncf.training.config import TrainConfig
from ncf.training.scorer import ModelScorer
from ncf.training.weights import recency_weights

SAMPLING, SHUFFLE, DROPOUT, EVAL, PROBE = range(5)  # independent random streams
_VALIDATION_BLOCK = 16_384  # users scored at a time during validation


def derive_seed(seed: int, epoch: int, stream: int) -> int:
    """A 63-bit seed for ``stream`` at ``epoch``, derived from the run's seed."""
    state = np.random.SeedSequence([int(seed), int(epoch), int(stream)]).generate_state(2)
    return int((int(state[0]) << 32 | int(state[1])) & (2**63 - 1))


def generator(seed: int, epoch: int, stream: int) -> torch.Generator:
    gen = torch.Generator()
    gen.manual_seed(derive_seed(seed, epoch, stream))
    return gen


class EpochRows:
    """One epoch's rows in shuffled order, materialised a chunk at a time.

    Holds an int32 permutation (int64 past 2**31 rows) and int32 negative items. With
    ``group`` (positives shuffled, each followed by its negatives) the permutation covers
    positives only and rows are derived per chunk: an ML-20M-sized epoch (100M rows) costs
    ~0.4 GB instead of the ~4 GB of shuffled int64 copies. Otherwise the permutation covers
    every row of ``[positives | negatives]`` (int32 users and items of all rows are kept).
    """

    def __init__(
        self, source: EpochData, neg_items: torch.Tensor, perm: torch.Tensor, group: int = 0
    ) -> None:
        self.source, self.neg_items, self.perm, self.group = source, neg_items, perm, group
        self._all: tuple[torch.Tensor, torch.Tensor] | None = None
        self._all_weights: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.perm) * self.group if self.group else len(self.perm)

    def rows(self, start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """int64 users, int64 items and float32 labels of shuffled rows ``start:stop``."""
        src = self.source
        if self.group:  # shuffled positives, each followed by its own negatives
            g, n_pos = self.group, len(src.pos_users)
            pos, keep = self._groups(start, stop)
            block = torch.empty(len(pos), g, dtype=torch.int32)
            block[:, 0] = src.pos_items[pos]
            for j in range(1, g):  # negative j of positive p sits at (j - 1) * n_pos + p
                block[:, j] = self.neg_items[pos + (j - 1) * n_pos]
            labels = torch.zeros(len(pos), g)
            labels[:, 0] = 1.0
            users = src.pos_users[pos].long().repeat_interleave(g)[keep]
            return users, block.view(-1)[keep].long(), labels.view(-1)[keep]
        if self._all is None:  # every row's user and item, in epoch order before shuffling
            n_neg = len(self.neg_items)
            users = (
                src.neg_users
                if src.neg_users is not None
                else src.per_negative(src.pos_users, n_neg)
            )
            self._all = (
                torch.cat([src.pos_users, users]),
                torch.cat([src.pos_items, self.neg_items]),
            )
        idx = self.perm[start:stop]
        users, items = self._all
        labels = (idx < len(src.pos_users)).float()
        return users[idx].long(), items[idx].long(), labels

    def weights(self, start: int, stop: int) -> torch.Tensor | None:
        """float32 loss weights of shuffled rows ``start:stop`` (each sampled negative has
        its positive's weight; given negatives weigh 1), or None when every row weighs 1."""
        src = self.source
        if src.pos_weights is None:
            return None
        if self.group:
            pos, keep = self._groups(start, stop)
            return src.pos_weights[pos].repeat_interleave(self.group)[keep]
        if self._all_weights is None:  # every row's weight, in epoch order before shuffling
            n_neg = len(self.neg_items)
            if src.neg_users is not None:  # given negatives weigh 1
                negatives = torch.ones(n_neg)
            else:
                negatives = src.per_negative(src.pos_weights, n_neg)
            self._all_weights = torch.cat([src.pos_weights, negatives])
        return self._all_weights[self.perm[start:stop]]

    def _groups(self, start: int, stop: int) -> tuple[torch.Tensor, slice]:
        """Grouped layout: the positives whose groups overlap rows ``start:stop``, and the
        slice of those groups' flattened rows that is ``start:stop``."""
        g = self.group
        first, last = start // g, -(-stop // g)
        offset = start - first * g
        return self.perm[first:last].long(), slice(offset, offset + stop - start)

    def materialise(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """All rows at once (small data, tests)."""
        return self.rows(0, len(self))


class EpochData:
    """Builds each epoch's shuffled rows: positives plus sampled (or given) negatives.

    Negatives for positive-only data are drawn per positive (``negatives`` each) as int32
    items in the sampler's layout (all first negatives, then all second negatives, ...);
    their users follow from that layout (`per_negative`).
    """

    def __init__(self, train: Interactions, config: TrainConfig, lazy: bool = False) -> None:
        self.config = config
        self.pos_users = torch.from_numpy(train.users.astype(np.int32))
        self.pos_items = torch.from_numpy(train.items.astype(np.int32))
        self.labelled = train.negatives is not None and len(train.negatives[0]) > 0
        self.sampler = None
        self.neg_users: torch.Tensor | None = None  # given negatives' users (labelled data)
        self.neg_source: torch.Tensor | None = None  # positives that get negatives, if not all
        self._fixed: torch.Tensor | None = None
        if self.labelled:
            nu, ni = train.negatives
            self.neg_users = torch.from_numpy(nu.astype(np.int32))
            self._fixed = torch.from_numpy(ni.astype(np.int32))
            n_neg = len(ni)
        elif config.negatives:
            self.sampler = NegativeSampler(train.csr, alpha=config.sampling_alpha)
            saturated = self.sampler.degree >= self.sampler.n_items
            eligible = ~saturated[train.users]
            if not eligible.all():  # users who have every item get no negatives
                self.neg_source = torch.from_numpy(np.flatnonzero(eligible).astype(np.int64))
            n_neg = int(eligible.sum()) * config.negatives
        else:
            n_neg = 0
        weights = recency_weights(train, config.recency_boost, config.recency_half_life)
        self.pos_weights = None if weights is None else torch.from_numpy(weights)
        self.n_rows = len(self.pos_users) + n_neg
        self.positive_fraction = len(self.pos_users) / self.n_rows
        self._once: torch.Tensor | None = None
        # "positives": each positive is followed by its own negatives (sampled data where
        # every positive has them); otherwise every row is shuffled independently.
        shuffle = config.shuffle if config.shuffle != "auto" else ("positives" if lazy else "rows")
        self.grouped = (
            shuffle == "positives"
            and self.sampler is not None
            and self.neg_source is None
            and len(self.pos_users) > 0
        )

    def per_negative(self, per_positive: torch.Tensor, n_neg: int) -> torch.Tensor:
        """A per-positive value (user, loss weight) for each of ``n_neg`` sampled negatives:
        that of the positive it was drawn for (all first negatives, then all second
        negatives, ...; negative k belongs to owner k % n_owners)."""
        if n_neg == 0:
            return per_positive[:0]
        owners = per_positive if self.neg_source is None else per_positive[self.neg_source]
        return owners.repeat(n_neg // len(owners))

    def _negatives(self, epoch: int) -> torch.Tensor:
        """Negative items for ``epoch`` (int32), in the sampler's per-positive layout."""
        if self._fixed is not None:
            return self._fixed
        if self.sampler is None:
            return torch.empty(0, dtype=torch.int32)
        draw_epoch = epoch if self.config.resample_negatives else 0
        if not self.config.resample_negatives and self._once is not None:
            return self._once
        seed = derive_seed(self.config.seed, draw_epoch, SAMPLING)
        users = self.pos_users.numpy()
        if self.neg_source is not None:
            users = users[self.neg_source.numpy()]
        rng = np.random.default_rng(seed)
        out = np.empty(len(users) * self.config.negatives, np.int32)
        for j in range(self.config.negatives):
            self.sampler.sample(users, rng, out=out[j * len(users) : (j + 1) * len(users)])
        items = torch.from_numpy(out)
        if not self.config.resample_negatives:
            self._once = items
        return items

    def epoch(self, epoch: int) -> EpochRows:
        """The shuffled rows of ``epoch``."""
        neg_items = self._negatives(epoch)
        dtype = torch.int32 if self.n_rows < 2**31 else torch.int64
        gen = generator(self.config.seed, epoch, SHUFFLE)
        if self.grouped:
            perm = torch.randperm(len(self.pos_users), generator=gen, dtype=dtype)
            return EpochRows(self, neg_items, perm, group=self.config.negatives + 1)
        perm = torch.randperm(self.n_rows, generator=gen, dtype=dtype)
        return EpochRows(self, neg_items, perm)


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
        rng = np.random.default_rng(derive_seed(config.seed, 0, PROBE))
        n = len(self.users)
        self.probe = rng.choice(n, size=min(n, 256), replace=False)

    @property
    def n_users(self) -> int:
        return len(np.unique(self.users))

    def evaluate(self, model: torch.nn.Module) -> dict[str, float]:
        """Sampled HR@10 / NDCG@10 (pessimistic ties), the validation loss over the same
        positives and candidates, and the spread of scores across items, from one scoring
        pass over (positive + candidates) blocks of users."""
        scorer = ModelScorer(model)
        hits = ndcg = loss = 0.0
        spread: list[np.ndarray] = []
        probe = np.zeros(len(self.users), bool)
        probe[self.probe] = True
        for s in range(0, len(self.users), _VALIDATION_BLOCK):
            sl = slice(s, s + _VALIDATION_BLOCK)
            items = np.concatenate([self.items[sl, None], self.candidates[sl]], axis=1)
            block = scorer.score_candidates(self.users[sl], items).astype(np.float64)
            if np.isnan(block).any():
                raise ValueError("the model returned NaN validation scores; has it diverged?")
            ranks = block_ranks(block)  # pessimistic ties
            hits += float(M.hit_rate(ranks, 10).sum())
            ndcg += float(M.ndcg(ranks, 10).sum())
            loss += float(np.logaddexp(0.0, block).sum() - block[:, 0].sum())
            spread.append(block[probe[sl]].std(axis=1))
        n = len(self.users)
        return {
            "HR@10": hits / n,
            "NDCG@10": ndcg / n,
            "loss": loss / (n * (self.n_candidates + 1)),
            "score_spread": float(np.concatenate(spread).mean()),
        }


def probe_spread(model: torch.nn.Module, train: Interactions, seed: int) -> float:
    """Score spread across random items for a sample of users (when there is no validation)."""
    rng = np.random.default_rng(derive_seed(seed, 0, PROBE))
    users = rng.integers(0, train.n_users, 256)
    items = rng.integers(0, train.n_items, (256, 100))
    return float(ModelScorer(model).score_candidates(users, items).std(axis=1).mean())

"""Train/test splits over `Interactions`. All splits share the input's vocabularies.

Leave-one-out follows the NCF paper: each user's latest interaction is held out. Ties on the
timestamp are broken by input order (the row given later counts as later), which is
deterministic; without timestamps the held-out row is drawn at random from a seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ncf.data.interactions import Interactions
from ncf.errors import SplitError


@dataclass
class Split:
    """A train/validation/test split. ``validation`` is carved from training, never from test."""

    train: Interactions
    test: Interactions
    validation: Interactions | None = None

    def known(self) -> list:
        """CSR matrices of every split except test: the items never to rank at test time."""
        return [self.train.csr] + ([self.validation.csr] if self.validation is not None else [])


def _rng(seed: int | np.random.Generator | None) -> np.random.Generator:
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def positions_within_user(data: Interactions) -> tuple[np.ndarray, np.ndarray]:
    """(position of each row within its user's block, that user's count) in canonical order."""
    counts = data.user_counts()
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    position = np.arange(len(data)) - np.repeat(starts, counts)
    return position, counts[data.users]


def leave_k_out(
    data: Interactions,
    k: int = 1,
    *,
    seed: int | np.random.Generator | None = 0,
    min_train: int = 1,
) -> tuple[Interactions, Interactions]:
    """Hold out each user's ``k`` latest interactions (random ones without timestamps).

    Users with fewer than ``k + min_train`` interactions keep all of them in training, so no
    user is ever left with nothing to train on. Returns ``(train, test)``.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    position, count = positions_within_user(data)
    if data.timestamps is None:
        # Random rank within user: sort rows by (user, random key) and hold out the last k.
        key = _rng(seed).random(len(data))
        order = np.lexsort((key, data.users))
        position = np.empty_like(position)
        position[order] = positions_within_user(data)[0]
    eligible = count >= k + min_train
    test_mask = eligible & (position >= count - k)
    return data.subset(~test_mask), data.subset(test_mask)


def leave_one_out(
    data: Interactions, *, seed: int | np.random.Generator | None = 0
) -> tuple[Interactions, Interactions]:
    """The NCF protocol: each user with >= 2 interactions holds out the latest one."""
    return leave_k_out(data, 1, seed=seed)


def random_split(
    data: Interactions,
    test_fraction: float = 0.2,
    *,
    seed: int | np.random.Generator | None = 0,
) -> tuple[Interactions, Interactions]:
    """Hold out a random ``test_fraction`` of each user's interactions (rounded down).

    Every user keeps at least one interaction in training.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    rng = _rng(seed)
    order = np.lexsort((rng.random(len(data)), data.users))
    rank = np.empty(len(data), np.int64)
    rank[order] = positions_within_user(data)[0]
    count = data.user_counts()[data.users]
    n_test = np.minimum(np.floor(count * test_fraction).astype(np.int64), count - 1)
    test_mask = rank < n_test
    return data.subset(~test_mask), data.subset(test_mask)


def time_split(
    data: Interactions, cutoff: float, *, cold_users: str = "error"
) -> tuple[Interactions, Interactions]:
    """Global time cut: interactions at or after ``cutoff`` go to test.

    ``cold_users`` decides what happens to users whose every interaction is after the cut
    (they would have nothing to train on): ``"error"`` raises SplitError, ``"drop"`` removes
    them from the test set.
    """
    if data.timestamps is None:
        raise SplitError("time_split needs timestamps; this data has none")
    test_mask = data.timestamps >= cutoff
    train_counts = np.bincount(data.users[~test_mask], minlength=data.n_users)
    cold = (train_counts == 0)[data.users] & test_mask
    if cold.any():
        if cold_users == "error":
            users = np.unique(data.users[cold])
            raw = data.user_vocab.raw(users[:5]).tolist()
            raise SplitError(
                f"{len(users)} user(s) would have nothing to train on after the time cut "
                f"(e.g. {raw}); pass cold_users='drop' to leave them out of the test set"
            )
        if cold_users != "drop":
            raise ValueError(f"cold_users must be 'error' or 'drop', got {cold_users!r}")
    if (~test_mask).sum() == 0:
        raise SplitError("the time cut leaves no training data")
    return data.subset(~test_mask), data.subset(test_mask & ~cold)


def train_validation_test(
    data: Interactions,
    *,
    method: str = "leave-one-out",
    validation: bool = True,
    test_fraction: float = 0.2,
    seed: int = 0,
) -> Split:
    """Split into train/test, then carve a validation split out of train the same way.

    Model selection (early stopping, tuning) uses ``validation``; ``test`` is for the final
    report only.
    """
    if method == "leave-one-out":
        train, test = leave_one_out(data, seed=seed)
    elif method == "random":
        train, test = random_split(data, test_fraction, seed=seed)
    else:
        raise ValueError(f"unknown split method {method!r}; expected 'leave-one-out' or 'random'")
    _check_every_user_trains(train)
    if not validation:
        return Split(train, test)
    if method == "leave-one-out":
        train, valid = leave_one_out(train, seed=seed + 1)
    else:
        train, valid = random_split(train, test_fraction, seed=seed + 1)
    return Split(train, test, valid)


def merge(*parts: Interactions) -> Interactions:
    """One `Interactions` holding every row of ``parts`` (e.g. train + validation for a
    refit). The parts must share vocabularies; timestamps and ratings are kept when every
    part has them; given negatives are kept from the parts that have them."""
    if not parts:
        raise ValueError("merge needs at least one Interactions")
    first = parts[0]
    for part in parts[1:]:
        if part.user_vocab != first.user_vocab or part.item_vocab != first.item_vocab:
            raise ValueError("merge needs parts that share vocabularies (use parts of one split)")

    def joined(name: str) -> np.ndarray | None:
        arrays = [getattr(p, name) for p in parts]
        return None if any(a is None for a in arrays) else np.concatenate(arrays)

    given = [p.negatives for p in parts if p.negatives is not None]
    negatives = None
    if given:
        negatives = (np.concatenate([g[0] for g in given]), np.concatenate([g[1] for g in given]))
    return Interactions(
        np.concatenate([p.users for p in parts]),
        np.concatenate([p.items for p in parts]),
        first.user_vocab,
        first.item_vocab,
        timestamps=joined("timestamps"),
        ratings=joined("ratings"),
        weights=joined("weights"),
        negatives=negatives,
        source=first.source,
    )


def _check_every_user_trains(train: Interactions) -> None:
    counts = train.user_counts()
    if (counts == 0).any():
        missing = train.user_vocab.raw(np.flatnonzero(counts == 0)[:5]).tolist()
        raise SplitError(f"user(s) {missing} have no training interactions after the split")

"""Recency-weighted training: recent positives (and their negatives) weigh more."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch

from ncf.data import Interactions, make_synthetic, train_validation_test
from ncf.models import MF
from ncf.training import TrainConfig, fit_model
from ncf.training.data import EpochData
from ncf.training.distributed import ShardedEpochData
from ncf.training.weights import recency_ages, recency_weights

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_ages_count_later_interactions_and_ties_keep_input_order():
    data = Interactions.from_arrays(
        ["a", "a", "a", "b", "b"], [1, 2, 3, 1, 4], timestamps=[30, 10, 30, 5, 1]
    )
    frame = data.to_frame()
    ages = dict(
        zip(zip(frame["user"], frame["item"], strict=True), recency_ages(data), strict=True)
    )
    # a: item 2 (t=10) is oldest; items 1 and 3 tie at t=30 and item 3 came later in input
    assert ages == {("a", 2): 2, ("a", 1): 1, ("a", 3): 0, ("b", 4): 1, ("b", 1): 0}


def test_weights_favour_recent_rows_and_average_one():
    data = make_synthetic(50, 40, 600, seed=0)
    weights = recency_weights(data, boost=4.0, half_life=3.0)
    assert weights is not None and weights.dtype == np.float32
    assert weights.mean() == pytest.approx(1.0, rel=1e-5)
    ages = recency_ages(data)
    assert weights[ages == 0].min() > weights[ages == 3].max()  # halves every 3 interactions
    expected = (1 + 4.0 * 0.5 ** (ages / 3.0)) / (1 + 4.0 * 0.5 ** (ages / 3.0)).mean()
    np.testing.assert_allclose(weights, expected, rtol=1e-5)
    assert recency_weights(data, boost=0.0, half_life=3.0) is None
    untimed = Interactions.from_arrays([1, 1, 2], [1, 2, 1])
    assert recency_weights(untimed, boost=4.0, half_life=3.0) is None  # no time, no recency


@pytest.mark.parametrize("shuffle", ["rows", "positives"])
def test_each_sampled_negative_carries_its_positives_weight(shuffle):
    data = make_synthetic(60, 80, 900, seed=1)
    config = TrainConfig(negatives=2, recency_boost=3.0, recency_half_life=2.0, shuffle=shuffle)
    epoch = EpochData(data, config).epoch(1)
    users, items, labels = epoch.materialise()
    weights = epoch.weights(0, len(epoch))
    # pieces give the same weights as the whole
    parts = torch.cat([epoch.weights(s, min(len(epoch), s + 77)) for s in range(0, len(epoch), 77)])
    assert torch.equal(parts, weights)
    pos = labels == 1
    own = dict(
        zip(
            zip(data.users.tolist(), data.items.tolist(), strict=True),
            recency_weights(data, 3.0, 2.0).tolist(),
            strict=True,
        )
    )
    got = [own[(u, i)] for u, i in zip(users[pos].tolist(), items[pos].tolist(), strict=True)]
    np.testing.assert_allclose(weights[pos].numpy(), got, rtol=1e-6)
    # every positive has exactly 2 negatives, of its user, with its weight
    expected = Counter(
        (u, round(w, 5)) for u, w in zip(users[pos].tolist(), weights[pos].tolist(), strict=True)
    )
    negatives = Counter(
        (u, round(w, 5)) for u, w in zip(users[~pos].tolist(), weights[~pos].tolist(), strict=True)
    )
    assert negatives == Counter({k: 2 * v for k, v in expected.items()})
    if shuffle == "positives":  # groups of 1 + 2 rows share one weight
        groups = weights.view(-1, 3)
        assert torch.equal(groups, groups[:, :1].expand(-1, 3))


def test_sharded_epoch_negatives_carry_their_positives_weight():
    data = make_synthetic(60, 80, 900, seed=1)
    config = TrainConfig(negatives=1, recency_boost=3.0, recency_half_life=2.0)
    users, _, labels, weights = ShardedEpochData(data, config, rank=0, world=1).epoch(1)
    pos = labels == 1
    assert sorted(zip(users[pos].tolist(), weights[pos].tolist(), strict=True)) == sorted(
        zip(users[~pos].tolist(), weights[~pos].tolist(), strict=True)
    )
    plain = ShardedEpochData(data, TrainConfig(negatives=1), rank=0, world=1).epoch(1)
    assert plain[3] is None


def drifting_tastes(seed: int = 0) -> Interactions:
    """Users of group g first interact with item cluster g, lately with cluster g + 1."""
    rng = np.random.default_rng(seed)
    n_users, n_groups, per_cluster = 240, 4, 40
    users, items, times = [], [], []
    for u in range(n_users):
        g = u % n_groups
        old = rng.choice(per_cluster, 24, replace=False) + g * per_cluster
        new = rng.choice(per_cluster, 6, replace=False) + ((g + 1) % n_groups) * per_cluster
        for t, i in enumerate(np.concatenate([old, new])):
            users.append(u)
            items.append(int(i))
            times.append(t)
    return Interactions.from_arrays(users, items, timestamps=times)


def recent_cluster_share(model: MF, data: Interactions) -> float:
    """Share of each user's top-10 unseen items that come from the user's recent cluster."""
    scores = model.score_users(np.arange(data.n_users)).detach().numpy()
    scores[data.csr.nonzero()] = -np.inf
    top = np.argsort(-scores, axis=1)[:, :10]
    raw_items = data.item_vocab.raw(top.ravel()).astype(int).reshape(top.shape)
    raw_users = data.user_vocab.raw(np.arange(data.n_users)).astype(int)
    recent = ((raw_users % 4 + 1) % 4)[:, None]
    return float((raw_items // 40 == recent).mean())


def test_recency_boost_moves_recommendations_towards_recent_tastes():
    data = drifting_tastes()
    shares = {}
    for boost in (0.0, 20.0):
        config = TrainConfig(
            epochs=15,
            batch_size=512,
            learning_rate=0.02,
            negatives=4,
            early_stopping=None,
            recency_boost=boost,
            recency_half_life=3.0,
            verbose=False,
        )
        result = fit_model(MF(*data.shape, factors=16, seed=0), data, config)
        shares[boost] = recent_cluster_share(result.model, data)
    assert shares[20.0] > shares[0.0] + 0.1, shares


def test_zero_boost_is_exactly_unweighted_training():
    split = train_validation_test(make_synthetic(100, 300, 2500, seed=3), seed=0)
    runs = [
        fit_model(
            MF(*split.train.shape, factors=8, seed=0),
            split.train,
            TrainConfig(epochs=2, batch_size=256, verbose=False, **kw),
            split.validation,
        )
        for kw in ({}, {"recency_boost": 0.0, "recency_half_life": 2.0})
    ]
    assert torch.equal(runs[0].model.user_factors.weight, runs[1].model.user_factors.weight)


@pytest.mark.parametrize("field, value", [("recency_boost", -1.0), ("recency_half_life", 0.0)])
def test_bad_recency_settings_name_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        TrainConfig(**{field: value}).validate()


def test_given_negatives_weigh_one_and_positives_keep_their_recency_weight():
    rng = np.random.default_rng(0)
    n = 400
    data = Interactions.from_arrays(
        rng.integers(0, 30, n),
        rng.integers(0, 50, n),
        timestamps=rng.random(n),
        labels=(rng.random(n) < 0.6).astype(int),
    )
    assert data.negatives is not None and len(data.negatives[0]) > 0
    config = TrainConfig(recency_boost=4.0, recency_half_life=2.0)
    epoch = EpochData(data, config).epoch(1)
    users, items, labels = epoch.materialise()
    weights = epoch.weights(0, len(epoch))
    assert torch.all(weights[labels == 0] == 1.0)
    own = dict(
        zip(
            zip(data.users.tolist(), data.items.tolist(), strict=True),
            recency_weights(data, 4.0, 2.0).tolist(),
            strict=True,
        )
    )
    pos = labels == 1
    got = [own[(u, i)] for u, i in zip(users[pos].tolist(), items[pos].tolist(), strict=True)]
    np.testing.assert_allclose(weights[pos].numpy(), got, rtol=1e-6)

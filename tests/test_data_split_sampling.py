"""Property-based tests for splits and negative samplers, plus the synthetic generator."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from ncf.data import (
    Interactions,
    NegativeSampler,
    leave_k_out,
    leave_one_out,
    make_synthetic,
    random_split,
    time_split,
    train_validation_test,
)
from ncf.errors import SplitError


@st.composite
def interaction_sets(draw, with_time: bool = True):
    n_users = draw(st.integers(1, 12))
    n_items = draw(st.integers(2, 15))
    n = draw(st.integers(1, 80))
    users = draw(st.lists(st.integers(0, n_users - 1), min_size=n, max_size=n))
    items = draw(st.lists(st.integers(0, n_items - 1), min_size=n, max_size=n))
    times = draw(st.lists(st.integers(0, 5), min_size=n, max_size=n)) if with_time else None
    return Interactions.from_arrays(users, items, timestamps=times)


@st.composite
def positive_matrices(draw):
    n_users = draw(st.integers(1, 10))
    n_items = draw(st.integers(2, 30))
    dense = draw(
        st.lists(
            st.lists(st.booleans(), min_size=n_items, max_size=n_items),
            min_size=n_users,
            max_size=n_users,
        )
    )
    matrix = np.array(dense, dtype=bool)
    matrix[:, -1] = False  # every user keeps at least one negative
    return sp.csr_matrix(matrix.astype(np.float32))


def pairs(data: Interactions) -> set[tuple[int, int]]:
    return set(zip(data.users.tolist(), data.items.tolist(), strict=True))


@settings(max_examples=60, deadline=None)
@given(interaction_sets(), st.booleans())
def test_leave_one_out_properties(data, with_time):
    if not with_time:
        data = Interactions(data.users, data.items, data.user_vocab, data.item_vocab)
    train, test = leave_one_out(data, seed=3)
    assert pairs(train).isdisjoint(pairs(test))
    assert pairs(train) | pairs(test) == pairs(data)
    counts = data.user_counts()
    test_counts = test.user_counts()
    assert np.array_equal(test_counts, (counts >= 2).astype(int))
    assert (train.user_counts() >= 1)[counts >= 1].all()
    if with_time:  # the held-out item is the user's latest
        for u, ts in zip(test.users, test.timestamps, strict=True):
            assert ts == data.timestamps[data.users == u].max()
    again_train, again_test = leave_one_out(data, seed=3)
    assert pairs(again_test) == pairs(test)


@settings(max_examples=40, deadline=None)
@given(interaction_sets(), st.integers(1, 3), st.floats(0.1, 0.9))
def test_leave_k_and_random_split_are_disjoint_partitions(data, k, fraction):
    for train, test in (leave_k_out(data, k, seed=1), random_split(data, fraction, seed=1)):
        assert pairs(train).isdisjoint(pairs(test))
        assert pairs(train) | pairs(test) == pairs(data)
        has_data = data.user_counts() > 0
        assert (train.user_counts()[has_data] > 0).all()
    assert pairs(random_split(data, fraction, seed=1)[1]) == pairs(
        random_split(data, fraction, seed=1)[1]
    )


def test_leave_one_out_ties_broken_by_input_order():
    data = Interactions.from_arrays([1, 1, 1], ["a", "b", "c"], timestamps=[5, 9, 9])
    _, test = leave_one_out(data)
    assert test.item_vocab.raw(test.items).tolist() == ["c"]


def test_time_split_cold_users():
    data = Interactions.from_arrays([1, 1, 2], [1, 2, 3], timestamps=[1, 5, 6])
    with pytest.raises(SplitError, match="nothing to train on"):
        time_split(data, cutoff=4)
    train, test = time_split(data, cutoff=4, cold_users="drop")
    assert len(train) == 1 and len(test) == 1


def test_validation_is_carved_from_train_not_test():
    data = make_synthetic(50, 40, 600, seed=1)
    split = train_validation_test(data, seed=0)
    assert pairs(split.validation).isdisjoint(pairs(split.test))
    assert pairs(split.validation).isdisjoint(pairs(split.train))
    assert pairs(split.train) | pairs(split.validation) | pairs(split.test) == pairs(data)


@settings(max_examples=60, deadline=None)
@given(positive_matrices(), st.integers(1, 5), st.integers(0, 10_000), st.sampled_from([0, 0.75]))
def test_sampled_negatives_are_never_positives(csr, k, seed, alpha):
    sampler = NegativeSampler(csr, alpha=alpha, popularity=np.ones(csr.shape[1]))
    users = np.repeat(np.arange(csr.shape[0]), 3)
    neg_users, neg_items = sampler.sample_per_positive(users, k, seed)
    assert neg_users.shape == neg_items.shape == (len(users) * k,)
    assert (neg_items >= 0).all() and (neg_items < csr.shape[1]).all()
    assert not csr.toarray()[neg_users, neg_items].any()
    again = sampler.sample_per_positive(users, k, seed)[1]
    assert np.array_equal(again, neg_items)


@settings(max_examples=30, deadline=None)
@given(positive_matrices(), st.integers(0, 10_000))
def test_candidates_are_distinct_negatives(csr, seed):
    free = csr.shape[1] - np.diff(csr.indptr)
    n = int(free.min())
    cands = NegativeSampler(csr).sample_candidates(np.arange(csr.shape[0]), n, seed)
    assert cands.shape == (csr.shape[0], n)
    for u, row in enumerate(cands):
        assert len(set(row.tolist())) == n
        assert not csr.toarray()[u, row].any()


def test_uniform_rates_within_tolerance():
    csr = sp.csr_matrix(np.array([[1, 0, 0, 1, 0, 0, 0, 1, 0, 0]], dtype=np.float32))
    items = NegativeSampler(csr).sample(np.zeros(70_000, np.int64), seed=0)
    counts = np.bincount(items, minlength=10)
    assert counts[[0, 3, 7]].sum() == 0
    rates = counts[counts > 0] / len(items)
    np.testing.assert_allclose(rates, 1 / 7, atol=0.01)


def test_popularity_weighted_rates():
    csr = sp.csr_matrix(np.array([[1, 0, 0, 0]], dtype=np.float32))
    pop = np.array([100.0, 1.0, 4.0, 16.0])
    items = NegativeSampler(csr, alpha=0.5, popularity=pop).sample(np.zeros(60_000), seed=1)
    rates = np.bincount(items, minlength=4) / len(items)
    np.testing.assert_allclose(rates, [0, 1 / 7, 2 / 7, 4 / 7], atol=0.01)


def test_user_with_every_item_has_no_negatives():
    csr = sp.csr_matrix(np.ones((1, 3), np.float32))
    with pytest.raises(SplitError, match="every item"):
        NegativeSampler(csr).sample(np.zeros(2, np.int64))


def test_synthetic_is_seeded_and_structured():
    a = make_synthetic(300, 120, 6000, n_clusters=4, seed=7)
    b = make_synthetic(300, 120, 6000, n_clusters=4, seed=7)
    assert np.array_equal(a.users, b.users) and np.array_equal(a.items, b.items)
    assert abs(len(a) - 6000) <= 6000 * 0.05
    assert a.user_counts().min() >= 3
    pop = np.sort(a.item_counts())[::-1]
    assert pop[:12].sum() > 3 * pop[-12:].sum()  # a long tail

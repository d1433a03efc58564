"""Metric functions and scorer adapters: hand-computed values and properties."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ncf.evaluation import metrics as M
from ncf.evaluation.scoring import (
    DotProductScorer,
    Scorer,
    as_scorer,
    score_candidate_block,
    score_user_block,
)


def test_single_item_hand_values() -> None:
    ranks = np.array([0, 3, 9, 10, 50])
    np.testing.assert_allclose(M.hit_rate(ranks, 10), [1, 1, 1, 0, 0])
    np.testing.assert_allclose(
        M.ndcg(ranks, 10), [1.0, 1 / math.log2(5), 1 / math.log2(11), 0.0, 0.0]
    )
    np.testing.assert_allclose(M.mrr(ranks), [1, 1 / 4, 1 / 10, 1 / 11, 1 / 51])
    np.testing.assert_allclose(
        M.auc(ranks, 100), [1, 1 - 3 / 99, 1 - 9 / 99, 1 - 10 / 99, 1 - 50 / 99]
    )
    np.testing.assert_allclose(M.auc(np.array([0, 98]), np.array([100, 99])), [1.0, 0.0])


def test_single_item_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="non-negative"):
        M.hit_rate(np.array([-1]), 10)
    with pytest.raises(ValueError, match="k must"):
        M.ndcg(np.array([0]), 0)
    with pytest.raises(ValueError, match="exceeds"):
        M.auc(np.array([100]), 100)


def test_multi_item_hand_values() -> None:
    hits = np.array([[True, False, True, False], [False, False, False, False]])
    n_rel = np.array([3, 2])
    np.testing.assert_allclose(M.precision_at_k(hits), [0.5, 0.0])
    np.testing.assert_allclose(M.recall_at_k(hits, n_rel), [2 / 3, 0.0])
    np.testing.assert_allclose(M.map_at_k(hits, n_rel), [(1 + 2 / 3) / 3, 0.0])
    idcg = 1 + 1 / math.log2(3) + 1 / math.log2(4)
    np.testing.assert_allclose(M.ndcg_at_k(hits, n_rel), [(1 + 1 / math.log2(4)) / idcg, 0.0])
    # more relevant items than k: MAP and NDCG normalise by min(n_relevant, k)
    full = np.ones((1, 4), dtype=bool)
    np.testing.assert_allclose(M.map_at_k(full, [10]), [1.0])
    np.testing.assert_allclose(M.ndcg_at_k(full, [10]), [1.0])
    np.testing.assert_allclose(M.recall_at_k(full, [10]), [0.4])


def test_multi_item_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="2-D"):
        M.precision_at_k(np.array([True, False]))
    with pytest.raises(ValueError, match="entries"):
        M.recall_at_k(np.ones((2, 3), bool), [1])
    with pytest.raises(ValueError, match="more hits"):
        M.map_at_k(np.ones((1, 3), bool), [2])


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(0, 30), min_size=1, max_size=40), st.integers(1, 12))
def test_multi_item_agrees_with_single_item(ranks: list[int], k: int) -> None:
    r = np.array(ranks)
    hits = np.zeros((r.size, k), dtype=bool)
    inside = r < k
    hits[np.flatnonzero(inside), r[inside]] = True
    ones = np.ones(r.size)
    np.testing.assert_allclose(M.ndcg_at_k(hits, ones), M.ndcg(r, k))
    np.testing.assert_allclose(M.recall_at_k(hits, ones), M.hit_rate(r, k))
    np.testing.assert_allclose(M.map_at_k(hits, ones), np.where(inside, 1 / (r + 1), 0))
    np.testing.assert_allclose(M.precision_at_k(hits) * k, M.hit_rate(r, k))


def test_coverage() -> None:
    assert M.coverage(np.array([[0, 1], [1, 2], [-1, 2]]), 10) == pytest.approx(0.3)
    assert M.coverage(np.empty((0, 3), int), 4) == 0.0
    with pytest.raises(ValueError):
        M.coverage(np.array([0]), 0)


def test_bootstrap_ci() -> None:
    rng = np.random.default_rng(1)
    values = rng.random(2000)
    low, high = M.bootstrap_ci(values, n_boot=500, seed=3)
    assert low < values.mean() < high
    assert high - low == pytest.approx(2 * 1.96 * values.std() / math.sqrt(2000), rel=0.2)
    assert M.bootstrap_ci(values, n_boot=500, seed=3) == (low, high)
    assert M.bootstrap_ci(np.full(10, 0.25)) == pytest.approx((0.25, 0.25))
    big = M.bootstrap_ci(np.zeros(100_000), n_boot=200)  # chunked resampling
    assert big == (0.0, 0.0)
    assert all(math.isnan(x) for x in M.bootstrap_ci(np.array([])))
    with pytest.raises(ValueError):
        M.bootstrap_ci(values, alpha=1.5)


def _factors(seed: int = 0) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    return (
        rng.normal(size=(7, 4)),
        rng.normal(size=(11, 4)),
        rng.normal(size=7),
        rng.normal(size=11),
    )


def test_dot_product_scorer_paths_agree() -> None:
    u, v, bu, bi = _factors()
    scorer = DotProductScorer(u, v, bu, bi)
    expected = u @ v.T + bu[:, None] + bi[None, :]
    users = np.array([3, 0, 6])
    np.testing.assert_allclose(scorer.score_users(users), expected[users], rtol=1e-5, atol=1e-5)
    items = np.array([[1, 2, 10], [0, 0, 5], [9, 8, 7]])
    np.testing.assert_allclose(
        scorer.score_candidates(users, items),
        expected[users[:, None], items],
        rtol=1e-5,
        atol=1e-5,
    )
    np.testing.assert_allclose(
        scorer.score_pairs(users, items[:, 0]), expected[users, items[:, 0]], rtol=1e-5, atol=1e-5
    )
    assert isinstance(scorer, Scorer) and scorer.n_items == 11
    torch_scorer = DotProductScorer(torch.tensor(u), torch.tensor(v))
    np.testing.assert_allclose(torch_scorer.score_users(users), (u @ v.T)[users], rtol=1e-5)


def test_dot_product_scorer_validates() -> None:
    u, v, bu, _ = _factors()
    with pytest.raises(ValueError, match="factor sizes"):
        DotProductScorer(u, v[:, :3])
    with pytest.raises(ValueError, match="item_bias"):
        DotProductScorer(u, v, item_bias=bu)
    with pytest.raises(ValueError, match="2-D"):
        DotProductScorer(u[0], v)


def test_as_scorer_adapters() -> None:
    u, v, _, _ = _factors()
    scorer = DotProductScorer(u, v)
    assert as_scorer(scorer) is scorer
    wrapped = as_scorer(lambda users, items: torch.tensor((u[users] * v[items]).sum(1)))
    users, items = np.array([1, 2]), np.array([3, 4])
    np.testing.assert_allclose(wrapped.score_pairs(users, items), (u[users] * v[items]).sum(1))

    class Bilinear(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.u = torch.nn.Embedding.from_pretrained(torch.tensor(u, dtype=torch.float32))
            self.v = torch.nn.Embedding.from_pretrained(torch.tensor(v, dtype=torch.float32))

        def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
            return (self.u(users) * self.v(items)).sum(1)

    module_scorer = as_scorer(Bilinear())
    np.testing.assert_allclose(
        module_scorer.score_pairs(users, items), (u[users] * v[items]).sum(1), rtol=1e-5
    )
    with pytest.raises(TypeError, match="score_pairs"):
        as_scorer(42)


def test_block_helpers_fall_back_to_pairs_and_copy_views() -> None:
    matrix = np.arange(12, dtype=np.float32).reshape(3, 4)
    pairs_only = as_scorer(lambda users, items: matrix[users, items])
    users = np.array([2, 0])
    np.testing.assert_array_equal(score_user_block(pairs_only, users, 4), matrix[users])
    items = np.array([[3, 1], [0, 2]])
    np.testing.assert_array_equal(
        score_candidate_block(pairs_only, users, items), [[11, 9], [0, 2]]
    )

    class ViewScorer:
        def score_pairs(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
            return matrix[users, items]

        def score_users(self, users: np.ndarray) -> np.ndarray:
            return matrix[: len(users)]  # a view: must not be written into

    block = score_user_block(ViewScorer(), np.array([0, 1]), 4)
    block[:] = -1
    assert matrix.min() == 0
    with pytest.raises(ValueError, match="block"):
        score_user_block(ViewScorer(), np.array([0, 1]), 5)

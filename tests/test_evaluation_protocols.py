"""Sampled, full-ranking and labelled protocols against hand values and slow reference loops."""

from __future__ import annotations

import heapq
import json
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from ncf.evaluation import (
    DotProductScorer,
    evaluate_full,
    evaluate_labelled,
    evaluate_sampled,
)


class MatrixScorer:
    """A fake scorer reading a dense users x items score matrix."""

    def __init__(self, matrix: np.ndarray, block: bool = True) -> None:
        self.matrix = np.asarray(matrix, dtype=np.float64)
        if block:
            self.score_users = lambda users: self.matrix[users]

    def score_pairs(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        return self.matrix[users, items]


def _sampled_problem(n_users: int = 300, n_items: int = 200, n_neg: int = 99, seed: int = 0):
    rng = np.random.default_rng(seed)
    pos = rng.integers(0, n_items, n_users)
    cand = np.stack([rng.choice(n_items, n_neg, replace=False) for _ in range(n_users)])
    return np.arange(n_users), pos, cand


# ----------------------------------------------------------------------------- sampled


def test_sampled_perfect_constant_and_random_scorers() -> None:
    users, pos, cand = _sampled_problem(n_users=4000)
    cand = np.where(cand == pos[:, None], (pos[:, None] + 1) % 200, cand)  # no duplicates here
    perfect = MatrixScorer(np.zeros((4000, 200)))
    perfect.matrix[users, pos] = 1.0
    r = evaluate_sampled(perfect, users, pos, cand)
    assert r.means["HR@10"] == 1.0 and r.means["NDCG@10"] == 1.0 and r.means["AUC"] == 1.0
    constant = lambda u, i: np.zeros(len(u))  # noqa: E731
    assert evaluate_sampled(constant, users, pos, cand).means["HR@10"] == 0.0
    assert evaluate_sampled(constant, users, pos, cand).means["AUC"] == 0.0
    assert evaluate_sampled(constant, users, pos, cand, ties="optimistic").means["HR@10"] == 1.0
    rand_ties = evaluate_sampled(constant, users, pos, cand, ties="random", seed=1)
    assert rand_ties.means["HR@10"] == pytest.approx(0.10, abs=0.02)
    noise = MatrixScorer(np.random.default_rng(5).random((4000, 200)))
    r = evaluate_sampled(noise, users, pos, cand, batch_size=333)
    assert r.means["HR@10"] == pytest.approx(0.10, abs=0.02)
    assert r.means["AUC"] == pytest.approx(0.5, abs=0.02)


def test_sampled_hand_ranks() -> None:
    # positive scored 0.5; negatives above it: rank 3 gives NDCG 1/log2(5)
    scores = np.array([[0.5, 0.9, 0.8, 0.7, 0.1, 0.2]])
    r = evaluate_sampled(MatrixScorer(scores), [0], [0], [[1, 2, 3, 4, 5]], k=10)
    assert r.per_user["NDCG@10"][0] == pytest.approx(1 / math.log2(5))
    assert r.per_user["MRR"][0] == pytest.approx(1 / 4)
    assert r.per_user["AUC"][0] == pytest.approx(2 / 5)
    assert evaluate_sampled(MatrixScorer(scores), [0], [0], [[1, 2, 3, 4, 5]], k=3).means[
        "HR@3"
    ] == (0.0)
    # ties: one above, two tied
    tied = np.array([[0.5, 0.9, 0.5, 0.5, 0.1]])
    ranks = {
        t: evaluate_sampled(MatrixScorer(tied), [0], [0], [[1, 2, 3, 4]], ties=t).per_user["MRR"]
        for t in ("pessimistic", "optimistic")
    }
    assert ranks["pessimistic"][0] == pytest.approx(1 / 4)
    assert ranks["optimistic"][0] == pytest.approx(1 / 2)


def test_sampled_drops_duplicates_of_the_positive() -> None:
    users = np.arange(3)
    pos = np.array([5, 6, 7])
    cand = np.array([[1, 2, 5, 3], [1, 2, 3, 4], [7, 7, 1, 2]])
    constant = lambda u, i: np.zeros(len(u))  # noqa: E731
    r = evaluate_sampled(constant, users, pos, cand, k=1)
    assert r.n_dropped_duplicates == 3
    assert "dropped 3 candidate(s) equal to the user's held-out item" in r.notes
    np.testing.assert_allclose(r.per_user["MRR"], [1 / 4, 1 / 5, 1 / 3])  # pessimistic ranks
    good = MatrixScorer(np.eye(3, 10, 5))  # the positive (and its duplicate) score 1
    np.testing.assert_allclose(evaluate_sampled(good, users, pos, cand).per_user["MRR"], 1.0)


def test_sampled_matches_reference_loop_for_all_tie_modes() -> None:
    users, pos, cand = _sampled_problem(n_users=250, n_items=60, n_neg=20, seed=3)
    scores = np.random.default_rng(4).integers(0, 4, (250, 60)).astype(float)  # many ties
    for ties in ("pessimistic", "optimistic"):
        r = evaluate_sampled(MatrixScorer(scores), users, pos, cand, k=5, ties=ties, batch_size=64)
        for u in users:
            negs = [c for c in cand[u] if c != pos[u]]
            s, ns = scores[u, pos[u]], scores[u, negs]
            rank = (ns > s).sum() + ((ns == s).sum() if ties == "pessimistic" else 0)
            assert r.per_user["HR@5"][u] == float(rank < 5)
            assert r.per_user["NDCG@5"][u] == pytest.approx(1 / math.log2(rank + 2) * (rank < 5))
            assert r.per_user["AUC"][u] == pytest.approx(1 - rank / len(negs))
    rand = evaluate_sampled(MatrixScorer(scores), users, pos, cand, ties="random", seed=9)
    again = evaluate_sampled(MatrixScorer(scores), users, pos, cand, ties="random", seed=9)
    np.testing.assert_array_equal(rand.per_user["MRR"], again.per_user["MRR"])
    opt = evaluate_sampled(MatrixScorer(scores), users, pos, cand, ties="optimistic")
    pess = evaluate_sampled(MatrixScorer(scores), users, pos, cand)
    assert np.all(pess.per_user["MRR"] <= rand.per_user["MRR"])
    assert np.all(rand.per_user["MRR"] <= opt.per_user["MRR"])


def _he_eval_one_rating(scores: np.ndarray, u: int, gt_item: int, negatives, k: int = 10):
    """He et al.'s evaluate.py eval_one_rating, as released (dict + heapq.nlargest)."""
    items = list(negatives) + [gt_item]
    map_item_score = {item: scores[u, item] for item in items}
    ranklist = heapq.nlargest(k, map_item_score, key=map_item_score.get)
    hr = int(gt_item in ranklist)
    ndcg = math.log(2) / math.log(ranklist.index(gt_item) + 2) if hr else 0.0
    return hr, ndcg


def test_he_et_al_reference_loses_ties_like_pessimistic() -> None:
    users, pos, cand = _sampled_problem(n_users=300, n_items=80, n_neg=30, seed=7)
    keep = ~(cand == pos[:, None]).any(1)
    tied = np.random.default_rng(8).integers(0, 3, (300, 80)).astype(float)
    r = evaluate_sampled(MatrixScorer(tied), users, pos, cand)
    ref = np.array([_he_eval_one_rating(tied, u, pos[u], cand[u]) for u in users])
    np.testing.assert_allclose(r.per_user["HR@10"][keep], ref[keep, 0])
    np.testing.assert_allclose(r.per_user["NDCG@10"][keep], ref[keep, 1])
    optimistic = evaluate_sampled(MatrixScorer(tied), users, pos, cand, ties="optimistic")
    assert (optimistic.per_user["HR@10"][keep] != ref[keep, 0]).any()  # ties did matter


def test_sampled_validates_input() -> None:
    with pytest.raises(ValueError, match="ties"):
        evaluate_sampled(lambda u, i: u, [0], [0], [[1]], ties="fair")
    with pytest.raises(ValueError, match="candidates"):
        evaluate_sampled(lambda u, i: u, [0, 1], [0], [[1]])
    with pytest.raises(ValueError, match="NaN"):
        evaluate_sampled(lambda u, i: np.full(len(u), np.nan), [0], [0], [[1]])


# ----------------------------------------------------------------------------- full ranking


def _full_reference(scores, test, exclude, k):
    """Slow per-user loop: pessimistic ranked list, negatives before positives at ties."""
    out = {name: [] for name in ("HR", "NDCG", "Recall", "Precision", "MAP", "MRR", "AUC")}
    for u in range(test.shape[0]):
        rel = set(test[u].indices)
        if not rel:
            continue
        allowed = [i for i in range(test.shape[1]) if i not in set(exclude[u].indices) or i in rel]
        ranked = sorted(allowed, key=lambda i: (-scores[u, i], i in rel))
        top = ranked[:k]
        hits = [i in rel for i in top]
        negs = [scores[u, i] for i in allowed if i not in rel]
        dcg = sum(1 / math.log2(j + 2) for j, h in enumerate(hits) if h)
        idcg = sum(1 / math.log2(j + 2) for j in range(min(len(rel), k)))
        prec = [sum(hits[: j + 1]) / (j + 1) for j in range(len(hits))]
        out["HR"].append(float(any(hits)))
        out["NDCG"].append(dcg / idcg)
        out["Recall"].append(sum(hits) / len(rel))
        out["Precision"].append(sum(hits) / k)
        out["MAP"].append(sum(p for p, h in zip(prec, hits, strict=True) if h) / min(len(rel), k))
        out["MRR"].append(1 / (1 + next(j for j, i in enumerate(ranked) if i in rel)))
        aucs = [np.mean([n < scores[u, i] for n in negs]) if negs else 1.0 for i in rel]
        out["AUC"].append(np.mean(aucs))
    return {name: np.array(v) for name, v in out.items()}


@pytest.mark.parametrize("block", [True, False])
def test_full_matches_reference_loop(block: bool) -> None:
    rng = np.random.default_rng(11)
    n_users, n_items, k = 40, 30, 5
    scores = rng.integers(0, 5, (n_users, n_items)).astype(float)  # heavy ties
    test = sp.random(n_users, n_items, density=0.1, format="csr", random_state=1)
    train = sp.random(n_users, n_items, density=0.3, format="csr", random_state=2)
    valid = sp.random(n_users, n_items, density=0.05, format="csr", random_state=3)
    r = evaluate_full(MatrixScorer(scores, block), test, [train, valid], k=k, batch_size=7)
    ref = _full_reference(scores, test, train + valid, k)
    np.testing.assert_array_equal(r.users, np.flatnonzero(np.diff(test.indptr)))
    for name in ("HR", "NDCG", "Recall", "Precision", "MAP"):
        np.testing.assert_allclose(r.per_user[f"{name}@{k}"], ref[name], err_msg=name)
    np.testing.assert_allclose(r.per_user["MRR"], ref["MRR"])
    np.testing.assert_allclose(r.per_user["AUC"], ref["AUC"])
    assert any("also in exclude" in note for note in r.notes)
    opt = evaluate_full(MatrixScorer(scores, block), test, [train, valid], ties="optimistic")
    rand = evaluate_full(MatrixScorer(scores, block), test, [train, valid], ties="random", seed=2)
    assert np.all(r.per_user["MRR"] <= rand.per_user["MRR"])
    assert np.all(rand.per_user["MRR"] <= opt.per_user["MRR"])
    assert opt.means["AUC"] > rand.means["AUC"] > r.means["AUC"]


def test_full_edge_cases() -> None:
    empty = evaluate_full(lambda u, i: i * 1.0, sp.csr_matrix((3, 4)), None)
    assert empty.n_users == 0 and np.isnan(empty.means["HR@10"])
    test = sp.csr_matrix(np.array([[1, 0, 0], [0, 1, 0]]))
    seen = sp.csr_matrix(np.array([[0, 1, 1], [0, 0, 0]]))  # user 0 has no negatives left
    r = evaluate_full(lambda u, i: np.zeros(len(u)), test, seen, k=1)
    np.testing.assert_allclose(r.per_user["HR@1"], [1.0, 0.0])
    np.testing.assert_allclose(r.per_user["AUC"], [1.0, 0.0])


def test_full_excludes_seen_items_and_counts_coverage() -> None:
    # user 0 loves items 0, 1 (seen in training); its test item 2 is next best
    scores = np.array([[9.0, 8.0, 7.0, 1.0, 0.0], [0.0, 1.0, 2.0, 3.0, 4.0]])
    test = sp.csr_matrix(np.array([[0, 0, 1, 0, 0], [1, 0, 0, 0, 0]]))
    train = sp.csr_matrix(np.array([[1, 1, 0, 0, 0], [0, 0, 0, 0, 1]]))
    r = evaluate_full(MatrixScorer(scores), test, train, k=2)
    np.testing.assert_allclose(r.per_user["HR@2"], [1.0, 0.0])
    np.testing.assert_allclose(r.per_user["MRR"], [1.0, 1 / 4])
    np.testing.assert_allclose(r.per_user["AUC"], [1.0, 0.0])
    assert r.means["Coverage@2"] == pytest.approx(2 / 5)  # lists {2, 3} and {3, 2}
    without = evaluate_full(MatrixScorer(scores), test, None, k=2)
    np.testing.assert_allclose(without.per_user["MRR"], [1 / 3, 1 / 5])
    constant = evaluate_full(lambda u, i: np.zeros(len(u)), test, train, k=2, n_items=5)
    assert constant.means["HR@2"] == 0.0
    assert evaluate_full(lambda u, i: np.zeros(len(u)), test, train, ties="optimistic").means[
        "HR@10"
    ] == (1.0)


def test_full_perfect_and_dot_product_scorers() -> None:
    rng = np.random.default_rng(2)
    test = sp.random(50, 40, density=0.08, format="csr", random_state=4)
    r = evaluate_full(MatrixScorer(test.toarray() > 0), test, None, k=40, ci=True)
    assert r.means["HR@40"] == 1.0 and r.means["Recall@40"] == 1.0 and r.means["AUC"] == 1.0
    assert r.ci is not None and r.ci["NDCG@40"] == pytest.approx((1.0, 1.0))
    json.dumps(r.to_dict())
    u, v = rng.normal(size=(50, 8)), rng.normal(size=(40, 8))
    a = evaluate_full(DotProductScorer(u, v), test, None, k=5, batch_size=3)
    b = evaluate_full(MatrixScorer((u @ v.T).astype(np.float32)), test, None, k=5)
    for name, value in a.means.items():
        assert value == pytest.approx(b.means[name], abs=1e-9), name


def test_full_validates_input() -> None:
    test = sp.csr_matrix(np.eye(3))
    with pytest.raises(ValueError, match="n_items"):
        evaluate_full(lambda u, i: i * 1.0, test, None, n_items=4)
    with pytest.raises(ValueError, match="shape"):
        evaluate_full(lambda u, i: i * 1.0, test, sp.csr_matrix(np.eye(4)))
    with pytest.raises(ValueError, match="NaN"):
        evaluate_full(lambda u, i: np.full(len(u), np.nan), test, None)
    r = evaluate_full(lambda u, i: i * 1.0, test, None, k=10)  # k beyond the catalogue
    assert r.per_user["Precision@10"] == pytest.approx([0.1] * 3)


# ----------------------------------------------------------------------------- labelled


def test_labelled_matches_torch_bce() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(scale=30, size=(20, 15))  # large logits: must stay finite
    users, items = rng.integers(0, 20, 500), rng.integers(0, 15, 500)
    labels = rng.integers(0, 2, 500)
    out = evaluate_labelled(MatrixScorer(logits), users, items, labels, batch_size=77)
    expected = torch.nn.functional.binary_cross_entropy_with_logits(
        torch.tensor(logits[users, items]), torch.tensor(labels, dtype=torch.float64)
    )
    assert out["loss"] == pytest.approx(float(expected))
    assert out["accuracy"] == pytest.approx(np.mean((logits[users, items] >= 0) == labels))
    probs = 1 / (1 + np.exp(-rng.normal(size=(20, 15))))
    out = evaluate_labelled(MatrixScorer(probs), users, items, labels, logits=False)
    p = probs[users, items]
    assert out["loss"] == pytest.approx(-np.mean(labels * np.log(p) + (1 - labels) * np.log(1 - p)))
    with pytest.raises(ValueError, match="probabilities"):
        evaluate_labelled(MatrixScorer(logits), users, items, labels, logits=False)
    with pytest.raises(ValueError, match="0 or 1"):
        evaluate_labelled(MatrixScorer(logits), users, items, labels * 2)


# ----------------------------------------------------------------------------- real data


def _data_dir() -> Path:
    env = os.environ.get("NCF_DATA_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data"


def _read_negative(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    try:
        from ncf.data.io import read_ncf_negative
    except ImportError:
        raw = pd.read_csv(path, sep="\t", header=None)
        pair = raw[0].str.extract(r"\((\d+),(\d+)\)").astype(np.int64)
        return pair[0].to_numpy(), pair[1].to_numpy(), raw.iloc[:, 1:].to_numpy(np.int64)
    return read_ncf_negative(path)


def test_ml1m_negative_file_duplicates() -> None:
    path = _data_dir() / "ncf-ml-1m" / "ml-1m.test.negative"
    if not path.is_file():
        pytest.skip(f"NCF ML-1M data not found at {path} (set NCF_DATA_DIR)")
    users, pos, negs = _read_negative(path)
    assert negs.shape == (6040, 99)
    rng = np.random.default_rng(0)
    scorer = DotProductScorer(rng.normal(size=(6040, 16)), rng.normal(size=(3706, 16)))
    r = evaluate_sampled(scorer, users, pos, negs)
    assert r.n_dropped_duplicates == 156
    assert "dropped 156 candidate(s) equal to the user's held-out item" in r.notes
    assert r.means["HR@10"] == pytest.approx(0.10, abs=0.02)  # random factors
    scores = scorer.score_users(np.arange(6040))
    ref = np.array([_he_eval_one_rating(scores, u, pos[u], negs[u]) for u in users])
    np.testing.assert_allclose(r.per_user["HR@10"], ref[:, 0])
    np.testing.assert_allclose(r.per_user["NDCG@10"], ref[:, 1], atol=1e-12)

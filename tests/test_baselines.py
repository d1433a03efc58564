"""implicit's ALS and BPR as baselines: scorer contract, tuning, `ncf compare` rows."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from ncf.baselines import ImplicitBaseline, ValidationScore, implicit_available, tune_baseline
from ncf.cli import main
from ncf.data import make_synthetic, train_validation_test
from ncf.errors import NotFittedError
from ncf.evaluation.holdout import PopularityScorer, evaluate_split, flat_metrics

needs_implicit = pytest.mark.skipif(not implicit_available(), reason="ncf[baselines] not installed")


@pytest.fixture(scope="module")
def split():
    data = make_synthetic(300, 400, 9000, n_clusters=6, in_cluster=0.9, seed=2)
    return train_validation_test(data, seed=0)


@needs_implicit
@pytest.mark.parametrize("algorithm", ["als", "bpr"])
def test_scorer_contract_and_planted_structure(split, algorithm):
    model = ImplicitBaseline(algorithm, factors=16, iterations=15 if algorithm == "als" else 60)
    assert model.fit(split.train) is model
    users = np.array([0, 5, 7])
    block = model.score_users(users)
    assert block.shape == (3, split.train.n_items) == (3, model.n_items)
    items = np.array([[1, 2, 3], [4, 5, 6], [0, 9, 8]])
    np.testing.assert_allclose(
        model.score_candidates(users, items), np.take_along_axis(block, items, 1), rtol=1e-5
    )
    pairs = model.score_pairs(np.repeat(users, 3), items.reshape(-1))
    np.testing.assert_allclose(pairs, block[np.repeat(np.arange(3), 3), items.reshape(-1)], 1e-5)
    # the clusters are the planted right answer: a learned model beats popularity
    pop = PopularityScorer(split.train.item_counts())
    learned = flat_metrics(evaluate_split(model, split))["HR@10"]
    assert learned > flat_metrics(evaluate_split(pop, split))["HR@10"] + 0.05


@needs_implicit
def test_fit_is_reproducible_for_a_seed(split):
    a = ImplicitBaseline("bpr", factors=8, iterations=20, seed=3).fit(split.train)
    b = ImplicitBaseline("bpr", factors=8, iterations=20, seed=3).fit(split.train)
    np.testing.assert_array_equal(a.item_factors_, b.item_factors_)


@needs_implicit
def test_tuning_on_validation_picks_the_best_trial(split, tmp_path):
    model, study = tune_baseline(
        "als",
        split.train,
        split.validation,
        n_trials=4,
        seed=0,
        storage=tmp_path / "als.db",
        refit=False,
    )
    assert len(study.trials) == 4 and model.algorithm == "als"
    assert model.validation_["HR@10"] == pytest.approx(study.best_value)
    assert study.best_value >= max(t.value for t in study.trials)
    assert model.params()["factors"] == study.best_params["factors"]
    # the validation score is the trainer's: the same candidates for the same seed
    score = ValidationScore(split.train, split.validation, seed=0)
    assert score(model)["HR@10"] == pytest.approx(model.validation_["HR@10"])
    # resuming the stored study runs only what is missing
    refitted, again = tune_baseline(
        "als", split.train, split.validation, n_trials=5, seed=0, storage=tmp_path / "als.db"
    )
    assert [t.number for t in again.trials] == [0, 1, 2, 3, 4]
    # by default the chosen parameters are refitted on train + validation: the validation
    # positives are now training data, so they rank higher than the selection scored them
    assert score(refitted)["HR@10"] > refitted.validation_["HR@10"]


def test_als_recency_weights_change_the_fit_and_bpr_refuses_them(split):
    plain = ImplicitBaseline("als", factors=8, iterations=3).fit(split.train)
    weighted = ImplicitBaseline("als", factors=8, iterations=3, recency_boost=4.0)
    weighted.fit(split.train)
    assert not np.allclose(plain.item_factors_, weighted.item_factors_)
    assert weighted.params()["recency_boost"] == 4.0
    with pytest.raises(ValueError, match="ALS only"):
        ImplicitBaseline("bpr", recency_boost=1.0).fit(split.train)


def test_bad_input_and_unfitted_use():
    with pytest.raises(NotFittedError):
        ImplicitBaseline("als").score_users(np.array([0]))
    data = make_synthetic(20, 30, 200, seed=0)
    with pytest.raises(ValueError, match="algorithm"):
        ImplicitBaseline("svd").fit(data)
    with pytest.raises(ValueError, match="factors"):
        ImplicitBaseline("als", factors=0).fit(data)
    with pytest.raises(ValueError, match="regularization"):
        ImplicitBaseline("als", regularization=float("nan")).fit(data)


def test_missing_implicit_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "implicit.cpu.als", None)
    assert not implicit_available()
    data = make_synthetic(20, 30, 200, seed=0)
    with pytest.raises(ImportError, match=r"pip install 'ncf\[baselines\]'"):
        ImplicitBaseline("als").fit(data)


@needs_implicit
def test_compare_shows_tuned_baselines_in_the_same_table(tmp_path, capsys):
    import torch

    csv = tmp_path / "log.csv"
    make_synthetic(150, 200, 3000, n_clusters=4, seed=5).to_frame().to_csv(csv, index=False)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        args = ["compare", str(csv), "--models", "mf", "--epochs", "2", "--json"]
        assert main([*args, "--baseline-trials", "2"]) == 0
        rows = json.loads(capsys.readouterr().out)["rows"]
        labels = ["popularity", "mf", "als (tuned)", "als + recency (tuned)", "bpr (tuned)"]
        assert [r["model"] for r in rows] == labels
        assert rows[3]["params"]["recency_boost"] == 4.0  # the presets' weights
        assert all(0.0 <= r["HR@10"] <= 1.0 and "full_NDCG@10" in r for r in rows)
        assert main([*args, "--no-baselines"]) == 0
        rows = json.loads(capsys.readouterr().out)["rows"]
        assert [r["model"] for r in rows] == ["popularity", "mf"]
    finally:
        torch.set_num_threads(before)

"""Contract tests every model inherits: fit, scoring shapes, determinism, save/load, batch ==
single, and a quality floor against popularity on planted clusters."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from ncf.data import NegativeSampler, make_synthetic, train_validation_test
from ncf.evaluation import evaluate_full, evaluate_sampled
from ncf.models import build_model
from ncf.models.presets import resolve
from ncf.training import ModelScorer, TrainConfig, fit_model


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny tensors: one intra-op thread avoids spin-waiting when the machine is shared."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def problem():
    data = make_synthetic(300, 300, 9000, n_clusters=6, seed=3)
    split = train_validation_test(data, seed=0)
    known = split.train.csr + split.validation.csr + split.test.csr
    cands = NegativeSampler(known).sample_candidates(split.test.users, 99, seed=7)
    pop = split.train.item_counts().astype(np.float64)
    pop_hr = evaluate_sampled(lambda u, i: pop[i], split.test.users, split.test.items, cands).means[
        "HR@10"
    ]
    return split, cands, pop_hr


def _fit(kind: str, split, seed: int = 0, epochs: int = 8, **model_params):
    k, mp, tp = resolve(kind, epochs=epochs, verbose=False, seed=seed, patience=3, batch_size=512)
    mp.update(model_params)
    model = build_model(k, split.train.n_users, split.train.n_items, **mp)
    return fit_model(model, split.train, TrainConfig(**tp), split.validation)


class ModelContract:
    kind: str = ""
    extra: dict = {}

    @pytest.fixture(scope="class")
    @classmethod
    def fitted(cls, problem):
        split, _, _ = problem
        return _fit(cls.kind, split, **cls.extra)

    def test_kind_and_hyperparameters_rebuild(self, fitted):
        model = fitted.model
        assert model.kind == self.kind
        hp = model.hyperparameters()
        json.dumps(hp)
        again = build_model(self.kind, model.n_users, model.n_items, **hp)
        assert again.hyperparameters() == hp
        shapes = {k: v.shape for k, v in again.state_dict().items()}
        assert shapes == {k: v.shape for k, v in model.state_dict().items()}

    def test_unknown_hyperparameter_is_a_clear_error(self):
        with pytest.raises(ValueError, match="valid"):
            build_model(self.kind, 5, 5, no_such_option=1)

    def test_forward_returns_1d_logits(self, fitted):
        model = fitted.model
        users = torch.tensor([0, 1, 2])
        out = model(users, torch.tensor([3, 4, 5]))
        assert out.shape == (3,) and out.dtype == torch.float32

    def test_score_users_equals_pairwise_scores(self, fitted):
        model = fitted.model
        scorer = ModelScorer(model)
        users = np.array([0, 5, 17])
        block = scorer.score_users(users)
        assert block.shape == (3, model.n_items)
        pairs = scorer.score_pairs(
            np.repeat(users, model.n_items), np.tile(np.arange(model.n_items), 3)
        )
        np.testing.assert_allclose(block.ravel(), pairs, rtol=1e-4, atol=1e-5)

    def test_batch_scoring_equals_single_scoring(self, fitted):
        scorer = ModelScorer(fitted.model, batch_size=7)
        users = np.arange(20)
        items = (users * 7) % fitted.model.n_items
        batch = scorer.score_pairs(users, items)
        single = np.array(
            [scorer.score_pairs(users[j : j + 1], items[j : j + 1])[0] for j in range(20)]
        )
        np.testing.assert_allclose(batch, single, rtol=1e-5, atol=1e-6)
        block = scorer.score_users(users)
        np.testing.assert_allclose(block[users, items], batch, rtol=1e-4, atol=1e-5)

    def test_item_representation_and_factors(self, fitted):
        model = fitted.model
        rep = model.item_representation()
        assert rep.ndim == 2 and rep.shape[0] == model.n_items
        factors = model.user_item_factors()
        if self.kind in ("mf", "gmf"):
            u, v = factors
            full = ModelScorer(model).score_users(np.arange(model.n_users))
            np.testing.assert_allclose((u @ v.T).numpy(), full, rtol=1e-4, atol=1e-5)
        else:
            assert factors is None

    def test_safetensors_round_trip(self, fitted, tmp_path):
        model = fitted.model
        save_file(
            {k: v.contiguous() for k, v in model.state_dict().items()},
            str(tmp_path / "w.safetensors"),
        )
        again = build_model(self.kind, model.n_users, model.n_items, **model.hyperparameters())
        again.load_state_dict(load_file(str(tmp_path / "w.safetensors")))
        users = np.arange(10)
        np.testing.assert_array_equal(
            ModelScorer(again).score_users(users), ModelScorer(model).score_users(users)
        )

    def test_fit_is_deterministic(self, problem, fitted):
        split, _, _ = problem
        again = _fit(self.kind, split, **self.extra)
        for (k, a), b in zip(
            fitted.model.state_dict().items(), again.model.state_dict().values(), strict=True
        ):
            assert torch.equal(a, b), k
        assert [h["loss"] for h in again.history] == [h["loss"] for h in fitted.history]

    def test_beats_popularity_on_planted_clusters(self, problem, fitted):
        split, cands, pop_hr = problem
        scorer = ModelScorer(fitted.model)
        hr = evaluate_sampled(scorer, split.test.users, split.test.items, cands).means["HR@10"]
        assert hr >= pop_hr + 0.1, (hr, pop_hr)
        full = evaluate_full(scorer, split.test.csr, split.known())
        assert 0.0 <= full.means["HR@10"] <= 1.0
        assert "collapsed" not in fitted.flags


class TestMF(ModelContract):
    kind = "mf"


class TestGMF(ModelContract):
    kind = "gmf"


class TestMLP(ModelContract):
    kind = "mlp"
    extra = {"dropout": 0.1, "batch_norm": "first"}


class TestNeuMF(ModelContract):
    kind = "neumf"


def test_mlp_default_init_does_not_collapse_across_seeds(problem):
    split, cands, pop_hr = problem
    for seed in range(5):
        res = _fit("mlp", split, seed=seed, epochs=4)
        assert "collapsed" not in res.flags, seed
        selection = [h for h in res.history if h.get("phase") != "refit"]  # has validation
        assert selection[-1]["val_score_spread"] > 0.05, seed
        assert res.history[-1]["score_spread"] > 0.05, seed  # the refit, if any, too


@pytest.mark.slow
def test_quality_floor_on_ml100k(data_dir):
    from ncf.data import load_dataset

    data = load_dataset("ml-100k").interactions
    split = train_validation_test(data, seed=0)
    known = split.train.csr + split.validation.csr + split.test.csr
    cands = NegativeSampler(known).sample_candidates(split.test.users, 99, seed=1)
    kind, mp, tp = resolve("gmf", verbose=False, epochs=12)
    model = build_model(kind, *data.shape, **mp)
    res = fit_model(model, split.train, TrainConfig(**tp), split.validation)
    hr = evaluate_sampled(ModelScorer(res.model), split.test.users, split.test.items, cands)
    assert hr.means["HR@10"] >= 0.60, hr.means

"""`ncf.tuning` and `ncf tune`: a tiny seeded study, resume, round trip, test-set isolation."""

from __future__ import annotations

import json
import tomllib
from typing import Any

import numpy as np
import pytest
import torch

optuna = pytest.importorskip("optuna")

import ncf.training  # noqa: E402
import ncf.training.data  # noqa: E402
from ncf.cli import main  # noqa: E402
from ncf.data import make_synthetic, train_validation_test  # noqa: E402
from ncf.training import ModelScorer  # noqa: E402
from ncf.tuning import (  # noqa: E402
    SEARCH_SPACES,
    PruningCallback,
    preset_trial,
    search,
    suggest_params,
    to_toml,
    tune,
)

FAST = {"max_epochs": 3, "patience": 1, "seed": 0}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models on a shared 2-core machine: one torch thread is ~50x faster than two."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def split():
    data = make_synthetic(200, 300, 4000, n_clusters=4, seed=3)
    return train_validation_test(data, seed=0)


def test_tiny_study_beats_worst_trial(split, tmp_path):
    result = tune(split, "mf", n_trials=4, storage=tmp_path / "study.db", **FAST)
    values = [t.value for t in result.study.trials if t.state.name == "COMPLETE"]
    assert len(values) >= 2
    assert result.study.best_value > min(values)
    # the chosen configuration refits to the best trial's validation score
    assert result.validation["HR@10"] == pytest.approx(result.study.best_value, abs=1e-9)
    assert 0.0 <= result.test["HR@10"] <= 1.0 and "full_NDCG@10" in result.test
    # every trial reported per-epoch validation values (what the median pruner reads)
    assert all(t.intermediate_values for t in result.study.trials)
    # the first trial is the preset itself
    assert result.study.trials[0].params == preset_trial("mf")


def test_resuming_an_interrupted_study_continues_its_trial_count(split, tmp_path, monkeypatch):
    real_fit = ncf.training.fit_model
    calls = {"n": 0}

    def interrupted_fit(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 3:  # Ctrl-C in the middle of the third trial
            raise KeyboardInterrupt
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(ncf.training, "fit_model", interrupted_fit)
    db = tmp_path / "study.db"
    with pytest.raises(KeyboardInterrupt):
        search("mf", split.train, split.validation, n_trials=4, storage=db, **FAST)
    monkeypatch.setattr(ncf.training, "fit_model", real_fit)

    study = search("mf", split.train, split.validation, n_trials=4, storage=db, **FAST)
    numbers = [t.number for t in study.trials]
    states = [t.state.name for t in study.trials]
    assert numbers == [0, 1, 2, 3, 4]
    assert states[2] == "FAIL" and states.count("COMPLETE") + states.count("PRUNED") == 4
    # resumed trials are new points, not the first ones replayed
    assert study.trials[3].params != study.trials[1].params
    again = search("mf", split.train, split.validation, n_trials=4, storage=db, **FAST)
    assert len(again.trials) == 5  # nothing left to run


class _Recorder(ModelScorer):
    """A ModelScorer that logs every call as (tag, method, users, items)."""

    def __init__(self, model: Any, tag: str, log: list) -> None:
        super().__init__(model)
        self.tag, self.log = tag, log

    def score_candidates(self, users: Any, items: Any) -> np.ndarray:
        self.log.append((self.tag, "candidates", np.asarray(users), np.asarray(items)))
        return super().score_candidates(users, items)

    def score_users(self, users: Any) -> np.ndarray:
        self.log.append((self.tag, "users", np.asarray(users), None))
        return super().score_users(users)


class _GuardedSplit:
    """Split-like; logs every read of ``test``."""

    def __init__(self, split: Any, log: list) -> None:
        self.train, self.validation, self._test, self._log = (
            split.train,
            split.validation,
            split.test,
            log,
        )

    @property
    def test(self) -> Any:
        self._log.append(("test-read", None, None, None))
        return self._test

    def known(self) -> list:
        return [self.train.csr, self.validation.csr]


def test_search_never_touches_the_test_set(split, monkeypatch):
    log: list = []
    monkeypatch.setattr(
        ncf.training.data, "ModelScorer", lambda model: _Recorder(model, "validation", log)
    )
    result = tune(
        _GuardedSplit(split, log),
        "mf",
        n_trials=3,
        scorer_factory=lambda rec: _Recorder(rec.model_, "test", log),
        callbacks=[lambda study, trial: log.append(("trial-end", None, None, None))],
        **FAST,
    )
    assert len(result.study.trials) == 3
    last_trial = max(i for i, entry in enumerate(log) if entry[0] == "trial-end")
    test_events = [i for i, entry in enumerate(log) if entry[0] in ("test", "test-read")]
    assert test_events and min(test_events) > last_trial  # nothing of test during the search

    def positives(tag: str, stop: int | None = None) -> set:
        return {
            (int(u), int(row[0]))
            for t, method, users, items in log[:stop]
            if t == tag and method == "candidates"
            for u, row in zip(users, items, strict=True)
        }

    def pairs(part: Any) -> set:
        return set(zip(part.users.tolist(), part.items.tolist(), strict=True))

    val_pairs, test_pairs = pairs(split.validation), pairs(split.test)
    # the search ranked validation positives (after it, the chosen configuration's refit on
    # train + validation probes random items instead: no validation left to watch)
    assert positives("validation", last_trial) == val_pairs
    assert positives("validation").isdisjoint(test_pairs)
    assert positives("test") == test_pairs  # and the test evaluation ran once, at the end
    assert sum(1 for e in log if e[:2] == ("test", "users")) >= 1
    assert not any(e[:2] == ("validation", "users") for e in log)  # no full ranking in search


def test_written_config_round_trips_through_ncf_train(tmp_path, capsys):
    csv = tmp_path / "log.csv"
    make_synthetic(150, 200, 3000, n_clusters=4, seed=5).to_frame().to_csv(csv, index=False)
    out = tmp_path / "tune"
    common = ["--timestamp-col", "timestamp", "--json"]
    args = ["tune", str(csv), "-m", "mf", "--trials", "2", "--max-epochs", "3"]
    assert main([*args, "--patience", "1", "--out", str(out), *common]) == 0
    tuned = json.loads(capsys.readouterr().out)
    for name in (
        "best.toml",
        "trials.csv",
        "optimization_history.png",
        "param_importances.png",
        "study.db",
        "tune.json",
    ):
        assert (out / name).stat().st_size > 0, name
    assert (out / "optimization_history.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((out / "tune.json").read_text())["test"] == tuned["test"]
    config = tomllib.loads((out / "best.toml").read_text())
    assert config["model"] == "mf" and config["params"]["epochs"] == 3

    train_args = ["train", str(csv), "--config", str(out / "best.toml"), "-q"]
    assert main([*train_args, "--out", str(tmp_path / "run"), *common]) == 0
    trained = json.loads(capsys.readouterr().out)
    assert trained["model"] == "mf"
    for key in ("HR@10", "NDCG@10", "full_HR@10"):
        assert trained[key] == pytest.approx(tuned["test"][key], abs=1e-6), key

    # the same command with a larger budget resumes the stored study
    resumed = ["tune", str(csv), "-m", "mf", "--trials", "3", "--max-epochs", "3"]
    assert main([*resumed, "--patience", "1", "--out", str(out), *common]) == 0
    assert json.loads(capsys.readouterr().out)["trials"] == 3


def test_search_spaces_cover_every_kind_and_the_presets_fit_them():
    for kind in ("mf", "gmf", "mlp", "neumf"):
        fixed = optuna.trial.FixedTrial(preset_trial(kind))
        params = suggest_params(fixed, kind)
        assert set(params) == set(SEARCH_SPACES[kind])
        assert {"learning_rate", "l2", "negatives", "batch_size"} <= set(params)
    mlp = suggest_params(optuna.trial.FixedTrial(preset_trial("mlp")), "mlp")
    assert isinstance(mlp["layers"], list)
    with pytest.raises(ValueError, match="no search space"):
        suggest_params(optuna.trial.FixedTrial({}), "svd")


def test_pruning_callback_reports_and_stops():
    class FakeTrial:
        def __init__(self, prune: bool) -> None:
            self.prune, self.reports = prune, []

        def report(self, value: float, step: int) -> None:
            self.reports.append((step, value))

        def should_prune(self) -> bool:
            return self.prune

    keep, stop = FakeTrial(False), FakeTrial(True)
    record = {"epoch": 1, "val_NDCG@10": 0.3}
    assert PruningCallback(keep, "NDCG@10").on_epoch_end(record, None) is False
    assert keep.reports == [(1, 0.3)]
    callback = PruningCallback(stop, "HR@10")
    assert callback.on_epoch_end({"epoch": 2, "val_HR@10": 0.1}, None) is True and callback.pruned
    assert PruningCallback(stop, "HR@10").on_epoch_end({"epoch": 1}, None) is False


def test_to_toml_is_valid_toml():
    params = {"layers": [64, 32], "lr": 1e-05, "flag": True, "name": 'a"b', "opt": {"rho": 0.9}}
    text = to_toml("neumf", {**params, "none": None, "empty": {}}, header=["a comment"])
    doc = tomllib.loads(text)
    assert doc == {"model": "neumf", "params": params}


def test_bad_metric_and_trials_are_rejected(split):
    with pytest.raises(ValueError, match="metric"):
        search("mf", split.train, split.validation, metric="AUC")
    with pytest.raises(ValueError, match="n_trials"):
        search("mf", split.train, split.validation, n_trials=0)
    assert main(["tune", "ml-100k", "--metric", "AUC"]) == 2
    assert main(["tune", "ml-100k", "--model", "nope"]) == 2

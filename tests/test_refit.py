"""Refit after model selection: train again on train + validation for the chosen epochs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ncf.data import make_synthetic, merge, train_validation_test
from ncf.models import MF, NeuMF
from ncf.recommender import Recommender
from ncf.training import TrainConfig, fit_model
from ncf.training.refit import REFIT, SELECTION

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def split():
    return train_validation_test(make_synthetic(200, 300, 5000, seed=4), seed=0)


def quick(**kw) -> TrainConfig:
    base = {"epochs": 6, "batch_size": 512, "verbose": False, "patience": 2, "seed": 3}
    base.update(kw)
    return TrainConfig(**base)


def weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_merge_holds_every_row_and_checks_vocabularies(split):
    merged = merge(split.train, split.validation)
    assert len(merged) == len(split.train) + len(split.validation)
    assert (merged.csr - split.train.csr - split.validation.csr).nnz == 0
    assert merged.timestamps is not None
    other = make_synthetic(30, 20, 200, seed=1)
    with pytest.raises(ValueError, match="share vocabularies"):
        merge(split.train, other)


def test_refit_equals_training_on_train_plus_validation_for_the_chosen_epochs(split):
    shape = split.train.shape
    config = quick(refit=True, learning_rate=0.01)
    result = fit_model(MF(*shape, factors=8, seed=1), split.train, config, split.validation)
    selection = fit_model(
        MF(*shape, factors=8, seed=1), split.train, config.replace(refit=False), split.validation
    )
    assert result.best_epoch == selection.best_epoch
    expected = fit_model(
        MF(*shape, factors=8, seed=1),
        merge(split.train, split.validation),
        config.replace(refit=False, epochs=selection.best_epoch, early_stopping=None),
    )
    for key, value in weights(expected.model).items():
        assert torch.equal(result.model.state_dict()[key], value), key
    phases = [r["phase"] for r in result.history]
    assert phases == [SELECTION] * len(selection.history) + [REFIT] * selection.best_epoch
    assert result.history[result.best_epoch - 1]["val_HR@10"] == pytest.approx(
        selection.history[selection.best_epoch - 1]["val_HR@10"]
    )
    assert "refit" in result.stopped_reason
    # the refit model differs from the selected one: it learned from validation rows too
    assert not torch.equal(result.model.user_factors.weight, selection.model.user_factors.weight)


def test_refit_without_validation_is_a_plain_fit(split):
    a = fit_model(MF(*split.train.shape, seed=0), split.train, quick(refit=True, epochs=2))
    b = fit_model(MF(*split.train.shape, seed=0), split.train, quick(epochs=2))
    assert torch.equal(a.model.user_factors.weight, b.model.user_factors.weight)
    assert "phase" not in a.history[0]


class Interrupt(Exception):
    pass


class StopAt:
    """Raises after ``n`` epoch ends (selection and refit epochs both count)."""

    def __init__(self, n: int) -> None:
        self.n = n

    def on_epoch_end(self, record, model) -> bool:
        self.n -= 1
        if self.n == 0:
            raise Interrupt
        return False


@pytest.mark.parametrize("stop_after", [2, 7])  # during selection, during the refit
def test_refit_resumes_to_the_same_weights(split, tmp_path, stop_after):
    shape = split.train.shape
    config = quick(refit=True, epochs=5, patience=5, checkpoint_dir=str(tmp_path / "ck"))
    full = fit_model(
        MF(*shape, seed=2), split.train, config.replace(checkpoint_dir=None), split.validation
    )
    assert len(full.history) > stop_after  # the interruption falls inside the run
    with pytest.raises(Interrupt):
        fit_model(MF(*shape, seed=2), split.train, config, split.validation, [StopAt(stop_after)])
    resumed = fit_model(
        MF(*shape, seed=2), split.train, config.replace(resume=True), split.validation
    )
    for key, value in weights(full.model).items():
        assert torch.equal(resumed.model.state_dict()[key], value), key
    assert [r["phase"] for r in resumed.history] == [r["phase"] for r in full.history]
    assert (tmp_path / "ck" / SELECTION).is_dir() and (tmp_path / "ck" / REFIT).is_dir()


def test_pretrained_neumf_refit_replays_component_epochs(split):
    shape = split.train.shape
    hp = {"factors": 8, "mlp_embedding_size": 8, "layers": [16, 8], "seed": 0}
    config = quick(refit=True, pretrain=True, epochs=4, learning_rate=0.01)
    result = fit_model(NeuMF(*shape, **hp), split.train, config, split.validation)
    assert set(result.component_epochs) == {"gmf", "mlp"}
    assert all(1 <= e <= 4 for e in result.component_epochs.values())
    assert result.history[-1]["phase"] == REFIT
    assert sum(r["phase"] == REFIT for r in result.history) == result.best_epoch


def test_recommender_refit_sees_validation_items(split):
    data = merge(split.train, split.validation)
    rec = Recommender("mf", factors=8, epochs=3, batch_size=512, refit=True, seed=0)
    rec.fit(data, verbose=False)
    summary = rec.fit_summary_
    assert summary.history[-1]["phase"] == REFIT
    assert summary.best_epoch >= 1
    # the validation item carved by "auto" is the latest one; it still counts as seen
    user = int(split.validation.users[0])
    raw_user = data.user_vocab.raw(np.array([user]))[0]
    raw_item = data.item_vocab.raw(np.array([int(split.validation.items[0])]))[0]
    assert raw_item in set(rec.seen_items(raw_user).tolist())

"""Trainer, config, presets, schedules, checkpoints, and the collapse / slow-learning checks."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from ncf.data import Interactions, make_synthetic, train_validation_test
from ncf.errors import TrainingDivergedError
from ncf.models import GMF, MF, MLP, NeuMF, build_model
from ncf.models.presets import PRESETS, resolve
from ncf.training import ModelScorer, TrainConfig, fit_model, fit_neumf_pretrained
from ncf.training.schedules import LRSchedule

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def split():
    return train_validation_test(make_synthetic(200, 300, 6000, seed=1), seed=0)


def quick(**kw) -> TrainConfig:
    base = {"epochs": 3, "batch_size": 256, "verbose": False, "patience": 2}
    base.update(kw)
    return TrainConfig(**base)


# ---------------------------------------------------------------- config and presets
def test_config_round_trip_and_validation():
    cfg = quick(scheduler="cosine", warmup_epochs=1)
    assert TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        TrainConfig(batch_size=0)
    with pytest.raises(ValueError, match="optimizer must be one of"):
        TrainConfig(optimizer="rmsprop")
    with pytest.raises(ValueError, match="learning_rate"):
        TrainConfig(learning_rate=float("nan"))
    with pytest.raises(ValueError, match="unknown training parameter"):
        TrainConfig.from_dict({"epochz": 3})
    with pytest.raises(ValueError, match="resume"):
        TrainConfig(resume=True)


def test_resolve_splits_overrides_and_names_valid_keys():
    kind, mp, tp = resolve("neumf", factors=16, epochs=3, seed=5)
    assert kind == "neumf" and mp["factors"] == 16 and tp["epochs"] == 3
    assert mp["seed"] == 5 and tp["seed"] == 5
    with pytest.raises(ValueError, match="training parameters: .*batch_size"):
        resolve("mf", not_a_param=1)
    with pytest.raises(ValueError, match="unknown preset"):
        resolve("bpr")


def test_every_preset_builds_and_validates():
    for name in PRESETS:
        kind, mp, tp = resolve(name)
        build_model(kind, 10, 20, **mp)
        TrainConfig(**tp)


def test_seed_mlp_preset_is_the_seed_recipe():
    kind, mp, tp = resolve("seed-mlp")
    assert kind == "mlp" and mp["layers"] == [64, 32, 16] and mp["batch_norm"] == "first"
    assert (mp["dropout"], mp["hidden_init"], mp["output_init"]) == (
        0.2,
        "he_uniform",
        "glorot_normal",
    )
    assert mp["nonneg"] is True
    assert tp["optimizer"] == "adadelta" and tp["learning_rate"] == 1e-3
    assert tp["batch_size"] == 16 and tp["l2"] == 1e-6 and tp["l2_scope"] == "table"
    assert (tp["early_stopping"], tp["min_delta"], tp["patience"], tp["epochs"]) == (
        "loss",
        1e-4,
        10,
        200,
    )
    model = build_model(kind, 10, 20, **mp)
    bn = model.tower.norms[0]
    assert isinstance(bn, torch.nn.BatchNorm1d) and bn.eps == 1e-3
    assert isinstance(model.tower.norms[1], torch.nn.Identity)


def test_paper_presets():
    for name in ("ncf-gmf", "ncf-mlp", "ncf-neumf"):
        _, mp, tp = resolve(name)
        assert (tp["optimizer"], tp["learning_rate"], tp["batch_size"], tp["negatives"]) == (
            "adam",
            1e-3,
            256,
            4,
        )
    assert resolve("ncf-mlp")[1]["layers"] == [32, 16, 8]


# ---------------------------------------------------------------- the loop
def test_fit_records_history_and_leaves_global_rng_alone(split, tmp_path):
    before = torch.random.get_rng_state()
    model = MLP(*split.train.shape, dropout=0.1, batch_norm="all")
    res = fit_model(model, split.train, quick(), split.validation)
    assert torch.equal(before, torch.random.get_rng_state())
    assert len(res.history) == 3 and res.samples_per_s > 0
    rec = res.history[0]
    for key in (
        "epoch",
        "loss",
        "val_HR@10",
        "val_NDCG@10",
        "val_loss",
        "lr",
        "seconds",
        "samples_per_s",
        "flags",
    ):
        assert key in rec
    res.save_history(tmp_path / "h.json")
    res.save_history(tmp_path / "h.csv")
    assert json.loads((tmp_path / "h.json").read_text())[0]["epoch"] == 1
    assert len(pd.read_csv(tmp_path / "h.csv")) == 3


def test_early_stopping_restores_the_best_weights(split):
    model = MF(*split.train.shape, factors=16)
    cfg = quick(epochs=12, learning_rate=0.05, patience=1, early_stopping="NDCG@10")
    res = fit_model(model, split.train, cfg, split.validation)
    best = max(h["val_NDCG@10"] for h in res.history)
    assert res.history[res.best_epoch - 1]["val_NDCG@10"] == best
    from ncf.training.data import ValidationSet

    again = ValidationSet(split.train, split.validation, cfg).evaluate(res.model)
    assert again["NDCG@10"] == pytest.approx(best)


def test_optimisers_schedules_and_sparse_path(split):
    for opt in ("adam", "adamw", "adagrad", "adadelta", "sgd"):
        fit_model(MF(*split.train.shape), split.train, quick(epochs=1, optimizer=opt))
    for sched in ("plateau", "step", "cosine"):
        res = fit_model(
            MF(*split.train.shape),
            split.train,
            quick(scheduler=sched, warmup_epochs=1, step_size=1),
            split.validation,
        )
        assert res.history[0]["lr"] < res.history[1]["lr"] or sched == "plateau"
    for opt in ("adam", "sparse_adam", "adagrad"):
        model = MF(*split.train.shape, sparse=True)
        res = fit_model(
            model, split.train, quick(optimizer=opt, learning_rate=0.01, l2=1e-4), split.validation
        )
        assert res.history[-1]["loss"] < res.history[0]["loss"]
    with pytest.raises(ValueError, match="sparse"):
        fit_model(MF(*split.train.shape, sparse=True), split.train, quick(optimizer="sgd"))
    with pytest.raises(ValueError, match="sparse=True"):
        fit_model(MF(*split.train.shape), split.train, quick(optimizer="sparse_adam"))


def test_lr_schedule_values():
    s = LRSchedule(
        TrainConfig(
            learning_rate=1.0, warmup_epochs=3, scheduler="step", step_size=2, gamma=0.5, epochs=10
        )
    )
    assert [s.lr(e) for e in range(1, 8)] == [0.25, 0.5, 0.75, 1.0, 1.0, 0.5, 0.5]
    c = LRSchedule(TrainConfig(learning_rate=1.0, scheduler="cosine", epochs=4))
    assert c.lr(1) == 1.0 and c.lr(5) == pytest.approx(0.0)
    p = LRSchedule(
        TrainConfig(learning_rate=1.0, scheduler="plateau", plateau_patience=1, gamma=0.1),
        maximise=True,
    )
    for v in (0.5, 0.4, 0.4):
        p.observe(v)
    assert p.lr(4) == pytest.approx(0.1)


def test_nonneg_and_table_l2(split):
    model = MLP(*split.train.shape, nonneg=True, init="uniform")
    fit_model(model, split.train, quick(epochs=1, l2=1e-3, l2_scope="table"))
    assert all((e.weight >= 0).all() for e in model.embeddings())


def test_labelled_frame_is_used_as_given():
    rng = np.random.default_rng(0)
    users = np.repeat(np.arange(50), 10)
    items = rng.integers(0, 40, 500)
    labels = (items % 2 == users % 2).astype(int)
    frame = pd.DataFrame({"user": users, "item": items, "label": labels}).drop_duplicates(
        ["user", "item"]
    )
    data = Interactions.from_frame(frame)
    assert data.negatives is not None
    res = fit_model(
        MF(*data.shape, factors=8), data, quick(epochs=5, learning_rate=0.05, negatives=99)
    )
    n_rows = len(data) + len(data.negatives[0])
    assert res.history[0]["samples_per_s"] * res.history[0]["seconds"] == pytest.approx(n_rows)
    u = torch.as_tensor(data.negatives[0])
    i = torch.as_tensor(data.negatives[1])
    pos = res.model(torch.as_tensor(data.users), torch.as_tensor(data.items)).mean()
    assert pos > res.model(u, i).mean()


def test_nan_loss_raises_naming_epoch_and_batch(split):
    model = MF(*split.train.shape, init_std=1.0)
    cfg = quick(optimizer="sgd", learning_rate=1e30, momentum=0.0)
    with pytest.raises(TrainingDivergedError, match=r"epoch 1, batch \d+"):
        fit_model(model, split.train, cfg)


# ---------------------------------------------------------------- checkpoints
class _Interrupt(Exception):
    pass


class _StopAt:
    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_epoch_end(self, record, model):
        if record["epoch"] == self.epoch:
            raise _Interrupt


def test_resume_gives_the_same_weights_and_metrics(split, tmp_path):
    hp = {"dropout": 0.2, "batch_norm": "first", "layers": [16, 8], "embedding_size": 8}
    cfg = quick(epochs=4, scheduler="plateau", early_stopping="HR@10", patience=10, seed=3)
    full = fit_model(MLP(*split.train.shape, **hp), split.train, cfg, split.validation)
    ck = cfg.replace(checkpoint_dir=str(tmp_path / "ck"))
    with pytest.raises(_Interrupt):
        fit_model(
            MLP(*split.train.shape, **hp), split.train, ck, split.validation, callbacks=[_StopAt(3)]
        )
    resumed = fit_model(
        MLP(*split.train.shape, seed=99, **hp),
        split.train,
        ck.replace(resume=True),
        split.validation,
    )
    for a, b in zip(
        full.model.state_dict().values(), resumed.model.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b)
    strip = [
        {k: v for k, v in h.items() if k not in ("seconds", "samples_per_s")} for h in full.history
    ]
    assert strip == [
        {k: v for k, v in h.items() if k not in ("seconds", "samples_per_s")}
        for h in resumed.history
    ]
    assert resumed.best_epoch == full.best_epoch
    assert not list((tmp_path / "ck").glob("*.tmp"))


# ---------------------------------------------------------------- watchdogs
def test_collapse_is_flagged_and_stops(split):
    model = MLP(*split.train.shape, init="zeros", hidden_init="zeros", output_init="zeros")
    res = fit_model(model, split.train, quick(epochs=6, learning_rate=1e-12), split.validation)
    assert "collapsed" in res.flags and "collapsed" in res.history[0]["flags"]
    assert res.stopped_reason.startswith("collapsed") and len(res.history) == 3
    assert any("constant" in m for m in res.messages)


def test_slow_learning_is_flagged(split):
    kind, mp, tp = resolve("seed-mlp", epochs=2, max_batches=20, verbose=False)
    model = build_model(kind, *split.train.shape, **mp)
    res = fit_model(model, split.train, TrainConfig(**tp), split.validation)
    assert "slow-learning" in res.flags and "slow-learning" in res.history[1]["flags"]
    assert any("seed-mlp-tuned" in m for m in res.messages)


# ---------------------------------------------------------------- NeuMF pre-training
def test_neumf_from_pretrained_mixes_outputs(split):
    n_users, n_items = split.train.shape
    gmf = GMF(n_users, n_items, factors=4, seed=1)
    mlp = MLP(n_users, n_items, embedding_size=8, layers=[16, 8], seed=2)
    neumf = NeuMF(n_users, n_items, factors=4, mlp_embedding_size=8, layers=[16, 8])
    neumf.load_pretrained(gmf, mlp, alpha=0.3)
    u, i = torch.arange(20), torch.arange(20) * 3
    with torch.no_grad():
        expected = 0.3 * gmf(u, i) + 0.7 * mlp(u, i)
        torch.testing.assert_close(neumf(u, i), expected)
    with pytest.raises(ValueError, match="match"):
        neumf.load_pretrained(GMF(n_users, n_items, factors=5), mlp)


def test_fit_neumf_pretrained_and_pretrain_option(split):
    res = fit_neumf_pretrained(
        split.train,
        quick(epochs=2),
        split.validation,
        {"factors": 8},
        {"embedding_size": 8, "layers": [16, 8]},
    )
    assert isinstance(res.model, NeuMF) and any("pre-trained GMF" in m for m in res.messages)
    model = NeuMF(*split.train.shape, factors=8, mlp_embedding_size=8, layers=[16, 8])
    res2 = fit_model(model, split.train, quick(epochs=2, pretrain=True), split.validation)
    assert res2.model is model and math.isfinite(res2.history[-1]["val_HR@10"])


def test_model_scorer_restores_training_mode(split):
    model = MLP(*split.train.shape, dropout=0.5)
    model.train()
    scorer = ModelScorer(model)
    a = scorer.score_pairs(np.arange(5), np.arange(5))
    b = scorer.score_pairs(np.arange(5), np.arange(5))
    np.testing.assert_array_equal(a, b)
    assert model.training


@pytest.mark.parametrize(
    ("kind", "bn_position", "batch", "weighted", "lazy"),
    [
        ("mlp", "after", 16, False, ""),  # both tables larger than the batch: gathered rows
        ("mlp", "before", 16, True, ""),
        ("mlp", "after", 64, True, ""),  # both tables projected whole
        ("neumf", "after", 16, False, ""),
        ("neumf", "before", 35, True, ""),  # users (30) projected, items (40) gathered
        ("mlp", "after", -35, True, ""),  # users (40) gathered, items (30) projected
        ("neumf", "after", 64, True, ""),
        ("neumf", "after", 64, False, ""),
        # tables updated lazily (sparse row gradients, as the trainer sets up for big tables)
        ("neumf", "after", 64, True, "user"),  # lazy user tables gathered, items projected
        ("neumf", "before", 16, False, "user,item"),
        ("mlp", "after", 16, True, "user,item"),
    ],
)
def test_fast_step_matches_autograd(kind, bn_position, batch, weighted, lazy):
    from ncf.training.lazy import sparse_embeddings

    shape = (40, 30) if batch < 0 else (30, 40)
    batch = abs(batch)
    common = {"dropout": 0.3, "batch_norm": "all", "bn_position": bn_position}
    if kind == "mlp":
        hp = {"layers": [12, 6], "embedding_size": 4, **common}
        ref, fast_model = MLP(*shape, **hp), MLP(*shape, **hp)
    else:
        hp = {"layers": [12, 6], "mlp_embedding_size": 4, "factors": 5, **common}
        ref, fast_model = NeuMF(*shape, **hp), NeuMF(*shape, **hp)
    sides = lazy.split(",") if lazy else []
    tables = [e for m in (ref, fast_model) for e, side in m.embedding_pairs() if side in sides]
    with sparse_embeddings(tables):
        _check_fast_step(ref, fast_model, shape, batch, weighted)


def _check_fast_step(ref, fast_model, shape, batch, weighted):
    from ncf.training.fast_step import make_fast_step
    from ncf.training.optim import FlatParameters

    tables = [m for m in fast_model.modules() if isinstance(m, torch.nn.Embedding)]
    lazy = {id(m.weight) for m in tables if m.sparse}
    packed = FlatParameters([p for p in fast_model.parameters() if id(p) not in lazy])
    gen = torch.Generator().manual_seed(3)
    u = torch.randint(0, shape[0], (batch,), generator=gen)
    i = torch.randint(0, shape[1], (batch,), generator=gen)
    y = (torch.arange(batch) % 3 == 0).float()
    w = torch.rand(batch, generator=gen) * 2 if weighted else None
    for m in (ref, fast_model):
        m.train()
        m.set_generator(torch.Generator().manual_seed(5))
    ref_logits = ref(u, i)
    torch.nn.functional.binary_cross_entropy_with_logits(ref_logits, y, weight=w).backward()
    packed.grad.zero_()
    logits = make_fast_step(fast_model)(u, i, y, weights=w)
    torch.testing.assert_close(logits, ref_logits.detach(), rtol=1e-5, atol=1e-6)
    for (name, a), b in zip(ref.named_parameters(), fast_model.parameters(), strict=True):
        assert b.grad.is_sparse == a.grad.is_sparse == (id(b) in lazy), name
        ga, gb = (g.to_dense() if g.is_sparse else g for g in (a.grad, b.grad))
        assert gb.abs().sum() > 0, name
        torch.testing.assert_close(gb, ga, rtol=1e-4, atol=1e-6, msg=name)
    for a, b in zip(ref.buffers(), fast_model.buffers(), strict=True):
        torch.testing.assert_close(b, a)
    packed.unpack()


@pytest.mark.parametrize("kind", ["mlp", "neumf"])
def test_first_layer_projected_per_table_equals_gathered_rows(kind):
    """A batch at least as large as a table projects the table whole (Tower.forward_tables);
    logits and gradients equal those of the same rows scored in small (gathered) batches."""
    model = build_model(kind, 12, 9, layers=[8, 4], seed=1)
    gen = torch.Generator().manual_seed(2)
    u, i = torch.randint(0, 12, (40,), generator=gen), torch.randint(0, 9, (40,), generator=gen)
    big = model(u, i)  # 40 rows >= 12 users, 9 items: both tables projected
    big.square().sum().backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    small = torch.cat([model(u[s : s + 8], i[s : s + 8]) for s in range(0, 40, 8)])
    small.square().sum().backward()
    torch.testing.assert_close(big, small)
    for g, p in zip(grads, model.parameters(), strict=True):
        torch.testing.assert_close(g, p.grad, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("kind", ["gmf", "mf"])
@pytest.mark.parametrize(("weighted", "lazy"), [(False, ""), (True, ""), (True, "all")])
def test_factor_step_matches_autograd(kind, weighted, lazy):
    """GMF's and MF's hand-written step (FactorStep): logits and gradients as autograd's,
    dense or with every table (MF's bias tables too) updated lazily."""
    from ncf.training.lazy import sparse_embeddings

    ref, fast_model = build_model(kind, 30, 40, factors=6), build_model(kind, 30, 40, factors=6)
    tables = [m for model in (ref, fast_model) for m in model.modules()]
    tables = [m for m in tables if isinstance(m, torch.nn.Embedding)] if lazy else []
    with sparse_embeddings(tables):
        _check_fast_step(ref, fast_model, (30, 40), 64, weighted)


@pytest.mark.parametrize("updates", ["dense", "lazy"])
@pytest.mark.parametrize("kind", ["mf", "gmf", "mlp", "neumf"])
def test_training_with_the_fast_step_equals_autograd_training(split, kind, updates, monkeypatch):
    """Whole fits (L2, grouped batches, dense or lazy tables) end at the same weights with
    the hand-written step as with autograd's."""
    import ncf.training.trainer as trainer

    cfg = quick(epochs=2, optimizer="adam", l2=1e-4, shuffle="positives", embedding_updates=updates)
    states = []
    for use_fast in (True, False):
        if not use_fast:
            monkeypatch.setattr(trainer, "make_fast_step", lambda model: None)
        model = build_model(kind, *split.train.shape, seed=3)
        fit_model(model, split.train, cfg, split.validation)
        states.append(model.state_dict())
    for name, a in states[0].items():
        torch.testing.assert_close(a, states[1][name], rtol=1e-3, atol=1e-4, msg=name)


def test_fast_step_only_for_dense_cpu_float_models():
    from ncf.training.fast_step import make_fast_step, supports_fast_step

    assert not supports_fast_step(MLP(5, 6, sparse=True))
    assert not supports_fast_step(GMF(5, 6, sparse=True))
    assert not supports_fast_step(NeuMF(5, 6).double())
    assert all(supports_fast_step(build_model(k, 5, 6)) for k in ("mf", "gmf", "mlp", "neumf"))
    assert make_fast_step(NeuMF(5, 6, sparse=True)) is None


def test_verbose_progress_and_size_mismatch(split, capsys):
    res = fit_model(
        GMF(*split.train.shape), split.train, quick(epochs=1, verbose=True), split.validation
    )
    assert "epoch 1" in capsys.readouterr().err and len(res.history) == 1
    with pytest.raises(ValueError, match="sized"):
        fit_model(GMF(3, 3), split.train, quick())

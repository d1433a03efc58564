"""Large-catalogue training paths: lazy row-wise updates, memory-lean epochs, grouped shuffle."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ncf.data import make_synthetic, train_validation_test
from ncf.models import GMF, NeuMF
from ncf.training import TrainConfig, fit_model
from ncf.training.data import EpochData
from ncf.training.lazy import RowAdam, lazy_tables
from ncf.training.optim import make_optimizers

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def split():
    return train_validation_test(make_synthetic(300, 400, 9000, seed=2), seed=0)


def quick(**kw) -> TrainConfig:
    base = {"epochs": 3, "batch_size": 256, "verbose": False, "patience": 5}
    base.update(kw)
    return TrainConfig(**base)


def test_row_adam_matches_sparse_adam_with_duplicate_rows():
    gen = torch.Generator().manual_seed(0)
    ours = torch.nn.Embedding(50, 6, sparse=True)
    ref = torch.nn.Embedding(50, 6, sparse=True)
    ref.weight.data.copy_(ours.weight.data)
    opt, ref_opt = (
        RowAdam(ours.parameters(), lr=0.05),
        torch.optim.SparseAdam(ref.parameters(), lr=0.05),
    )
    for _ in range(20):
        idx = torch.randint(0, 20, (64,), generator=gen)  # many duplicates, rows 20+ untouched
        weight = torch.randn(64, 6, generator=gen)
        for emb, o in ((ours, opt), (ref, ref_opt)):
            o.zero_grad(set_to_none=True)
            (emb(idx) * weight).sum().backward()
            o.step()
    torch.testing.assert_close(ours.weight, ref.weight, rtol=1e-5, atol=1e-6)
    assert torch.equal(ours.weight[20:], ref.weight[20:])  # lazy: untouched rows never move


def test_row_adam_decay_is_per_occurrence_l2_and_clamp_holds():
    emb = torch.nn.Embedding(10, 4, sparse=True)
    emb.weight.data.fill_(0.5)
    plain = torch.nn.Embedding(10, 4, sparse=True)
    plain.weight.data.fill_(0.5)
    idx = torch.tensor([1, 1, 1, 3])
    decay = 0.1
    opt = RowAdam(emb.parameters(), lr=0.01, row_decay=decay, clamp_min=0.0)
    ref = torch.optim.SparseAdam(plain.parameters(), lr=0.01)
    emb(idx).sum().backward()
    opt.step()
    # the same as adding decay * w once per occurrence to the gradient (L2 on the batch rows)
    rows = plain(idx)
    (rows.sum() + 0.5 * decay * (rows**2).sum()).backward()
    ref.step()
    torch.testing.assert_close(emb.weight, plain.weight)
    with pytest.raises(RuntimeError, match="sparse gradients"):
        dense = torch.nn.Embedding(5, 2)
        dense(torch.tensor([0])).sum().backward()
        RowAdam(dense.parameters()).step()


@pytest.fixture(scope="module")
def wide():
    """A catalogue whose item table (40k x 32) is large enough for lazy updates."""
    return train_validation_test(make_synthetic(300, 40_000, 6000, seed=3), seed=0)


def test_auto_chooses_lazy_for_large_tables_only(split):
    small = GMF(*split.train.shape, factors=8)
    assert lazy_tables(small, quick(batch_size=16)) == []  # tiny tables: dense is cheaper
    big = GMF(300, 40_000, factors=32)
    assert lazy_tables(big, quick(batch_size=4096)) == [big.item_embedding]  # users stay dense
    assert lazy_tables(big, quick(batch_size=16384)) == []  # 40k < 4 rows per batch row
    assert lazy_tables(big, quick(batch_size=256, optimizer="sgd")) == []
    assert lazy_tables(big, quick(batch_size=256, l2=1e-3, l2_scope="table")) == []
    assert lazy_tables(big, quick(batch_size=256, embedding_updates="dense")) == []
    assert len(lazy_tables(small, quick(batch_size=4096, embedding_updates="lazy"))) == 2
    off_cpu = GMF(300, 40_000, factors=32).to("meta")  # stands in for a GPU
    assert lazy_tables(off_cpu, quick(batch_size=256)) == []
    with pytest.raises(ValueError, match="off the CPU"):
        lazy_tables(off_cpu, quick(embedding_updates="lazy"))
    with pytest.raises(ValueError, match="lazy.*optimizer 'adadelta'"):
        lazy_tables(small, quick(embedding_updates="lazy", optimizer="adadelta"))
    with pytest.raises(ValueError, match="embedding_updates"):
        quick(embedding_updates="sometimes")
    with pytest.raises(ValueError, match="shuffle"):
        quick(shuffle="users")


@pytest.mark.parametrize("shuffle", ["rows", "positives"])
def test_epoch_rows_hold_every_positive_and_valid_negatives(split, shuffle):
    train = split.train
    data = EpochData(train, quick(negatives=3, shuffle=shuffle), lazy=False)
    rows = data.epoch(1)
    assert len(rows) == data.n_rows == 4 * len(train)
    users, items, labels = rows.materialise()
    pos = labels == 1
    got = sorted(zip(users[pos].tolist(), items[pos].tolist(), strict=True))
    assert got == sorted(zip(train.users.tolist(), train.items.tolist(), strict=True))
    known = set(zip(train.users.tolist(), train.items.tolist(), strict=True))
    negatives = zip(users[~pos].tolist(), items[~pos].tolist(), strict=True)
    assert not any(pair in known for pair in negatives)  # a negative is never a positive
    # chunks concatenate to the whole epoch
    parts = [rows.rows(s, min(len(rows), s + 1000)) for s in range(0, len(rows), 1000)]
    assert torch.equal(torch.cat([p[1] for p in parts]), items)
    if shuffle == "positives":  # each positive followed by its own 3 negatives, same user
        assert torch.equal(labels[::4], torch.ones(len(train)))
        assert torch.equal(users.view(-1, 4), users[::4, None].expand(-1, 4))


def test_lazy_training_learns_and_resumes_exactly(split, tmp_path):
    cfg = quick(epochs=4, embedding_updates="lazy", l2=1e-4, seed=5, early_stopping="HR@10")
    hp = {"factors": 8, "mlp_embedding_size": 8, "layers": [16, 8], "nonneg": True}
    model = NeuMF(*split.train.shape, **hp)
    opts, _ = make_optimizers(model, cfg)
    assert not any(isinstance(o, RowAdam) for o in opts)  # dense until training flips them
    full = fit_model(model, split.train, cfg, split.validation)
    assert all(not e.sparse for e in full.model.embeddings())  # restored after training
    assert min(float(e.weight.detach().min()) for e in full.model.embeddings()) >= 0.0
    assert full.history[-1]["val_HR@10"] > 0.3  # random ranking: 0.1

    class Stop(Exception):
        pass

    class StopAt:
        def on_epoch_end(self, record, model):
            if record["epoch"] == 2:
                raise Stop

    ck = cfg.replace(checkpoint_dir=str(tmp_path / "ck"))
    with pytest.raises(Stop):
        fit_model(NeuMF(*split.train.shape, **hp), split.train, ck, split.validation, [StopAt()])
    resumed = fit_model(
        NeuMF(*split.train.shape, **hp), split.train, ck.replace(resume=True), split.validation
    )
    for a, b in zip(
        full.model.state_dict().values(), resumed.model.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b)


def test_lazy_and_dense_reach_similar_quality(split):
    hp = {"factors": 16}
    res = {
        mode: fit_model(
            GMF(*split.train.shape, **hp),
            split.train,
            quick(epochs=5, embedding_updates=mode, learning_rate=0.01, seed=1),
            split.validation,
        )
        for mode in ("dense", "lazy")
    }
    best = {m: max(h["val_HR@10"] for h in r.history) for m, r in res.items()}
    assert abs(best["dense"] - best["lazy"]) < 0.08, best
    assert np.isfinite(res["lazy"].history[-1]["loss"])


def test_mixed_lazy_and_dense_tables_train_with_l2_and_nonneg(wide):
    cfg = quick(epochs=3, batch_size=256, l2=1e-4, seed=2)  # items lazy, users dense
    model = GMF(*wide.train.shape, factors=32, nonneg=True)
    assert lazy_tables(model, cfg) == [model.item_embedding]
    before = model.user_embedding.weight.detach().clone()
    res = fit_model(model, wide.train, cfg, wide.validation)
    assert not torch.equal(before, res.model.user_embedding.weight)
    for e in res.model.embeddings():
        assert not e.sparse and float(e.weight.detach().min()) >= 0.0
    assert np.isfinite(res.history[-1]["loss"])


def test_mlp_with_a_lazy_table_trains(wide):
    from ncf.models import MLP

    cfg = quick(epochs=2, batch_size=256, l2=1e-4)
    model = MLP(*wide.train.shape, embedding_size=32, layers=[16, 8])
    assert lazy_tables(model, cfg) == [model.item_embedding]
    res = fit_model(model, wide.train, cfg)
    assert len(res.history) == 2 and np.isfinite(res.history[-1]["loss"])

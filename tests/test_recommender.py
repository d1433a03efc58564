"""The Recommender facade: API contract, save/load round trip, refusal of bad model files."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from ncf import Recommender
from ncf.data import Interactions, make_synthetic
from ncf.errors import ModelFileError, NotFittedError, UnknownIdError

FAST = {"epochs": 2, "batch_size": 1024, "verbose": False}


@pytest.fixture(scope="module")
def data() -> Interactions:
    synth = make_synthetic(120, 300, 3000, n_clusters=4, seed=3)
    frame = synth.to_frame(raw_ids=False)
    frame["user"] = "u" + frame["user"].astype(str)  # string user ids
    frame["item"] = frame["item"] + 1000  # integer item ids that are not indices
    return Interactions.from_frame(frame)


@pytest.fixture(scope="module")
def fitted(data) -> Recommender:
    params = {k: v for k, v in FAST.items() if k != "verbose"}
    return Recommender("gmf", factors=8, **params).fit(data, verbose=False)


def test_unfitted_raises():
    with pytest.raises(NotFittedError):
        Recommender("mf").recommend("u1")


def test_bad_parameter_fails_fast():
    with pytest.raises(ValueError, match="unknown parameter"):
        Recommender("mf", factorz=3)


def test_recommend_single_and_batch_agree(fitted, data):
    users = ["u0", "u5", "u7"]
    batch = fitted.recommend(users, k=5)
    assert batch.ids.shape == (3, 5) and batch.scores.shape == (3, 5)
    for row, user in enumerate(users):
        single = fitted.recommend(user, k=5)
        assert single.ids.shape == (5,)
        assert list(single.ids) == list(batch.ids[row])
        np.testing.assert_allclose(single.scores, batch.scores[row], rtol=1e-5)
        assert np.all(np.diff(single.scores) <= 1e-7)  # best first


def test_seen_items_are_excluded_unless_asked(fitted, data):
    user = "u3"
    seen = set(fitted.seen_items(user).tolist())
    recs = fitted.recommend(user, k=fitted.n_items)
    assert seen.isdisjoint(recs.ids.tolist())
    assert len(recs.ids) == fitted.n_items - len(seen)
    with_seen = fitted.recommend(user, k=fitted.n_items, exclude_seen=False)
    assert seen <= set(with_seen.ids.tolist())


def test_allow_and_deny_lists(fitted):
    allowed = [1000, 1001, 1002, 1003, 1004, 1005]
    recs = fitted.recommend("u1", k=10, items=allowed, exclude=[1001], exclude_seen=False)
    assert set(recs.ids.tolist()) <= set(allowed) - {1001}
    with pytest.raises(UnknownIdError):
        fitted.recommend("u1", items=[99999])


def test_unknown_user_gets_flagged_popularity(fitted, data):
    recs = fitted.recommend(["u1", "stranger"], k=3)
    assert recs.fallback.tolist() == [False, True]
    most_popular = data.item_vocab.raw(np.argsort(-fitted.item_popularity_, kind="stable")[:3])
    assert list(recs.ids[1]) == list(most_popular)


def test_user_who_has_seen_everything_gets_empty_result():
    frame = pd.DataFrame({"user": [1, 1, 1, 2], "item": [7, 8, 9, 7]})
    rec = Recommender("mf", factors=4, epochs=1, early_stopping=None).fit(frame, verbose=False)
    single = rec.recommend(1, k=5)
    assert len(single.ids) == 0 and len(single.scores) == 0
    batch = rec.recommend([1, 2], k=2)
    assert batch.counts.tolist() == [0, 2]
    assert batch.ids[0].tolist() == [None, None]


def test_score_and_similar_items(fitted):
    probs = fitted.score(["u1", "u2"], [1000, 1001])
    assert probs.shape == (2,) and np.all((probs > 0) & (probs < 1))
    with pytest.raises(UnknownIdError):
        fitted.score(["u1"], [4242])
    similar = fitted.similar_items(1000, k=4)
    assert len(similar.ids) == 4 and 1000 not in similar.ids.tolist()
    batch = fitted.similar_items([1000, 1001], k=4)
    assert list(batch.ids[0]) == list(similar.ids)
    with pytest.raises(UnknownIdError):
        fitted.similar_items([4242])


def test_fit_accepts_dataframe_and_does_not_resume(data):
    frame = data.to_frame()
    first = Recommender("mf", factors=4, epochs=1, early_stopping=None, seed=1).fit(
        frame, verbose=False
    )
    again = first.fit(frame, verbose=False)
    fresh = Recommender("mf", factors=4, epochs=1, early_stopping=None, seed=1).fit(
        frame, verbose=False
    )
    np.testing.assert_allclose(again.score(["u1"], [1000]), fresh.score(["u1"], [1000]))


def test_save_load_round_trip(fitted, tmp_path):
    path = fitted.save(tmp_path / "model")
    loaded = Recommender.load(path)
    users = ["u0", "u9", "nobody"]
    a, b = fitted.recommend(users, k=7), loaded.recommend(users, k=7)
    assert a.ids.tolist() == b.ids.tolist()
    np.testing.assert_allclose(a.scores, b.scores, rtol=1e-6)
    np.testing.assert_allclose(
        fitted.score(["u1"], [1003]), loaded.score(["u1"], [1003]), rtol=1e-6
    )
    config = json.loads((path / "config.json").read_text())
    assert config["format_version"] == 1 and config["model"]["kind"] == "gmf"


def test_save_is_atomic_and_keeps_previous_model(fitted, tmp_path, monkeypatch):
    from ncf import persistence

    path = fitted.save(tmp_path / "model")
    before = (path / "model.safetensors").read_bytes()

    def crash(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(persistence, "save_file", crash)
    with pytest.raises(ModelFileError, match="No space left"):
        fitted.save(path)
    assert (path / "model.safetensors").read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["model"]  # no temporary leftovers
    Recommender.load(path)


def _copy(fitted, tmp_path, name="model"):
    path = fitted.save(tmp_path / name)
    return path


def test_refuses_truncated_weights(fitted, tmp_path):
    path = _copy(fitted, tmp_path)
    data = (path / "model.safetensors").read_bytes()
    (path / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError, match="checksum"):
        Recommender.load(path)


def test_refuses_newer_format_and_unexpected_keys(fitted, tmp_path):
    path = _copy(fitted, tmp_path)
    config = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({**config, "format_version": 99}))
    with pytest.raises(ModelFileError, match="newer"):
        Recommender.load(path)
    (path / "config.json").write_text(json.dumps({**config, "__reduce__": "os.system"}))
    with pytest.raises(ModelFileError, match="unexpected key"):
        Recommender.load(path)
    (path / "config.json").write_text("{not json")
    with pytest.raises(ModelFileError, match="not valid JSON"):
        Recommender.load(path)


def test_refuses_pickle_payload_and_symlinks(fitted, tmp_path):
    import pickle

    path = _copy(fitted, tmp_path)
    config = json.loads((path / "config.json").read_text())
    payload = pickle.dumps({"weights": [1, 2, 3]})
    (path / "model.safetensors").write_bytes(payload)
    import hashlib

    config["weights_sha256"] = hashlib.sha256(payload).hexdigest()
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelFileError, match="safetensors"):
        Recommender.load(path)

    other = _copy(fitted, tmp_path, "other")
    outside = tmp_path / "outside.safetensors"
    shutil.move(other / "model.safetensors", outside)
    (other / "model.safetensors").symlink_to(outside)
    with pytest.raises(ModelFileError, match="symbolic link"):
        Recommender.load(other)


def test_refuses_inconsistent_shapes(fitted, tmp_path):
    path = _copy(fitted, tmp_path)
    config = json.loads((path / "config.json").read_text())
    config["model"]["n_items"] += 1
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelFileError, match="inconsistent"):
        Recommender.load(path)


def test_refuses_safetensors_header_that_lies_about_sizes(fitted, tmp_path):
    import hashlib
    import struct

    path = _copy(fitted, tmp_path)
    raw = (path / "model.safetensors").read_bytes()
    (size,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + size])
    name = next(k for k in header if k != "__metadata__")
    start, end = header[name]["data_offsets"]
    header[name]["data_offsets"] = [start, end + 10**9]  # claims far more bytes than exist
    text = json.dumps(header).encode()
    forged = struct.pack("<Q", len(text)) + text + raw[8 + size :]
    (path / "model.safetensors").write_bytes(forged)
    config = json.loads((path / "config.json").read_text())
    config["weights_sha256"] = hashlib.sha256(forged).hexdigest()  # even with a matching sum
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelFileError, match="safetensors"):
        Recommender.load(path)

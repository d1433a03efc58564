"""Readers: delimited text, Parquet, MovieLens and NCF formats, and malformed input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ncf.data import (
    DUPLICATE_RULE,
    Interactions,
    load_dataset,
    load_ncf_test,
    read_interactions,
    read_ncf_negative,
)
from ncf.errors import DataError, DatasetNotFoundError, UnknownIdError


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_csv_with_header_and_string_ids(tmp_path):
    path = write(tmp_path, "log.csv", "user,item,timestamp\nalice,x,3\nbob,y,1\nalice,y,2\n")
    data = read_interactions(path)
    assert data.shape == (2, 2)
    assert len(data) == 3
    assert data.user_vocab.to_list() == ["alice", "bob"]
    assert data.csr.toarray().tolist() == [[1, 1], [0, 1]]
    # Canonical order: by user, then time; alice's latest (x at t=3) comes last.
    assert data.item_vocab.raw(data.items[:2]).tolist() == ["y", "x"]


def test_headerless_tsv_columns_by_position(tmp_path):
    path = write(tmp_path, "log.tsv", "5\t10\t4.0\n6\t11\t2.0\n")
    data = read_interactions(path, user_col=1, item_col=0, rating_col=2)
    assert data.user_vocab.to_list() == [10, 11]
    assert data.ratings.tolist() == [4.0, 2.0]


def test_columns_by_name_and_rating_threshold(tmp_path):
    text = "uid;mid;score\n1;1;5\n1;2;2\n2;1;4\n"
    path = write(tmp_path, "log.txt", text)
    data = read_interactions(
        path, user_col="uid", item_col="mid", rating_col="score", rating_threshold=4
    )
    assert len(data) == 2
    assert data.item_vocab.to_list() == [1, 2]  # the vocabulary keeps every item seen


def test_movielens_formats(tmp_path):
    u_data = read_interactions(write(tmp_path, "u.data", "1\t2\t5\t100\n3\t4\t1\t50\n"))
    dat = read_interactions(write(tmp_path, "ratings.dat", "1::2::5::100\n3::4::1::50\n"))
    csv_ = read_interactions(
        write(tmp_path, "ratings.csv", "userId,movieId,rating,timestamp\n1,2,5,100\n3,4,1,50\n")
    )
    ncf = read_interactions(write(tmp_path, "a.rating", "0\t2\t5\t100\n1\t4\t1\t50\n"))
    for data in (u_data, dat, csv_, ncf):
        assert len(data) == 2 and data.timestamps is not None


def test_parquet(tmp_path):
    frame = pd.DataFrame({"user": ["a", "b"], "item": [1, 2], "timestamp": [1.0, 2.0]})
    frame.to_parquet(tmp_path / "log.parquet")
    data = read_interactions(tmp_path / "log.parquet")
    assert data.user_vocab.to_list() == ["a", "b"]


def test_duplicates_collapse_to_latest_with_summed_weights():
    data = Interactions.from_arrays(
        ["u", "u", "u"], ["i", "i", "j"], timestamps=[5, 9, 7], ratings=[1, 4, 3]
    )
    assert len(data) == 2
    row = data.item_vocab.index("i")[0] == data.items
    assert data.timestamps[row].tolist() == [9.0]
    assert data.ratings[row].tolist() == [4.0]
    assert data.weights[row].tolist() == [2.0]
    assert "latest" in DUPLICATE_RULE


def test_labelled_rows_keep_given_negatives():
    data = Interactions.from_arrays([1, 1, 2, 2], [10, 11, 10, 12], labels=[1, 0, 1, 0])
    assert len(data) == 2
    neg_users, neg_items = data.negatives
    assert data.user_vocab.raw(neg_users).tolist() == [1, 2]
    assert data.item_vocab.raw(neg_items).tolist() == [11, 12]


def test_vocabulary_round_trip_and_unknown_id():
    data = Interactions.from_arrays(["b", "a"], ["x", "y"])
    idx = data.user_vocab.index(["a", "b"])
    assert data.user_vocab.raw(idx).tolist() == ["a", "b"]
    with pytest.raises(UnknownIdError, match="zed"):
        data.user_vocab.index(["zed"])
    assert data.user_vocab.index(["zed"], missing="mask").tolist() == [-1]


@pytest.mark.parametrize(
    ("text", "kwargs", "match"),
    [
        ("", {}, "empty"),
        ("user,item,timestamp\n1,2,3\n1,3,yesterday\n", {}, r"line 3.*timestamp.*yesterday"),
        ("user,thing\n1,2\n", {}, r"missing column 'item'"),
        ("user,item,rating\n1,2,5\n3,,4\n", {}, r"line 3.*item"),
        ("user,item,label\n1,2,1\n1,3,7\n", {}, "label must be 0 or 1"),
        ("1,2\n3,4\n", {"rating_col": 5}, "out of range"),
        ("user,item\n1,2\n", {"rating_threshold": 3.0}, "no rating column"),
    ],
)
def test_malformed_files_name_file_line_and_field(tmp_path, text, kwargs, match):
    path = write(tmp_path, "bad.csv", text)
    with pytest.raises(DataError, match=match) as info:
        read_interactions(path, **kwargs)
    assert "bad.csv" in str(info.value)


def test_missing_file_and_unknown_format(tmp_path):
    with pytest.raises(DataError, match="not found"):
        read_interactions(tmp_path / "nope.csv")
    path = write(tmp_path, "x.csv", "user,item\n1,2\n")
    with pytest.raises(DataError, match="unknown format"):
        read_interactions(path, format="xml")


def test_crlf_bom_and_blank_lines(tmp_path):
    path = tmp_path / "win.csv"
    path.write_bytes(b"\xef\xbb\xbfuser,item\r\n1,2\r\n\r\n3,4\r\n")
    data = read_interactions(path)
    assert data.user_vocab.to_list() == [1, 3]


def test_negative_file_reader_and_errors(tmp_path):
    path = write(tmp_path, "x.negative", "(0,5)\t1\t2\t3\n(1,6)\t4\t5\t7\n")
    users, items, negs = read_ncf_negative(path)
    assert users.tolist() == [0, 1] and items.tolist() == [5, 6]
    assert negs.tolist() == [[1, 2, 3], [4, 5, 7]]
    bad = write(tmp_path, "bad.negative", "(0,5)\t1\t2\n0,6\t4\t5\n")
    with pytest.raises(DataError, match=r"line 2"):
        read_ncf_negative(bad)


def test_unknown_dataset_and_offline_message(tmp_path, monkeypatch):
    monkeypatch.setenv("NCF_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("NCF_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(DatasetNotFoundError, match="unknown dataset 'nope'"):
        load_dataset("nope")
    with pytest.raises(DatasetNotFoundError, match="Put the files in"):
        load_dataset("ml-1m", download=False)


@pytest.mark.slow
def test_ml100k_counts(data_dir):
    ds = load_dataset("ml-100k")
    data = ds.interactions
    assert (data.n_users, data.n_items, len(data)) == (943, 1682, 100_000)
    assert data.csr.nnz == 100_000
    assert ds.title(1) == "Toy Story (1995)"


@pytest.mark.slow
def test_ncf_ml1m_test_files(data_dir):
    test = load_ncf_test()
    assert test.negatives.shape == (6040, 99)
    assert test.test.n_items == 3706 and len(test.test) == 6040
    assert np.array_equal(test.users, np.arange(6040))
    assert int((test.negatives == test.items[:, None]).any(axis=1).sum()) == 156


def test_folder_of_parquet_shards(tmp_path):
    shards = tmp_path / "log"
    shards.mkdir()
    pd.DataFrame({"user": [1, 2], "item": [5, 6]}).to_parquet(shards / "part-0.parquet")
    pd.DataFrame({"user": [3], "item": [5]}).to_parquet(shards / "part-1.parquet")
    data = read_interactions(shards)
    assert len(data) == 3 and data.user_vocab.to_list() == [1, 2, 3]

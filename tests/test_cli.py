"""The `ncf` command through its real entry point (a subprocess), on synthetic and real data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ncf.data import make_synthetic


def run(*args: str, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-m", "ncf", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"ncf {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture(scope="module")
def log_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "log.csv"
    frame = make_synthetic(150, 200, 3000, n_clusters=4, seed=5).to_frame()
    frame = frame.rename(columns={"user": "uid", "item": "sku"})
    frame["sku"] = "item-" + frame["sku"].astype(str)
    frame[["uid", "sku", "timestamp"]].to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def trained(log_file, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("run")
    config = out / "cfg.toml"
    config.write_text('model = "mf"\n[params]\nfactors = 8\nbatch_size = 512\n')
    proc = run(
        "train",
        str(log_file),
        "--user-col",
        "uid",
        "--item-col",
        "sku",
        "--config",
        str(config),
        "--epochs",
        "2",
        "--out",
        str(out),
        "--json",
    )
    return out, json.loads(proc.stdout)


def test_train_writes_model_and_report(trained):
    out, metrics = trained
    for key in ("HR@10", "NDCG@10", "full_HR@10", "full_NDCG@10", "train_seconds"):
        assert isinstance(metrics[key], float)
    assert metrics["samples_per_s"] > 0  # the speed a user sees without the benchmark
    assert metrics["epochs"] == 2
    # the mf preset refits on train + validation for the epochs early stopping chose
    assert 1 <= metrics["refit_epochs"] == metrics["best_epoch"] <= 2
    assert (out / "model" / "model.safetensors").is_file()
    assert json.loads((out / "metrics.json").read_text())["HR@10"] == metrics["HR@10"]
    header = (out / "history.csv").read_text().splitlines()[0]
    assert "loss" in header and "val_HR@10" in header and "phase" in header
    png = (out / "learning_curves.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    from PIL import Image

    with Image.open(out / "learning_curves.png") as image:
        image.verify()


def test_recommend_and_similar_json(trained):
    out, _ = trained
    recs = json.loads(
        run("recommend", str(out / "model"), "0", "nobody", "-k", "3", "--json").stdout
    )
    assert [u["fallback"] for u in recs["users"]] == [False, True]
    assert all(len(u["items"]) == 3 for u in recs["users"])
    assert recs["users"][0]["items"][0]["item"].startswith("item-")
    sim = json.loads(run("similar", str(out / "model"), "item-1", "-k", "2", "--json").stdout)
    assert len(sim["items"][0]["items"]) == 2


def test_data_stats_and_split(log_file, tmp_path):
    stats = json.loads(
        run(
            "data", "stats", str(log_file), "--user-col", "uid", "--item-col", "sku", "--json"
        ).stdout
    )
    assert stats["users"] == 150 and stats["items"] <= 200
    run(
        "data",
        "split",
        str(log_file),
        "--user-col",
        "uid",
        "--item-col",
        "sku",
        "--out",
        str(tmp_path),
    )
    assert {p.name for p in tmp_path.iterdir()} == {"train.csv", "validation.csv", "test.csv"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("train", "no-such-dataset"), "neither a known dataset"),
        (("train", "ml-100k", "--bogus-flag"), "No such option"),
        (("recommend", "/nonexistent/model", "1"), "no model directory"),
        (("train", "ml-100k", "--set", "factorz=3"), "unknown parameter"),
    ],
)
def test_errors_are_one_line(args, message, tmp_path):
    proc = run(*args, check=False, env={"NCF_DATA_DIR": str(tmp_path)})
    assert proc.returncode != 0
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_bad_config_key(log_file, tmp_path):
    config = tmp_path / "bad.toml"
    config.write_text("[weird]\nx = 1\n")
    proc = run(
        "train",
        str(log_file),
        "--user-col",
        "uid",
        "--item-col",
        "sku",
        "--config",
        str(config),
        check=False,
    )
    assert proc.returncode != 0 and "unknown table [weird]" in proc.stderr


@pytest.mark.slow
def test_ml100k_train_evaluate_recommend(data_dir, tmp_path):
    env = {"NCF_DATA_DIR": str(data_dir)}
    proc = run(
        "train",
        "ml-100k",
        "--model",
        "mf",
        "--epochs",
        "3",
        "--out",
        str(tmp_path),
        "--json",
        env=env,
    )
    metrics = json.loads(proc.stdout)
    assert metrics["HR@10"] > 0.3  # well above random (0.10) after 3 epochs
    evaluated = json.loads(run("evaluate", str(tmp_path / "model"), "--json", env=env).stdout)
    assert evaluated["HR@10"] == pytest.approx(metrics["HR@10"])
    recs = run("recommend", str(tmp_path / "model"), "1", "-k", "5", env=env).stdout
    assert "(19" in recs  # movie titles with their year, e.g. "Star Wars (1977)"

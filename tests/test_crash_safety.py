"""Crash safety: SIGKILL `ncf train` mid-run, resume, and get the uninterrupted result.

Also: an unwritable output directory gives a clear error, and no partially written file is
ever left under a final name.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from ncf.data import make_synthetic

EPOCHS = 6
TRAIN_ARGS = [
    "--model",
    "mf",
    "--epochs",
    str(EPOCHS),
    "--set",
    "factors=8",
    "--set",
    "batch_size=256",
    "--set",
    "early_stopping='loss'",
    "--set",
    "patience=100",
    "--quiet",
    "--json",
]


def ncf(*args: str) -> list[str]:
    return [sys.executable, "-m", "ncf", *args]


@pytest.fixture(scope="module")
def log_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("crash") / "log.csv"
    make_synthetic(300, 250, 9000, n_clusters=6, seed=11).to_frame().to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def reference(log_file, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("reference")
    subprocess.run(
        ncf("train", str(log_file), *TRAIN_ARGS, "--out", str(out)),
        check=True,
        capture_output=True,
        timeout=300,
    )
    return out


def checkpoint_epoch(out: Path, phase: str) -> int:
    """The last checkpointed epoch of ``phase``: the mf preset early-stops ("selection"),
    then refits on train + validation ("refit"), each phase in its own folder."""
    state = out / "checkpoints" / phase / "state.json"
    try:
        return int(json.loads(state.read_text()).get("epoch", -1))
    except (OSError, ValueError):
        return -1


def assert_same_result(a: Path, b: Path) -> None:
    ma = json.loads((a / "metrics.json").read_text())
    mb = json.loads((b / "metrics.json").read_text())
    for key in ("HR@10", "NDCG@10", "full_HR@10", "full_NDCG@10"):
        assert ma[key] == mb[key], key
    wa = load_file(a / "model" / "model.safetensors")
    wb = load_file(b / "model" / "model.safetensors")
    assert wa.keys() == wb.keys()
    for key in wa:
        np.testing.assert_array_equal(wa[key], wb[key], err_msg=key)


def assert_no_partial_files(out: Path) -> None:
    for path in out.rglob("*"):
        if path.is_file():
            assert not path.name.endswith(".tmp"), f"temporary file left: {path}"


@pytest.mark.slow
@pytest.mark.parametrize(
    "phase, kill_after_epoch",
    [("selection", int(np.random.default_rng(7).integers(0, EPOCHS - 1))), ("refit", 1)],
)
def test_sigkill_then_resume_matches_uninterrupted(
    log_file, reference, tmp_path, phase, kill_after_epoch
):
    out = tmp_path / "run"
    if phase == "refit":  # the kill must fall inside the refit, not after it
        assert json.loads((reference / "metrics.json").read_text())["refit_epochs"] >= 2
    proc = subprocess.Popen(
        ncf("train", str(log_file), *TRAIN_ARGS, "--out", str(out)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 240
    try:
        while checkpoint_epoch(out, phase) < kill_after_epoch:
            assert proc.poll() is None, "training finished before it could be killed"
            assert time.monotonic() < deadline, "no checkpoint appeared"
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not (out / "metrics.json").exists()
    resumed = subprocess.run(
        ncf("train", str(log_file), *TRAIN_ARGS, "--out", str(out), "--resume"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert_same_result(reference, out)
    assert_no_partial_files(out)


def test_unwritable_output_is_a_clear_error(log_file, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    proc = subprocess.run(
        ncf(
            "train",
            str(log_file),
            "--model",
            "mf",
            "--epochs",
            "1",
            "--quiet",
            "--out",
            str(blocker / "run"),
        ),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode != 0
    assert "error:" in proc.stderr and "Traceback" not in proc.stderr
    assert blocker.read_text() == "not a directory"


def test_crash_between_checkpoint_files_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    import torch

    from ncf.training import checkpoint

    checkpoint.save_checkpoint(tmp_path, {"epoch": 1, "w": torch.ones(2)}, {"epoch": 1})
    real_write = checkpoint._atomic_write

    def die_on_state(path, write):
        if path.name == checkpoint.STATE:
            raise KeyboardInterrupt("killed between the tensor file and state.json")
        real_write(path, write)

    monkeypatch.setattr(checkpoint, "_atomic_write", die_on_state)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save_checkpoint(tmp_path, {"epoch": 2, "w": torch.zeros(2)}, {"epoch": 2})
    tensors, state = checkpoint.load_checkpoint(tmp_path)
    assert state["epoch"] == 1 and tensors["w"].tolist() == [1.0, 1.0]

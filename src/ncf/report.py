"""Training reports: metrics JSON, history CSV and a learning-curve PNG (matplotlib)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import matplotlib

from ncf.training.history import save_history

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def plot_learning_curves(path: Path, history: list[dict[str, Any]], title: str = "") -> None:
    """Loss (left) and validation HR@10 / NDCG@10 (right) per epoch; a refit's epochs
    (``phase == "refit"``) are drawn as their own training-loss line."""
    refit = [row for row in history if row.get("phase") == "refit"]
    history = [row for row in history if row.get("phase") != "refit"]
    epochs = [row.get("epoch") for row in history]
    fig, (ax_loss, ax_rank) = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    for key, label in (("loss", "training loss"), ("val_loss", "validation loss")):
        values = [row.get(key) for row in history]
        if any(v is not None for v in values):
            ax_loss.plot(epochs, values, marker="o", label=label)
    if refit:  # training again on train + validation for the chosen epochs
        ax_loss.plot(
            [row.get("epoch") for row in refit],
            [row.get("loss") for row in refit],
            marker="x",
            linestyle="--",
            label="training loss, refit on train + validation",
        )
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("binary cross-entropy")
    ax_loss.legend(loc="best")
    for key in ("val_HR@10", "val_NDCG@10"):
        values = [row.get(key) for row in history]
        if any(v is not None for v in values):
            ax_rank.plot(epochs, values, marker="o", label=key.replace("val_", "validation "))
    ax_rank.set_xlabel("epoch")
    ax_rank.set_ylabel("sampled metric (1 + 99)")
    if ax_rank.lines:
        ax_rank.legend(loc="best")
    fig.suptitle(title or "learning curves")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".png", dir=path.parent)
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=100)
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        Path(tmp).unlink(missing_ok=True)


def write_report(
    out_dir: Path, metrics: dict[str, Any], history: list[dict[str, Any]], title: str = ""
) -> dict[str, Path]:
    """Write ``metrics.json``, ``history.csv`` and ``learning_curves.png`` into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "metrics": out_dir / "metrics.json",
        "history": out_dir / "history.csv",
        "plot": out_dir / "learning_curves.png",
    }
    atomic_write_text(paths["metrics"], json.dumps(metrics, indent=2, default=str) + "\n")
    save_history(history, paths["history"])
    plot_learning_curves(paths["plot"], history, title)
    return paths

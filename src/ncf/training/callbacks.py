"""Things that watch training: early stopping, collapse and slow-learning detection, progress.

User callbacks are objects with an optional ``on_epoch_end(record: dict, model) -> bool | None``
(return True to stop training) and an optional ``on_train_end(result)``.
"""

from __future__ import annotations

import math
import sys
from typing import Any

import torch
from torch import nn

COLLAPSE_SPREAD = 1e-3  # mean per-user std of logits across items below which scores are constant
COLLAPSE_EPOCHS = 3  # consecutive collapsed epochs before collapse_action="stop" stops training


class EarlyStopping:
    """Tracks the best epoch of a monitored value and keeps a copy of its weights."""

    def __init__(self, monitor: str | None, patience: int, min_delta: float) -> None:
        self.monitor = monitor
        self.maximise = monitor != "loss"
        self.patience = patience
        self.min_delta = min_delta
        self.best_value: float | None = None
        self.best_epoch = 0
        self.bad_epochs = 0
        self.best_state: dict[str, torch.Tensor] | None = None

    def improved(self, value: float) -> bool:
        if self.best_value is None:
            return True
        if self.maximise:
            return value > self.best_value + self.min_delta
        return value < self.best_value - self.min_delta

    def update(self, epoch: int, value: float | None, model: nn.Module) -> bool:
        """Record the epoch; return True when patience has run out."""
        if self.monitor is None or value is None or not math.isfinite(value):
            self.best_epoch = epoch
            self.best_state = None
            return False
        if self.improved(value):
            self.best_value, self.best_epoch, self.bad_epochs = value, epoch, 0
            self.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            return False
        self.bad_epochs += 1
        return self.bad_epochs > self.patience

    def restore(self, model: nn.Module) -> None:
        if self.best_state is not None:
            model.load_state_dict(self.best_state)

    def state_dict(self) -> dict[str, Any]:
        return {
            "best_value": self.best_value,
            "best_epoch": self.best_epoch,
            "bad_epochs": self.bad_epochs,
        }

    def load_state_dict(self, state: dict[str, Any], best: dict[str, torch.Tensor] | None) -> None:
        self.best_value = state["best_value"]
        self.best_epoch = int(state["best_epoch"])
        self.bad_epochs = int(state["bad_epochs"])
        self.best_state = best


def label_entropy(positive_fraction: float) -> float:
    """BCE of the best constant predictor: what a collapsed model's loss is stuck at."""
    p = min(max(positive_fraction, 1e-12), 1 - 1e-12)
    return -(p * math.log(p) + (1 - p) * math.log(1 - p))


def is_collapsed(spread: float, loss: float, entropy: float) -> bool:
    """Scores (nearly) constant across items: tiny spread, or small spread at the entropy."""
    return spread < COLLAPSE_SPREAD or (spread < 10 * COLLAPSE_SPREAD and loss >= 0.995 * entropy)


def random_hit_rate(k: int, n_candidates: int) -> float:
    """HR@k of a random ranking of one positive among ``n_candidates`` negatives."""
    return min(1.0, k / (n_candidates + 1))


def within_noise_of_random(hr: float, k: int, n_candidates: int, n_users: int) -> bool:
    """True when ``hr`` is below random + 3 standard errors."""
    p = random_hit_rate(k, n_candidates)
    return hr <= p + 3.0 * math.sqrt(p * (1 - p) / max(n_users, 1))


class ProgressDisplay:
    """A rich progress bar on stderr: loss, validation metrics, samples/s. No-op when off."""

    def __init__(self, enabled: bool, total_epochs: int) -> None:
        self.enabled = enabled
        self._progress = None
        self.total_epochs = total_epochs
        if enabled:
            from rich.console import Console
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            self.console = Console(file=sys.stderr)
            self._progress = Progress(
                TextColumn("epoch {task.fields[epoch]}/{task.fields[of]}"),
                BarColumn(),
                TextColumn("{task.fields[info]}"),
                TimeElapsedColumn(),
                console=self.console,
                transient=False,
            )
            self._progress.start()
            self._task = None

    def start_epoch(self, epoch: int, n_batches: int) -> None:
        if self._progress is None:
            return
        if self._task is not None:
            self._progress.remove_task(self._task)
        self._task = self._progress.add_task(
            "train", total=n_batches, epoch=epoch, of=self.total_epochs, info=""
        )

    def advance(self, done: int, loss: float, samples_per_s: float) -> None:
        if self._progress is not None:
            self._progress.update(
                self._task, completed=done, info=f"loss {loss:.4f} | {samples_per_s:,.0f} samples/s"
            )

    def end_epoch(self, record: dict[str, Any]) -> None:
        if self._progress is None:
            return
        parts = [f"epoch {record['epoch']}", f"loss {record['loss']:.4f}"]
        for key in ("val_HR@10", "val_NDCG@10", "val_loss"):
            if record.get(key) is not None:
                parts.append(f"{key} {record[key]:.4f}")
        parts.append(f"lr {record['lr']:.3g}")
        parts.append(f"{record['samples_per_s']:,.0f} samples/s")
        if record["flags"]:
            parts.append(f"flags {','.join(record['flags'])}")
        self._progress.remove_task(self._task)
        self._task = None
        self.console.print(" | ".join(parts))

    def message(self, text: str) -> None:
        if self._progress is not None:
            self.console.print(f"[yellow]warning:[/yellow] {text}")

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

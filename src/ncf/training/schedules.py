"""Per-epoch learning-rate schedules: warm-up, then step, cosine or reduce-on-plateau.

The rate for an epoch is a pure function of the epoch and (for plateau) a small state that is
checkpointed, so a resumed run follows the same rates as an uninterrupted one.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ncf.training.config import TrainConfig


class LRSchedule:
    """Computes each epoch's learning rate and writes it into the optimiser."""

    def __init__(self, config: TrainConfig, maximise: bool = True) -> None:
        self.base = config.learning_rate
        self.kind = config.scheduler
        self.warmup = config.warmup_epochs
        self.epochs = config.epochs
        self.step_size = config.step_size
        self.gamma = config.gamma
        self.patience = config.plateau_patience
        self.min_delta = config.min_delta
        self.maximise = maximise
        # plateau state
        self.scale = 1.0
        self.best: float | None = None
        self.bad_epochs = 0

    def lr(self, epoch: int) -> float:
        """Learning rate for ``epoch`` (1-based)."""
        if self.warmup and epoch <= self.warmup:
            return self.base * epoch / (self.warmup + 1)
        t = epoch - self.warmup - 1  # epochs since warm-up ended
        if self.kind == "step":
            return self.base * self.gamma ** (t // self.step_size)
        if self.kind == "cosine":
            span = max(1, self.epochs - self.warmup)
            return self.base * 0.5 * (1.0 + math.cos(math.pi * min(t, span) / span))
        if self.kind == "plateau":
            return self.base * self.scale
        return self.base

    def apply(self, optimizers: list[torch.optim.Optimizer], epoch: int) -> float:
        rate = self.lr(epoch)
        for opt in optimizers:
            for group in opt.param_groups:
                group["lr"] = rate
        return rate

    def observe(self, value: float | None) -> None:
        """Feed the epoch's monitored value (plateau only)."""
        if self.kind != "plateau" or value is None or not math.isfinite(value):
            return
        better = self.best is None or (
            value > self.best + self.min_delta
            if self.maximise
            else value < self.best - self.min_delta
        )
        if better:
            self.best, self.bad_epochs = value, 0
            return
        self.bad_epochs += 1
        if self.bad_epochs > self.patience:
            self.scale *= self.gamma
            self.bad_epochs = 0

    def state_dict(self) -> dict[str, Any]:
        return {"scale": self.scale, "best": self.best, "bad_epochs": self.bad_epochs}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.scale = float(state["scale"])
        self.best = state["best"]
        self.bad_epochs = int(state["bad_epochs"])

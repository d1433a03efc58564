"""``fit_model``: the training loop (shuffled tensor batches, no per-sample Python).

Each epoch: build the shuffled (user, item, label) tensors once, slice them into batches,
step the optimiser, clip non-negative embeddings, evaluate on validation, watch for collapse
and slow learning, early-stop, checkpoint. Losses are accumulated in a tensor and checked for
NaN/inf every few batches, so there is no per-batch ``.item()``.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ncf.data import Interactions
from ncf.errors import TrainingDivergedError
from ncf.models.base import RecModel
from ncf.training import callbacks as cb
from ncf.training.checkpoint import load_checkpoint, save_checkpoint
from ncf.training.config import TrainConfig
from ncf.training.data import (
    DROPOUT,
    EpochData,
    EpochRows,
    ValidationSet,
    generator,
    probe_spread,
)
from ncf.training.fast_step import make_fast_step
from ncf.training.lazy import RowAdam, lazy_tables, sparse_embeddings
from ncf.training.optim import FlatParameters, make_optimizers
from ncf.training.schedules import LRSchedule

log = logging.getLogger("ncf.training")
_CHECK_EVERY = 256  # batches between NaN checks (and progress updates)
_CHUNK_TARGET = 1 << 21  # rows materialised at a time


@dataclass
class FitResult:
    """What training produced: the model with its best weights restored, and how it went."""

    model: RecModel
    history: list[dict[str, Any]]
    best_epoch: int
    stopped_reason: str
    train_seconds: float
    samples_per_s: float
    flags: list[str] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)
    component_epochs: dict[str, int] = field(default_factory=dict)  # pre-trained GMF/MLP

    def save_history(self, path: str | Path) -> None:
        """History as JSON (``.json``) or CSV (anything else)."""
        from ncf.training.history import save_history

        save_history(self.history, path)


def _chunk_rows(batch_size: int) -> int:
    """Rows materialised at a time: whole check windows, about 2M rows (~40 MB)."""
    window = _CHECK_EVERY * batch_size
    return window * max(1, _CHUNK_TARGET // window)


def _train_epoch(
    model: RecModel,
    opts: list,
    data: EpochRows,
    config: TrainConfig,
    epoch: int,
    progress: cb.ProgressDisplay,
    packed: FlatParameters | None = None,
    lazy: list | None = None,
) -> tuple[float, int, float]:
    """One pass over the epoch's rows; returns (mean loss, rows seen, seconds).

    Rows are materialised a chunk at a time. Logits go to a chunk buffer (one copy per
    batch, no ``.item()``); the loss and the NaN/inf check are computed from it every
    ``_CHECK_EVERY`` batches.
    """
    bs = config.batch_size
    n_batches = math.ceil(len(data) / bs)
    if config.max_batches is not None:
        n_batches = min(n_batches, config.max_batches)
    n = min(len(data), n_batches * bs)
    # L2 on embeddings. Dense gradients get the penalty's exact gradient added directly
    # (2 * l2 / B per occurrence of a row in the batch, or 2 * l2 * W for whole tables);
    # lazy (row-wise) updates fold it into the optimiser (``row_decay``); tables a user
    # built sparse go through autograd so their gradients stay sparse.
    l2 = config.l2
    row_wise = {id(e.weight) for e in lazy or []}
    by_rows = [(e.weight, side) for e, side in model.embedding_pairs()] if l2 else []
    autograd_l2 = l2 if (l2 and config.l2_scope == "batch" and model.sparse) else 0.0
    dense_rows = config.l2_scope == "batch" and not model.sparse
    grad_rows = [(w, s) for w, s in by_rows if id(w) not in row_wise] if dense_rows else []
    tables = [(w.detach(), w.grad) for w, _ in by_rows] if config.l2_scope == "table" else []
    clamp = [
        e.weight.detach()
        for e in model.embeddings()
        if model.nonneg and id(e.weight) not in row_wise
    ]
    region = packed.region([e.weight for e in model.embeddings()]) if packed else None
    if region is not None:  # embeddings contiguous in the flat buffer: one op instead of many
        tables = [region] if tables else []
        clamp = [region[0]] if clamp else []
    zero = packed.grad if packed is not None else None
    row_groups = [g for opt in opts if isinstance(opt, RowAdam) for g in opt.param_groups]
    # every sparse table, bias tables included (MF's embeddings() lists only its factors):
    # autograd would otherwise add each step's sparse gradient to the last one's
    sparse_grads = [m.weight for m in model.modules() if isinstance(m, nn.Embedding) and m.sparse]
    # MF, GMF, MLP and NeuMF use a hand-written step with the same gradients (fast_step).
    fast = make_fast_step(model) if packed is not None else None
    gen = generator(config.seed, epoch, DROPOUT)
    model.train()
    model.set_generator(gen)
    progress.start_epoch(epoch, n_batches)
    masks: list = []
    loss_sum = 0.0
    chunk = _chunk_rows(bs)
    start = time.perf_counter()
    for c0 in range(0, n, chunk):
        users, items, labels = data.rows(c0, min(n, c0 + chunk))
        row_weights = data.weights(c0, min(n, c0 + chunk))
        logits = torch.empty(len(users))
        for s in range(0, len(users), bs):
            b = (c0 + s) // bs
            ub, ib, yb = users[s : s + bs], items[s : s + bs], labels[s : s + bs]
            wb = None if row_weights is None else row_weights[s : s + bs]
            if lazy and l2:
                for group in row_groups:
                    group["row_decay"] = 2.0 * l2 / len(ub)
            if fast is not None:
                if b % _CHECK_EVERY == 0:
                    masks = fast.draw_masks(min(_CHECK_EVERY * bs, n - c0 - s), gen)
                o = (b % _CHECK_EVERY) * bs
                zero.zero_()
                batch_masks = [m if m is None else m[o : o + len(ub)] for m in masks]
                out = fast(ub, ib, yb, batch_masks, wb)
            else:
                out = model(ub, ib)
                bce = F.binary_cross_entropy_with_logits(out, yb, weight=wb)
                loss = bce
                if autograd_l2:
                    loss = bce + (autograd_l2 / len(ub)) * model.l2_batch(ub, ib)
                if zero is not None:
                    zero.zero_()
                    for w in sparse_grads:
                        w.grad = None
                else:
                    for opt in opts:
                        opt.zero_grad(set_to_none=bool(row_groups))
                loss.backward()
            for w, g in tables:
                g.add_(w, alpha=2.0 * l2)
            if grad_rows:  # d/dW of l2/B * sum of squared rows used: 2 l2/B * count(row) * W
                counts = {
                    "user": torch.bincount(ub, minlength=model.n_users).unsqueeze(1),
                    "item": torch.bincount(ib, minlength=model.n_items).unsqueeze(1),
                }
                for w, side in grad_rows:
                    w.grad.addcmul_(w.detach(), counts[side], value=2.0 * l2 / len(ub))
            for opt in opts:
                opt.step()
            for w in clamp:
                w.clamp_(min=0.0)
            logits[s : s + len(ub)] = out.detach()
            if (b + 1) % _CHECK_EVERY == 0 or b + 1 == n_batches:
                hi = s + len(ub)
                lo = max(0, hi - _CHECK_EVERY * bs)
                _check_finite(logits[lo:hi], c0 + lo, bs, epoch)
                window_weights = None if row_weights is None else row_weights[lo:hi]
                loss_sum += float(
                    F.binary_cross_entropy_with_logits(
                        logits[lo:hi], labels[lo:hi], weight=window_weights, reduction="sum"
                    )
                )
                done = c0 + hi
                rate = done / max(time.perf_counter() - start, 1e-9)
                progress.advance(b + 1, loss_sum / done, rate)
    seconds = time.perf_counter() - start
    return loss_sum / max(n, 1), n, seconds


def _check_finite(window: torch.Tensor, offset: int, batch_size: int, epoch: int) -> None:
    bad = (~torch.isfinite(window)).nonzero()
    if len(bad):
        row = offset + int(bad[0, 0])
        raise TrainingDivergedError(
            f"loss became non-finite (logit {float(window[int(bad[0, 0])])}) at epoch {epoch}, "
            f"batch {row // batch_size + 1}; try a lower learning_rate, a smaller l2 or "
            "another optimizer"
        )


def watch_setup(
    config: TrainConfig, has_validation: bool, positive_fraction: float, messages: list[str]
) -> tuple[str | None, LRSchedule, cb.EarlyStopping, float, list[dict[str, Any]], dict]:
    """What watches a run, shared by the single-process and distributed loops: the monitored
    metric, LR schedule, early stopper, label entropy (collapse check), history and state."""
    monitor = config.early_stopping if has_validation else None
    if config.early_stopping and not has_validation:
        messages.append("no validation data: early stopping is off and all epochs run")
    schedule = LRSchedule(config, maximise=monitor != "loss")
    stopper = cb.EarlyStopping(monitor, config.patience, config.min_delta)
    state: dict[str, Any] = {
        "flags": [],
        "collapsed_run": 0,
        "train_seconds": 0.0,
        "rows": 0,
        "stopped_reason": None,
    }
    return monitor, schedule, stopper, cb.label_entropy(positive_fraction), [], state


def fit_model(
    model: RecModel,
    train: Interactions,
    config: TrainConfig,
    validation: Interactions | None = None,
    callbacks: list | None = None,
) -> FitResult:
    """Train ``model`` on ``train`` (positives + sampled negatives, or given labelled rows).

    ``validation`` (carved from training, never the test set) drives early stopping, the
    plateau schedule and the collapse / slow-learning checks. With ``config.refit`` the
    model is then trained again on train + validation for the chosen number of epochs
    (`ncf.training.refit`).
    """
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
    if (model.n_users, model.n_items) != train.shape:
        raise ValueError(
            f"model is sized {(model.n_users, model.n_items)} but the training "
            f"data has shape {train.shape}"
        )
    if config.refit and validation is not None:
        from ncf.training.refit import fit_then_refit

        return fit_then_refit(fit_model, model, train, config, validation, callbacks)
    if config.pretrain and model.kind == "neumf":
        from ncf.training.pretrain import fit_neumf_pretrained

        gmf_hp, mlp_hp = model.component_params()
        return fit_neumf_pretrained(
            train,
            config.replace(pretrain=False),
            validation,
            gmf_hp,
            mlp_hp,
            alpha=config.pretrain_alpha,
            model=model,
            callbacks=callbacks,
        )
    if config.l2_scope == "table" and config.l2 and model.sparse:
        raise ValueError("l2_scope='table' would make sparse gradients dense; use 'batch'")
    callbacks = list(callbacks or [])
    messages: list[str] = []
    lazy = lazy_tables(model, config)
    data = EpochData(train, config, bool(lazy))
    val = ValidationSet(train, validation, config) if validation is not None else None
    with sparse_embeddings(lazy):
        opts, packed = make_optimizers(model, config)
    monitor, schedule, stopper, entropy, history, state = watch_setup(
        config, val is not None, data.positive_fraction, messages
    )
    first_epoch = 1
    if config.resume:
        loaded = load_checkpoint(config.checkpoint_dir)
        if loaded is not None:
            first_epoch = _restore(loaded, model, opts, schedule, stopper, state, history) + 1
    progress = cb.ProgressDisplay(config.verbose, config.epochs)

    def say(text: str) -> None:
        messages.append(text)
        log.warning(text)
        progress.message(text)

    try:
        for epoch in range(first_epoch, config.epochs + 1):
            if state["stopped_reason"]:
                break
            lr = schedule.apply(opts, epoch)
            prepare = time.perf_counter()
            epoch_rows = data.epoch(epoch)  # negatives and shuffle count as training time
            prepare = time.perf_counter() - prepare
            with sparse_embeddings(lazy):
                loss, rows, seconds = _train_epoch(
                    model, opts, epoch_rows, config, epoch, progress, packed, lazy
                )
            seconds += prepare
            del epoch_rows
            if packed is not None and not packed.intact():  # pragma: no cover - safety net
                raise RuntimeError("gradients were replaced during training (flat packing)")
            state["train_seconds"] += seconds
            state["rows"] += rows
            record: dict[str, Any] = {
                "epoch": epoch,
                "loss": loss,
                "lr": lr,
                "seconds": seconds,
                "samples_per_s": rows / seconds,
                "flags": [],
            }
            metrics = val.evaluate(model) if val is not None else None
            if metrics is not None:
                record.update({f"val_{k}": v for k, v in metrics.items()})
                spread = metrics["score_spread"]
            else:
                spread = probe_spread(model, train, config.seed)
                record["score_spread"] = spread
            _watch(record, epoch, spread, loss, entropy, val, config, state, say)
            value = None if metrics is None or monitor is None else metrics[monitor]
            if stopper.update(epoch, value, model) and not state["stopped_reason"]:
                state["stopped_reason"] = (
                    f"early stopping: no {monitor} improvement > "
                    f"{config.min_delta} in {config.patience} epochs"
                )
            schedule.observe(value if value is not None else loss)
            history.append(record)
            progress.end_epoch(record)
            for c in callbacks:
                hook = getattr(c, "on_epoch_end", None)
                if hook is not None and hook(record, model) and not state["stopped_reason"]:
                    state["stopped_reason"] = f"stopped by callback {type(c).__name__}"
            if config.checkpoint_dir is not None:
                _save(config, epoch, model, opts, schedule, stopper, state, history)
    finally:
        progress.close()
        if packed is not None:
            packed.unpack()
    stopper.restore(model)
    model.eval()
    secs = state["train_seconds"]
    result = FitResult(
        model,
        history,
        stopper.best_epoch or len(history),
        state["stopped_reason"] or "max epochs reached",
        secs,
        state["rows"] / secs if secs else 0.0,
        list(state["flags"]),
        messages,
    )
    for c in callbacks:
        if getattr(c, "on_train_end", None) is not None:
            c.on_train_end(result)
    return result


def _watch(
    record: dict,
    epoch: int,
    spread: float,
    loss: float,
    entropy: float,
    val: ValidationSet | None,
    config: TrainConfig,
    state: dict,
    say: Any,
) -> None:
    """Collapse and slow-learning checks; sets flags, messages and possibly a stop reason."""
    if cb.is_collapsed(spread, loss, entropy):
        record["flags"].append("collapsed")
        state["collapsed_run"] += 1
        if "collapsed" not in state["flags"]:
            state["flags"].append("collapsed")
            say(
                f"epoch {epoch}: scores are (nearly) constant across items (spread "
                f"{spread:.2e}, loss {loss:.4f} vs label entropy {entropy:.4f}): the model "
                "has collapsed to a constant scorer; try another seed, init or learning_rate"
            )
        if config.collapse_action == "stop" and state["collapsed_run"] >= cb.COLLAPSE_EPOCHS:
            state["stopped_reason"] = f"collapsed for {cb.COLLAPSE_EPOCHS} epochs"
    else:
        state["collapsed_run"] = 0
    if val is not None and epoch == min(2, config.epochs):
        hr = record["val_HR@10"]
        if cb.within_noise_of_random(hr, 10, val.n_candidates, len(val.users)):
            record["flags"].append("slow-learning")
            if "slow-learning" not in state["flags"]:
                state["flags"].append("slow-learning")
                rand = cb.random_hit_rate(10, val.n_candidates)
                say(
                    f"validation HR@10 is {hr:.3f} after epoch {epoch}, within noise of random "
                    f"ranking ({rand:.3f}): this recipe learns very slowly; try preset "
                    "'seed-mlp-tuned' or a larger learning_rate"
                )


def _save(
    config: TrainConfig,
    epoch: int,
    model: RecModel,
    opts: list,
    schedule: LRSchedule,
    stopper: cb.EarlyStopping,
    state: dict,
    history: list,
    optimizer_states: list | None = None,
) -> None:
    """Write the checkpoint; ``optimizer_states`` overrides ``opts``' own (distributed runs
    convert theirs to this single-process layout first)."""
    if optimizer_states is None:
        optimizer_states = [o.state_dict() for o in opts]
    tensors = {
        "epoch": epoch,
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizers": optimizer_states,
        "best": stopper.best_state,
    }
    payload = {
        "epoch": epoch,
        "history": history,
        "schedule": schedule.state_dict(),
        "stopper": stopper.state_dict(),
        "state": state,
        "config": config.to_dict(),
    }
    save_checkpoint(config.checkpoint_dir, tensors, payload)


def _restore(
    loaded: tuple,
    model: RecModel,
    opts: list,
    schedule: LRSchedule,
    stopper: cb.EarlyStopping,
    state: dict,
    history: list,
    convert: Any = None,
) -> int:
    """Load a checkpoint into the training objects; ``convert`` maps each saved optimiser
    state to the layout ``opts`` expect. Returns the checkpoint's epoch."""
    tensors, saved = loaded
    model.load_state_dict(tensors["model"])
    for opt, sd in zip(opts, tensors["optimizers"], strict=True):
        opt.load_state_dict(convert(sd) if convert is not None else sd)
    schedule.load_state_dict(saved["schedule"])
    stopper.load_state_dict(saved["stopper"], tensors["best"])
    state.update(saved["state"])
    history.extend(saved["history"])
    return int(saved["epoch"])


__all__ = ["FitResult", "fit_model"]

"""Data-parallel training with PyTorch's own engine: ``torchrun`` + DistributedDataParallel.

Launch with ``torchrun --nproc-per-node N -m ncf train ...`` (or ``ncf train --workers N``);
``Recommender.fit`` switches to `fit_model_distributed` when torchrun set ``WORLD_SIZE > 1``.

* Backend: gloo on CPU, nccl with ``device="cuda"`` (one GPU per local rank).
* Data: every rank holds the whole training set (the vocabularies must be global). Each
  epoch a permutation seeded by ``(seed, epoch)``, the same on every rank, deals the positives
  out: rank r takes ``perm[r::world]`` (cut to equal length so every rank takes the same
  number of steps), samples its own negatives and shuffles with seeds derived from
  ``(seed, epoch, stream, rank)``.
* ``batch_size`` stays the *global* batch: each rank steps on ``ceil(batch_size / world)``
  rows and DDP averages the gradients, so a step sees as many rows as a single-process step
  and an epoch has the same number of steps.
* Gradients: dense by default (DDP's bucketed all-reduce). Models built with ``sparse=True``
  all-reduce sparse embedding gradients; gloo supports that, nccl does not.
* Rank 0 evaluates validation, runs early stopping, collapse checks and callbacks, writes
  checkpoints (the unwrapped model's state dict, optimiser state in the single-process
  layout, so either kind of run resumes the other's checkpoint) and broadcasts the stop
  decision; at the end it broadcasts the best weights and the history, so every rank returns
  the same `FitResult`.
* Failures: collectives time out after ``NCF_DIST_TIMEOUT`` seconds (default 300; it must
  exceed one validation pass on rank 0), and a lost peer raises `DistributedTrainingError`.

Test-only hook: ``NCF_TEST_DIE_AT_EPOCH=E`` with ``NCF_TEST_DIE_RANK=R`` makes rank R exit
abruptly (``os._exit(1)``) at the start of epoch E, to test that the job fails, not hangs.
"""

from __future__ import annotations

import datetime
import functools
import logging
import math
import os
import time
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ncf.data import Interactions, NegativeSampler
from ncf.errors import NCFError
from ncf.models.base import RecModel
from ncf.training import callbacks as cb
from ncf.training.checkpoint import load_checkpoint
from ncf.training.config import TrainConfig
from ncf.training.data import DROPOUT, SAMPLING, SHUFFLE, ValidationSet, derive_seed, probe_spread
from ncf.training.optim import make_optimizers
from ncf.training.schedules import LRSchedule
from ncf.training.trainer import _CHECK_EVERY, FitResult, _check_finite, _watch, watch_setup
from ncf.training.trainer import _restore as _restore_single
from ncf.training.trainer import _save as _save_single
from ncf.training.weights import recency_weights

log = logging.getLogger("ncf.training")
SHARD = 100  # random stream of the per-epoch permutation that deals positives out to ranks
DEFAULT_TIMEOUT_S = 300


class DistributedTrainingError(NCFError, RuntimeError):
    """A rank died, timed out or lost its connection during distributed training."""


# ---------------------------------------------------------------------------- process group
def is_distributed() -> bool:
    """True under torchrun (or any launcher) with more than one process."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1")) > 1
    except ValueError:
        return False


def rank() -> int:
    """This process's global rank: from the group when there is one, else from RANK."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return int(os.environ.get("RANK", "0") or 0)


def is_main_process() -> bool:
    return rank() == 0


def timeout_seconds() -> float:
    value = os.environ.get("NCF_DIST_TIMEOUT")
    try:
        seconds = float(value) if value else DEFAULT_TIMEOUT_S
    except ValueError:
        raise ValueError(f"NCF_DIST_TIMEOUT must be a number of seconds, got {value!r}") from None
    if not seconds > 0:
        raise ValueError(f"NCF_DIST_TIMEOUT must be positive, got {value!r}")
    return seconds


def init_process_group(backend: str | None = None, timeout: float | None = None) -> bool:
    """Join the group torchrun described in the environment; True if this call created it.

    ``backend`` defaults to gloo (CPU); ``timeout`` (seconds) bounds every collective.
    """
    if dist.is_initialized():
        return False
    missing = [
        k for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ
    ]
    if missing:
        raise DistributedTrainingError(
            f"distributed training needs {missing} in the environment; launch with torchrun "
            "or `ncf train --workers N`"
        )
    seconds = timeout if timeout is not None else timeout_seconds()
    dist.init_process_group(backend=backend or "gloo", timeout=datetime.timedelta(seconds=seconds))
    return True


def _device_and_backend(device: str) -> tuple[torch.device, str]:
    if device == "cpu":
        return torch.device("cpu"), "gloo"
    if device == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("device 'cuda' was requested but CUDA is not available")
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return torch.device("cuda", local), "nccl"
    raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")


def strip_option(argv: list[str], name: str) -> list[str]:
    """``argv`` without ``name VALUE`` / ``name=VALUE`` (e.g. ``--workers``)."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == name:
            skip = True
        elif not arg.startswith(name + "="):
            out.append(arg)
    return out


def launch(argv: list[str], workers: int, device: str = "cpu") -> int:
    """Run ``python -m ncf ARGV`` under torchrun with ``workers`` local processes.

    Returns torchrun's exit code (non-zero when any rank failed); the ranks' output streams
    through. ``--standalone`` picks a free port, so concurrent jobs do not collide.
    """
    import subprocess
    import sys

    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a positive integer, got {workers!r}")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += [f"--nproc-per-node={workers}", "-m", "ncf", *argv]
    env = {**os.environ, "NCF_DEVICE": device}
    return subprocess.call(command, env=env)


# ---------------------------------------------------------------------------- data sharding
def rank_seed(seed: int, epoch: int, stream: int, rank: int) -> int:
    """A 63-bit seed for ``stream`` at ``epoch`` on ``rank`` (independent across ranks)."""
    return derive_seed(seed, epoch, stream * 1_000_003 + 1 + rank)


class ShardedEpochData:
    """This rank's share of each epoch's (users, items, labels), shuffled."""

    def __init__(self, train: Interactions, config: TrainConfig, rank: int, world: int) -> None:
        self.config, self.rank, self.world = config, rank, world
        self.pos = (train.users.astype(np.int64), train.items.astype(np.int64))
        self.fixed = None
        if train.negatives is not None and len(train.negatives[0]) > 0:
            self.fixed = tuple(a.astype(np.int64) for a in train.negatives)
        self.sampler = None
        if self.fixed is None and config.negatives:
            self.sampler = NegativeSampler(train.csr, alpha=config.sampling_alpha)
        weights = recency_weights(train, config.recency_boost, config.recency_half_life)
        self.pos_weights = weights  # per positive, or None (every row weighs 1)
        n_pos = len(self.pos[0]) // world
        n_neg = len(self.fixed[0]) // world if self.fixed else n_pos * config.negatives
        if n_pos == 0:
            raise ValueError(f"{len(self.pos[0])} positives cannot be shared by {world} ranks")
        self.n_rows = n_pos + n_neg
        self.positive_fraction = n_pos / self.n_rows

    def _deal(self, n: int, epoch: int, stream_offset: int = 0) -> np.ndarray:
        """Indices of this rank's share of ``n`` rows: the same permutation on every rank."""
        gen = np.random.default_rng(derive_seed(self.config.seed, epoch, SHARD + stream_offset))
        keep = (n // self.world) * self.world
        return gen.permutation(n)[self.rank : keep : self.world]

    def epoch(self, epoch: int) -> tuple[torch.Tensor, ...]:
        """(users, items, labels, weights or None) of this rank's shuffled rows."""
        draw = epoch if self.config.resample_negatives or self.fixed is not None else 0
        mine = self._deal(len(self.pos[0]), draw)
        pu, pi = self.pos[0][mine], self.pos[1][mine]
        pw = None if self.pos_weights is None else self.pos_weights[mine]
        nw = None
        if self.fixed is not None:
            neg = self._deal(len(self.fixed[0]), draw, 1)
            nu, ni = self.fixed[0][neg], self.fixed[1][neg]
            nw = np.ones(len(nu), np.float32)  # given negatives weigh 1
        elif self.sampler is not None:
            seed = rank_seed(self.config.seed, draw, SAMPLING, self.rank)
            nu, ni = self.sampler.sample_per_positive(pu, self.config.negatives, seed)
            if pw is not None:  # the sampler's layout: all first negatives, then all second...
                owners = pw[self.sampler.degree[pu] < self.sampler.n_items]
                nw = np.tile(owners, self.config.negatives)
        else:
            nu = ni = np.empty(0, np.int64)
            nw = np.empty(0, np.float32)
        users = torch.from_numpy(np.concatenate([pu, nu]).astype(np.int64))
        items = torch.from_numpy(np.concatenate([pi, ni]).astype(np.int64))
        labels = torch.zeros(len(users))
        labels[: len(pu)] = 1.0
        gen = torch.Generator().manual_seed(rank_seed(self.config.seed, epoch, SHUFFLE, self.rank))
        perm = torch.randperm(len(users), generator=gen)
        weights = None
        if pw is not None:
            weights = torch.from_numpy(np.concatenate([pw, nw]).astype(np.float32))[perm]
        return users[perm], items[perm], labels[perm], weights


# ---------------------------------------------------------------------------- optimiser state
def _packs(model: nn.Module, config: TrainConfig) -> list[nn.Parameter] | None:
    """The parameters a single process would pack flat (``FlatParameters``), else None."""
    sparse = any(isinstance(m, nn.Embedding) and m.sparse for m in model.modules())
    dense = [p for p in model.parameters() if p.requires_grad]
    return None if sparse or not dense or config.optimizer == "sparse_adam" else dense


def flatten_optimizer_state(state: dict, params: list[nn.Parameter], config: TrainConfig) -> dict:
    """A per-parameter optimiser state dict in the single-process flat layout."""
    total = sum(p.numel() for p in params)
    per = [state["state"].get(i, {}) for i in range(len(params))]
    flat: dict[str, Any] = {}
    if per and per[0]:
        for key, value in per[0].items():
            if torch.is_tensor(value) and value.numel() == params[0].numel() and value.dim():
                flat[key] = torch.cat([s[key].reshape(-1) for s in per])
            else:
                flat[key] = value
        if config.optimizer == "adadelta":  # FlatAdadelta's scratch buffers
            flat["_std"] = torch.zeros(total)
            flat["_delta"] = torch.zeros(total)
    group = {**state["param_groups"][0], "params": [0]}
    return {"state": {0: flat} if flat else {}, "param_groups": [group]}


def unflatten_optimizer_state(state: dict, params: list[nn.Parameter]) -> dict:
    """The inverse of `flatten_optimizer_state` (scratch buffers are dropped)."""
    flat = state["state"].get(0, {})
    out: dict[int, dict] = {}
    sizes = [p.numel() for p in params]
    total = sum(sizes)
    for key, value in flat.items():
        if key.startswith("_"):
            continue
        if torch.is_tensor(value) and value.dim() and value.numel() == total:
            for i, (part, p) in enumerate(zip(value.split(sizes), params, strict=True)):
                out.setdefault(i, {})[key] = part.reshape(p.shape).clone()
        else:
            for i in range(len(params)):
                out.setdefault(i, {})[key] = value.clone() if torch.is_tensor(value) else value
    group = {**state["param_groups"][0], "params": list(range(len(params)))}
    return {"state": out, "param_groups": [group]}


# ---------------------------------------------------------------------------- training
class _Objective(nn.Module):
    """Model + loss in one forward, so DDP all-reduces the L2 penalty's gradient too."""

    def __init__(self, model: RecModel, l2: float) -> None:
        super().__init__()
        self.model, self.l2 = model, l2

    def forward(
        self,
        users: torch.Tensor,
        items: torch.Tensor,
        labels: torch.Tensor,
        weights: torch.Tensor | None = None,
    ) -> tuple:
        out = self.model(users, items)
        loss = F.binary_cross_entropy_with_logits(out, labels, weight=weights)
        if self.l2:
            loss = loss + (self.l2 / len(users)) * self.model.l2_batch(users, items)
        return loss, out.detach()


def _maybe_die(epoch: int, rank: int) -> None:
    """Test-only: NCF_TEST_DIE_AT_EPOCH / NCF_TEST_DIE_RANK kill this rank abruptly."""
    at = os.environ.get("NCF_TEST_DIE_AT_EPOCH")
    if at and int(at) == epoch and int(os.environ.get("NCF_TEST_DIE_RANK", "1")) == rank:
        os._exit(1)


def _train_epoch(
    ddp: nn.Module,
    model: RecModel,
    opts: list,
    data: tuple,
    config: TrainConfig,
    epoch: int,
    rank: int,
    world: int,
    device: torch.device,
    progress: cb.ProgressDisplay,
) -> tuple[float, int, float]:
    """One pass over this rank's rows: (mean local loss, local rows, seconds)."""
    users, items, labels, weights = (None if t is None else t.to(device) for t in data)
    bs = max(1, math.ceil(config.batch_size / world))
    n_batches = math.ceil(len(users) / bs)
    if config.max_batches is not None:
        n_batches = min(n_batches, config.max_batches)
    n = min(len(users), n_batches * bs)
    logits = torch.empty(n, device=device)
    table_l2 = config.l2 if config.l2_scope == "table" else 0.0
    tables = [e.weight for e in model.embeddings()] if table_l2 else []
    clamp = [e.weight.detach() for e in model.embeddings()] if model.nonneg else []
    gen = torch.Generator(device=device)
    gen.manual_seed(rank_seed(config.seed, epoch, DROPOUT, rank))
    ddp.train()
    model.set_generator(gen)
    progress.start_epoch(epoch, n_batches)
    start = time.perf_counter()
    for b in range(n_batches):
        s = b * bs
        for opt in opts:
            opt.zero_grad(set_to_none=False)
        wb = None if weights is None else weights[s : s + bs]
        loss, out = ddp(users[s : s + bs], items[s : s + bs], labels[s : s + bs], wb)
        loss.backward()
        for w in tables:  # same weights on every rank: added after the all-reduce
            w.grad.add_(w.detach(), alpha=2.0 * table_l2)
        for opt in opts:
            opt.step()
        for w in clamp:
            w.clamp_(min=0.0)
        logits[s : s + len(out)] = out
        if (b + 1) % _CHECK_EVERY == 0 or b + 1 == n_batches:
            done = min(n, (b + 1) * bs)
            lo = max(0, done - _CHECK_EVERY * bs)
            _check_finite(logits[lo:done].cpu(), lo, bs, epoch)
            w_done = None if weights is None else weights[:done]
            so_far = float(
                F.binary_cross_entropy_with_logits(logits[:done], labels[:done], weight=w_done)
            )
            progress.advance(b + 1, so_far, world * done / max(time.perf_counter() - start, 1e-9))
    seconds = time.perf_counter() - start
    w_all = None if weights is None else weights[:n]
    return float(F.binary_cross_entropy_with_logits(logits, labels[:n], weight=w_all)), n, seconds


def fit_model_distributed(
    model: RecModel,
    train: Interactions,
    config: TrainConfig,
    validation: Interactions | None = None,
    callbacks: list | None = None,
    device: str | None = None,
) -> FitResult:
    """`fit_model` across the ranks of a torchrun job (see the module docstring).

    Every rank must call it with the same data, config and model hyper-parameters. Joins (and
    afterwards leaves) the process group unless the caller already initialised one.
    ``device``: "cpu" (gloo) or "cuda" (nccl); default ``$NCF_DEVICE`` or "cpu".
    """
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
    if (model.n_users, model.n_items) != train.shape:
        raise ValueError(
            f"model is sized {(model.n_users, model.n_items)} but the training "
            f"data has shape {train.shape}"
        )
    if config.pretrain:
        raise ValueError("pretrain=True is not supported by distributed training yet")
    if config.l2_scope == "table" and config.l2 and model.sparse:
        raise ValueError("l2_scope='table' would make sparse gradients dense; use 'batch'")
    dev, backend = _device_and_backend(device or os.environ.get("NCF_DEVICE", "cpu"))
    if model.sparse and backend == "nccl":
        raise ValueError("sparse embedding gradients need gloo (CPU); nccl supports dense only")
    owns_group = init_process_group(backend)  # both phases of a refit share the group
    try:
        if config.refit and validation is not None:
            from ncf.training.refit import fit_then_refit

            fit = functools.partial(fit_model_distributed, device=device)
            return fit_then_refit(fit, model, train, config, validation, callbacks)
        return _fit(model, train, config, validation, list(callbacks or []), dev)
    except RuntimeError as exc:
        if isinstance(exc, NCFError):
            raise
        raise DistributedTrainingError(
            f"rank {rank()}: distributed training failed ({_short(exc)}); another rank "
            f"probably died or a collective timed out after {timeout_seconds():.0f} s "
            "(NCF_DIST_TIMEOUT)"
        ) from exc
    finally:
        if owns_group and dist.is_initialized():
            dist.destroy_process_group()


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= 200 else text[:197] + "..."


def _fit(
    model: RecModel,
    train: Interactions,
    config: TrainConfig,
    validation: Interactions | None,
    callbacks: list,
    dev: torch.device,
) -> FitResult:
    me, world = dist.get_rank(), dist.get_world_size()
    main = me == 0
    messages: list[str] = []
    data = ShardedEpochData(train, config, me, world)
    val = ValidationSet(train, validation, config) if validation is not None and main else None
    has_val = validation is not None
    model.to(dev)
    packs = _packs(model, config)
    opts, _ = make_optimizers(model, config, flat=False)
    monitor, schedule, stopper, entropy, history, state = watch_setup(
        config, has_val, data.positive_fraction, messages
    )
    first_epoch = 1
    if config.resume:
        box = [load_checkpoint(config.checkpoint_dir) if main else None]
        dist.broadcast_object_list(box, src=0)  # ranks need not share a file system
        if box[0] is not None:
            first_epoch = _restore(box[0], model, opts, packs, schedule, stopper, state, history)
            first_epoch += 1
    objective = _Objective(model, config.l2 if config.l2_scope == "batch" else 0.0)
    ddp = DistributedDataParallel(objective, device_ids=[dev.index] if dev.type == "cuda" else None)
    progress = cb.ProgressDisplay(config.verbose and main, config.epochs)

    def say(text: str) -> None:
        messages.append(text)
        log.warning(text)
        progress.message(text)

    try:
        for epoch in range(first_epoch, config.epochs + 1):
            if state["stopped_reason"]:
                break
            _maybe_die(epoch, me)
            lr = schedule.apply(opts, epoch)
            loss, rows, seconds = _train_epoch(
                ddp, model, opts, data.epoch(epoch), config, epoch, me, world, dev, progress
            )
            totals = torch.tensor([loss * rows, float(rows)], dtype=torch.float64)
            dist.all_reduce(totals)
            slowest = torch.tensor([seconds], dtype=torch.float64)
            dist.all_reduce(slowest, op=dist.ReduceOp.MAX)
            loss, rows, seconds = float(totals[0] / totals[1]), int(totals[1]), float(slowest)
            state["train_seconds"] += seconds
            state["rows"] += rows
            decision = torch.tensor([0.0, math.nan], dtype=torch.float64)
            if main:
                record: dict[str, Any] = {
                    "epoch": epoch,
                    "loss": loss,
                    "lr": lr,
                    "seconds": seconds,
                    "samples_per_s": rows / seconds,
                    "flags": [],
                    "world_size": world,
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
                history.append(record)
                progress.end_epoch(record)
                for c in callbacks:
                    hook = getattr(c, "on_epoch_end", None)
                    if hook is not None and hook(record, model) and not state["stopped_reason"]:
                        state["stopped_reason"] = f"stopped by callback {type(c).__name__}"
                decision[0] = 1.0 if state["stopped_reason"] else 0.0
                decision[1] = math.nan if value is None else float(value)
            dist.broadcast(decision, src=0)  # every rank stops (and schedules) together
            value = float(decision[1])
            schedule.observe(value if math.isfinite(value) else loss)
            if decision[0] and not state["stopped_reason"]:
                state["stopped_reason"] = "stopped by rank 0"
            if main and config.checkpoint_dir is not None:
                _save(config, epoch, model, opts, packs, schedule, stopper, state, history)
    finally:
        progress.close()
    if main:
        stopper.restore(model)
    for tensor in model.state_dict().values():  # rank 0's best weights everywhere
        dist.broadcast(tensor, src=0)
    box = [(history, stopper.best_epoch, state["stopped_reason"], state["flags"], messages)]
    dist.broadcast_object_list(box, src=0)
    history, best_epoch, reason, flags, messages = box[0]
    model.to("cpu")
    model.eval()
    secs = state["train_seconds"]
    result = FitResult(
        model,
        history,
        best_epoch or len(history),
        reason or "max epochs reached",
        secs,
        state["rows"] / secs if secs else 0.0,
        list(flags),
        messages,
    )
    for c in callbacks:
        if main and getattr(c, "on_train_end", None) is not None:
            c.on_train_end(result)
    return result


def _save(
    config: TrainConfig,
    epoch: int,
    model: RecModel,
    opts: list,
    packs: list | None,
    schedule: LRSchedule,
    stopper: cb.EarlyStopping,
    state: dict,
    history: list,
) -> None:
    """The single-process checkpoint format (`ncf.training.trainer`), so either resumes it."""
    optimizers = [o.state_dict() for o in opts]
    if packs is not None:
        optimizers = [flatten_optimizer_state(sd, packs, config) for sd in optimizers]
    _save_single(config, epoch, model, opts, schedule, stopper, state, history, optimizers)


def _restore(
    loaded: tuple,
    model: RecModel,
    opts: list,
    packs: list | None,
    schedule: LRSchedule,
    stopper: cb.EarlyStopping,
    state: dict,
    history: list,
) -> int:
    def convert(sd: dict) -> dict:
        return unflatten_optimizer_state(sd, packs) if packs is not None else sd

    return _restore_single(loaded, model, opts, schedule, stopper, state, history, convert)


__all__ = [
    "DistributedTrainingError",
    "fit_model_distributed",
    "init_process_group",
    "is_distributed",
    "is_main_process",
]

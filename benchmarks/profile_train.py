"""Where a training step's time goes: sampling, gather, forward, backward, optimiser, rest.

Replays the trainer's step phase by phase (same data path, model, optimisers, lazy or
dense embedding updates and hand-written step (``ncf.training.fast_step``) as
``fit_model``) and times each phase with ``perf_counter``; CPU
ops are synchronous, so the phase times add up to the step time. Sampling (negatives and
the shuffle) is timed once per epoch and shown per batch.

    python benchmarks/profile_train.py --data ml-20m-synthetic --model neumf --batches 200
    python benchmarks/profile_train.py --data ml-100k --model neumf --updates dense
    python benchmarks/profile_train.py --data ml-100k --autograd   # without the hand-written step
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict

import torch
import torch.nn.functional as F
from torch import nn

from ncf.models import build_model
from ncf.models.presets import resolve
from ncf.training import TrainConfig
from ncf.training.data import EpochData
from ncf.training.fast_step import make_fast_step
from ncf.training.lazy import RowAdam, lazy_tables, sparse_embeddings
from ncf.training.optim import make_optimizers
from ncf.training.trainer import _chunk_rows


def load(name: str, seed: int):
    from ncf.data import load_dataset, make_synthetic

    if name == "ml-20m-synthetic":
        return make_synthetic(138_000, 27_000, 20_000_000, seed=seed)
    return load_dataset(name).interactions


def profile(
    data,
    model_name: str,
    updates: str,
    batches: int,
    seed: int,
    autograd: bool = False,
    **overrides,
) -> dict[str, float]:
    kind, mp, tp = resolve(
        model_name, seed=seed, verbose=False, embedding_updates=updates, **overrides
    )
    config = TrainConfig(**tp)
    model = build_model(kind, *data.shape, **mp)
    lazy = lazy_tables(model, config)
    times: dict[str, float] = defaultdict(float)
    t0 = time.perf_counter()
    epoch_data = EpochData(data, config, bool(lazy))
    rows = epoch_data.epoch(1)
    times["sampling (per epoch)"] = time.perf_counter() - t0
    n_epoch_batches = -(-len(rows) // config.batch_size)
    bs = config.batch_size
    full_batches = max(1, len(rows) // bs)  # cycle over the epoch's full batches
    chunk = _chunk_rows(bs)
    with sparse_embeddings(lazy):
        opts, packed = make_optimizers(model, config)
        row_groups = [g for o in opts if isinstance(o, RowAdam) for g in o.param_groups]
        sparse = [m.weight for m in model.modules() if isinstance(m, nn.Embedding) and m.sparse]
        model.train()
        model.set_generator(torch.Generator().manual_seed(seed))
        # the trainer's hand-written step (forward + backward in one)
        fast = make_fast_step(model) if packed is not None and not autograd else None
        for b in range(batches + 5):
            if b == 5:  # warm-up done
                times = defaultdict(float, {"sampling (per epoch)": times["sampling (per epoch)"]})
            t = time.perf_counter()
            lo = (b % full_batches) * bs
            if lo % chunk == 0:  # the trainer materialises rows a chunk (~2M rows) at a time
                hi = min(lo + chunk, full_batches * bs)
                chunk_rows = (*rows.rows(lo, hi), rows.weights(lo, hi))
            c = lo % chunk
            users, items, labels, weights = (
                None if x is None else x[c : c + bs] for x in chunk_rows
            )
            t1 = time.perf_counter()
            for g in row_groups:
                g["row_decay"] = 2.0 * config.l2 / len(users)
            packed.grad.zero_()
            for w in sparse:
                w.grad = None
            t2 = time.perf_counter()
            if fast is not None:
                fast(users, items, labels, weights=weights)
                t3 = t4 = time.perf_counter()
            else:
                out = model(users, items)
                loss = F.binary_cross_entropy_with_logits(out, labels, weight=weights)
                t3 = time.perf_counter()
                loss.backward()
                t4 = time.perf_counter()
            if config.l2:
                for emb, side in model.embedding_pairs():
                    if emb.sparse:
                        continue
                    idx = users if side == "user" else items
                    counts = torch.bincount(idx, minlength=emb.num_embeddings).unsqueeze(1)
                    emb.weight.grad.addcmul_(emb.weight.detach(), counts, value=2 * config.l2 / bs)
            t5 = time.perf_counter()
            for o in opts:
                o.step()
            t6 = time.perf_counter()
            times["building rows (chunked, per batch)"] += t1 - t
            times["zero grads"] += t2 - t1
            if fast is not None:
                times["forward + backward (hand-written step)"] += t4 - t2
            else:
                times["forward + loss"] += t3 - t2
                times["backward"] += t4 - t3
            times["l2 gradient"] += t5 - t4
            times["optimiser"] += t6 - t5
    out = {k: 1e3 * v / batches for k, v in times.items() if k != "sampling (per epoch)"}
    out["sampling + shuffle (per batch)"] = 1e3 * times["sampling (per epoch)"] / n_epoch_batches
    out["_lazy"] = float(len(lazy))
    out["_batch"] = float(bs)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default="ml-20m-synthetic")
    ap.add_argument("--model", default="neumf")
    ap.add_argument("--updates", default="auto", choices=("auto", "dense", "lazy"))
    ap.add_argument("--batches", type=int, default=200)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--shuffle", default=None, choices=("rows", "positives"))
    ap.add_argument(
        "--autograd", action="store_true", help="autograd step, not the hand-written one"
    )
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    data = load(args.data, args.seed)
    extra = {"batch_size": args.batch_size} if args.batch_size else {}
    if args.shuffle:
        extra["shuffle"] = args.shuffle
    res = profile(data, args.model, args.updates, args.batches, args.seed, args.autograd, **extra)
    lazy, bs = res.pop("_lazy"), res.pop("_batch")
    total = sum(res.values())
    mode = f"{lazy:.0f} lazy tables, the rest dense"
    if args.autograd:
        mode += " (autograd step)"
    print(
        f"{args.model} on {args.data}, batch {bs:.0f}, {mode} embedding updates, "
        f"{args.threads} threads: {total:.2f} ms per batch = {bs / total * 1e3:,.0f} samples/s"
    )
    for k, v in sorted(res.items(), key=lambda kv: -kv[1]):
        print(f"  {k:34s} {v:8.3f} ms  {100 * v / total:5.1f}%")


if __name__ == "__main__":
    main()

"""Training speed, as ratios against a plain PyTorch loop measured in the same run.

Part 1, ML-100K: GMF, MLP and NeuMF at our defaults (samples/s, seconds per epoch, peak
RSS); NeuMF's training seconds until validation HR@10 reaches 0.60; the plain loop
(DataLoader over a TensorDataset, batch 256, Adam 1e-3) on the same split; seed-mlp at
batch 16 against Keras' measured ~2,300 samples/s.

Part 2, a synthetic ML-20M-sized set (138k users, 27k items, 20M positives, 4 negatives
each: 100M samples per epoch): GMF, MLP and NeuMF, one epoch each at default settings, in
a fresh process each so that the peak RSS covers the whole run: loading, splitting,
training, validation every epoch and the final sampled test evaluation. The plain loop is
timed on its first batches.

Part 3, the physical limit: FLOPs per sample over the measured matmul FLOP/s, and bytes
per sample over the measured memory bandwidth.

    NCF_DATA_DIR=../shared/data python benchmarks/train_speed.py
    python benchmarks/train_speed.py --parts 2 --models neumf

Targets (2-core machine): NeuMF >= 2,000,000 samples/s on ML-100K; an ML-20M-sized epoch
<= 120 s; peak RSS <= 4 GB for the whole ML-20M-sized run. Threads: torch.set_num_threads
is process-wide, so the library never sets it; this script does.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

KERAS_SEED_MLP = 2_300.0  # samples/s measured for the seed recipe in Keras 3
TARGET_HR = 0.60
MODELS = ("gmf", "mlp", "neumf")
SCALE = {"n_users": 138_000, "n_items": 27_000, "n_interactions": 20_000_000}


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def synthetic_path(seed: int) -> Path:
    root = Path(os.environ.get("NCF_CACHE_DIR", Path.home() / ".cache" / "ncf")) / "bench"
    return root / f"synthetic-20m-seed{seed}.npz"


def ensure_synthetic(seed: int) -> Path:
    """The ML-20M-sized set as an int32 (user, item) file, generated once (in a child
    process, so the generator's own memory does not count against the training runs)."""
    path = synthetic_path(seed)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        code = (
            "import numpy as np, sys; from ncf.data import make_synthetic; "
            f"d = make_synthetic(**{SCALE!r}, seed={seed}); "
            "np.savez(sys.argv[1], users=d.users.astype(np.int32), "
            "items=d.items.astype(np.int32))"
        )
        tmp = path.with_suffix(".tmp.npz")
        subprocess.run([sys.executable, "-c", code, str(tmp)], check=True)
        tmp.replace(path)
    return path


def load_data(name: str, seed: int):
    from ncf.data import Interactions, load_dataset
    from ncf.data.vocabulary import Vocabulary

    if name == "ml-20m-synthetic":
        path = ensure_synthetic(seed)
        with np.load(path) as f:
            users, items = f["users"], f["items"]
        return Interactions(
            users,
            items,
            Vocabulary(np.arange(SCALE["n_users"]), "user"),
            Vocabulary(np.arange(SCALE["n_items"]), "item"),
            source=str(path),
        )
    return load_dataset(name).interactions


def child(name: str, model: str, epochs: int, seed: int, threads: int) -> dict:
    """One training run (in its own process): fit with validation, sampled test evaluation."""
    from ncf.data import NegativeSampler, train_validation_test
    from ncf.evaluation import evaluate_sampled
    from ncf.models import build_model
    from ncf.models.presets import resolve
    from ncf.training import TrainConfig, fit_model
    from ncf.training.scorer import ModelScorer

    torch.set_num_threads(threads)
    start = time.perf_counter()
    data = load_data(name, seed)
    split = train_validation_test(data, seed=seed)
    del data
    # one training phase: the speed of the loop (a refit would train a second time)
    kind, mp, tp = resolve(model, seed=seed, verbose=False, epochs=epochs, refit=False)
    net = build_model(kind, *split.train.shape, **mp)
    res = fit_model(net, split.train, TrainConfig(**tp), split.validation)
    t_eval = time.perf_counter()
    known = (split.train.csr + split.validation.csr + split.test.csr).tocsr()
    cands = NegativeSampler(known).sample_candidates(split.test.users, 99, seed=seed)
    test = evaluate_sampled(ModelScorer(res.model), split.test.users, split.test.items, cands)
    return {
        "model": model,
        "samples_per_s": float(np.median([h["samples_per_s"] for h in res.history])),
        "epoch_seconds": float(np.median([h["seconds"] for h in res.history])),
        "val_HR@10": [round(h["val_HR@10"], 4) for h in res.history],
        "test_HR@10": test.means["HR@10"],
        "test_eval_seconds": time.perf_counter() - t_eval,
        "wall_seconds": time.perf_counter() - start,
        "peak_rss_gb": peak_rss_gb(),
        "history": res.history,
    }


def run_child(name: str, model: str, epochs: int, seed: int, threads: int) -> dict:
    cmd = [sys.executable, __file__, "--child", name, model, str(epochs)]
    cmd += ["--seed", str(seed), "--threads", str(threads)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def plain_rate(train, batches: int, seed: int) -> float:
    """samples/s of the plain loop (accuracy.py's) over its first ``batches`` batches."""
    from accuracy import PlainNeuMF  # same folder
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    from ncf.data import NegativeSampler

    torch.manual_seed(seed)
    model = PlainNeuMF(*train.shape)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    start = time.perf_counter()
    nu, ni = NegativeSampler(train.csr).sample_per_positive(train.users, 4, seed=seed)
    u = torch.as_tensor(np.concatenate([train.users, nu]), dtype=torch.long)
    i = torch.as_tensor(np.concatenate([train.items, ni]), dtype=torch.long)
    y = torch.cat([torch.ones(len(train.users)), torch.zeros(len(nu))])
    setup = time.perf_counter() - start
    loader = DataLoader(TensorDataset(u, i, y), batch_size=256, shuffle=True)
    loss_fn = nn.BCEWithLogitsLoss()
    seen, start = 0, time.perf_counter()
    for b, (ub, ib, yb) in enumerate(loader):
        if b == batches:
            break
        opt.zero_grad()
        loss_fn(model(ub, ib), yb).backward()
        opt.step()
        seen += len(ub)
    per_sample = (time.perf_counter() - start) / seen + setup / len(y)
    return 1.0 / per_sample


# ---------------------------------------------------------------------------- physical limit
def measured_flops(threads: int) -> float:
    torch.set_num_threads(threads)
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    torch.mm(a, b)
    start, reps = time.perf_counter(), 10
    for _ in range(reps):
        torch.mm(a, b)
    return 2 * 2048**3 * reps / (time.perf_counter() - start)


def measured_bandwidth() -> float:
    """Bytes/s of a large copy (read + write), the streaming limit."""
    a = torch.randn(64 * 2**20)
    b = torch.empty_like(a)
    b.copy_(a)
    start, reps = time.perf_counter(), 5
    for _ in range(reps):
        b.copy_(a)
    return 2 * a.numel() * 4 * reps / (time.perf_counter() - start)


def per_sample_cost(model: str) -> tuple[float, float]:
    """(FLOPs, bytes) per training sample at the preset's sizes: forward + backward are ~3x
    the forward multiply-adds; bytes are the embedding rows read (forward), their gradient
    rows written, and the optimiser's read-modify-write of weights and two moments."""
    from ncf.models.presets import resolve

    _, mp, _ = resolve(model)
    if model == "gmf":
        dims, tower = [mp["factors"]] * 2, [2 * mp["factors"]]
        widths = [mp["factors"], 1]
    elif model == "mlp":
        dims = [mp["embedding_size"]] * 2
        widths = [2 * mp["embedding_size"], *mp["layers"], 1]
        tower = widths
    else:
        d = mp["mlp_embedding_size"]
        dims = [mp["factors"]] * 2 + [d] * 2
        widths = [2 * d, *mp["layers"]]
        tower = widths
    macs = sum(a * b for a, b in zip(tower[:-1], tower[1:], strict=False)) + sum(dims) / 2
    if model == "neumf":
        macs += mp["factors"] + mp["layers"][-1]
    flops = 3 * 2 * macs
    emb = sum(dims) * 4
    bytes_per_sample = emb * (1 + 1 + 2 * 3)  # read, grad, optimiser (w, m, v) read+write
    return flops, float(bytes_per_sample)


# ---------------------------------------------------------------------------- parts
def part_ml100k(args: argparse.Namespace) -> float:
    from accuracy import plain_loop

    from ncf.data import NegativeSampler, load_dataset, train_validation_test
    from ncf.evaluation import evaluate_sampled
    from ncf.models import build_model
    from ncf.models.presets import resolve
    from ncf.training import TrainConfig, fit_model

    print("\n== ML-100K (train split, default presets) ==", flush=True)
    rows = [run_child("ml-100k", m, args.small_epochs, args.seed, args.threads) for m in MODELS]
    data = load_dataset("ml-100k").interactions
    split = train_validation_test(data, seed=args.seed)
    train, valid = split.train, split.validation
    torch.set_num_threads(args.threads)
    val_known = (train.csr + valid.csr).tocsr()
    cands = NegativeSampler(val_known).sample_candidates(valid.users, 99, seed=args.seed)

    def val_hr(model):
        return {
            "val_HR@10": evaluate_sampled(model, valid.users, valid.items, cands).means["HR@10"]
        }

    _, hist = plain_loop(train, valid, args.plain_epochs, args.seed, val_hr)
    plain_sps = float(np.median([h["samples_per_s"] for h in hist]))
    print(f"{'model':8s} {'samples/s':>12s} {'vs plain':>9s} {'s/epoch':>8s} {'peak RSS':>9s}")
    for r in rows:
        print(
            f"{r['model']:8s} {r['samples_per_s']:12,.0f} {r['samples_per_s'] / plain_sps:8.1f}x "
            f"{r['epoch_seconds']:8.2f} {r['peak_rss_gb']:7.2f} GB"
        )
    print(f"{'plain':8s} {plain_sps:12,.0f} {1:8.1f}x   (DataLoader, batch 256, NeuMF)")
    neumf = next(r for r in rows if r["model"] == "neumf")
    ours_t = time_to(neumf["history"], "seconds")
    plain_t = time_to(hist, "train_seconds")
    print(
        f"NeuMF training seconds to validation HR@10 {TARGET_HR}: ours {fmt(ours_t)}, "
        f"plain {fmt(plain_t)}; target NeuMF >= 2,000,000 samples/s"
    )
    torch.set_num_threads(1)
    kind, mp, tp = resolve(
        "seed-mlp", seed=args.seed, verbose=False, epochs=1, max_batches=args.seed_batches
    )
    seed_res = fit_model(build_model(kind, *train.shape, **mp), train, TrainConfig(**tp), valid)
    seed_sps = seed_res.history[0]["samples_per_s"]
    print(
        f"seed-mlp batch 16 (1 thread): {seed_sps:,.0f} samples/s = "
        f"{seed_sps / KERAS_SEED_MLP:.1f}x Keras ({KERAS_SEED_MLP:,.0f}, measured elsewhere)"
    )
    return neumf["samples_per_s"]


def part_scale(args: argparse.Namespace) -> dict[str, float]:
    print("\n== synthetic ML-20M-sized set: 138k users, 27k items, 20M positives ==", flush=True)
    ensure_synthetic(args.seed)
    rows = [
        run_child("ml-20m-synthetic", m, args.scale_epochs, args.seed, args.threads)
        for m in args.models
    ]
    torch.set_num_threads(args.threads)
    from ncf.data import train_validation_test

    split = train_validation_test(load_data("ml-20m-synthetic", args.seed), seed=args.seed)
    plain_sps = plain_rate(split.train, args.plain_batches, args.seed)
    del split
    print(
        f"{'model':8s} {'samples/s':>12s} {'vs plain':>9s} {'s/epoch':>8s} {'peak RSS':>9s} "
        f"{'val HR@10':>10s} {'test HR@10':>10s} {'test eval s':>11s}"
    )
    out = {}
    for r in rows:
        out[r["model"]] = r["samples_per_s"]
        print(
            f"{r['model']:8s} {r['samples_per_s']:12,.0f} {r['samples_per_s'] / plain_sps:8.1f}x "
            f"{r['epoch_seconds']:8.1f} {r['peak_rss_gb']:7.2f} GB {r['val_HR@10'][-1]:10.4f} "
            f"{r['test_HR@10']:10.4f} {r['test_eval_seconds']:11.1f}"
        )
    n = SCALE["n_interactions"] * 5
    print(
        f"{'plain':8s} {plain_sps:12,.0f} {1:8.1f}x {n / plain_sps:8.0f}   (first "
        f"{args.plain_batches} batches, extrapolated)"
    )
    print("targets: epoch <= 120 s; peak RSS <= 4 GB (whole run, evaluation included)")
    return out


def part_limit(args: argparse.Namespace, achieved: dict[str, dict[str, float]]) -> None:
    flops = measured_flops(args.threads)
    bandwidth = measured_bandwidth()
    print(
        f"\n== physical limit: matmul {flops / 1e9:.1f} GFLOP/s ({args.threads} threads), "
        f"copy bandwidth {bandwidth / 1e9:.1f} GB/s =="
    )
    print(
        f"{'model':8s} {'FLOP/sample':>12s} {'B/sample':>9s} {'compute limit':>14s} "
        f"{'memory limit':>13s} {'achieved (% of limit)':>30s}"
    )
    for m in MODELS:
        f, b = per_sample_cost(m)
        limit = min(flops / f, bandwidth / b)
        got = "  ".join(
            f"{scale}: {a[m]:,.0f} ({100 * a[m] / limit:.0f}%)"
            for scale, a in achieved.items()
            if m in a
        )
        print(f"{m:8s} {f:12,.0f} {b:9,.0f} {flops / f:14,.0f} {bandwidth / b:13,.0f}   {got}")


def time_to(history: list[dict], seconds_key: str) -> float | None:
    total = 0.0
    for h in history:
        total = h[seconds_key] if seconds_key == "train_seconds" else total + h[seconds_key]
        if h.get("val_HR@10", 0.0) >= TARGET_HR:
            return total
    return None


def fmt(t: float | None) -> str:
    return "not reached" if t is None else f"{t:.1f} s"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--child", nargs=3, metavar=("DATA", "MODEL", "EPOCHS"))
    ap.add_argument("--parts", default="123", help="which parts to run, e.g. 13")
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--small-epochs", type=int, default=12)
    ap.add_argument("--scale-epochs", type=int, default=1)
    ap.add_argument("--plain-epochs", type=int, default=12)
    ap.add_argument("--plain-batches", type=int, default=3000)
    ap.add_argument("--seed-batches", type=int, default=20_000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.child:
        name, model, epochs = args.child
        print(json.dumps(child(name, model, int(epochs), args.seed, args.threads)))
        return
    achieved: dict[str, dict[str, float]] = {}
    if "1" in args.parts:
        achieved["ML-100K"] = {"neumf": part_ml100k(args)}
    if "2" in args.parts:
        achieved["ML-20M-sized"] = part_scale(args)
    if "3" in args.parts:
        part_limit(args, achieved)


if __name__ == "__main__":
    main()

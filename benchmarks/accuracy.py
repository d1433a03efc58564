"""Accuracy on ML-100K under the NCF protocol, against popularity and a plain PyTorch loop.

Leave-one-out on each user's latest interaction for test, the same again inside training for
validation; 99 sampled negatives per test user (fixed seed); also full ranking over all
unseen items. Every model is early-stopped on validation HR@10 (seed-mlp: validation loss)
and its preset was chosen on the validation split; the test split is only reported.

    NCF_DATA_DIR=/work/shared/data python benchmarks/accuracy.py
    python benchmarks/accuracy.py --seed-mlp-epochs 2 --plain-epochs 20 --threads 2

Targets: validation-chosen NeuMF sampled HR@10 >= 0.64; best model >= 0.67.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from ncf.data import NegativeSampler, load_dataset, train_validation_test
from ncf.evaluation import evaluate_full, evaluate_sampled
from ncf.models import build_model
from ncf.models.presets import resolve
from ncf.training import ModelScorer, TrainConfig, fit_model


class PlainNeuMF(nn.Module):
    """NeuMF as a typical user writes it: default PyTorch initialisation, nn.Sequential."""

    def __init__(self, n_users: int, n_items: int, factors: int = 8, layers=(64, 32, 16, 8)):
        super().__init__()
        self.gu, self.gi = nn.Embedding(n_users, factors), nn.Embedding(n_items, factors)
        self.mu = nn.Embedding(n_users, layers[0] // 2)
        self.mi = nn.Embedding(n_items, layers[0] // 2)
        mods: list[nn.Module] = []
        for a, b in zip(layers[:-1], layers[1:], strict=True):
            mods += [nn.Linear(a, b), nn.ReLU()]
        self.mlp = nn.Sequential(*mods)
        self.out = nn.Linear(factors + layers[-1], 1)

    def forward(self, u: torch.Tensor, i: torch.Tensor) -> torch.Tensor:
        g = self.gu(u) * self.gi(i)
        m = self.mlp(torch.cat([self.mu(u), self.mi(i)], 1))
        return self.out(torch.cat([g, m], 1)).squeeze(1)


def plain_loop(train, validation, epochs: int = 20, seed: int = 0, on_epoch: Any = None):
    """DataLoader over a TensorDataset, batch 256, Adam 1e-3, 4 negatives resampled per epoch.

    Seeds torch's global RNG (as typical code does); returns (model, history)."""
    torch.manual_seed(seed)
    model = PlainNeuMF(*train.shape)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    sampler = NegativeSampler(train.csr)
    loss_fn = nn.BCEWithLogitsLoss()
    history, trained = [], 0.0
    for epoch in range(1, epochs + 1):
        start = time.perf_counter()
        nu, ni = sampler.sample_per_positive(train.users, 4, seed=seed * 1000 + epoch)
        u = torch.as_tensor(np.concatenate([train.users, nu]), dtype=torch.long)
        i = torch.as_tensor(np.concatenate([train.items, ni]), dtype=torch.long)
        y = torch.cat([torch.ones(len(train.users)), torch.zeros(len(nu))])
        loader = DataLoader(TensorDataset(u, i, y), batch_size=256, shuffle=True)
        model.train()
        for ub, ib, yb in loader:
            opt.zero_grad()
            loss = loss_fn(model(ub, ib), yb)
            loss.backward()
            opt.step()
        seconds = time.perf_counter() - start
        trained += seconds
        model.eval()
        rec = {
            "epoch": epoch,
            "seconds": seconds,
            "samples_per_s": len(y) / seconds,
            "train_seconds": trained,
        }
        if on_epoch is not None:
            rec.update(on_epoch(model))
        history.append(rec)
    return model, history


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    ap.add_argument("--seed-mlp-epochs", type=int, default=2)
    ap.add_argument("--seed-mlp-max-batches", type=int, default=None)
    ap.add_argument("--plain-epochs", type=int, default=20)
    ap.add_argument("--paper", action="store_true", help="also the ncf-* paper presets")
    ap.add_argument("--only", default=None, help="comma-separated row names to run")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    data = load_dataset("ml-100k").interactions
    split = train_validation_test(data, seed=args.seed)
    train, valid, test = split.train, split.validation, split.test
    known = (train.csr + valid.csr + test.csr).tocsr()
    cands = NegativeSampler(known).sample_candidates(test.users, 99, seed=args.seed + 12345)
    val_known = (train.csr + valid.csr).tocsr()
    val_cands = NegativeSampler(val_known).sample_candidates(valid.users, 99, seed=args.seed)

    def report(scorer: Any) -> dict[str, float]:
        s = evaluate_sampled(scorer, test.users, test.items, cands, k=10).means
        f = evaluate_full(scorer, test.csr, [train.csr, valid.csr], k=10).means
        return {"HR": s["HR@10"], "NDCG": s["NDCG@10"], "fHR": f["HR@10"], "fNDCG": f["NDCG@10"]}

    rows: list[tuple[str, dict, str, float]] = []
    pop = train.item_counts().astype(np.float64)
    rows.append(("popularity", report(lambda u, i: pop[i]), "-", 0.0))

    runs = [
        ("MF", "mf", {}),
        ("GMF", "gmf", {}),
        ("MLP", "mlp", {}),
        ("NeuMF (no pre-training)", "neumf", {}),
        ("NeuMF (pre-trained GMF+MLP)", "neumf", {"pretrain": True}),
        (
            "seed-mlp",
            "seed-mlp",
            {"epochs": args.seed_mlp_epochs, "max_batches": args.seed_mlp_max_batches},
        ),
        ("seed-mlp-tuned", "seed-mlp-tuned", {}),
    ]
    if args.paper:
        runs += [
            ("ncf-gmf (paper)", "ncf-gmf", {}),
            ("ncf-mlp (paper)", "ncf-mlp", {}),
            ("ncf-neumf (paper)", "ncf-neumf", {}),
        ]
    only = None if args.only is None else set(args.only.split(","))
    for label, preset, extra in runs:
        if only and label not in only and preset not in only:
            continue
        kind, mp, tp = resolve(preset, seed=args.seed, verbose=False, **extra)
        model = build_model(kind, *train.shape, **mp)
        t0 = time.perf_counter()
        res = fit_model(model, train, TrainConfig(**tp), valid)
        secs = time.perf_counter() - t0
        best_val = res.history[res.best_epoch - 1].get("val_HR@10", float("nan"))
        refit = sum(h.get("phase") == "refit" for h in res.history)
        note = f"{res.best_epoch}/{len(res.history) - refit}" + (" +refit" if refit else "")
        if res.flags:
            note += " " + ",".join(res.flags)
        rows.append((label, {**report(ModelScorer(res.model)), "val": best_val}, note, secs))
        print(f"  done {label}: {rows[-1][1]} epochs {note} {secs:.1f}s", flush=True)

    if only is None or "plain" in only:

        def val_hr(model: nn.Module) -> dict[str, float]:
            r = evaluate_sampled(model, valid.users, valid.items, val_cands)
            return {"val_HR@10": r.means["HR@10"]}

        t0 = time.perf_counter()
        model, hist = plain_loop(train, valid, args.plain_epochs, args.seed, val_hr)
        best = int(np.argmax([h["val_HR@10"] for h in hist])) + 1
        rows.append(
            (
                "plain PyTorch NeuMF loop (last epoch)",
                {**report(model), "val": hist[-1]["val_HR@10"]},
                f"{args.plain_epochs}/{args.plain_epochs} (val best {best})",
                time.perf_counter() - t0,
            )
        )

    print(
        f"\nML-100K, leave-one-out, 99 sampled negatives (seed {args.seed}); "
        f"{len(test.users)} test users"
    )
    head = f"{'model':40s} {'valHR':>6s} {'HR@10':>6s} {'NDCG@10':>8s} {'fullHR':>7s}"
    head += f" {'fullNDCG':>8s}"
    print(head + f" {'epochs best/ran':>18s} {'seconds':>8s}")
    for label, m, note, secs in rows:
        print(
            f"{label:40s} {m.get('val', float('nan')):6.3f} {m['HR']:6.3f} {m['NDCG']:8.3f} "
            f"{m['fHR']:7.3f} {m['fNDCG']:8.3f} "
            f"{note:>18s} {secs:8.1f}"
        )


if __name__ == "__main__":
    main()

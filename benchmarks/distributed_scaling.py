"""Scaling of training samples/s from 1 to 2 processes (torchrun + DDP, gloo) on ML-100K.

    NCF_DATA_DIR=/work/shared/data python benchmarks/distributed_scaling.py
    python benchmarks/distributed_scaling.py --model gmf --epochs 3 --batch-size 8192

Runs, each with one torch thread per process (torch.set_num_threads is process-wide, so the
library never sets it; this script does):
  1. ``fit_model`` in one process (the single-process trainer, flat-packed optimiser);
  2. ``fit_model_distributed`` under torchrun with 1 process (DDP overhead, no peer);
  3. the same with 2 processes.
samples/s counts every rank's rows over the slowest rank's epoch time (validation excluded).
Prints samples/s, validation HR@10 and the ratios 2-proc / 1-proc. ``batch_size`` is the global
batch (each of N ranks steps on batch_size / N rows), so every run does the same steps.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from ncf.data import load_dataset, train_validation_test
from ncf.models import build_model
from ncf.training import TrainConfig, fit_model


def _fit(args: argparse.Namespace, distributed: bool) -> dict:
    from ncf.training.distributed import fit_model_distributed, is_main_process

    torch.set_num_threads(args.threads)
    split = train_validation_test(load_dataset("ml-100k").interactions, seed=0)
    config = TrainConfig(
        epochs=args.epochs, batch_size=args.batch_size, seed=0, verbose=False, patience=100
    )
    model = build_model(args.model, split.train.n_users, split.train.n_items, seed=0)
    fitter = fit_model_distributed if distributed else fit_model
    start = time.perf_counter()
    result = fitter(model, split.train, config, validation=split.validation)
    row = {
        "samples_per_s": result.samples_per_s,
        "train_seconds": result.train_seconds,
        "wall_seconds": time.perf_counter() - start,
        "val_HR@10": result.history[-1]["val_HR@10"],
    }
    if distributed and not is_main_process():
        return {}
    return row


def _torchrun(args: argparse.Namespace, nproc: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
        command += [f"--nproc-per-node={nproc}", __file__, "--worker", str(out)]
        command += ["--model", args.model, "--epochs", str(args.epochs)]
        command += ["--batch-size", str(args.batch_size), "--threads", str(args.threads)]
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
        subprocess.run(command, check=True, env=env, timeout=600, stderr=subprocess.DEVNULL)
        return json.loads(out.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mf")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=8192)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:  # a torchrun rank
        row = _fit(args, distributed=True)
        if row:
            Path(args.worker).write_text(json.dumps(row))
        return
    rows = {
        "fit_model, 1 process": _fit(args, distributed=False),
        "DDP, 1 process": _torchrun(args, 1),
        "DDP, 2 processes": _torchrun(args, 2),
    }
    print(
        f"ML-100K {args.model}, {args.epochs} epochs, global batch {args.batch_size}, "
        f"{args.threads} thread(s) per process, {os.cpu_count()} CPUs"
    )
    print(f"{'run':<22} {'samples/s':>12} {'train s':>8} {'wall s':>7} {'val HR@10':>9}")
    for name, r in rows.items():
        print(
            f"{name:<22} {r['samples_per_s']:>12,.0f} {r['train_seconds']:>8.2f} "
            f"{r['wall_seconds']:>7.1f} {r['val_HR@10']:>9.4f}"
        )
    two = rows["DDP, 2 processes"]["samples_per_s"]
    print(
        f"scaling 2 vs 1 process (DDP):       {two / rows['DDP, 1 process']['samples_per_s']:.2f}x"
    )
    print(
        f"scaling 2 vs single-process trainer: "
        f"{two / rows['fit_model, 1 process']['samples_per_s']:.2f}x"
    )


if __name__ == "__main__":
    main()

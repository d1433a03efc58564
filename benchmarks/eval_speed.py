"""Evaluation speed and memory on random problems the size of ML-1M and ML-20M.

Builds random sparse train/test CSR matrices (leave-one-out: one test item per user) and random
factor matrices, then times ``evaluate_full`` and ``evaluate_sampled`` with a ``DotProductScorer``.
Prints wall time, the process's peak RSS and the peak of numpy allocations (tracemalloc).

    python benchmarks/eval_speed.py            # ML-1M size, full and sampled
    python benchmarks/eval_speed.py --large    # adds ML-20M size (138,493 x 26,744)

Targets (2-core machine): ML-1M full < 1 s; ML-20M full < 60 s within 2 GB; ML-20M-user
sampled (1 + 99) < 2 s.
"""

from __future__ import annotations

import argparse
import resource
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

import numpy as np
import scipy.sparse as sp

from ncf.evaluation import DotProductScorer, evaluate_full, evaluate_sampled

SIZES = {
    "ML-1M": (6_040, 3_706, 1_000_209),
    "ML-20M": (138_493, 26_744, 20_000_263),
}


def _rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * resource.getpagesize() / 2**20


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def make_problem(
    n_users: int, n_items: int, nnz: int, factors: int, seed: int
) -> tuple[DotProductScorer, sp.csr_matrix, sp.csr_matrix, np.ndarray]:
    """Random scorer, train CSR (~nnz entries), one-item-per-user test CSR, 99 negatives."""
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, n_users, nnz, dtype=np.int32)
    cols = rng.integers(0, n_items, nnz, dtype=np.int32)
    train = sp.csr_matrix((np.ones(nnz, np.float32), (rows, cols)), shape=(n_users, n_items))
    test_items = rng.integers(0, n_items, n_users)
    test = sp.csr_matrix(
        (np.ones(n_users, np.float32), (np.arange(n_users), test_items)), shape=(n_users, n_items)
    )
    negatives = rng.integers(0, n_items, (n_users, 99))
    scorer = DotProductScorer(
        rng.normal(scale=0.1, size=(n_users, factors)).astype(np.float32),
        rng.normal(scale=0.1, size=(n_items, factors)).astype(np.float32),
    )
    return scorer, train, test, negatives


def measure(label: str, func: Callable[[], Any], trace: bool) -> Any:
    """Run ``func`` once, print wall time, RSS before, peak RSS and traced numpy peak."""
    before = _rss_mb()
    if trace:
        tracemalloc.start()
    start = time.perf_counter()
    result = func()
    elapsed = time.perf_counter() - start
    traced = tracemalloc.get_traced_memory()[1] / 2**20 if trace else float("nan")
    if trace:
        tracemalloc.stop()
    print(
        f"{label:<34} {elapsed:8.2f} s   rss before {before:7.0f} MiB   "
        f"peak rss {_peak_rss_mb():7.0f} MiB   traced peak {traced:7.0f} MiB"
    )
    return result


def run(name: str, factors: int, seed: int, trace: bool) -> None:
    n_users, n_items, nnz = SIZES[name]
    start = time.perf_counter()
    scorer, train, test, negatives = make_problem(n_users, n_items, nnz, factors, seed)
    print(
        f"\n{name}: {n_users:,} users x {n_items:,} items, train nnz {train.nnz:,}, "
        f"{factors} factors (built in {time.perf_counter() - start:.1f} s)"
    )
    users = np.arange(n_users)
    full = measure(f"{name} full ranking (k=10)", lambda: evaluate_full(scorer, test, train), trace)
    sampled = measure(
        f"{name} sampled 1+99 (k=10)",
        lambda: evaluate_sampled(scorer, users, test.indices, negatives),
        trace,
    )
    for result in (full, sampled):
        means = "  ".join(f"{m}={v:.4f}" for m, v in result.means.items())
        print(f"  {result.protocol:<8} {means}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--large", action="store_true", help="also run the ML-20M-sized problem")
    parser.add_argument("--factors", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--tracemalloc", action="store_true", help="trace numpy allocations (slows runs)"
    )
    args = parser.parse_args()
    run("ML-1M", args.factors, args.seed, args.tracemalloc)
    if args.large:
        run("ML-20M", args.factors, args.seed, args.tracemalloc)


if __name__ == "__main__":
    main()

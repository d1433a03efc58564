"""Data-layer benchmark: load ML-100K, build an ML-20M-sized synthetic set, sample negatives.

Prints time and peak memory for each step, with the targets beside them:
  ML-100K load < 0.5 s; 80M training negatives (4 per positive on 20M) < 10 s and < 2 GB extra.

    NCF_DATA_DIR=../shared/data python benchmarks/data_speed.py [--users 138000 --items 27000
        --interactions 20000000]
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np

from ncf.data import NegativeSampler, load_dataset, make_synthetic


def rss_mb() -> float:
    """Current resident set size in MB (Linux /proc)."""
    with open("/proc/self/statm") as handle:
        pages = int(handle.read().split()[1])
    return pages * resource.getpagesize() / 2**20


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users", type=int, default=138_000)
    parser.add_argument("--items", type=int, default=27_000)
    parser.add_argument("--interactions", type=int, default=20_000_000)
    parser.add_argument("--negatives", type=int, default=4)
    args = parser.parse_args()

    start = time.perf_counter()
    ml = load_dataset("ml-100k").interactions
    load_s = time.perf_counter() - start
    print(f"ML-100K load: {load_s:.3f} s for {len(ml):,} rows (target < 0.5 s)")

    start = time.perf_counter()
    data = make_synthetic(args.users, args.items, args.interactions, n_clusters=32, seed=0)
    csr = data.csr
    print(
        f"synthetic: {len(data):,} interactions, {data.n_users:,} users x {data.n_items:,} items "
        f"in {time.perf_counter() - start:.1f} s (peak RSS {peak_mb():,.0f} MB)"
    )

    start = time.perf_counter()
    sampler = NegativeSampler(csr)
    init_s = time.perf_counter() - start
    users = data.users.astype(np.int32)
    before = rss_mb()
    start = time.perf_counter()
    neg_users, neg_items = sampler.sample_per_positive(users, args.negatives, seed=0)
    sample_s = time.perf_counter() - start
    n = len(neg_items)
    print(
        f"training negatives: {n:,} in {sample_s:.2f} s ({n / sample_s / 1e6:.1f} M/s; "
        f"index build {init_s:.2f} s; target < 10 s) using {rss_mb() - before:,.0f} MB extra "
        "(target < 2048 MB)"
    )
    check = slice(0, min(n, 5_000_000))
    hits = int(sampler.is_positive(neg_users[check], neg_items[check]).sum())
    print(f"exactness check on {check.stop:,} samples: {hits} positives sampled (must be 0)")
    del neg_users, neg_items

    start = time.perf_counter()
    cands = sampler.sample_candidates(np.arange(data.n_users), 99, seed=1)
    print(
        f"evaluation candidates: {cands.shape[0]:,} users x {cands.shape[1]} in "
        f"{time.perf_counter() - start:.2f} s"
    )


if __name__ == "__main__":
    main()

"""Bounded load test of ``ncf serve`` on loopback: throughput, p50, p99, errors.

Starts ``python -m ncf serve MODEL_DIR`` on a free 127.0.0.1 port, waits for /healthz, sends a
fixed number of ``GET /recommend/{user}?k=10`` requests from ``--concurrency`` keep-alive
connections (closed loop: each client sends its next request when the last one is answered),
prints the figures and stops the server. Nothing but 127.0.0.1 is ever contacted, and the run
ends by itself: after ``--requests`` requests or ``--timeout`` seconds, whichever comes first.

The default client is a minimal asyncio HTTP/1.1 client (keep-alive, Content-Length bodies),
because on a 2-core machine the client shares the CPUs with the server and httpx's own cost
per request would dominate; ``--client httpx`` measures with httpx instead.

    NCF_DATA_DIR=../shared/data .venv/bin/python benchmarks/serve_load.py          # trains one
    .venv/bin/python benchmarks/serve_load.py runs/x/model --requests 20000 --concurrency 32
    .venv/bin/python benchmarks/serve_load.py runs/x/model --cache-mb 0   # no top-k cache

Without MODEL_DIR it trains a quick ML-100K NeuMF (3 epochs) into a temporary directory.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

HOST = "127.0.0.1"
TARGETS = {"throughput": 1000.0, "p99_ms": 20.0}


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def train_quick_model(out: Path) -> Path:
    print("training a quick ML-100K NeuMF (3 epochs) ...", file=sys.stderr)
    cmd = [sys.executable, "-m", "ncf", "train", "ml-100k", "--model", "neumf"]
    subprocess.run([*cmd, "--epochs", "3", "--out", str(out)], check=True, timeout=900)
    return out / "model"


def start_server(model_dir: Path, port: int, cache_mb: int, workers: int) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "ncf", "serve", str(model_dir), "--host", HOST]
    cmd += ["--port", str(port), "--cache-mb", str(cache_mb), "--workers", str(workers)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {proc.stderr.read().decode()[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://{HOST}:{port}/healthz", timeout=1) as r:
                if r.status == 200:
                    return proc
        except OSError:
            time.sleep(0.2)
    stop_server(proc)
    raise RuntimeError("server did not become healthy within 120 s")


def stop_server(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def get_json(port: int, path: str) -> dict:
    with urllib.request.urlopen(f"http://{HOST}:{port}{path}", timeout=5) as r:
        return json.loads(r.read())


# ---------------------------------------------------------------------------- clients
async def raw_client(port: int, paths: list[str], latencies: list, errors: list) -> None:
    """One keep-alive connection; takes paths from the shared list until it is empty."""
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        while paths:
            path = paths.pop()
            start = time.perf_counter()
            writer.write(f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode())
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - start)
            if status != 200:
                errors.append(f"HTTP {status}")
    except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
        errors.append(f"{type(exc).__name__}: {exc}")
    finally:
        writer.close()


async def httpx_client(client, paths: list[str], latencies: list, errors: list) -> None:
    while paths:
        path = paths.pop()
        start = time.perf_counter()
        try:
            response = await client.get(path)
            await response.aread()
            latencies.append(time.perf_counter() - start)
            if response.status_code != 200:
                errors.append(f"HTTP {response.status_code}")
        except Exception as exc:  # noqa: BLE001 - every failure counts as an error
            errors.append(f"{type(exc).__name__}: {exc}")


async def _bounded(coros: list, timeout: float) -> bool:
    """Run the clients; cancel them after ``timeout`` seconds. True when that happened."""
    tasks = [asyncio.ensure_future(c) for c in coros]
    _, pending = await asyncio.wait(tasks, timeout=timeout)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    return bool(pending)


async def load(port: int, paths: list[str], concurrency: int, kind: str, timeout: float) -> dict:
    latencies: list[float] = []
    errors: list[str] = []
    n = len(paths)
    start = time.perf_counter()
    if kind == "httpx":
        import httpx

        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        async with httpx.AsyncClient(base_url=f"http://{HOST}:{port}", limits=limits) as client:
            coros = [httpx_client(client, paths, latencies, errors) for _ in range(concurrency)]
            timed_out = await _bounded(coros, timeout)
    else:
        coros = [raw_client(port, paths, latencies, errors) for _ in range(concurrency)]
        timed_out = await _bounded(coros, timeout)
    elapsed = time.perf_counter() - start
    lat = np.asarray(latencies) * 1000
    missing = n - len(latencies) - len(errors)
    return {
        "requests": n,
        "completed": len(latencies),
        "errors": len(errors) + max(0, missing),
        "error_examples": sorted(set(errors))[:5],
        "timed_out": timed_out,
        "seconds": round(elapsed, 3),
        "throughput": round(len(latencies) / elapsed, 1),
        "p50_ms": round(float(np.percentile(lat, 50)), 2) if len(lat) else None,
        "p90_ms": round(float(np.percentile(lat, 90)), 2) if len(lat) else None,
        "p99_ms": round(float(np.percentile(lat, 99)), 2) if len(lat) else None,
        "max_ms": round(float(lat.max()), 2) if len(lat) else None,
    }


def make_paths(users: list, n: int, k: int, unknown: float, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [
        f"/recommend/unknown-{i}?k={k}"
        if rng.random() < unknown
        else f"/recommend/{rng.choice(users)}?k={k}"
        for i in range(n)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model_dir", nargs="?", type=Path, help="model to serve (else trains)")
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--warmup", type=int, default=1_000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("-k", type=int, default=10)
    parser.add_argument("--unknown", type=float, default=0.05, help="share of unknown users")
    parser.add_argument("--client", choices=("raw", "httpx"), default="raw")
    parser.add_argument("--cache-mb", type=int, default=512, help="0 disables the top-k cache")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=300.0, help="cap on the timed run")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    with tempfile.TemporaryDirectory(prefix="ncf-serve-bench-") as tmp:
        model_dir = args.model_dir or train_quick_model(Path(tmp) / "run")
        port = free_port()
        proc = start_server(model_dir, port, args.cache_mb, args.workers)
        try:
            info = get_json(port, "/model")
            users = [
                str(u)
                for u in json.loads((model_dir / "config.json").read_text())["data"]["user_ids"]
            ]
            warm = make_paths(users, args.warmup, args.k, args.unknown, seed=1)
            asyncio.run(load(port, warm, args.concurrency, args.client, args.timeout))
            paths = make_paths(users, args.requests, args.k, args.unknown, seed=0)
            result = asyncio.run(load(port, paths, args.concurrency, args.client, args.timeout))
        finally:
            stop_server(proc)
    result.update(
        model=f"{info['kind']} {info['n_users']}x{info['n_items']} v{info['version']}",
        strategy=info["serving"]["strategy"],
        concurrency=args.concurrency,
        client=args.client,
        workers=args.workers,
        cpus=os.cpu_count(),
    )
    if args.json:
        print(json.dumps(result))
        return
    for key, value in result.items():
        print(f"{key:>14}: {value}")
    ok = (
        result["throughput"] >= TARGETS["throughput"]
        and (result["p99_ms"] or 1e9) <= TARGETS["p99_ms"]
        and result["errors"] == 0
    )
    print(f"{'targets':>14}: >= 1000 req/s, p99 <= 20 ms, 0 errors -> {'met' if ok else 'NOT met'}")


if __name__ == "__main__":
    main()

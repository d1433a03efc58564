"""The service under faults: bad input, huge requests, slow clients and invalid reloads, all
while steady valid load runs. Zero 5xx, zero dropped valid requests, bounded memory.

Traffic goes to 127.0.0.1 only; every loop is bounded in count and time.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from ncf import Recommender
from ncf.data import make_synthetic

KEY = "fault-key"
N_USERS = 150


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults")
    data = make_synthetic(N_USERS, 120, 3000, n_clusters=4, seed=4)
    Recommender("neumf", factors=8, epochs=1, early_stopping=None).fit(data, verbose=False).save(
        root / "model"
    )
    port = _free_port()
    cmd = [sys.executable, "-m", "ncf", "serve", str(root / "model"), "--port", str(port)]
    cmd += ["--max-batch", "32"]
    proc = subprocess.Popen(
        cmd,
        env={**os.environ, "NCF_ADMIN_KEY": KEY},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, "server exited"
            try:
                if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "server not healthy within 30 s"
            time.sleep(0.1)
        yield base, port, proc, root
    finally:
        proc.kill()
        proc.wait(timeout=10)


async def _slow_client(port: int, seconds: float) -> None:
    """Send a request's headers one byte at a time, then give up (a slowloris-style client)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        request = b"GET /recommend/1?k=5 HTTP/1.1\r\nHost: x\r\n"
        end = time.monotonic() + seconds
        for byte in request:
            if time.monotonic() > end:
                break
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(0.05)
    finally:
        writer.close()


async def _run_faults(base: str, port: int, root: Path) -> tuple[list[int], list[int]]:
    valid: list[int] = []
    faulty: list[int] = []
    stop = asyncio.Event()
    limits = httpx.Limits(max_connections=64)
    async with httpx.AsyncClient(base_url=base, timeout=20, limits=limits) as client:

        async def steady(worker: int) -> None:
            n = 0
            while not stop.is_set() and n < 400:
                r = await client.get(f"/recommend/{(worker * 31 + n) % N_USERS}", params={"k": 10})
                valid.append(r.status_code)
                n += 1

        async def faults() -> None:
            admin = {"X-API-Key": KEY}
            cases = [
                client.post(
                    "/recommend", content=b"{not json", headers={"content-type": "application/json"}
                ),
                client.get("/recommend/1", params={"k": 10**9}),
                client.get("/recommend/1", params={"k": -3}),
                client.get("/recommend/1", params={"k": "ten"}),
                client.post("/recommend", json={"users": list(range(10_000)), "k": 5}),
                client.post(
                    "/recommend",
                    content=b"x" * (3 * 2**20),
                    headers={"content-type": "application/json"},
                ),
                client.post("/recommend", json={"users": [[1]], "k": 5}),
                client.get("/similar/does-not-exist"),
                client.get("/recommend/" + "é" * 5000),
                client.post(
                    "/admin/reload", json={"model_dir": str(root / "missing")}, headers=admin
                ),
                client.post("/admin/reload", json={"model_dir": "/etc"}, headers=admin),
                client.post("/admin/reload", json={"model_dir": 42}, headers=admin),
                client.post("/admin/reload", headers={"X-API-Key": "wrong"}),
            ]
            faulty.extend(r.status_code for r in await asyncio.gather(*cases))
            for _ in range(3):  # repeat a few while the steady load keeps running
                for response in await asyncio.gather(
                    client.get("/recommend/1", params={"k": 5000}),
                    client.post(
                        "/recommend", content=b"[]", headers={"content-type": "application/json"}
                    ),
                    client.post("/admin/reload", json={"model_dir": "/nonexistent"}, headers=admin),
                ):
                    faulty.append(response.status_code)
                await asyncio.sleep(0.2)

        slow = [_slow_client(port, 2.0) for _ in range(10)]
        steady_tasks = [asyncio.create_task(steady(i)) for i in range(16)]
        await asyncio.gather(faults(), *slow)
        stop.set()
        await asyncio.wait_for(asyncio.gather(*steady_tasks), timeout=120)
    return valid, faulty


def test_faults_during_steady_load(server):
    base, port, proc, root = server
    rss_before = _rss_kb(proc.pid)
    valid, faulty = asyncio.run(asyncio.wait_for(_run_faults(base, port, root), timeout=180))
    assert valid and all(code == 200 for code in valid), sorted(set(valid))
    assert faulty and all(400 <= code < 500 for code in faulty), faulty
    assert httpx.get(base + "/healthz", timeout=5).status_code == 200
    growth_mb = (_rss_kb(proc.pid) - rss_before) / 1024
    assert growth_mb < 200, f"server memory grew by {growth_mb:.0f} MB"
    print(
        f"\nfault test: {len(valid)} valid requests all 200, {len(faulty)} faulty "
        f"requests all 4xx, RSS growth {growth_mb:.1f} MB"
    )

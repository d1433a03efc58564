"""`ncf serve` as a real uvicorn process on a free loopback port, driven with httpx."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from ncf import Recommender
from ncf.cli import main as cli_main
from ncf.data import make_synthetic
from ncf.serve import create_app

KEY = "test-admin-key"
ADMIN = {"X-API-Key": KEY}


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    """A NeuMF (integer ids, cached top-k) and an MF (string item ids with titles)."""
    root = tmp_path_factory.mktemp("serve-models")
    data = make_synthetic(120, 80, 2000, n_clusters=4, seed=3)
    params = {"factors": 8, "epochs": 1, "early_stopping": None}
    Recommender("neumf", **params).fit(data, verbose=False).save(root / "neumf")
    frame = data.to_frame()
    frame["item"] = "item-" + frame["item"].astype(str)
    titles = {f"item-{i}": f"Title {i}" for i in range(80)}
    mf = Recommender("mf", **params).fit(frame[["user", "item"]], verbose=False)
    mf.save(root / "mf", extra={"item_titles": titles})
    bad = root / "bad"
    shutil.copytree(root / "neumf", bad)
    config = json.loads((bad / "config.json").read_text())
    config["weights_sha256"] = "0" * 64  # the weights no longer match: refused on load
    (bad / "config.json").write_text(json.dumps(config))
    return {"neumf": root / "neumf", "mf": root / "mf", "bad": bad}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(models):
    """``python -m ncf serve`` with an admin key and a batch limit of 8; always killed."""
    port = _free_port()
    cmd = [sys.executable, "-m", "ncf", "serve", str(models["neumf"]), "--port", str(port)]
    cmd += ["--max-batch", "8"]
    env = {**os.environ, "NCF_ADMIN_KEY": KEY}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                pytest.fail(f"server exited: {proc.stderr.read().decode()[-2000:]}")
            try:
                if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("server not healthy within 30 s")
            time.sleep(0.1)
        with httpx.Client(base_url=base, timeout=10) as client:
            client.proc = proc  # type: ignore[attr-defined]
            yield client
    finally:
        proc.kill()
        proc.wait(timeout=10)
        proc.stderr.close()


@pytest.fixture(scope="module")
def neumf(models) -> Recommender:
    return Recommender.load(models["neumf"])


def _items(payload: dict) -> list:
    return [entry["item"] for entry in payload["items"]]


# ---------------------------------------------------------------------------- endpoints
def test_healthz_model_and_docs(server, neumf):
    health = server.get("/healthz").json()
    assert health["status"] == "ok"
    info = server.get("/model").json()
    assert info["version"] == health["version"] == neumf.config_["weights_sha256"][:12]
    assert info["kind"] == "neumf" and info["n_users"] == 120 and info["n_items"] == 80
    assert info["serving"]["strategy"].startswith("cached top-80")
    assert info["serving"]["cache_bytes"] == 120 * 80 * 8
    assert "/recommend/{user_id}" in server.get("/openapi.json").json()["paths"]
    assert server.get("/docs").status_code == 200


@pytest.mark.parametrize("exclude_seen", [True, False])
def test_recommend_matches_the_facade(server, neumf, exclude_seen):
    for user in (0, 7, 119):
        got = server.get(f"/recommend/{user}", params={"k": 7, "exclude_seen": exclude_seen})
        want = neumf.recommend(user, k=7, exclude_seen=exclude_seen)
        body = got.json()
        assert got.status_code == 200 and body["user"] == user and body["fallback"] is False
        assert _items(body) == want.ids.tolist()
        np.testing.assert_allclose([e["score"] for e in body["items"]], want.scores, rtol=1e-5)


def test_recommend_unknown_user_gets_flagged_popularity(server, neumf):
    body = server.get("/recommend/nobody", params={"k": 5}).json()
    assert body["fallback"] is True and body["user"] == "nobody"
    assert _items(body) == neumf.recommend("nobody", k=5).ids.tolist()
    assert server.get("/recommend/007").json()["user"] == 7  # integral strings parse


def test_recommend_k_above_candidates_returns_what_is_left(server, neumf):
    body = server.get("/recommend/3", params={"k": 1000}).json()
    assert len(body["items"]) == 80 - len(neumf.seen_items(3))


def test_batch_recommend(server, neumf):
    body = server.post("/recommend", json={"users": [1, "2", "ghost"], "k": 3}).json()
    assert [r["user"] for r in body["results"]] == [1, 2, "ghost"]
    assert [r["fallback"] for r in body["results"]] == [False, False, True]
    want = neumf.recommend([1, 2], k=3).ids.tolist()
    assert [_items(r) for r in body["results"][:2]] == want


def test_similar(server, neumf):
    body = server.get("/similar/5", params={"k": 4}).json()
    assert body["item"] == 5 and _items(body) == neumf.similar_items(5, k=4).ids.tolist()
    assert server.get("/similar/999").status_code == 404
    assert "unknown item" in server.get("/similar/nope").json()["detail"]


# ---------------------------------------------------------------------------- validation
@pytest.mark.parametrize(
    ("method", "url", "body", "needle"),
    [
        ("GET", "/recommend/1?k=0", None, "query.k"),
        ("GET", "/recommend/1?k=1001", None, "less than or equal to 1000"),
        ("GET", "/recommend/1?k=ten", None, "valid integer"),
        ("GET", "/recommend/1?exclude_seen=maybe", None, "exclude_seen"),
        ("GET", "/similar/1?k=-3", None, "query.k"),
        ("GET", "/recommend/" + "x" * 300, None, "at most 256"),
        ("POST", "/recommend", {"users": []}, "at least 1"),
        ("POST", "/recommend", {"users": list(range(9))}, "at most 8 users"),
        ("POST", "/recommend", {"users": [True]}, "users"),
        ("POST", "/recommend", {"users": [1], "k": 2000}, "body.k"),
        ("POST", "/recommend", {"users": [1], "extra": 1}, "extra"),
        ("POST", "/recommend", "not json", "invalid request"),
    ],
)
def test_malformed_input_is_422_with_a_message(server, method, url, body, needle):
    kwargs = {"content": body} if isinstance(body, str) else {"json": body}
    response = server.request(method, url, **kwargs)
    assert response.status_code == 422
    assert needle in response.json()["detail"]


def test_oversized_body_is_413(server):
    response = server.post("/recommend", content=b'{"users": [' + b"1," * 600_000 + b"1]}")
    assert response.status_code == 413


@pytest.mark.parametrize("raw", ["..%2F..%2Fetc%2Fpasswd", "%2Fetc%2Fpasswd", "config.json"])
def test_ids_never_reach_the_filesystem(server, raw):
    """Ids are only vocabulary keys: a path-like id is an unknown user or no route at all."""
    response = server.get(f"/recommend/{raw}")
    assert response.status_code in (200, 404) and "root:" not in response.text
    if response.status_code == 200:
        assert response.json()["fallback"] is True
    assert server.get(f"/similar/{raw}").status_code == 404


def test_metrics(server):
    server.get("/recommend/ghost-for-metrics")
    text = server.get("/metrics").text
    assert 'ncf_requests_total{route="/recommend/{user_id}",method="GET",status="200"}' in text
    assert 'ncf_request_duration_seconds_bucket{route="/recommend/{user_id}",le="+Inf"}' in text
    fallbacks = [line for line in text.splitlines() if line.startswith("ncf_fallback_total ")]
    assert int(fallbacks[0].split()[1]) >= 1
    assert "ncf_model_info{" in text


# ---------------------------------------------------------------------------- admin, reload
def test_admin_needs_the_key(server):
    assert server.post("/admin/reload").status_code == 401
    assert server.post("/admin/reload", headers={"X-API-Key": "wrong"}).status_code == 401


def test_reload_under_concurrent_requests_loses_nothing(server, models):
    before = server.get("/healthz").json()
    results: list[tuple[int, str]] = []
    stop = threading.Event()

    async def hammer() -> None:
        async with httpx.AsyncClient(base_url=str(server.base_url), timeout=10) as client:

            async def one_client(seed: int) -> None:
                while not stop.is_set():
                    r = await client.get(f"/recommend/{seed % 120}", params={"k": 5})
                    results.append((r.status_code, r.json().get("version", "")))
                    seed += 7

            await asyncio.gather(*(one_client(i) for i in range(8)))

    thread = threading.Thread(target=lambda: asyncio.run(hammer()))
    thread.start()
    try:
        time.sleep(0.3)
        for target in ("mf", "neumf", "mf"):
            r = server.post("/admin/reload", headers=ADMIN, json={"model_dir": str(models[target])})
            assert r.status_code == 200 and r.json()["reloaded"] is True, r.text
            time.sleep(0.2)
    finally:
        stop.set()
        thread.join(timeout=20)
    assert results and all(status == 200 for status, _ in results)
    assert len({version for _, version in results}) == 2  # both models answered
    now = server.get("/model").json()
    assert now["kind"] == "mf" and now["generation"] == before["generation"] + 3
    assert now["serving"]["strategy"].startswith("factorised")
    body = server.get("/recommend/4", params={"k": 3}).json()  # string items, with titles
    assert body["items"][0]["item"].startswith("item-") and body["items"][0]["title"]
    want = Recommender.load(models["mf"]).recommend([4, 5], k=3)
    np.testing.assert_allclose([e["score"] for e in body["items"]], want.scores[0], rtol=1e-5)
    batch = server.post("/recommend", json={"users": [4, 5], "k": 3}).json()["results"]
    got = [[e["score"] for e in r["items"]] for r in batch]
    np.testing.assert_allclose(got, want.scores, rtol=1e-5)
    assert server.get("/similar/item-3").status_code == 200
    # back to the start-up model (also checks a reload without a body: same directory)
    server.post("/admin/reload", headers=ADMIN, json={"model_dir": str(models["neumf"])})
    assert server.post("/admin/reload", headers=ADMIN).json()["kind"] == "neumf"


@pytest.mark.parametrize("target", ["bad", "missing"])
def test_failed_reload_keeps_the_old_model(server, models, target):
    before = server.get("/healthz").json()
    path = models.get(target, models["neumf"].parent / "does-not-exist")
    r = server.post("/admin/reload", headers=ADMIN, json={"model_dir": str(path)})
    assert r.status_code == 422 and r.json()["reloaded"] is False
    assert "ModelFileError" in r.json()["error"]
    assert server.get("/healthz").json() == before
    assert server.get("/model").json()["last_reload_error"] == r.json()["error"]
    assert server.get("/recommend/1").status_code == 200


def test_sighup_reloads(server):
    before = server.get("/healthz").json()["generation"]
    server.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while server.get("/healthz").json()["generation"] == before:
        assert time.monotonic() < deadline, "SIGHUP did not reload within 10 s"
        time.sleep(0.05)
    assert server.get("/model").json()["last_reload_error"] is None


def test_without_a_key_admin_is_loopback_only_and_cannot_switch_dirs(models):
    app = create_app(models["neumf"])

    async def call(client_host: str, body: dict | None = None) -> httpx.Response:
        transport = httpx.ASGITransport(app=app, client=(client_host, 5000))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.post("/admin/reload", json=body)

    assert asyncio.run(call("10.1.2.3")).status_code == 403
    assert asyncio.run(call("127.0.0.1", {"model_dir": str(models["mf"])})).status_code == 403
    assert asyncio.run(call("::1")).status_code == 200


def test_cli_refuses_a_missing_model_dir(tmp_path):
    assert cli_main(["serve", str(tmp_path / "nothing"), "--port", "1"]) == 2

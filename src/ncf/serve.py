"""HTTP service for a saved model: FastAPI under uvicorn, hot reload, Prometheus metrics.

``create_app(model_dir)`` builds the app; ``run(...)`` serves it (``ncf serve`` calls it).
Endpoints: ``GET /recommend/{user_id}``, ``POST /recommend``, ``GET /similar/{item_id}``,
``GET /healthz``, ``GET /model``, ``GET /metrics``, ``POST /admin/reload`` and the OpenAPI docs
(``/docs``, ``/openapi.json``). Each request takes the current `ServingModel` once, at its
start, so a reload (which swaps one reference after loading in a worker thread) never changes
the model under a request in flight. See SECURITY.md for what the service trusts.
"""

from __future__ import annotations

import asyncio
import bisect
import hmac
import ipaddress
import json
import logging
import os
import signal
import sys
import threading
import time
from collections import defaultdict
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr
from starlette.responses import PlainTextResponse, Response

from ncf.serving_model import DEFAULT_CACHE_BYTES, MAX_K, Ranked, ServingModel

try:
    import orjson

    def _dumps(content: Any) -> bytes:
        return orjson.dumps(content)

except ImportError:  # pragma: no cover - orjson is in the serve extra

    def _dumps(content: Any) -> bytes:
        return json.dumps(content, separators=(",", ":")).encode()


log = logging.getLogger("ncf.serve")
DEFAULT_MAX_BATCH = 256
MAX_BODY_BYTES = 1 << 20
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
ENV_PREFIX = "NCF_SERVE_"


class JSON(Response):
    """JSON response rendered with orjson when installed (no pydantic re-validation)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return _dumps(content)


# ---------------------------------------------------------------------------- metrics
class Metrics:
    """Counters and a fixed-bucket latency histogram per route, as Prometheus text."""

    def __init__(self) -> None:
        self.requests: dict[tuple[str, str, int], int] = defaultdict(int)
        self.buckets: dict[str, list[int]] = {}
        self.sums: dict[str, float] = defaultdict(float)
        self.fallbacks = 0
        self.reloads: dict[str, int] = defaultdict(int)
        self._lock = threading.Lock()

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        with self._lock:
            self.requests[(route, method, status)] += 1
            counts = self.buckets.setdefault(route, [0] * (len(BUCKETS) + 1))
            counts[bisect.bisect_left(BUCKETS, seconds)] += 1
            self.sums[route] += seconds

    def render(self, model: ServingModel) -> str:
        lines = [
            "# HELP ncf_requests_total HTTP requests by route, method and status.",
            "# TYPE ncf_requests_total counter",
        ]
        with self._lock:
            for (route, method, status), n in sorted(self.requests.items()):
                labels = f'route="{route}",method="{method}",status="{status}"'
                lines.append(f"ncf_requests_total{{{labels}}} {n}")
            lines += [
                "# HELP ncf_request_duration_seconds Time in the app per request, by route.",
                "# TYPE ncf_request_duration_seconds histogram",
            ]
            for route, counts in sorted(self.buckets.items()):
                total = 0
                for bound, n in zip((*BUCKETS, "+Inf"), counts, strict=True):
                    total += n
                    lines.append(
                        f'ncf_request_duration_seconds_bucket{{route="{route}",le="{bound}"}} '
                        f"{total}"
                    )
                lines.append(
                    f'ncf_request_duration_seconds_sum{{route="{route}"}} '
                    + (f"{self.sums[route]:.6f}")
                )
                lines.append(f'ncf_request_duration_seconds_count{{route="{route}"}} {total}')
            lines += [
                "# HELP ncf_fallback_total Users answered with the popularity fallback.",
                "# TYPE ncf_fallback_total counter",
                f"ncf_fallback_total {self.fallbacks}",
                "# HELP ncf_reloads_total Model reloads by result.",
                "# TYPE ncf_reloads_total counter",
            ]
            lines += [
                f'ncf_reloads_total{{result="{r}"}} {self.reloads[r]}' for r in ("ok", "failed")
            ]
        lines += [
            "# HELP ncf_model_info The model being served (value is always 1).",
            "# TYPE ncf_model_info gauge",
            f'ncf_model_info{{version="{model.version}",kind="{model.kind}",'
            f'generation="{model.generation}"}} 1',
        ]
        return "\n".join(lines) + "\n"


class _BodyTooLarge(Exception):
    pass


class MetricsMiddleware:
    """Pure ASGI middleware: time each request, label it by route template, cap body size."""

    def __init__(self, app: Any, metrics: Metrics, max_body: int = MAX_BODY_BYTES) -> None:
        self.app, self.metrics, self.max_body = app, metrics, max_body

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        state = {"status": 500, "received": 0, "started": False}
        length = dict(scope["headers"]).get(b"content-length", b"0")
        if not length.isdigit() or int(length) > self.max_body:
            await _too_large(send, self.max_body)
            return

        async def capped_receive() -> dict:
            message = await receive()
            state["received"] += len(message.get("body", b""))
            if state["received"] > self.max_body:
                raise _BodyTooLarge
            return message

        async def timed_send(message: dict) -> None:
            if message["type"] == "http.response.start":
                state["status"], state["started"] = message["status"], True
            await send(message)

        try:
            await self.app(scope, capped_receive, timed_send)
        except _BodyTooLarge:
            if not state["started"]:
                await _too_large(send, self.max_body)
            state["status"] = 413
        finally:
            route = scope.get("route")
            label = getattr(route, "path", None) or "unmatched"
            self.metrics.observe(
                label, scope["method"], state["status"], time.perf_counter() - start
            )


async def _too_large(send: Any, limit: int) -> None:
    body = _dumps({"detail": f"request body larger than {limit} bytes"})
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": 413, "headers": headers})
    await send({"type": "http.response.body", "body": body})


# ---------------------------------------------------------------------------- model holder
class ModelHolder:
    """The one mutable reference to the current `ServingModel`, and the reload procedure."""

    def __init__(self, model_dir: Path, metrics: Metrics, **model_kwargs: Any) -> None:
        self.model_kwargs = model_kwargs
        self.metrics = metrics
        self.current = ServingModel.load(model_dir, generation=0, **model_kwargs)
        self.last_error: str | None = None
        self._lock = asyncio.Lock()

    async def reload(self, model_dir: Path | None = None) -> tuple[bool, dict[str, Any]]:
        """Load ``model_dir`` (default: the directory being served) in a thread, then swap.

        On failure the current model keeps serving; the error is returned and remembered.
        """
        async with self._lock:
            old = self.current
            target = model_dir or old.model_dir
            try:
                new = await asyncio.to_thread(
                    ServingModel.load, target, generation=old.generation + 1, **self.model_kwargs
                )
            except Exception as exc:  # any failure: keep serving the old model
                self.last_error = f"{type(exc).__name__}: {exc}"
                self.metrics.reloads["failed"] += 1
                log.error("reload of %s failed, still serving %s: %s", target, old.version, exc)
                return False, {"reloaded": False, "error": self.last_error, **_brief(old)}
            self.current = new  # the swap: one reference, on the event loop
            self.last_error = None
            self.metrics.reloads["ok"] += 1
            log.info("reloaded %s: version %s -> %s", target, old.version, new.version)
            return True, {"reloaded": True, "previous_version": old.version, **_brief(new)}


def _brief(model: ServingModel) -> dict[str, Any]:
    return {"version": model.version, "generation": model.generation, "kind": model.kind}


# ---------------------------------------------------------------------------- the app
class BatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    users: list[Annotated[StrictStr, Field(max_length=256)] | StrictInt] = Field(min_length=1)
    k: int = Field(10, ge=1, le=MAX_K)
    exclude_seen: bool = True


UserId = Annotated[str, PathParam(max_length=256, description="A raw user id.")]
ItemId = Annotated[str, PathParam(max_length=256, description="A raw item id.")]
K = Annotated[int, Query(ge=1, le=MAX_K, description="How many items (1..1000).")]


class ReloadRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model_dir: str | None = Field(
        None, description="A new model directory; allowed only when an admin key is set."
    )


def create_app(
    model_dir: str | Path,
    admin_key: str | None = None,
    *,
    max_batch: int = DEFAULT_MAX_BATCH,
    cache_max_bytes: int = DEFAULT_CACHE_BYTES,
    max_body_bytes: int = MAX_BODY_BYTES,
) -> FastAPI:
    """The FastAPI app serving ``model_dir`` (loaded and verified now; errors raise here).

    ``admin_key``: when set, admin endpoints need header ``X-API-Key`` with this value and
    may switch to another model directory; when None, they answer loopback clients only and
    reload only the directory being served.
    """
    metrics = Metrics()
    holder = ModelHolder(Path(model_dir), metrics, cache_max_bytes=cache_max_bytes)

    @asynccontextmanager
    async def lifespan(app: FastAPI):  # noqa: ANN202 - FastAPI's lifespan protocol
        loop = asyncio.get_running_loop()
        hooked = False
        tasks: set[asyncio.Task] = set()

        def on_sighup() -> None:  # keep a reference so the task is not collected mid-way
            task = loop.create_task(holder.reload())
            tasks.add(task)
            task.add_done_callback(tasks.discard)

        if hasattr(signal, "SIGHUP") and threading.current_thread() is threading.main_thread():
            loop.add_signal_handler(signal.SIGHUP, on_sighup)
            hooked = True
        yield
        if hooked:
            loop.remove_signal_handler(signal.SIGHUP)

    app = FastAPI(
        title="ncf recommendation service",
        version=holder.current.rec.config_.get("library_version", "unknown"),
        default_response_class=JSON,
        lifespan=lifespan,
    )
    app.state.holder, app.state.metrics = holder, metrics
    app.add_middleware(MetricsMiddleware, metrics=metrics, max_body=max_body_bytes)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSON:
        errors = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
            for e in exc.errors()
        ]
        text = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors)
        return JSON({"detail": f"invalid request: {text}", "errors": errors}, status_code=422)

    def user_records(model: ServingModel, ranked: list[Ranked]) -> list[dict]:
        ids, titles = model.item_ids, model.titles
        records = []
        for r in ranked:
            if titles is None:
                items = [
                    {"item": ids[i], "score": s} for i, s in zip(r.items, r.scores, strict=True)
                ]
            else:
                items = [
                    {"item": ids[i], "score": s, "title": titles[i]}
                    for i, s in zip(r.items, r.scores, strict=True)
                ]
            records.append({"user": r.user, "fallback": r.fallback, "items": items})
        metrics.fallbacks += sum(r.fallback for r in ranked)
        return records

    async def ranked(model: ServingModel, users: list, k: int, exclude_seen: bool) -> list:
        if model.is_fast(exclude_seen):
            return model.recommend(users, k, exclude_seen)
        return await run_in_threadpool(model.recommend, users, k, exclude_seen)

    @app.get("/recommend/{user_id}", tags=["recommend"])
    async def recommend_one(user_id: UserId, k: K = 10, exclude_seen: bool = True) -> JSON:
        """Top-k items for one user. Unknown users get the popularity ranking, flagged."""
        model = holder.current
        [record] = user_records(model, await ranked(model, [user_id], k, exclude_seen))
        return JSON({**record, "k": k, "version": model.version})

    @app.post("/recommend", tags=["recommend"])
    async def recommend_batch(body: BatchRequest) -> JSON:
        """Top-k items for a batch of users (at most ``max_batch``), one result per user."""
        if len(body.users) > max_batch:
            raise HTTPException(
                422,
                f"invalid request: body.users: at most {max_batch} users per request, "
                f"got {len(body.users)}",
            )
        model = holder.current
        found = await ranked(model, body.users, body.k, body.exclude_seen)
        return JSON({"k": body.k, "version": model.version, "results": user_records(model, found)})

    @app.get("/similar/{item_id}", tags=["recommend"])
    async def similar(item_id: ItemId, k: K = 10) -> JSON:
        """The k items most similar to an item (cosine of the model's item vectors)."""
        model = holder.current
        index = model.item_index(item_id)
        if index < 0:
            raise HTTPException(404, f"unknown item id: {item_id!r}")
        items, scores = model.similar(index, k)
        ids, titles = model.item_ids, model.titles
        out = [{"item": ids[i], "score": s} for i, s in zip(items, scores, strict=True)]
        if titles is not None:
            for entry, i in zip(out, items, strict=True):
                entry["title"] = titles[i]
        return JSON({"item": ids[index], "k": k, "version": model.version, "items": out})

    @app.get("/healthz", tags=["service"])
    async def healthz() -> JSON:
        """Liveness: the service is up and has a model."""
        model = holder.current
        return JSON({"status": "ok", "version": model.version, "generation": model.generation})

    @app.get("/model", tags=["service"])
    async def model_info() -> JSON:
        """The served model's config summary, version and serving strategy."""
        return JSON({**holder.current.summary(), "last_reload_error": holder.last_error})

    @app.get("/metrics", tags=["service"], response_class=PlainTextResponse)
    async def prometheus() -> PlainTextResponse:
        """Prometheus text format: requests, latencies, fallbacks, reloads."""
        return PlainTextResponse(
            metrics.render(holder.current), media_type="text/plain; version=0.0.4"
        )

    @app.post("/admin/reload", tags=["admin"])
    async def reload(request: Request, body: ReloadRequest | None = None) -> JSON:
        """Load a model directory in the background and swap it in atomically.

        Without a body, reloads the directory being served. A failed load keeps the old model
        serving and answers 422 with the reason (the request named an unusable model: a
        client-side problem, never a server error).
        """
        _check_admin(request, admin_key)
        target = None
        if body is not None and body.model_dir is not None:
            if admin_key is None:
                raise HTTPException(
                    403, "model_dir may be given only when the server has an admin key"
                )
            target = Path(body.model_dir)
        ok, report = await holder.reload(target)
        return JSON(report, status_code=200 if ok else 422)

    return app


def _check_admin(request: Request, admin_key: str | None) -> None:
    if admin_key is not None:
        given = request.headers.get("x-api-key", "")
        if not hmac.compare_digest(given.encode(), admin_key.encode()):
            raise HTTPException(401, "admin endpoints need a valid X-API-Key header")
        return
    host = request.client.host if request.client else ""
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise HTTPException(403, "admin endpoints answer loopback clients only (no admin key set)")


# ---------------------------------------------------------------------------- running
def app_from_env() -> FastAPI:
    """App factory for uvicorn workers (``--workers N``): settings come from the environment."""
    return create_app(
        os.environ[ENV_PREFIX + "MODEL_DIR"],
        os.environ.get("NCF_ADMIN_KEY") or None,
        max_batch=int(os.environ.get(ENV_PREFIX + "MAX_BATCH", DEFAULT_MAX_BATCH)),
        cache_max_bytes=int(os.environ.get(ENV_PREFIX + "CACHE_BYTES", DEFAULT_CACHE_BYTES)),
    )


def run(
    model_dir: str | Path,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    admin_key: str | None = None,
    workers: int = 1,
    max_batch: int = DEFAULT_MAX_BATCH,
    cache_max_bytes: int = DEFAULT_CACHE_BYTES,
    access_log: bool = False,
    log_level: str = "info",
) -> None:
    """Serve ``model_dir`` with uvicorn until interrupted (SIGINT/SIGTERM)."""
    import uvicorn

    logging.basicConfig(level=log_level.upper(), stream=sys.stderr, format="%(message)s")
    common = {
        "host": host,
        "port": port,
        "access_log": access_log,
        "log_level": log_level,
        "timeout_graceful_shutdown": 10,
    }
    if workers > 1:  # each worker process builds its own app from the environment
        os.environ[ENV_PREFIX + "MODEL_DIR"] = str(model_dir)
        os.environ[ENV_PREFIX + "MAX_BATCH"] = str(max_batch)
        os.environ[ENV_PREFIX + "CACHE_BYTES"] = str(cache_max_bytes)
        if admin_key:
            os.environ["NCF_ADMIN_KEY"] = admin_key
        uvicorn.run("ncf.serve:app_from_env", factory=True, workers=workers, **common)
        return
    app = create_app(model_dir, admin_key, max_batch=max_batch, cache_max_bytes=cache_max_bytes)
    uvicorn.run(app, **common)

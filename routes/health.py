"""Ops endpoints: liveness, readiness, Prometheus metrics."""

from __future__ import annotations

import asyncio

import aiohttp
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from gateway.config import CONFIG
from gateway.errors import StoreUnavailable
from gateway.guard import STORE
from gateway.headers import peer_in
from gateway.metrics import METRICS
from gateway.proxy import HELP_CENTER, UPSTREAM_SESSION

READY_TIMEOUT = aiohttp.ClientTimeout(total=3)


async def healthz(request: web.Request) -> web.Response:
    """The process is up and serving."""
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Ready when the store answers a query and the help-center upstream answers at all (any status)."""
    checks = {"store": "ok", "upstream": "ok"}
    try:
        await asyncio.wait_for(request.app[STORE].ping(), READY_TIMEOUT.total)
    except (StoreUnavailable, TimeoutError):
        checks["store"] = "unavailable"
    upstream = request.app[HELP_CENTER]
    try:
        async with request.app[UPSTREAM_SESSION].head(upstream.base, timeout=READY_TIMEOUT, allow_redirects=False):
            pass
    except (aiohttp.ClientError, TimeoutError):
        checks["upstream"] = "unreachable"
    ready = all(value == "ok" for value in checks.values())
    return web.json_response(
        {"status": "ok" if ready else "unavailable", "checks": checks}, status=200 if ready else 503
    )


async def metrics(request: web.Request) -> web.Response:
    """Prometheus exposition, only to the peers in ``listen.metrics_allow``."""
    # SECURITY: the custom domain is public; metrics name cookies and routes, so
    # they are served to the configured ops networks only (the TCP peer, not a header).
    if not peer_in(request.remote, request.app[CONFIG].listen.metrics_allow):
        raise web.HTTPNotFound()
    return web.Response(body=request.app[METRICS].exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST})


def add_routes(app: web.Application) -> None:
    """Register the ops endpoints."""
    app.router.add_get("/healthz", healthz, name="healthz")
    app.router.add_get("/readyz", readyz, name="readyz")
    app.router.add_get("/metrics", metrics, name="metrics")

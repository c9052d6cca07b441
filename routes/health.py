"""Ops endpoints: liveness, readiness, Prometheus metrics."""

from __future__ import annotations

import asyncio

import aiohttp
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from gateway.config import CONFIG
from gateway.edge.guard import STORE
from gateway.edge.headers import peer_in
from gateway.errors import StoreUnavailable
from gateway.namespace import HEALTHZ_PATH, METRICS_PATH, READYZ_PATH
from gateway.observe.metrics import METRICS
from gateway.proxy.forward import HELP_CENTER, UPSTREAM_SESSION

READY_TIMEOUT = aiohttp.ClientTimeout(total=3)


async def healthz(request: web.Request) -> web.Response:
    """The process is up and serving."""
    return web.json_response({"status": "ok"})


def _reason(exc: BaseException) -> str:
    """Why a dependency did not answer, in a few fixed words."""
    # SECURITY: never the exception's text: it names the upstream's address, which a public probe must not show.
    if isinstance(exc, TimeoutError):
        return f"no answer within {READY_TIMEOUT.total:g} s"
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return "its host name does not resolve"
    if isinstance(exc, aiohttp.ClientConnectorCertificateError | aiohttp.ClientSSLError):
        return "TLS handshake failed"
    if isinstance(exc, aiohttp.ClientConnectorError):
        refused = isinstance(exc.os_error, ConnectionRefusedError)
        return "connection refused: nothing listens there" if refused else "cannot connect"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "closed the connection without answering"
    return "did not answer with HTTP"


async def help_center_problem(app: web.Application) -> str | None:
    """Why the help-center upstream does not answer a HEAD of its base URL (any status is an answer), or None."""
    upstream = app[HELP_CENTER]
    try:
        async with app[UPSTREAM_SESSION].head(upstream.base, timeout=READY_TIMEOUT, allow_redirects=False):
            return None
    except (aiohttp.ClientError, TimeoutError) as exc:
        return _reason(exc)


async def readyz(request: web.Request) -> web.Response:
    """Ready when the store answers a query and the help-center upstream answers at all; the body says why not."""
    checks: dict[str, dict[str, str]] = {"store": {"status": "ok"}, "upstream": {"status": "ok"}}
    try:
        await asyncio.wait_for(request.app[STORE].ping(), READY_TIMEOUT.total)
    except StoreUnavailable:
        checks["store"] = {"status": "unavailable", "reason": "locked by another process, missing or failing"}
    except TimeoutError as exc:
        checks["store"] = {"status": "unavailable", "reason": _reason(exc)}
    problem = await help_center_problem(request.app)
    if problem is not None:
        checks["upstream"] = {"status": "unreachable", "reason": problem}
    ready = all(check["status"] == "ok" for check in checks.values())
    return web.json_response(
        {"status": "ok" if ready else "unavailable", "checks": checks}, status=200 if ready else 503
    )


async def metrics(request: web.Request) -> web.Response:
    """Prometheus exposition, only to the peers in ``listen.metrics_allow``."""
    # SECURITY: the custom domain is public; metrics name cookies and routes, so
    # they are served to the configured ops networks only (the TCP peer, not a header).
    if not peer_in(request.remote, request.app[CONFIG].listen.metrics_allow):
        raise web.HTTPNotFound()
    return web.Response(body=await request.app[METRICS].exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST})


def add_routes(app: web.Application) -> None:
    """Register the ops endpoints."""
    app.router.add_get(HEALTHZ_PATH, healthz, name="healthz")
    app.router.add_get(READYZ_PATH, readyz, name="readyz")
    app.router.add_get(METRICS_PATH, metrics, name="metrics")

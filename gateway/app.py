"""The app factory: the one place the pipeline is wired, in the order requests cross it."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp_jinja2
import jinja2
from aiohttp import web

import routes
from gateway.audit import audit_log_context, audit_middleware
from gateway.config import CONFIG, GatewayConfig
from gateway.errorpages import error_middleware
from gateway.framing import framing_middleware
from gateway.guard import GUARD, STORE, Guard, access_middleware, identity_middleware, jwks_context
from gateway.headers import forwarded_middleware
from gateway.hosts import host_middleware, served_hosts
from gateway.identity import JWTVerifier
from gateway.metrics import METRICS, Metrics
from gateway.paths import path_middleware
from gateway.proxy import HELP_CENTER, MESSENGER, Upstream, upstream_pool, upstream_session
from gateway.secure import security_headers
from gateway.slowclients import HeadDeadline, body_middleware
from gateway.store import SQLiteStore
from gateway.store.demo import seed_if_empty
from routes import admin, admin_openapi, api, auth, health, messenger, portal, upstream

STATIC_PREFIX = "/_gateway/static"
STATIC_DIR = Path(routes.__file__).parent / "static"


async def store_context(app: web.Application) -> AsyncIterator[None]:
    """Cleanup context: the store, opened (and seeded for the demo) at start, closed at stop."""
    config = app[CONFIG]
    store = await SQLiteStore.open(config.store.path, busy_timeout=config.store.busy_timeout)
    if config.store.seed_demo:
        await seed_if_empty(store, int(time.time()))
    app[STORE] = store
    yield
    await store.close()


HEAD_DEADLINE = web.AppKey("head_deadline", HeadDeadline)


def create_app(config: GatewayConfig, metrics: Metrics | None = None) -> web.Application:
    """Build the gateway's HTTPS application from a validated config; ``metrics`` carries the counts of
    the app it replaces (a reload), so that counters never go back to zero while the process lives."""
    head_deadline = HeadDeadline(config.requests.header_timeout)
    app = web.Application(
        middlewares=[
            head_deadline.middleware,  # the request head arrived in time (server.py starts the clock)
            audit_middleware,  # request id, audit record, metrics: sees the final status
            framing_middleware,  # ambiguous framing refused; no keep-alive after an upgrade that did not happen
            error_middleware,  # exceptions and upstream failures become pages
            host_middleware(served_hosts(config)),  # only our own Host names get content
            path_middleware(config.requests.allow_encoded_slashes),  # paths servers read two ways refused
            forwarded_middleware(config.listen.trusted_proxies),  # client address, X-Forwarded-*
            identity_middleware,  # who: verified identity, or why not
            access_middleware,  # whether: portal paths need a visitor who meets the access rules
            body_middleware(config.requests.body_timeout, frozenset({upstream.ROUTE_NAME})),  # read in time
        ],
        # Caps only the bodies the gateway reads itself (forms, admin JSON); proxied bodies stream.
        client_max_size=config.requests.max_body_size,
    )
    app[CONFIG] = config
    app[HEAD_DEADLINE] = head_deadline
    app[METRICS] = metrics or Metrics()
    app[HELP_CENTER] = Upstream.from_config(config, config.upstream.url)
    app[MESSENGER] = Upstream.from_config(config, config.messenger.upstream)
    app[GUARD] = Guard.from_config(config, JWTVerifier.from_config(config.identity.jwt))
    app.cleanup_ctx.extend(
        [audit_log_context(config.audit.path), upstream_pool, upstream_session, store_context, jwks_context]
    )
    app.on_response_prepare.append(security_headers(config.tls.hsts_max_age))
    aiohttp_jinja2.setup(app, loader=jinja2.PackageLoader("routes", "templates"), autoescape=True)
    app.router.add_static(STATIC_PREFIX, STATIC_DIR, name="static")
    health.add_routes(app)
    auth.add_routes(app)
    api.add_routes(app)
    portal.add_routes(app)
    messenger.add_routes(app)
    admin.add_routes(app, admin_openapi.openapi)
    upstream.add_routes(app)  # last: the catch-all
    return app

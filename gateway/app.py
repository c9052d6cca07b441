"""The app factory: the one place the pipeline is wired, in the order requests cross it."""

from __future__ import annotations

import time
import warnings
from collections.abc import AsyncIterator

import aiohttp_jinja2
import jinja2
from aiohttp import web

from gateway.config import CONFIG, GatewayConfig
from gateway.edge.guard import (
    CLOCK,
    GUARD,
    STORE,
    VISIBILITY,
    Guard,
    access_stage,
    account_context,
    identity_stage,
    jwks_context,
)
from gateway.edge.headers import forwarded_stage
from gateway.edge.hosts import host_stage, served_hosts
from gateway.edge.paths import path_stage
from gateway.edge.pipeline import Pipeline, page_context_stage
from gateway.edge.secure import security_headers
from gateway.edge.slowclients import HeadDeadline, body_stage
from gateway.intercom.connector import intercom_context
from gateway.namespace import NAMESPACES, NamespaceTable
from gateway.observe.audit import AuditLog, audit_log_context
from gateway.observe.metrics import METRICS, Metrics, metrics_context
from gateway.policy.identity import JWTVerifier
from gateway.policy.visibility import VisibilityPolicy
from gateway.proxy.forward import HELP_CENTER, MESSENGER, Upstream, upstream_pool, upstream_session
from gateway.store.demo import seed_if_empty
from gateway.store.protocol import open_store
from routes import (
    admin,
    admin_openapi,
    api,
    assets,
    auth,
    brand,
    events,
    health,
    intercom,
    messenger,
    portal,
    probe,
    upstream,
)


async def store_context(app: web.Application) -> AsyncIterator[None]:
    """Cleanup context: the store, opened (and seeded for the demo) at start, closed at stop."""
    config = app[CONFIG]
    store = await open_store(config.store)
    if config.store.seed_demo:
        await seed_if_empty(store, int(time.time()))
    app[STORE] = store
    yield
    await store.close()


HEAD_DEADLINE = web.AppKey("head_deadline", HeadDeadline)


def create_app(
    config: GatewayConfig, metrics: Metrics | None = None, audit_log: AuditLog | None = None
) -> web.Application:
    """Build the gateway's HTTPS application from a validated config; ``metrics`` and ``audit_log`` come from
    the app it replaces (a reload): counters never go back to zero and the audit chain never breaks."""
    head_deadline = HeadDeadline(config.requests.header_timeout)
    # One middleware runs it all (gateway/edge/pipeline.py): the head's deadline, the request id, audit record
    # and metrics (which see the final status), framing (ambiguous framing refused, and "_" in header names if so
    # configured; no keep-alive after an upgrade that did not happen), the error pages, then these stages:
    pipeline = Pipeline(
        head_deadline,
        refuse_underscores=config.requests.underscore_headers == "refuse",
        stages=(
            host_stage(served_hosts(config)),  # only our own Host names get content
            path_stage(config.requests.allow_encoded_slashes),  # paths servers read two ways refused
            forwarded_stage(config.listen.trusted_proxies),  # client address, X-Forwarded-*
            identity_stage,  # who: verified identity, or why not
            # The header's account for every page (the processors below); before access, so that the pages
            # the access stage answers with know the visitor too.
            page_context_stage,
            access_stage,  # whether: portal paths need a visitor who meets the access rules
            body_stage(config.requests.body_timeout, frozenset({upstream.ROUTE_NAME})),  # read in time
        ),
    )
    app = web.Application(
        middlewares=[pipeline.middleware],
        # Caps only the bodies the gateway reads itself (forms, admin JSON); proxied bodies stream.
        client_max_size=config.requests.max_body_size,
    )
    app[CONFIG] = config
    app[NAMESPACES] = NamespaceTable.for_portal(config.portal.path)  # every stage and route reads its paths here
    app[HEAD_DEADLINE] = head_deadline
    app[METRICS] = metrics or Metrics()
    app[HELP_CENTER] = Upstream.from_config(config, config.upstream.url)
    app[MESSENGER] = Upstream.from_config(config, config.messenger.upstream)
    app[CLOCK] = time.time
    app[GUARD] = Guard.from_config(config, JWTVerifier.from_config(config.identity.jwt), app[CLOCK])
    app[VISIBILITY] = VisibilityPolicy(config.portal.visibility)
    app.cleanup_ctx.extend(
        [
            audit_log_context(config.audit, audit_log),
            metrics_context,
            upstream_pool,
            upstream_session,
            store_context,
            jwks_context,
            intercom_context,  # after the store: the background sync writes into it
        ]
    )
    if config.portal.live:
        # After the store's context: the change hub reads it. On shutdown, before the grace starts counting
        # in-flight requests, every event stream ends (the pages reconnect to the next worker).
        app.cleanup_ctx.append(events.feed_context)
        app.on_shutdown.append(events.end_streams)
    app.on_response_prepare.append(security_headers(config.tls.hsts_max_age))
    aiohttp_jinja2.setup(app, loader=jinja2.PackageLoader("routes", "templates"), autoescape=True)
    app[aiohttp_jinja2.APP_CONTEXT_PROCESSORS_KEY] = (account_context,)
    # aiohttp-jinja2 1.6 keeps its context under a plain string request key, which aiohttp 3.14 warns about
    # (aio-libs/aiohttp-jinja2#1025 moves it to a RequestKey); only the warning for that library's key is silenced,
    # where it is set: in the library, and in the pipeline's page context stage.
    warnings.filterwarnings("ignore", category=web.NotAppKeyWarning, module=r"aiohttp_jinja2|gateway\.edge\.pipeline")
    assets.add_routes(app)
    brand.add_routes(app)
    health.add_routes(app)
    auth.add_routes(app)
    api.add_routes(app)
    events.add_routes(app)  # before the portal's: its detail route would take "events" for a ticket id
    portal.add_routes(app)
    messenger.add_routes(app)
    admin.add_routes(app, admin_openapi.openapi)
    probe.add_routes(app)
    intercom.add_routes(app)
    upstream.add_routes(app)  # last: the catch-all
    return app

"""The app factory: the one place the pipeline is wired, in the order requests cross it."""

from __future__ import annotations

from pathlib import Path

import aiohttp_jinja2
import jinja2
from aiohttp import web

import routes
from gateway.audit import audit_log_context, audit_middleware
from gateway.config import CONFIG, GatewayConfig
from gateway.errorpages import error_middleware
from gateway.headers import forwarded_middleware
from gateway.metrics import METRICS, Metrics
from gateway.proxy import HELP_CENTER, Upstream, upstream_session
from gateway.secure import security_headers
from routes import health, upstream

STATIC_PREFIX = "/_gateway/static"
STATIC_DIR = Path(routes.__file__).parent / "static"


def create_app(config: GatewayConfig) -> web.Application:
    """Build the gateway's HTTPS application from a validated config."""
    app = web.Application(
        middlewares=[
            audit_middleware,  # request id, audit record, metrics: sees the final status
            error_middleware,  # exceptions and upstream failures become pages
            forwarded_middleware(config.listen.trusted_proxies),  # client address, X-Forwarded-*
        ],
        client_max_size=0,  # bodies are streamed, never read whole
    )
    app[CONFIG] = config
    app[METRICS] = Metrics()
    app[HELP_CENTER] = Upstream.from_config(config, config.upstream.url)
    app.cleanup_ctx.extend([audit_log_context(config.audit.path), upstream_session])
    app.on_response_prepare.append(security_headers(config.tls.hsts_max_age))
    aiohttp_jinja2.setup(app, loader=jinja2.PackageLoader("routes", "templates"), autoescape=True)
    app.router.add_static(STATIC_PREFIX, STATIC_DIR, name="static")
    health.add_routes(app)
    upstream.add_routes(app)  # last: the catch-all
    return app

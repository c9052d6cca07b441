"""Everything the gateway does not serve itself goes to the hosted help center."""

from __future__ import annotations

from aiohttp import web

from gateway.edge.guard import upstream_identity
from gateway.edge.paths import reserved
from gateway.proxy.forward import HELP_CENTER, forward

ROUTE_NAME = "proxy"


async def help_center(request: web.Request) -> web.StreamResponse:
    """Reverse-proxy the request to ``upstream.url``, telling it who a verified visitor is."""
    if reserved(request.raw_path):
        # SECURITY: another spelling of /messenger/web or /admin/api never reaches upstream past their checks.
        raise web.HTTPNotFound()
    return await forward(request, request.app[HELP_CENTER], identity=await upstream_identity(request))


def add_routes(app: web.Application) -> None:
    """The catch-all route; register it last."""
    app.router.add_route("*", "/{tail:.*}", help_center, name=ROUTE_NAME)

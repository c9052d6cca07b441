"""The last route of an API namespace: 405 naming the methods of a path it serves, 404 for any other path."""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Handler


def namespace_fallback(prefix: str) -> Handler:
    """A handler for every method and path under ``prefix`` that no route of the namespace took."""

    async def fallback(request: web.Request) -> web.StreamResponse:
        allowed: set[str] = set()
        for resource in request.app.router.resources():
            if resource.canonical.startswith(prefix):
                match, methods = await resource.resolve(request)
                if match is None:  # the path is this resource's, the method is not
                    allowed |= methods
        if allowed:
            raise web.HTTPMethodNotAllowed(request.method, sorted(allowed))
        raise web.HTTPNotFound()

    return fallback

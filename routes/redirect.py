"""The plain-HTTP listener: it only ever redirects to HTTPS on the configured domain."""

from __future__ import annotations

from aiohttp import web
from yarl import URL


def https_target(domain: str, https_port: int, request_url: URL) -> URL:
    """The HTTPS URL with the request's path and query on our own domain.

    SECURITY: the host comes from the config, never from the request's Host
    header or an absolute-form request target, so the redirect cannot be
    pointed elsewhere.
    """
    return URL.build(
        scheme="https",
        host=domain,
        port=None if https_port == 443 else https_port,
        path=request_url.raw_path,
        query_string=request_url.raw_query_string,
        encoded=True,
    )


def create_redirect_app(domain: str, https_port: int) -> web.Application:
    """An app that answers every request with 308 to the same path and query over HTTPS."""

    async def redirect(request: web.Request) -> web.StreamResponse:
        raise web.HTTPPermanentRedirect(https_target(domain, https_port, request.rel_url))

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", redirect)
    return app

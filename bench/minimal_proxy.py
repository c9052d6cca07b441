"""Row (e): the smallest aiohttp reverse proxy that does the gateway's one indispensable job, filtering cookies.

    python -m bench.minimal_proxy PORT UPSTREAM_URL CERT KEY WORKSPACE_ID

TLS, keep-alive both ways, the two Intercom cookies forwarded and every other
stripped, hop-by-hop headers dropped; no identity, audit, metrics or streaming.
It runs on uvloop, as the gateway does, so the comparison is between the two
programs and not between event loops.
"""

from __future__ import annotations

import ssl
import sys
from collections.abc import AsyncIterator

import aiohttp
import uvloop
from aiohttp import web

HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade", "host", "cookie"}
)
SESSION = web.AppKey("session", aiohttp.ClientSession)


def create_app(upstream: str, allowed: frozenset[str]) -> web.Application:
    """The proxy app: every path to ``upstream``."""
    base = upstream.rstrip("/")

    async def session_context(app: web.Application) -> AsyncIterator[None]:
        app[SESSION] = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=256), auto_decompress=False, cookie_jar=aiohttp.DummyCookieJar()
        )
        yield
        await app[SESSION].close()

    async def proxy(request: web.Request) -> web.Response:
        pairs = (pair.strip() for value in request.headers.getall("Cookie", ()) for pair in value.split(";"))
        cookie = "; ".join(pair for pair in pairs if pair.partition("=")[0] in allowed)
        headers = {name: value for name, value in request.headers.items() if name.lower() not in HOP_BY_HOP}
        if cookie:
            headers["Cookie"] = cookie
        async with request.app[SESSION].request(
            request.method,
            base + request.raw_path,
            headers=headers,
            data=request.content if request.body_exists else None,
            allow_redirects=False,
        ) as response:
            body = await response.read()
            passed = {
                name: value
                for name, value in response.headers.items()
                if name.lower() not in HOP_BY_HOP and name.lower() != "content-length"
            }
            return web.Response(status=response.status, body=body, headers=passed)

    app = web.Application()
    app.cleanup_ctx.append(session_context)
    app.router.add_route("*", "/{tail:.*}", proxy)
    return app


def main() -> None:
    """Serve HTTPS on 127.0.0.1:PORT until killed."""
    port, upstream, cert, key, workspace = sys.argv[1:6]
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    allowed = frozenset({f"intercom-session-{workspace}", f"intercom-device-id-{workspace}"})
    web.run_app(
        create_app(upstream, allowed),
        host="127.0.0.1",
        port=int(port),
        ssl_context=context,
        access_log=None,
        print=None,
        loop=uvloop.new_event_loop(),
    )


if __name__ == "__main__":
    main()

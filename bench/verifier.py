"""Row (c)'s identity service: the minimal aiohttp JWT verifier ops would put behind nginx ``auth_request``.

    python -m bench.verifier PORT      (the HS256 secret in BENCH_JWT_SECRET)

Answers ``/_auth`` with 204 and ``X-Portal-User-Id`` for a valid ``portal-jwt``
cookie whose email is at example.com, 401 or 403 otherwise. One process, no
cache: what a small team writes in an afternoon, and what the gateway is held against.
"""

from __future__ import annotations

import os
import sys

import jwt
import uvloop
from aiohttp import web

COOKIE = "portal-jwt"
ALLOWED_DOMAIN = "@example.com"


def create_app(secret: str) -> web.Application:
    """The verifier app: one route, ``GET /_auth``."""

    async def check(request: web.Request) -> web.Response:
        token = request.cookies.get(COOKIE)
        if not token:
            return web.Response(status=401)
        try:
            claims = jwt.decode(token, secret, algorithms=["HS256"], options={"require": ["exp"]})
        except jwt.InvalidTokenError:
            return web.Response(status=401)
        if not str(claims.get("email", "")).endswith(ALLOWED_DOMAIN) or "user_id" not in claims:
            return web.Response(status=403)
        return web.Response(status=204, headers={"X-Portal-User-Id": str(claims["user_id"])})

    app = web.Application()
    app.router.add_get("/_auth", check)
    return app


def main() -> None:
    """Serve on 127.0.0.1:PORT until killed."""
    web.run_app(
        create_app(os.environ["BENCH_JWT_SECRET"]),
        host="127.0.0.1",
        port=int(sys.argv[1]),
        access_log=None,
        print=None,
        loop=uvloop.new_event_loop(),
    )


if __name__ == "__main__":
    main()

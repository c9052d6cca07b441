"""Where the gateway's own time goes: microseconds per request for each stage of the pipeline, in-process.

    .venv/bin/python -m bench.bench_pipeline

Builds the app that ``make bench`` measures in rows d (``bench/edge.py``'s
config: the portal in proxy mode behind an email-domain rule, audit log and
metrics on), then sends the benchmark's request (six cookies, a valid JWT)
through the first k middlewares around a handler that answers at once, for k
from 0 to all of them: each row is what one more stage adds. The reference,
k = 0, is aiohttp building the request and the response, in the same run.
Then the pure functions the catch-all route runs before it opens an upstream
connection. No sockets: TLS and the upstream client are what the rows of
``make bench`` measure. Machines are noisy: each figure is the best of
several runs (the median, for the pure functions); read the increments, not the absolute figures.
"""

from __future__ import annotations

import asyncio
import gc
import os
import tempfile
import time
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any

import trustme
import uvloop
from aiohttp import web
from aiohttp.http import HttpVersion11, RawRequestMessage
from aiohttp.streams import EMPTY_PAYLOAD
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from bench.bench_identity import per_call_us
from bench.edge import HOST, PATH, SECRET, WORKSPACE, gateway_config, write_certificate
from gateway.app import create_app
from gateway.config import load_config
from gateway.edge.headers import Forwarding, upstream_request_headers
from gateway.edge.paths import reserved
from gateway.policy.cookies import filter_cookies
from gateway.policy.identity import sign_token

REQUESTS = 2000
REPEATS = 7
PEER = ("127.0.0.1", 50000)


class _Transport:
    """What aiohttp asks of a connection's transport while it handles one request."""

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": PEER, "sockname": (HOST, 443)}.get(name, default)

    def is_closing(self) -> bool:
        return False


class _Protocol:
    """What aiohttp asks of the connection's protocol: its transport and the TLS facts."""

    transport = _Transport()
    ssl_context = None
    peername = PEER
    sockname = (HOST, 443)


class _Writer:
    """A response writer that is never written to (the handler's answer is only returned)."""

    buffer_size = 0
    output_size = 0


async def best_async_us(run: Callable[[], Awaitable[object]], calls: int) -> float:
    """The best of ``REPEATS`` runs of a coroutine function, in microseconds per call."""
    samples = []
    for _ in range(REPEATS):
        started = time.perf_counter()
        for _ in range(calls):
            await run()
        samples.append((time.perf_counter() - started) / calls * 1e6)
    return min(samples)


async def answer(request: web.Request) -> web.StreamResponse:
    """The innermost handler: an answer at once."""
    return web.Response(text="ok")


async def stages(app: web.Application, headers: dict[str, str]) -> list[tuple[str, float]]:
    """µs per request through the first k middlewares, for every k."""
    middlewares = list(app.middlewares)

    received = CIMultiDictProxy(CIMultiDict(headers))
    raw = tuple((name.encode(), value.encode()) for name, value in headers.items())
    loop, task = asyncio.get_running_loop(), asyncio.current_task()

    async def request() -> web.Request:
        # What aiohttp's server builds from a parsed head (aiohttp.test_utils.make_mocked_request, without mocks).
        message = RawRequestMessage("GET", PATH, HttpVersion11, received, raw, False, None, False, False, URL(PATH))
        made = web.Request(message, EMPTY_PAYLOAD, _Protocol(), _Writer(), task, loop)  # type: ignore[arg-type]
        match_info = await app.router.resolve(made)
        match_info.add_app(app)
        made._match_info = match_info
        return made

    rows = []
    for count in range(len(middlewares) + 1):
        handler: Callable[[web.Request], Awaitable[web.StreamResponse]] = answer
        for middleware in reversed(middlewares[:count]):
            handler = partial(middleware, handler=handler)

        async def one(handler: Callable[[web.Request], Awaitable[web.StreamResponse]] = handler) -> None:
            response = await handler(await request())
            if response.status != 200:
                raise RuntimeError(f"the pipeline answered {response.status}, not 200")

        await best_async_us(one, REQUESTS // 10)  # warm-up
        name = getattr(middlewares[count - 1], "__qualname__", "?").removesuffix(".<locals>.middleware")
        rows.append(("(aiohttp: request and response)" if count == 0 else name, await best_async_us(one, REQUESTS)))
    return rows


def preparations(headers: dict[str, str], allowed: frozenset[str]) -> list[tuple[str, float]]:
    """µs per call of the pure functions the catch-all runs before the upstream call."""
    incoming = CIMultiDictProxy(CIMultiDict({**headers, "Accept": "*/*", "User-Agent": "wrk"}))
    cookies = incoming.getall("Cookie")
    fwd = Forwarding(client_ip=PEER[0], forwarded_for=PEER[0], proto="https", host="localhost")
    identity = {"X-Portal-User-Id": "u1", "X-Portal-Company-Ids": "", "X-Portal-Email": "u1@example.com"}
    kept = filter_cookies(cookies, allowed).header
    return [
        ("paths.reserved", per_call_us(lambda: reserved(PATH), REQUESTS * 5)),
        ("cookies.filter_cookies", per_call_us(lambda: filter_cookies(cookies, allowed), REQUESTS * 5)),
        (
            "headers.upstream_request_headers",
            per_call_us(
                lambda: upstream_request_headers(incoming, cookie=kept, fwd=fwd, identity=identity), REQUESTS * 5
            ),
        ),
    ]


async def main() -> None:
    """Build the app, measure, print."""
    folder = Path(tempfile.mkdtemp(prefix="bench-pipeline-"))
    write_certificate(folder, trustme.CA())
    os.environ["BENCH_JWT_SECRET"] = SECRET
    config = load_config(gateway_config(folder, 1, 9))
    token = sign_token(SECRET, user_id="u1", email="u1@example.com", name="Bench User", now=time.time(), ttl=3600)
    cookie = (
        f"_ga=GA1.2.3.4; intercom-session-{WORKSPACE}=s3ss10n; tracking=abc123; "
        f"intercom-device-id-{WORKSPACE}=d3v1c3; intercom-session-otherws=x; portal-jwt={token}"
    )
    headers = {"Host": "localhost", "Cookie": cookie}
    runner = web.AppRunner(create_app(config))
    await runner.setup()
    gc.collect()
    gc.freeze()  # as ``portal-gateway serve`` does once it has started
    try:
        rows = await stages(runner.app, headers)
    finally:
        await runner.cleanup()
    print(f"{'pipeline stage (outermost first)':<36}{'µs/request':>11}{'adds µs':>9}")
    for index, (name, value) in enumerate(rows):
        added = value - rows[index - 1][1] if index else 0.0
        print(f"{name:<36}{value:>11.1f}{added:>9.1f}")
    print(f"{'all stages':<36}{'':>11}{rows[-1][1] - rows[0][1]:>9.1f}")
    print()
    print(f"{'before the upstream call':<36}{'µs/call':>11}")
    for name, value in preparations(headers, config.allowed_cookies):
        print(f"{name:<36}{value:>11.1f}")


if __name__ == "__main__":
    uvloop.run(main())

"""Where the gateway's own time goes: microseconds per request for each stage of the pipeline, in-process.

    .venv/bin/python -m bench.bench_pipeline

Builds the app that ``make bench`` measures in rows d (``bench/edge.py``'s
config: the portal in proxy mode behind an email-domain rule, audit log and
metrics on), then sends the benchmark's request (six cookies, a valid JWT)
through the app's own pipeline (``gateway/edge/pipeline.py``) with the first k
of its ``stages`` around a handler that answers at once, for k from 0 to all of
them: each row is what one more stage adds. The reference is aiohttp building
the request and the response with no pipeline at all, in the same run.
Then the pure functions the catch-all route runs before it opens an upstream
connection. No sockets: TLS and the upstream client are what the rows of
``make bench`` measure. Machines are noisy: each figure is CPU time (the process's, so the
audit's writer thread counts; the calling thread's, for the pure functions), which other processes
on the cores move far less than the wall clock, and the best of several runs (the median, for the
pure functions); read the increments, not the absolute figures.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import os
import statistics
import tempfile
import time
import timeit
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

from bench.edge import HOST, PATH, SECRET, WORKSPACE, gateway_config, write_certificate
from gateway.app import create_app
from gateway.config import load_config
from gateway.edge.headers import Forwarding, upstream_request_headers, without_hop_by_hop
from gateway.edge.paths import reserved
from gateway.edge.pipeline import PIPELINE
from gateway.policy.cookies import RequestCookies, cookie_value, filter_cookies
from gateway.policy.identity import sign_token

REQUESTS = 2000
JWT_COOKIE = "portal-jwt"
# What the bench's nginx upstream answers a GET with, but the date: the headers the proxy copies back.
UPSTREAM_ANSWER = (
    ("Server", "nginx/1.22.1"),
    ("Date", "Mon, 07 Dec 2026 15:00:00 GMT"),
    ("Content-Type", "text/html"),
    ("Content-Length", "12"),
    ("Last-Modified", "Mon, 07 Dec 2026 14:00:00 GMT"),
    ("Connection", "keep-alive"),
    ("ETag", '"6932a5c0-c"'),
    ("Accept-Ranges", "bytes"),
)
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
        started = time.process_time()
        for _ in range(calls):
            await run()
        samples.append((time.process_time() - started) / calls * 1e6)
    return min(samples)


def cpu_us(function: Callable[[], object], calls: int) -> float:
    """The median of ``REPEATS`` runs of ``function``, in microseconds of this thread's CPU per call."""
    return statistics.median(timeit.Timer(function, timer=time.thread_time).repeat(REPEATS, calls)) / calls * 1e6


async def answer(request: web.Request) -> web.StreamResponse:
    """The innermost handler: an answer at once."""
    return web.Response(text="ok")


async def stages(app: web.Application, headers: dict[str, str]) -> list[tuple[str, float]]:
    """µs per request through the app's own pipeline with its first k stages, for every k (and none at all)."""
    pipeline = app[PIPELINE]
    named = list(pipeline.stages.items())
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

    # The reference, then the pipeline's frame (head deadline, audit, framing, error pages), then one more
    # stage of ``Pipeline.stages`` a row, in the order the app runs them.
    chains: list[tuple[str, Callable[[web.Request], Awaitable[web.StreamResponse]]]] = [
        ("(aiohttp: request and response)", answer)
    ]
    for count in range(len(named) + 1):
        partial_pipeline = dataclasses.replace(pipeline, stages=dict(named[:count]))
        name = named[count - 1][0] + " stage" if count else "pipeline: deadline, audit, framing, errors"
        chains.append((name, partial(partial_pipeline.middleware, handler=answer)))
    rows = []
    for name, handler in chains:

        async def one(handler: Callable[[web.Request], Awaitable[web.StreamResponse]] = handler) -> None:
            response = await handler(await request())
            if response.status != 200:
                raise RuntimeError(f"the pipeline answered {response.status}, not 200")

        await best_async_us(one, REQUESTS // 10)  # warm-up
        rows.append((name, await best_async_us(one, REQUESTS)))
    return rows


def preparations(headers: dict[str, str], allowed: frozenset[str]) -> list[tuple[str, float]]:
    """µs per call of the pure functions the catch-all runs before the upstream call."""
    incoming = CIMultiDictProxy(CIMultiDict({**headers, "Accept": "*/*", "User-Agent": "wrk"}))
    cookies = incoming.getall("Cookie")
    fwd = Forwarding(client_ip=PEER[0], forwarded_for=PEER[0], proto="https", host="localhost")
    identity = {"X-Portal-User-Id": "u1", "X-Portal-Company-Ids": "", "X-Portal-Email": "u1@example.com"}
    split = RequestCookies(cookies)
    kept = filter_cookies(split, allowed).header
    answered = CIMultiDict(UPSTREAM_ANSWER)
    calls = REQUESTS * 5
    return [
        ("paths.reserved", cpu_us(lambda: reserved(PATH), calls)),
        ("cookies.RequestCookies (the split, once)", cpu_us(lambda: RequestCookies(cookies), calls)),
        ("cookies.cookie_value (the JWT cookie)", cpu_us(lambda: cookie_value(split, JWT_COOKIE), calls)),
        ("cookies.filter_cookies", cpu_us(lambda: filter_cookies(split, allowed), calls)),
        (
            "headers.upstream_request_headers",
            cpu_us(lambda: upstream_request_headers(incoming, cookie=kept, fwd=fwd, identity=identity), calls),
        ),
        ("headers.without_hop_by_hop (the answer's)", cpu_us(lambda: without_hop_by_hop(answered), calls)),
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
        f"intercom-device-id-{WORKSPACE}=d3v1c3; intercom-session-otherws=x; {JWT_COOKIE}={token}"
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
    print(f"{'pipeline, Pipeline.stages in order':<44}{'µs/request':>11}{'adds µs':>9}")
    for index, (name, value) in enumerate(rows):
        added = value - rows[index - 1][1] if index else 0.0
        print(f"{name:<44}{value:>11.1f}{added:>9.1f}")
    print(f"{'the whole pipeline':<44}{'':>11}{rows[-1][1] - rows[0][1]:>9.1f}")
    print()
    print(f"{'before the upstream call':<44}{'µs/call':>11}")
    for name, value in preparations(headers, config.allowed_cookies):
        print(f"{name:<44}{value:>11.1f}")


if __name__ == "__main__":
    uvloop.run(main())

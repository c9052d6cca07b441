"""Heads the HTTP parser refuses, over real TLS: answered by the gateway's own pipeline, audited and counted.

A request line past ``MAX_LINE`` gets 414, a header line past ``requests.max_field_size`` or more than
``requests.max_headers`` headers get 431, any other malformed head 400: each a complete answer with the
gateway's page (or JSON for API paths and JSON clients), a request id, one audit record and the request
metrics, and never a byte of what was refused.
"""

from __future__ import annotations

import asyncio
import gc
import json
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest
from aiohttp import web
from multidict import CIMultiDict
from prometheus_client import generate_latest

from gateway.config import RequestsConfig
from gateway.observe.metrics import METRICS
from gateway.policy.cookies import RequestCookies
from gateway.run.protocol import KEPT_PATH, MAX_LINE, arrived_ns, connection_factory
from tests.conftest import CANARY, DOMAIN, Gateway, RecordingUpstream, planted, raw_exchange
from tests.e2e.test_secrets import MALFORMED
from tests.routes.test_health import samples

HOST = f"Host: {DOMAIN}\r\n".encode()
KB = 1024
T = TypeVar("T")


@dataclass(frozen=True)
class Answer:
    """One HTTP response read off a raw connection, checked to be complete."""

    status: int
    headers: CIMultiDict[str]
    body: bytes

    @property
    def request_id(self) -> str:
        return self.headers["X-Request-Id"]

    def json(self) -> Any:
        assert self.headers["Content-Type"].startswith("application/json"), self.headers
        return json.loads(self.body)


def parse_head(head: bytes) -> tuple[int, CIMultiDict[str]]:
    """The status and headers of a response head (without its blank line)."""
    status_line, *lines = head.decode("latin-1").split("\r\n")
    assert status_line.startswith("HTTP/1.1 "), head[:300]
    headers: CIMultiDict[str] = CIMultiDict(
        (name, value) for name, _, value in (line.partition(": ") for line in lines)
    )
    return int(status_line.split()[1]), headers


def read_answer(data: bytes) -> Answer:
    """The single response in ``data``, whose body is exactly as long as it says."""
    head, _, body = data.partition(b"\r\n\r\n")
    status, headers = parse_head(head)
    assert len(body) == int(headers["Content-Length"]), "the answer is cut short"
    return Answer(status, headers, body)


async def next_answer(reader: asyncio.StreamReader) -> Answer:
    """The next response on a connection."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    _, headers = parse_head(head.removesuffix(b"\r\n\r\n"))
    return read_answer(head + await reader.readexactly(int(headers["Content-Length"])))


def request_count(gateway: Gateway, route: str | None, status: int) -> float:
    """``gateway_requests_total`` for one status, of one route or (``None``) of them all."""
    text = generate_latest(gateway.running.app[METRICS].registry).decode()
    counts = samples(text, "gateway_requests_total")
    return sum(
        n
        for labels, n in counts.items()
        if dict(labels)["status"] == str(status) and route in (None, dict(labels)["route"])
    )


async def assert_refused(
    gateway: Gateway, answer: Answer, *, status: int, as_json: bool, path: str, route: str | None
) -> dict[str, Any]:
    """``answer`` is the gateway's own ``status`` error, audited and counted; its audit record."""
    assert answer.status == status
    assert answer.headers["Connection"] == "close"
    assert answer.headers["Server"] == "portal-gateway"
    assert "Strict-Transport-Security" in answer.headers
    if as_json:
        error = answer.json()["error"]
        assert (error["status"], error["request_id"]) == (status, answer.request_id)
    else:
        assert answer.headers["Content-Type"].startswith("text/html")
        page = answer.body.decode()
        assert f"Error {status}" in page
        assert answer.request_id in page
    record = await gateway.audit_for(answer.request_id)
    assert (record["status"], record["path"]) == (status, path)
    assert request_count(gateway, route, status) == 1
    # SECURITY: nothing of the refused head comes back or reaches the audit log.
    assert planted(answer.body.decode("latin-1") + str(answer.headers)) == []
    assert planted(json.dumps(record)) == []
    return record


@pytest.mark.parametrize("kilobytes", [9, 20, 40, 100])
@pytest.mark.parametrize(
    ("path", "route", "served", "as_json"), [("/", "home", 200, False), ("/api/v1/me", "api_me", 401, True)]
)
async def test_a_long_request_line_is_served_up_to_the_limit_then_gets_414(
    gateway: Gateway,
    client_ssl: ssl.SSLContext,
    kilobytes: int,
    path: str,
    route: str,
    served: int,
    as_json: bool,
) -> None:
    """A 10 KB search reaches the handler; a request line past 32 KB gets the gateway's 414."""
    target = f"{path}?q={CANARY}".encode() + b"a" * (kilobytes * KB)
    head = b"GET " + target + b" HTTP/1.1\r\n" + HOST + b"Accept: text/html\r\n\r\n"
    answer = read_answer((await raw_exchange(gateway, head, client_ssl, seconds=2)).data)
    if len(target) < MAX_LINE:
        assert answer.status == served
        record = await gateway.audit_for(answer.request_id)
        assert (record["status"], record["path"]) == (served, path)
        assert planted(json.dumps(record)) == []
        assert request_count(gateway, route, served) == 1
    else:
        await assert_refused(gateway, answer, status=414, as_json=as_json, path=path, route=route)


async def test_a_long_request_line_sent_in_pieces_gets_its_414_by_its_path(
    gateway: Gateway, client_ssl: ssl.SSLContext
) -> None:
    """When the parser stops in a later read than the one the head began in, the path is still known
    (from the start of the line, which the parser quotes) but the method is not: its route may differ."""
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", gateway.running.https_port, ssl=client_ssl, server_hostname=DOMAIN
    )
    line = f"GET /api/v1/me?q={CANARY}".encode() + b"a" * 40 * KB
    for start in range(0, MAX_LINE + 8 * KB, 8 * KB):  # reads the server takes one by one, mostly
        writer.write(line[start : start + 8 * KB])
        await writer.drain()
        await asyncio.sleep(0.02)
    answer = await next_answer(reader)
    writer.close()
    record = await assert_refused(gateway, answer, status=414, as_json=True, path="/api/v1/me", route=None)
    assert record["method"] in ("GET", "UNKNOWN")


@pytest.mark.parametrize(
    "headers",
    [
        b"X-Big: " + CANARY.encode() + b"a" * 10 * KB + b"\r\n",
        b"".join(b"X-Many-%d: %s\r\n" % (number, CANARY.encode()) for number in range(100)),  # Host is the 101st
        b"Cookie: portal-jwt=" + CANARY.encode() + b"a" * 9 * KB + b"\r\n",
    ],
    ids=["one-10KB-header", "101-headers", "long-cookie"],
)
@pytest.mark.parametrize(
    ("path", "accept", "route", "as_json"),
    [
        ("/tickets", b"text/html", "portal_list", False),
        ("/tickets", b"application/json", "portal_list", True),
        ("/api/v1/tickets", b"*/*", "api_tickets", True),
    ],
    ids=["page", "json-client", "api-path"],
)
async def test_headers_past_the_limits_get_431(
    gateway: Gateway,
    upstream: RecordingUpstream,
    client_ssl: ssl.SSLContext,
    headers: bytes,
    path: str,
    accept: bytes,
    route: str,
    as_json: bool,
) -> None:
    """One header line past ``requests.max_field_size``, or more than ``requests.max_headers`` of them."""
    head = f"GET {path}?token={CANARY} HTTP/1.1\r\n".encode() + HOST + b"Accept: " + accept + b"\r\n" + headers
    answer = read_answer((await raw_exchange(gateway, head + b"\r\n", client_ssl, seconds=2)).data)
    record = await assert_refused(gateway, answer, status=431, as_json=as_json, path=path, route=route)
    assert (record["method"], record["host"]) == ("GET", DOMAIN)
    assert record["identity"]["result"] == "none"  # refused before any stage read a credential
    assert upstream.requests == []


# How each of test_secrets' malformed heads is answered: status, the path audited, the route counted.
REFUSED = {
    "nul-in-cookie": (400, "/", "home"),
    "bare-cr-in-cookie": (400, "/", "home"),
    "overlong-authorization": (431, "/", "home"),
    # The path only when every byte of it is a plain path character: never the planted bytes around it.
    "control-in-path": (400, "", "unmatched"),
    "bad-content-length": (400, "/", "proxy"),  # a POST to / is the catch-all's
    "bad-header-name": (400, "/", "home"),
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
async def test_a_malformed_head_gets_the_gateways_400_with_a_request_id(
    gateway: Gateway, client_ssl: ssl.SSLContext, name: str
) -> None:
    """Whatever else the parser refuses: the gateway's 400 page, a request id and an audit record."""
    status, path, route = REFUSED[name]
    answer = read_answer((await raw_exchange(gateway, MALFORMED[name].encode("latin-1"), client_ssl, seconds=1)).data)
    record = await assert_refused(gateway, answer, status=status, as_json=False, path=path, route=route)
    assert record["cookies"]["received"] == []  # a refused head's Cookie header is never read


async def test_a_long_path_is_audited_cut_short(gateway: Gateway, client_ssl: ssl.SSLContext) -> None:
    """The audit record keeps the first ``KEPT_PATH`` characters of a request line that was refused."""
    path = "/articles/" + "a" * 40 * KB
    head = f"GET {path} HTTP/1.1\r\n".encode() + HOST + b"\r\n"
    answer = read_answer((await raw_exchange(gateway, head, client_ssl, seconds=2)).data)
    await assert_refused(gateway, answer, status=414, as_json=False, path=path[:KEPT_PATH], route="proxy")


async def test_a_kept_alive_connection_is_served_until_a_refused_head(
    gateway: Gateway, upstream: RecordingUpstream, client_ssl: ssl.SSLContext
) -> None:
    """The request before is answered as usual; the refused one gets its 431; then the connection closes."""
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", gateway.running.https_port, ssl=client_ssl, server_hostname=DOMAIN
    )
    writer.write(b"GET /articles/1 HTTP/1.1\r\n" + HOST + b"\r\n")
    first = await next_answer(reader)
    writer.write(b"GET /articles/2 HTTP/1.1\r\n" + HOST + b"X-Big: " + b"a" * 10 * KB + b"\r\n\r\n")
    second = await next_answer(reader)
    assert await asyncio.wait_for(reader.read(), 5) == b""  # closed
    writer.close()
    assert (first.status, second.status) == (200, 431)
    assert [request.path for request in upstream.requests] == ["/articles/1"]
    paths = [(await gateway.audit_for(answer.request_id))["path"] for answer in (first, second)]
    assert paths == ["/articles/1", "/articles/2"]
    assert request_count(gateway, "proxy", 431) == 1


async def test_requests_read_together_have_arrived_by_that_read() -> None:
    """``arrived_ns``: pipelined requests sent in one write share one instant, after they were sent and before
    their handler runs (the store's freshness check is shared on this: gateway/store/sqlite/store.py)."""
    stamps: list[tuple[int | None, int]] = []

    async def handler(request: web.BaseRequest) -> web.Response:
        stamps.append((arrived_ns(request), time.monotonic_ns()))
        return web.Response(text="ok")

    loop = asyncio.get_running_loop()
    server = await loop.create_server(connection_factory(web.Server(handler), RequestsConfig()), "127.0.0.1", 0)
    try:
        reader, writer = await asyncio.open_connection(*server.sockets[0].getsockname()[:2])
        sent = time.monotonic_ns()
        writer.write(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n")
        await writer.drain()
        for _ in range(2):
            await reader.readuntil(b"ok")
        writer.close()
    finally:
        server.close()
    [(first, handled_first), (second, handled_second)] = stamps
    assert first is not None
    assert second == first
    assert sent < first < handled_first < handled_second


def _live(kind: type[T], holds: Callable[[T], bool]) -> list[T]:
    """The objects of ``kind`` still reachable after a full collection that ``holds`` picks."""
    gc.collect()
    return [thing for thing in gc.get_objects() if isinstance(thing, kind) and holds(thing)]


async def test_an_idle_kept_alive_connection_holds_nothing_of_its_last_request(
    gateway: Gateway, client_ssl: ssl.SSLContext
) -> None:
    """Once the answer is written, the request's recorded state (its split cookies) and the answer's headers are
    unreachable, though aiohttp keeps the request and response objects until the connection's next request."""
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", gateway.running.https_port, ssl=client_ssl, server_hostname=DOMAIN
    )
    try:
        writer.write(b"GET /articles/1 HTTP/1.1\r\n" + HOST + b"Cookie: idle-marker=kept-alive\r\n\r\n")
        answer = await next_answer(reader)
        await asyncio.sleep(0.1)  # the handler's task has finished; the connection waits for its next head
        assert answer.status == 200
        assert not reader.at_eof()  # still kept alive
        assert _live(RequestCookies, lambda cookies: "idle-marker=kept-alive" in cookies.headers) == []
        # The answer's headers as the gateway sent them (not the test's own parse of them).
        sent = _live(CIMultiDict, lambda headers: headers is not answer.headers and answer.request_id in repr(headers))
        assert sent == []
    finally:
        writer.close()

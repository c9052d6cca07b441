"""The upstream client against real loopback servers that answer in raw bytes.

Each upstream here is an asyncio server that reads requests as they come on
each connection, records them, and answers with the bytes a test gives it:
keep-alive, idle closes, chunked and EOF-delimited bodies, interim answers,
heads that drip or never come. Every test runs on asyncio's loop and on
uvloop, which production runs.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import uvloop
from multidict import CIMultiDict
from yarl import URL

from gateway.errors import BodyTimeout, UpstreamTimeout, UpstreamUnreachable
from gateway.proxy.client import HIGH_WATER, Body, Origin, Timeouts, UpstreamPool, UpstreamResponse
from tests.conftest import CertFiles
from tests.proxy.rawupstream import OK, Answer, RawUpstream, Seen

LOOP_FACTORIES = {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}
TIMEOUTS = Timeouts(connect=2, read=2, head=2)
QUICK = Timeouts(connect=2, read=0.3, head=0.3)
MiB = 1024 * 1024


Start = Callable[..., Awaitable[RawUpstream]]


@pytest.fixture
async def raw() -> AsyncIterator[Start]:
    """Start raw upstreams with an answer function (and a TLS context); stopped after the test."""
    started: list[RawUpstream] = []

    async def start(answer: Answer, context: ssl.SSLContext | None = None) -> RawUpstream:
        upstream = await RawUpstream(answer).start(context)
        started.append(upstream)
        return upstream

    yield start
    for upstream in started:
        await upstream.stop()


@pytest.fixture
async def pool() -> AsyncIterator[UpstreamPool]:
    upstreams = UpstreamPool()
    yield upstreams
    upstreams.close()


def answering(data: bytes, *, keep: bool = True) -> Answer:
    """An answer that writes ``data`` to every request."""

    async def answer(seen: Seen, writer: asyncio.StreamWriter) -> bool:
        writer.write(data)
        return keep

    return answer


async def streamed(*parts: bytes) -> AsyncIterator[bytes]:
    """A request body that comes in ``parts``."""
    for part in parts:
        yield part


async def fetch(
    pool: UpstreamPool,
    upstream: RawUpstream,
    target: str = "/",
    *,
    method: str = "GET",
    headers: CIMultiDict[str] | None = None,
    body: Body = None,
    timeouts: Timeouts = TIMEOUTS,
) -> tuple[UpstreamResponse, bytes]:
    """One whole exchange: the response (released) and its body."""
    response = await pool.request(method, upstream.origin, target, headers or CIMultiDict(), body, timeouts)
    with response:
        data = b"".join([chunk async for chunk in response.chunks()])
    return response, data


async def until(condition: Callable[[], bool]) -> None:
    """Wait (up to 2 s) for something the other side of a connection does."""
    for _ in range(200):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the condition never held")


# --- keep-alive, and upstreams that close ------------------------------------------------------


async def test_sequential_requests_reuse_one_kept_alive_connection(pool: UpstreamPool, raw: Start) -> None:
    upstream = await raw(answering(OK))
    for _ in range(3):
        response, body = await fetch(pool, upstream)
        assert (response.status, body) == (200, b"ok")
    assert [seen.connection for seen in upstream.requests] == [1, 1, 1]


@pytest.mark.parametrize("pause", [0.1, 0], ids=["close-handled", "close-not-yet-handled"])
async def test_an_idle_connection_the_upstream_closed_is_not_reused(
    pool: UpstreamPool, raw: Start, pause: float
) -> None:
    """Not even by a request that is never retried (POST), whether or not the loop has seen the close yet."""
    upstream = await raw(answering(OK, keep=False))  # answers, then closes: the idle connection is dead
    for _ in range(3):
        response, body = await fetch(pool, upstream, method="POST", body=b"form=1")
        assert (response.status, body) == (200, b"ok")
        await until(lambda: upstream.closed == upstream.connections)
        await asyncio.sleep(pause)
    assert [seen.connection for seen in upstream.requests] == [1, 2, 3]


async def test_an_idle_connection_that_receives_bytes_is_not_reused(pool: UpstreamPool, raw: Start) -> None:
    async def then_more(seen: Seen, writer: asyncio.StreamWriter) -> bool:
        writer.write(OK)
        await writer.drain()
        await asyncio.sleep(0.1)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nlate")  # nobody asked: framing is lost
        return True

    upstream = await raw(then_more)
    await fetch(pool, upstream)
    await asyncio.sleep(0.3)
    _, body = await fetch(pool, upstream)
    assert body == b"ok"
    assert [seen.connection for seen in upstream.requests] == [1, 2]


def hangs_up_on_the_second_request() -> Answer:
    """Answers the first request on each connection; closes without a word on the next, as an idle close racing it."""

    async def answer(seen: Seen, writer: asyncio.StreamWriter) -> bool:
        if seen.connection in answered:
            return False
        answered.add(seen.connection)
        writer.write(OK)
        return True

    answered: set[int] = set()
    return answer


async def test_an_idempotent_request_is_retried_once_when_a_reused_connection_closes_unanswered(
    pool: UpstreamPool, raw: Start
) -> None:
    upstream = await raw(hangs_up_on_the_second_request())
    assert (await fetch(pool, upstream))[1] == b"ok"
    response, body = await fetch(pool, upstream, "/again")
    assert (response.status, body) == (200, b"ok")
    assert [(seen.target, seen.connection) for seen in upstream.requests] == [("/", 1), ("/again", 1), ("/again", 2)]


@pytest.mark.parametrize(
    ("method", "body"),
    [("POST", lambda: b"form=1"), ("PUT", lambda: streamed(b"part"))],
    ids=["non-idempotent", "streamed-body"],
)
async def test_a_request_that_is_not_safe_to_repeat_is_not_retried(
    pool: UpstreamPool, raw: Start, method: str, body: Callable[[], Body]
) -> None:
    upstream = await raw(hangs_up_on_the_second_request())
    await fetch(pool, upstream)
    with pytest.raises(UpstreamUnreachable):
        await fetch(pool, upstream, method=method, body=body())
    assert [seen.connection for seen in upstream.requests] == [1, 1]


async def test_a_fresh_connection_closed_unanswered_is_unreachable(pool: UpstreamPool, raw: Start) -> None:
    upstream = await raw(answering(b"", keep=False))
    with pytest.raises(UpstreamUnreachable):
        await fetch(pool, upstream)
    assert len(upstream.requests) == 1


async def test_connection_close_from_upstream_is_honoured(pool: UpstreamPool, raw: Start) -> None:
    upstream = await raw(answering(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"))
    await fetch(pool, upstream)
    await fetch(pool, upstream)
    assert [seen.connection for seen in upstream.requests] == [1, 2]
    await until(lambda: upstream.closed == 2)  # the client closed the first one itself


async def test_idle_connections_are_closed_after_the_keepalive(raw: Start) -> None:
    upstream = await raw(answering(OK))
    pool = UpstreamPool(keepalive=0.2)
    try:
        await fetch(pool, upstream)
        await until(lambda: upstream.closed == 1)
        await fetch(pool, upstream)
        assert [seen.connection for seen in upstream.requests] == [1, 2]
    finally:
        pool.close()


async def test_closing_the_pool_closes_its_connections(raw: Start) -> None:
    upstream = await raw(answering(OK))
    pool = UpstreamPool()
    await asyncio.gather(*(fetch(pool, upstream) for _ in range(3)))
    assert upstream.connections == 3
    pool.close()
    await until(lambda: upstream.closed == 3)


async def test_connections_per_origin_are_bounded(raw: Start) -> None:
    release = asyncio.Event()

    async def held(seen: Seen, writer: asyncio.StreamWriter) -> bool:
        await release.wait()
        writer.write(OK)
        return True

    upstream = await raw(held)
    pool = UpstreamPool(limit_per_host=2)
    try:
        exchanges = [asyncio.create_task(fetch(pool, upstream)) for _ in range(5)]
        await until(lambda: len(upstream.requests) == 2)
        await asyncio.sleep(0.1)
        assert upstream.connections == 2  # the other three wait for a slot, not for a new connection
        release.set()
        assert [body for _, body in await asyncio.gather(*exchanges)] == [b"ok"] * 5
        assert upstream.connections == 2
    finally:
        pool.close()


# --- what goes upstream ----------------------------------------------------------------------


async def test_the_request_head_is_the_callers_with_one_host_and_no_additions(pool: UpstreamPool, raw: Start) -> None:
    upstream = await raw(answering(OK))
    headers = CIMultiDict([("host", "spoofed.example"), ("X-A", "1"), ("Cookie", "a=1"), ("X-A", "2")])
    await fetch(pool, upstream, "/a%2Fb/c%20d?x=%E2%9C%93&x=2", headers=headers)
    seen = upstream.requests[0]
    assert (seen.method, seen.target) == ("GET", "/a%2Fb/c%20d?x=%E2%9C%93&x=2")
    host = ("Host", f"127.0.0.1:{upstream.port}")
    assert list(seen.headers.items()) == [host, ("X-A", "1"), ("Cookie", "a=1"), ("X-A", "2")]


PARTS = (b"abc", b"", b"def", b"ghi")


@pytest.mark.parametrize(
    ("method", "body", "given", "framing", "received"),
    [
        ("GET", lambda: None, None, {}, b""),
        ("POST", lambda: None, None, {"Content-Length": "0"}, b""),
        ("POST", lambda: b"abc", "99", {"Content-Length": "3"}, b"abc"),
        ("PATCH", lambda: streamed(*PARTS), None, {"Transfer-Encoding": "chunked"}, b"abcdefghi"),
        ("PUT", lambda: streamed(*PARTS), "9", {"Content-Length": "9"}, b"abcdefghi"),
    ],
    ids=["get", "post-without-body", "bytes", "streamed-unknown-length", "streamed-known-length"],
)
async def test_the_body_is_framed_by_length_when_known_and_chunked_when_not(
    pool: UpstreamPool,
    raw: Start,
    method: str,
    body: Callable[[], Body],
    given: str | None,
    framing: dict[str, str],
    received: bytes,
) -> None:
    upstream = await raw(answering(OK))
    headers = CIMultiDict({"Content-Length": given} if given else {})
    await fetch(pool, upstream, method=method, headers=headers, body=body())
    seen = upstream.requests[0]
    assert {name: value for name, value in seen.headers.items() if name in ("Content-Length", "Transfer-Encoding")} == (
        framing
    )
    assert seen.body == received


async def test_a_line_break_in_a_header_never_reaches_upstream(pool: UpstreamPool, raw: Start) -> None:
    upstream = await raw(answering(OK))
    for name, value in (("X-Note", "a\r\nX-Injected: 1"), ("X-Note", "a\nb"), ("X-Note\r\nX-Injected", "1")):
        with pytest.raises(ValueError, match="line break"):
            await fetch(pool, upstream, headers=CIMultiDict({name: value}))
    with pytest.raises(ValueError, match="line break"):
        await fetch(pool, upstream, "/ HTTP/1.1\r\nX-Injected: 1\r\n\r\nGET /")
    assert upstream.requests == []


async def test_a_big_streamed_body_goes_up_in_chunks(pool: UpstreamPool, raw: Start) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for index in range(64):
            yield bytes([index]) * (128 * 1024)

    upstream = await raw(answering(OK))
    response, _ = await fetch(pool, upstream, method="POST", body=chunks())
    assert response.status == 200
    assert upstream.requests[0].body == b"".join(bytes([index]) * (128 * 1024) for index in range(64))


async def test_an_exception_from_the_streamed_body_passes_through_and_the_body_never_completes(
    pool: UpstreamPool, raw: Start
) -> None:
    async def stalls() -> AsyncIterator[bytes]:
        yield b"first part"
        raise BodyTimeout()

    upstream = await raw(answering(OK))
    with pytest.raises(BodyTimeout):
        await fetch(pool, upstream, method="POST", body=stalls())
    await until(lambda: upstream.closed == 1)
    assert upstream.requests == []  # the chunked body was cut, never terminated


async def test_an_early_answer_stops_the_upload_and_is_returned(pool: UpstreamPool) -> None:
    async def endless() -> AsyncIterator[bytes]:
        while True:
            yield b"x" * 65536
            await asyncio.sleep(0)

    done = asyncio.Event()

    async def answer_at_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 413 Content Too Large\r\nContent-Length: 0\r\n\r\n")
        while await reader.read(65536):  # keeps reading, as a server draining what it refused
            pass
        writer.close()
        done.set()

    server = await asyncio.start_server(answer_at_once, "127.0.0.1", 0)
    port = int(server.sockets[0].getsockname()[1])
    origin = Origin.of(URL.build(scheme="http", host="127.0.0.1", port=port))
    try:
        response = await asyncio.wait_for(pool.request("POST", origin, "/", CIMultiDict(), endless(), TIMEOUTS), 5)
        with response:
            assert response.status == 413
            assert [chunk async for chunk in response.chunks()] == []
        await asyncio.wait_for(done.wait(), 2)  # the upload was cut: the connection is closed, not reused
    finally:
        server.close()
        await server.wait_closed()


# --- what comes back -------------------------------------------------------------------------


async def test_repeated_headers_come_back_in_order_with_status_and_reason(pool: UpstreamPool, raw: Start) -> None:
    upstream = await raw(
        answering(
            b"HTTP/1.1 201 Made It\r\nSet-Cookie: a=1\r\nX-Mid: m\r\nSet-Cookie: b=2; Path=/\r\n"
            b"set-cookie: c=3\r\nContent-Length: 0\r\n\r\n"
        )
    )
    response, _ = await fetch(pool, upstream)
    assert (response.status, response.reason) == (201, "Made It")
    assert response.headers.getall("Set-Cookie") == ["a=1", "b=2; Path=/", "c=3"]
    assert list(response.headers.items()) == [
        ("Set-Cookie", "a=1"),
        ("X-Mid", "m"),
        ("Set-Cookie", "b=2; Path=/"),
        ("set-cookie", "c=3"),
        ("Content-Length", "0"),
    ]


async def test_a_chunked_body_is_decoded_and_the_connection_reused(pool: UpstreamPool, raw: Start) -> None:
    upstream = await raw(
        answering(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n1;ext=1\r\n \r\nA\r\n0123456789\r\n0\r\nX-Trailer: t\r\n\r\n"
        )
    )
    for _ in range(2):
        _, body = await fetch(pool, upstream)
        assert body == b"hello 0123456789"
    assert [seen.connection for seen in upstream.requests] == [1, 1]


@pytest.mark.parametrize("coding", [b"", b"Transfer-Encoding: gzip\r\n"], ids=["no-length", "not-chunked"])
async def test_a_body_without_length_is_read_to_eof_and_its_connection_not_reused(
    pool: UpstreamPool, raw: Start, coding: bytes
) -> None:
    upstream = await raw(answering(b"HTTP/1.1 200 OK\r\n" + coding + b"\r\nuntil the end", keep=False))
    for _ in range(2):
        response, body = await fetch(pool, upstream)
        assert (response.status, body) == (200, b"until the end")
    assert [seen.connection for seen in upstream.requests] == [1, 2]


async def test_closing_the_pool_mid_answer_is_an_error_not_the_end_of_the_body(raw: Start) -> None:
    async def endless(seen: Seen, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\n\r\nsome")  # read until the close
        await asyncio.sleep(5)
        return False

    upstream = await raw(endless)
    pool = UpstreamPool()
    response = await pool.request("GET", upstream.origin, "/", CIMultiDict(), None, TIMEOUTS)
    with response:
        chunks = response.chunks()
        assert await anext(chunks) == b"some"
        pool.close()
        with pytest.raises(UpstreamUnreachable):
            await anext(chunks)


async def test_a_body_cut_short_is_an_error_not_a_shorter_body(pool: UpstreamPool, raw: Start) -> None:
    upstream = await raw(answering(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", keep=False))
    response = await pool.request("GET", upstream.origin, "/", CIMultiDict(), None, TIMEOUTS)
    with response:
        chunks = response.chunks()
        assert await anext(chunks) == b"short"
        with pytest.raises(UpstreamUnreachable):
            await anext(chunks)


@pytest.mark.parametrize(
    ("method", "answer"),
    [
        ("HEAD", b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n"),
        ("HEAD", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"),
        ("GET", b"HTTP/1.1 204 No Content\r\n\r\n"),
        ("GET", b'HTTP/1.1 304 Not Modified\r\nContent-Length: 1000\r\nETag: "e"\r\n\r\n'),
        ("GET", b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n" + OK),
        ("GET", b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 304 Not Modified\r\n\r\n"),
    ],
    ids=["head", "head-chunked", "204", "304", "103-then-200", "100-then-304"],
)
async def test_answers_without_a_body_end_at_their_head_and_keep_the_connection(
    pool: UpstreamPool, raw: Start, method: str, answer: bytes
) -> None:
    upstream = await raw(answering(answer))
    for _ in range(2):
        response, body = await asyncio.wait_for(fetch(pool, upstream, method=method), 1)
        assert "Link" not in response.headers  # an interim answer's headers are not the answer's
        assert body == (b"ok" if response.status == 200 and method == "GET" else b"")
    assert [seen.connection for seen in upstream.requests] == [1, 1]


async def test_bytes_after_a_complete_answer_are_never_read_into_it(pool: UpstreamPool, raw: Start) -> None:
    """Response splitting: a second answer smuggled after the first neither merges into it nor answers the next."""
    upstream = await raw(answering(OK + b"HTTP/1.1 200 OK\r\nSet-Cookie: evil=1\r\nContent-Length: 4\r\n\r\nevil"))
    for _ in range(2):
        response, body = await fetch(pool, upstream)
        assert (body, "Set-Cookie" in response.headers) == (b"ok", False)
    assert [seen.connection for seen in upstream.requests] == [1, 2]


async def test_the_body_streams_back_under_backpressure(pool: UpstreamPool, raw: Start) -> None:
    """A consumer that stops reading stops the upstream too: the client never buffers the whole body."""
    total, sent = 64 * MiB, [0]

    async def big(seen: Seen, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % total)
        piece = b"z" * MiB
        for _ in range(total // MiB):
            writer.write(piece)
            await writer.drain()
            sent[0] += len(piece)
        return True

    upstream = await raw(big)
    response = await pool.request("GET", upstream.origin, "/", CIMultiDict(), None, TIMEOUTS)
    with response:
        await asyncio.sleep(0.3)
        assert sent[0] < 32 * MiB  # the upstream is held back by the socket buffers and HIGH_WATER
        received, largest = 0, 0
        async for chunk in response.chunks():
            received, largest = received + len(chunk), max(largest, len(chunk))
    assert received == total
    assert largest <= HIGH_WATER + 2 * MiB
    assert len(upstream.requests) == 1


async def test_a_whole_answer_left_unread_still_frees_its_connection(pool: UpstreamPool, raw: Start) -> None:
    """An answer whose last byte paused reading (the buffer full), never consumed, gives back a working connection."""
    size = HIGH_WATER + 1
    upstream = await raw(answering(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size + b"w" * size))
    with await pool.request("GET", upstream.origin, "/", CIMultiDict(), None, TIMEOUTS):
        await asyncio.sleep(0.2)  # all of it arrives; nothing is read
    second = await asyncio.wait_for(pool.request("GET", upstream.origin, "/", CIMultiDict(), None, TIMEOUTS), 1)
    with second:
        assert sum([len(chunk) async for chunk in second.chunks()]) == size
    assert [seen.connection for seen in upstream.requests] == [1, 1]


async def test_releasing_a_response_before_its_end_closes_the_connection(pool: UpstreamPool, raw: Start) -> None:
    upstream = await raw(answering(b"HTTP/1.1 200 OK\r\nContent-Length: 4000000\r\n\r\n" + b"y" * 100_000))
    response = await pool.request("GET", upstream.origin, "/", CIMultiDict(), None, TIMEOUTS)
    with response:
        assert await anext(response.chunks())
    await until(lambda: upstream.closed == 1)  # closed, never handed out again mid-body
    await pool.request("GET", upstream.origin, "/", CIMultiDict(), None, TIMEOUTS)
    assert upstream.connections == 2


# --- failures ---------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_a_refused_connection_is_unreachable(pool: UpstreamPool) -> None:
    origin = Origin.of(URL(f"http://127.0.0.1:{free_port()}"))
    with pytest.raises(UpstreamUnreachable) as refused:
        await pool.request("GET", origin, "/", CIMultiDict(), None, TIMEOUTS)
    assert isinstance(refused.value.__cause__, ConnectionRefusedError)


async def test_a_silent_upstream_times_out_on_the_read_timeout(pool: UpstreamPool, raw: Start) -> None:
    async def silent(seen: Seen, writer: asyncio.StreamWriter) -> bool:
        await asyncio.sleep(5)
        return False

    upstream = await raw(silent)
    started = asyncio.get_running_loop().time()
    with pytest.raises(UpstreamTimeout):
        await fetch(pool, upstream, timeouts=QUICK)
    assert asyncio.get_running_loop().time() - started < 1.5


async def test_a_dripping_head_times_out_on_the_head_deadline(pool: UpstreamPool, raw: Start) -> None:
    async def drip(seen: Seen, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nX-Drip: ")
        for _ in range(50):
            writer.write(b"a")
            await writer.drain()
            await asyncio.sleep(0.05)  # each byte well inside the read timeout
        return False

    upstream = await raw(drip)
    started = asyncio.get_running_loop().time()
    with pytest.raises(UpstreamTimeout):
        await fetch(pool, upstream, timeouts=Timeouts(connect=2, read=0.3, head=0.6))
    assert asyncio.get_running_loop().time() - started < 1.5


async def test_a_body_that_stops_arriving_times_out(pool: UpstreamPool, raw: Start) -> None:
    async def stalls(seen: Seen, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf ")
        await asyncio.sleep(5)
        return False

    upstream = await raw(stalls)
    response = await pool.request("GET", upstream.origin, "/", CIMultiDict(), None, QUICK)
    with response:
        chunks = response.chunks()
        assert await anext(chunks) == b"half "
        with pytest.raises(UpstreamTimeout):
            await anext(chunks)


async def test_a_slow_consumer_is_not_a_slow_upstream(pool: UpstreamPool, raw: Start) -> None:
    """The per-read clock runs only while the client waits on the upstream, not while its consumer is busy."""
    upstream = await raw(answering(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (2 * MiB) + b"s" * (2 * MiB)))
    response = await pool.request("GET", upstream.origin, "/", CIMultiDict(), None, QUICK)
    received = 0
    with response:
        async for chunk in response.chunks():
            received += len(chunk)
            await asyncio.sleep(0.4)  # longer than the read timeout, with reading paused behind it
    assert received == 2 * MiB


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 2OO NOT OK\r\nContent-Length: 2\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\nX-Huge: " + b"h" * 10_000 + b"\r\nContent-Length: 2\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\n" + b"".join(b"X-H%d: 1\r\n" % index for index in range(200)) + b"\r\n",
        b"HTTP/1.1 200 OK\r\nX-Endless: " + b"e" * 100_000,
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok",
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n",
    ],
    ids=["bad-status", "long-header", "many-headers", "endless-head", "two-lengths", "upgrade"],
)
async def test_a_malformed_or_oversized_head_is_unreachable(pool: UpstreamPool, raw: Start, answer: bytes) -> None:
    upstream = await raw(answering(answer))
    with pytest.raises(UpstreamUnreachable):
        await fetch(pool, upstream)


# --- TLS -------------------------------------------------------------------------------------


def _server_context(cert_files: CertFiles) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_files.cert, cert_files.key)
    return context


async def test_a_tls_upstream_is_verified_and_its_connections_kept(
    raw: Start, cert_files: CertFiles, client_ssl: ssl.SSLContext
) -> None:
    upstream = await raw(answering(OK), _server_context(cert_files))
    pool = UpstreamPool(ssl_context=client_ssl)
    try:
        for _ in range(2):
            response, body = await fetch(pool, upstream)
            assert (response.status, body) == (200, b"ok")
    finally:
        pool.close()
    assert [seen.connection for seen in upstream.requests] == [1, 1]


async def test_a_tls_upstream_whose_certificate_is_not_trusted_is_unreachable(
    pool: UpstreamPool, raw: Start, cert_files: CertFiles
) -> None:
    upstream = await raw(answering(OK), _server_context(cert_files))
    with pytest.raises(UpstreamUnreachable) as refused:
        await fetch(pool, upstream)  # the default context: the system's CAs, which do not know the test CA
    assert isinstance(refused.value.__cause__, ssl.SSLCertVerificationError)
    assert upstream.requests == []

"""Slow and big clients (advisory class 5): deadlines for the TLS handshake, the request head and the body;
limits on header and body size; a thousand slowloris connections do not starve a normal client."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import ssl
import time
import weakref

import pytest

from tests.conftest import DOMAIN, Gateway, RecordingUpstream, StartGateway, raw_exchange

HOST = b"Host: " + DOMAIN.encode() + b"\r\n"
PARTIAL_HEAD = b"GET /articles HTTP/1.1\r\n" + HOST + b"X-Slow: "
QUICK = {"requests": {"header_timeout": 0.5, "body_timeout": 0.5}}
DEV = {"identity": {"dev_login": True}, "store": {"seed_demo": True}}


async def test_a_client_that_never_finishes_its_head_is_disconnected(
    start_gateway: StartGateway, client_ssl: ssl.SSLContext
) -> None:
    """Class 5, slowloris: a request head still incomplete after ``requests.header_timeout`` loses its connection."""
    gateway = await start_gateway(**QUICK)
    answer = await raw_exchange(gateway, PARTIAL_HEAD, client_ssl, seconds=5)
    assert answer.closed
    assert answer.statuses in ([], [408])


async def test_the_next_head_on_a_kept_alive_connection_has_the_same_deadline(
    start_gateway: StartGateway, upstream: RecordingUpstream, client_ssl: ssl.SSLContext
) -> None:
    """Class 5, slowloris after one good request: the keep-alive wait and the next head share the deadline."""
    gateway = await start_gateway(**QUICK)
    answer = await raw_exchange(
        gateway, b"GET /first HTTP/1.1\r\n" + HOST + b"\r\n" + PARTIAL_HEAD, client_ssl, seconds=5
    )
    assert answer.closed
    assert answer.statuses == [200]
    assert [recorded.path for recorded in upstream.requests] == ["/first"]


async def test_a_head_in_time_cancels_its_deadline(start_gateway: StartGateway, upstream: RecordingUpstream) -> None:
    """Once the head has come, nothing of the deadline holds on to the connection: it goes as soon as it closes
    (a pending deadline would keep every kept-alive connection's handler for up to ``header_timeout``)."""
    gateway = await start_gateway(requests={"header_timeout": 60})
    async with gateway.client.get(gateway.url / "first", headers={"Host": DOMAIN}) as response:
        assert response.status == 200
        await response.read()
    server = gateway.running.runners[0].server
    assert server is not None
    [connection] = server.connections
    handler = weakref.ref(connection)
    del connection
    await gateway.client.close()
    deadline = time.monotonic() + 5
    while True:
        gc.collect()
        if handler() is None:
            break
        assert time.monotonic() < deadline, "the closed connection's handler is still held"
        await asyncio.sleep(0.01)
    assert [recorded.path for recorded in upstream.requests] == ["/first"]


async def test_a_client_that_never_finishes_the_tls_handshake_is_disconnected(start_gateway: StartGateway) -> None:
    """Class 5, slowloris below HTTP: a TCP connection that never says hello is dropped after the header timeout."""
    gateway = await start_gateway(**QUICK)
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.running.https_port)
    try:
        assert await asyncio.wait_for(reader.read(), 5) == b""
    finally:
        writer.close()


async def test_a_stalled_body_on_a_gateway_route_gets_408_and_a_closed_connection(
    start_gateway: StartGateway, client_ssl: ssl.SSLContext
) -> None:
    """Class 5, slow POST (R.U.D.Y.): a body the gateway reads itself that stops arriving gets 408."""
    gateway = await start_gateway(**QUICK, **DEV)
    head = b"POST /dev/login HTTP/1.1\r\n" + HOST + b"Content-Type: application/x-www-form-urlencoded\r\n"
    answer = await raw_exchange(gateway, head + b"Content-Length: 100\r\n\r\nuser_id=u-", client_ssl, seconds=5)
    assert answer.closed
    assert answer.statuses == [408]


async def test_a_stalled_body_on_a_proxied_route_never_reaches_upstream_as_complete(
    start_gateway: StartGateway, upstream: RecordingUpstream, client_ssl: ssl.SSLContext
) -> None:
    """Class 5, slow POST through the proxy: the upstream request is aborted, never completed with a short body."""
    gateway = await start_gateway(**QUICK)
    for framing, start in (
        (b"Content-Length: 100\r\n", b"0123456789"),
        (b"Transfer-Encoding: chunked\r\n", b"a\r\n0123456789\r\n"),
    ):
        answer = await raw_exchange(
            gateway, b"POST /upload HTTP/1.1\r\n" + HOST + framing + b"\r\n" + start, client_ssl
        )
        assert answer.closed
        assert answer.statuses in ([], [408])
    assert [(r.path, r.body_size) for r in upstream.requests] == []


@pytest.mark.parametrize(
    "headers",
    [
        b"X-Big: " + b"a" * 9000 + b"\r\n",
        b"".join(b"X-Many-%d: 1\r\n" % index for index in range(150)),
    ],
    ids=["one-long-header", "too-many-headers"],
)
async def test_oversized_heads_are_refused(
    gateway: Gateway, upstream: RecordingUpstream, client_ssl: ssl.SSLContext, headers: bytes
) -> None:
    """Class 5, header floods: one line over ``requests.max_field_size`` or more than ``max_headers`` lines."""
    answer = await raw_exchange(gateway, b"GET /articles HTTP/1.1\r\n" + HOST + headers + b"\r\n", client_ssl)
    assert answer.statuses in ([400], [431]), answer.data[:300]
    assert upstream.requests == []


async def test_an_oversized_body_on_a_gateway_route_gets_413(start_gateway: StartGateway) -> None:
    """Class 5, body floods: a body over ``requests.max_body_size`` on a route the gateway reads itself gets 413."""
    gateway = await start_gateway(requests={"max_body_size": 64 * 1024}, **DEV)

    async def chunks() -> object:
        for _ in range(10):
            yield b"user_id=" + b"x" * 16 * 1024

    for body in (b"user_id=" + b"x" * 100 * 1024, chunks()):
        async with gateway.client.post(
            gateway.url / "dev" / "login", data=body, headers={"Content-Type": "application/x-www-form-urlencoded"}
        ) as response:
            assert response.status == 413


SLOWLORIS = 1000


async def _slowloris(port: int, context: ssl.SSLContext, opened: list[asyncio.StreamWriter]) -> None:
    """One slowloris connection: TLS, then half a request head, then nothing."""
    _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context, server_hostname=DOMAIN)
    writer.write(PARTIAL_HEAD)
    await writer.drain()
    opened.append(writer)


async def test_a_thousand_slowloris_connections_do_not_stop_a_normal_client(
    start_gateway: StartGateway, upstream: RecordingUpstream, client_ssl: ssl.SSLContext
) -> None:
    """Class 5, slowloris: while 1,000 half-sent heads are held open, a normal client is served throughout."""
    gateway = await start_gateway(requests={"header_timeout": 60})
    opened: list[asyncio.StreamWriter] = []
    served: list[float] = []

    async def normal_client() -> None:
        while len(opened) < SLOWLORIS or len(served) < 5:
            started = time.monotonic()
            async with gateway.client.get(gateway.url / "articles", headers={"Host": DOMAIN}) as response:
                assert response.status == 200
                await response.read()
            served.append(time.monotonic() - started)
            await asyncio.sleep(0.05)

    client = asyncio.create_task(normal_client())
    try:
        for _ in range(SLOWLORIS // 100):
            await asyncio.gather(*(_slowloris(gateway.running.https_port, client_ssl, opened) for _ in range(100)))
            assert not client.done() or client.exception() is None
        await asyncio.wait_for(client, 30)
        assert len(opened) == SLOWLORIS
        assert all(not writer.is_closing() for writer in opened)
        assert max(served) < 10, served
    finally:
        client.cancel()
        for writer in opened:
            writer.close()
        with contextlib.suppress(asyncio.CancelledError):
            await client

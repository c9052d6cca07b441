"""Upstream faults (advisory class 6): every broken upstream becomes a 502 or 504 page that names no
internal address, and the gateway keeps serving.

The upstream here is a raw TCP server on loopback that misbehaves by path:
it resets, hangs, drips its head a byte at a time, answers garbage or an
oversized head, or hangs up; ``/ok`` answers properly.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import pytest

from tests.conftest import DOMAIN, StartGateway

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok"
Fault = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _reset(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close with RST
    writer.transport.abort()


async def _hang(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await asyncio.sleep(30)


async def _drip(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A head that never ends, one byte at a time, each well inside the read timeout."""
    writer.write(b"HTTP/1.1 200 OK\r\nX-Drip: ")
    for _ in range(300):
        writer.write(b"a")
        await writer.drain()
        await asyncio.sleep(0.1)


async def _garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"HTTP/1.1 2OO NOT OK\r\nContent-Length: x\r\n\r\n\x00\x01")


async def _huge_head(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"HTTP/1.1 200 OK\r\n" + b"X-Huge: " + b"h" * 200_000 + b"\r\nContent-Length: 2\r\n\r\nok")


async def _many_headers(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"HTTP/1.1 200 OK\r\n" + b"".join(b"X-H%d: 1\r\n" % i for i in range(10_000)) + b"\r\n")


async def _hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.close()


async def _ok(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(OK)


FAULTS: dict[str, tuple[Fault, int]] = {
    "/reset": (_reset, 502),
    "/hang": (_hang, 504),
    "/drip": (_drip, 504),
    "/garbage": (_garbage, 502),
    "/huge-head": (_huge_head, 502),
    "/many-headers": (_many_headers, 502),
    "/hang-up": (_hang_up, 502),
}


@pytest.fixture
async def faulty_upstream() -> AsyncIterator[int]:
    """A loopback server that answers each path with its fault; its port. Hung handlers end with the test."""
    handlers: set[asyncio.Task[None]] = set()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        handlers.add(task)
        try:
            with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
                head = await reader.readuntil(b"\r\n\r\n")
                path = head.split(b" ", 2)[1].decode()
                fault = FAULTS[path][0] if path in FAULTS else _ok
                await fault(reader, writer)
                await writer.drain()
        finally:
            writer.close()
            handlers.discard(task)

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    yield int(server.sockets[0].getsockname()[1])
    server.close()
    for task in list(handlers):
        task.cancel()
    await asyncio.gather(*handlers, return_exceptions=True)
    await server.wait_closed()


@pytest.mark.parametrize("path", sorted(FAULTS))
async def test_each_upstream_fault_is_a_clean_error_page_and_the_gateway_keeps_serving(
    start_gateway: StartGateway, faulty_upstream: int, path: str
) -> None:
    """Class 6, upstream faults (reset, hang, slow drip, invalid HTTP, huge heads): 502/504, no internal address."""
    gateway = await start_gateway(upstream={"url": f"http://127.0.0.1:{faulty_upstream}", "read_timeout": 0.5})
    headers = {"Host": DOMAIN}
    timeout = aiohttp.ClientTimeout(total=10)
    async with gateway.client.get(gateway.url / path.lstrip("/"), headers=headers, timeout=timeout) as response:
        body = await response.text()
        assert response.status == FAULTS[path][1]
        assert response.headers["X-Request-Id"] in body
        request_id = response.headers["X-Request-Id"]
    for internal in ("127.0.0.1", str(faulty_upstream), "aiohttp", "Traceback"):
        assert internal not in body
    record = await gateway.audit_for(request_id)
    assert record["upstream"]["error"] == ("timeout" if FAULTS[path][1] == 504 else "unreachable")

    async with gateway.client.get(gateway.url / "ok", headers=headers, timeout=timeout) as response:
        assert (response.status, await response.text()) == (200, "ok")


async def test_an_upload_is_not_cut_short_by_the_head_deadline(
    start_gateway: StartGateway, faulty_upstream: int
) -> None:
    """Class 6 control: the answer's deadline starts once the request body is sent, not before."""
    gateway = await start_gateway(upstream={"url": f"http://127.0.0.1:{faulty_upstream}", "read_timeout": 0.5})

    async def slow_body() -> AsyncIterator[bytes]:
        for _ in range(10):
            await asyncio.sleep(0.1)
            yield b"x" * 1024

    async with gateway.client.post(gateway.url / "ok", data=slow_body(), headers={"Host": DOMAIN}) as response:
        assert response.status == 200

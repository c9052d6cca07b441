"""A loopback HTTP/1.1 upstream that speaks raw bytes: it keeps each request head exactly as it came.

For tests of what the gateway sends upstream that an HTTP library's parser would tidy
away (header names as spelled, their order, repeated or malformed lines).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from multidict import CIMultiDict
from yarl import URL

from gateway.proxy.client import Origin


@dataclass
class Seen:
    """One request as the upstream read it, and which accepted connection (1, 2, ...) carried it."""

    method: str
    target: str
    headers: CIMultiDict[str]
    body: bytes
    connection: int
    head: bytes = b""
    """The request line and header lines exactly as they came, up to and including the blank line."""


Answer = Callable[[Seen, asyncio.StreamWriter], Awaitable[bool]]
"""Writes the answer to one request; returns whether the connection stays open for another."""


async def _read_request(reader: asyncio.StreamReader, connection: int) -> Seen | None:
    """The next request on a connection (body by Content-Length or chunked), or None when it ends."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    line, *fields = head.decode("utf-8", "surrogateescape").split("\r\n")[:-2]
    method, target, _ = line.split(" ")
    headers: CIMultiDict[str] = CIMultiDict()
    for header in fields:
        name, _, value = header.partition(": ")
        headers.add(name, value)
    body = b""
    if headers.get("Transfer-Encoding") == "chunked":
        while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
            body += await reader.readexactly(size + 2)
            body = body[:-2]
        await reader.readuntil(b"\r\n")
    elif "Content-Length" in headers:
        body = await reader.readexactly(int(headers["Content-Length"]))
    return Seen(method, target, headers, body, connection, head)


@dataclass
class RawUpstream:
    """A loopback HTTP/1.1 server answering each request through ``answer``; records requests and connections."""

    answer: Answer
    requests: list[Seen] = field(default_factory=list)
    connections: int = 0
    closed: int = 0
    """Connections that ended (the client closed them or the server did)."""
    port: int = 0
    scheme: str = "http"
    _server: asyncio.Server | None = None
    _handlers: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def origin(self) -> Origin:
        return Origin.of(URL.build(scheme=self.scheme, host="127.0.0.1", port=self.port))

    async def start(self, context: ssl.SSLContext | None = None) -> RawUpstream:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=context)
        self.port = int(self._server.sockets[0].getsockname()[1])
        self.scheme = "https" if context else "http"
        return self

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self.connections += 1
        number = self.connections
        try:
            while (seen := await _read_request(reader, number)) is not None:
                self.requests.append(seen)
                if not await self.answer(seen, writer):
                    break
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            self.closed += 1
            writer.close()
            self._handlers.discard(task)

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        await self._server.wait_closed()


OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


async def answer_ok(seen: Seen, writer: asyncio.StreamWriter) -> bool:
    """Answer 200 "ok" and keep the connection open."""
    writer.write(OK)
    return True

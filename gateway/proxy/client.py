"""A lean pooled HTTP/1.1 client for the proxy's upstream requests.

``aiohttp.ClientSession`` is general (redirects, cookies, auth, tracing,
compression, many body types); the proxy needs none of that, and its
per-request cost showed in every profile. This client does one job: write a
request on a kept-alive connection to one upstream, parse the answer with
``httptools`` (llhttp, the parser uvicorn uses) and hand its body over as it
arrives.

- Connections are pooled per :class:`Origin`: at most ``limit`` in use in
  all and ``limit_per_host`` per origin. An idle one is reused for
  ``keepalive`` seconds at most, and only when its last answer was read whole
  and the upstream did not ask to close it.
- A pooled connection the upstream has closed meanwhile is dropped before
  reuse; one that closes before a single byte of the answer is retried once
  on a fresh connection when the request is idempotent and has no streamed
  body (RFC 9112, section 9.3.1), as aiohttp does.
- Timeouts: ``connect`` for the TCP and TLS handshakes, ``read`` for each wait
  on the upstream, ``head`` for the whole answer head once the request is
  sent. They raise :class:`UpstreamTimeout`; every other failure (refused,
  reset, DNS, TLS, a malformed or oversized answer) raises
  :class:`UpstreamUnreachable` with the cause chained. An exception from a
  streamed request body (the client stalled) passes through as it is.
- Nothing is added to the caller's headers but Host and the body framing
  (no User-Agent, Accept or Accept-Encoding), and nothing is decompressed.
"""

from __future__ import annotations

import asyncio
import select
import socket
import ssl
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass
from types import TracebackType
from typing import cast

import aiohappyeyeballs
import httptools
from multidict import CIMultiDict
from yarl import URL

from gateway.errors import UpstreamError, UpstreamTimeout, UpstreamUnreachable

Body = bytes | AsyncIterable[bytes] | None
"""A request body: none, whole bytes (sent with Content-Length), or chunks as they come."""

# https://www.rfc-editor.org/rfc/rfc9112.html#name-retrying-requests (aiohttp retries the same set).
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})
# Requests of these methods have no body by convention; others without one say Content-Length: 0, as aiohttp's do.
_BODYLESS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
# Bounds on an answer's head, aiohttp's client's: per header line and header count; and in all.
MAX_FIELD = 8190
MAX_HEADERS = 128
MAX_HEAD = 64 * 1024
HIGH_WATER = 256 * 1024
"""Body bytes buffered before the connection stops reading until the consumer catches up."""
_CLOCK_SLACK = 0.001  # uvloop's clock ticks in milliseconds: a timer may fire up to one early


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a pooled connection goes: scheme, host and port, and the Host header naming them."""

    scheme: str
    host: str
    port: int
    host_header: str

    @classmethod
    def of(cls, url: URL) -> Origin:
        """The origin of an absolute http or https URL."""
        if url.scheme not in ("http", "https") or not url.raw_host or url.port is None:
            raise ValueError(f"not an absolute http(s) URL: {url}")
        return cls(url.scheme, url.raw_host, url.port, url.host_port_subcomponent or url.raw_host)


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Seconds allowed to connect, for each wait on the upstream, and for the whole answer head."""

    connect: float
    read: float
    head: float


class _Unanswered(UpstreamUnreachable):
    """The connection closed before a single byte of the answer: on a reused one, the upstream's idle close."""


class _Stop(Exception):
    """Raised from a parser callback to stop parsing."""


class _Connection(asyncio.Protocol):
    """One TCP (or TLS) connection to an upstream; it feeds the answer being read, if any."""

    transport: asyncio.Transport

    def __init__(self, loop: asyncio.AbstractEventLoop, registry: set[_Connection]) -> None:
        self.loop = loop
        self.response: UpstreamResponse | None = None
        self.open = False
        self.idle_since = 0.0
        self._registry = registry
        self._write_paused = False
        self._unblocked: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.open = True
        self._registry.add(self)

    def readable(self) -> bool:
        """Whether the socket has bytes or an end of stream the loop has not read yet."""
        poller = select.poll()
        poller.register(self.transport.get_extra_info("socket").fileno(), select.POLLIN)
        return bool(poller.poll(0))

    def data_received(self, data: bytes) -> None:
        if self.response is None:
            self.close()  # bytes nobody asked for: the connection's framing cannot be trusted
        else:
            self.response.feed(data)

    def eof_received(self) -> bool:
        self.open = False
        if self.response is not None:
            self.response.connection_ended(None)
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.open = False
        self._registry.discard(self)
        if self.response is not None:
            self.response.connection_ended(exc)
        self.unblock()

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        self.unblock()

    def unblock(self) -> None:
        """Wake a writer waiting in :meth:`drain`: the socket drained, the connection ended, or an answer came."""
        if self._unblocked is not None and not self._unblocked.done():
            self._unblocked.set_result(None)

    async def drain(self) -> None:
        """Until the socket takes more, the connection ends, or the answer's head arrives."""
        if not self._write_paused or not self.open:
            return
        self._unblocked = self.loop.create_future()
        try:
            await self._unblocked
        finally:
            self._unblocked = None

    def close(self) -> None:
        """Close the connection; an answer still being read ends with an error."""
        self.open = False
        self.transport.close()
        if self.response is not None:
            self.response.connection_ended(ConnectionAbortedError("closed by the gateway"))


class _Host:
    """The pool's share for one origin: its idle connections, most recently used last, and its slots."""

    __slots__ = ("idle", "slots")

    def __init__(self, limit: int) -> None:
        self.idle: deque[_Connection] = deque()
        self.slots = asyncio.Semaphore(limit)


class UpstreamResponse:
    """An upstream's answer: status, reason and headers, then its body as it arrives.

    It is also the ``httptools`` parser's callback object (the ``on_*`` methods).
    Use it as a context manager: on exit the connection goes back to the pool
    when the answer was read whole and the connection may carry another, and
    is closed otherwise.
    """

    __slots__ = (
        "_body",
        "_buffered",
        "_complete",
        "_connection",
        "_cut",
        "_error",
        "_framed",
        "_head_deadline",
        "_head_done",
        "_head_request",
        "_header_count",
        "_host",
        "_keep_alive",
        "_last_read",
        "_loop",
        "_parser",
        "_paused",
        "_pool",
        "_reason",
        "_received",
        "_timeouts",
        "_timer",
        "_waiter",
        "headers",
        "reason",
        "status",
    )

    def __init__(
        self, pool: UpstreamPool, host: _Host, connection: _Connection, timeouts: Timeouts, *, head_request: bool
    ) -> None:
        self.status = 0
        self.reason = ""
        self.headers: CIMultiDict[str] = CIMultiDict()
        self._pool = pool
        self._host = host
        self._connection: _Connection | None = connection
        self._loop = connection.loop
        # The parser holds this object's bound methods, and this object the parser: a reference cycle, which
        # _detach breaks, so that the answer is freed as soon as it is done with, not by the cyclic collector.
        self._parser: httptools.HttpResponseParser | None = httptools.HttpResponseParser(self)
        self._timeouts = timeouts
        self._head_request = head_request
        self._reason = b""
        self._header_count = 0
        self._received = 0
        self._head_done = False
        self._complete = False
        self._keep_alive = False  # the upstream lets the connection carry another request
        self._cut = False  # the request body was not sent whole: the connection cannot carry another
        self._framed = True
        self._body: list[bytes] = []
        self._buffered = 0
        self._paused = False
        self._error: UpstreamError | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._last_read = 0.0
        self._head_deadline = 0.0
        connection.response = self

    # --- the parser's callbacks ---

    def on_message_begin(self) -> None:
        if self._complete:
            # SECURITY: response splitting. Bytes after a complete answer are never parsed into it;
            # the connection is closed instead of reused.
            raise _Stop()

    def on_status(self, reason: bytes) -> None:
        self._reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        if self._header_count > MAX_HEADERS or len(name) + len(value) > MAX_FIELD:
            raise _Stop()
        self.headers.add(name.decode("latin-1"), value.decode("utf-8", "surrogateescape"))

    def on_headers_complete(self) -> None:
        status = self._parsing().get_status_code()
        if status < 200:  # 100 Continue, 103 Early Hints: interim, the answer follows (101 fails as an upgrade)
            self._reason, self.headers, self._header_count = b"", CIMultiDict(), 0
            return
        self.status = status
        self.reason = self._reason.decode("utf-8", "surrogateescape")
        self._head_done = True
        self._framed = _framed(self.headers)
        if self._head_request:
            self._finish()  # the parser does not know the request was HEAD: no body follows, whatever the head says
        if self._connection is not None:
            self._connection.unblock()  # an early answer stops a request body still being sent

    def on_body(self, body: bytes) -> None:
        if self._complete:  # bytes after the head of a HEAD answer
            self._keep_alive = False
            return
        self._body.append(body)
        self._buffered += len(body)
        if self._buffered > HIGH_WATER and not self._paused and self._connection is not None:
            self._paused = True
            self._connection.transport.pause_reading()

    def on_message_complete(self) -> None:
        if self._head_done and not self._complete:
            self._finish()

    # --- fed by the connection ---

    def feed(self, data: bytes) -> None:
        """Bytes from the connection: parse them and wake the reader."""
        if self._complete:
            self._keep_alive = False  # nothing may follow a complete answer on the connection
            return
        self._received += len(data)
        self._last_read = self._loop.time()
        try:
            self._parsing().feed_data(data)
        except httptools.HttpParserError as exc:
            if self._complete:
                self._keep_alive = False
            else:  # malformed, oversized, or an upgrade nobody asked for
                self._fail(UpstreamUnreachable(), exc)
        else:
            if not self._head_done and self._received > MAX_HEAD:
                self._fail(UpstreamUnreachable(), None)
        self._wake()

    def connection_ended(self, exc: Exception | None) -> None:
        """The upstream closed the connection or it broke: the end of a body read to EOF, or a failure."""
        if not (self._complete or self._error):
            if self._head_done and not self._framed and exc is None:
                self._finish()
                self._keep_alive = False
            else:
                self._fail(_Unanswered() if self._received == 0 else UpstreamUnreachable(), exc)
        self._wake()

    # --- read by the proxy ---

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives, what is buffered joined into one piece; raises UpstreamError on a failure."""
        while True:
            if self._body:
                body = self._body
                self._body, self._buffered = [], 0
                self._resume()
                yield body[0] if len(body) == 1 else b"".join(body)
            elif self._error is not None:
                raise self._error
            elif self._complete:
                return
            else:
                await self._wait()

    def __enter__(self) -> UpstreamResponse:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.release()

    def release(self) -> None:
        """Give the connection back to the pool if the answer was read whole and it may carry another; else close it."""
        connection = self._detach()
        if connection is not None:
            reuse = self._complete and self._keep_alive and not self._cut
            self._pool._give_back(self._host, connection, reuse=reuse)

    # --- used by the pool ---

    async def _send(self, head: bytes, body: Body, chunked: bool) -> None:
        """Write the request; a streamed body stops early when the answer's head arrives or the connection ends."""
        connection = self._connection
        assert connection is not None
        if not connection.open:
            raise _Unanswered()
        transport = connection.transport
        if body is None or isinstance(body, bytes):
            transport.write(head + body if body else head)
            return
        transport.write(head)
        async for chunk in body:
            if chunk:
                if chunked:
                    transport.writelines((b"%x\r\n" % len(chunk), chunk, b"\r\n"))
                else:
                    transport.write(chunk)
            await connection.drain()
            if self._head_done or not connection.open:
                self._cut = True
                return
        if chunked:
            transport.write(b"0\r\n\r\n")

    async def _read_head(self) -> None:
        # SECURITY: an upstream dripping its head a byte at a time never trips the per-read timeout;
        # the whole head must arrive within the head timeout once the request is sent.
        self._head_deadline = self._loop.time() + self._timeouts.head
        while not self._head_done:
            if self._error is not None:
                raise self._error
            await self._wait()

    def _abandon(self) -> None:
        """Close the connection without giving anything back to the pool (the caller keeps the slots)."""
        connection = self._detach()
        if connection is not None:
            connection.close()

    # --- internals ---

    def _detach(self) -> _Connection | None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._resume()  # a connection goes back reading, whoever has it next
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.response = None  # nothing feeds the parser from now on
        self._parser = None
        return connection

    def _parsing(self) -> httptools.HttpResponseParser:
        """The parser, while the connection is attached (only its bytes, read before :meth:`_detach`, are parsed)."""
        assert self._parser is not None  # fed only through the attached connection
        return self._parser

    def _resume(self) -> None:
        if self._paused:
            self._paused = False
            if self._connection is not None and self._connection.open:
                self._connection.transport.resume_reading()

    def _finish(self) -> None:
        self._complete = True
        self._keep_alive = self._parsing().should_keep_alive()

    def _fail(self, error: UpstreamError, cause: BaseException | None) -> None:
        error.__cause__ = cause
        self._error = error
        if self._connection is not None:
            self._connection.close()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def _wait(self) -> None:
        """Until the connection brings something; the per-read clock starts again with each wait."""
        self._last_read = self._loop.time()
        if self._timer is None:
            self._timer = self._loop.call_at(self._deadline(), self._expire)
        self._waiter = self._loop.create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    def _deadline(self) -> float:
        deadline = self._last_read + self._timeouts.read
        return deadline if self._head_done else min(deadline, self._head_deadline)

    def _expire(self) -> None:
        """The timer: fail a wait past its deadline, or look again at the deadline a later read moved."""
        self._timer = None
        if self._waiter is None:
            return  # nobody waits; the next wait arms it again
        deadline = self._deadline()
        if self._loop.time() + _CLOCK_SLACK >= deadline:
            self._fail(UpstreamTimeout(), None)
            self._wake()
        else:
            self._timer = self._loop.call_at(deadline, self._expire)


class UpstreamPool:
    """Pooled keep-alive HTTP/1.1 connections to upstreams; one per app, closed when the app stops."""

    def __init__(
        self,
        *,
        limit: int = 256,
        limit_per_host: int = 128,
        keepalive: float = 15.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._limit_per_host = limit_per_host
        self._slots = asyncio.Semaphore(limit)
        self._keepalive = keepalive
        self._ssl_context = ssl_context
        self._hosts: dict[Origin, _Host] = {}
        self._connections: set[_Connection] = set()
        self._sweep: asyncio.TimerHandle | None = None

    async def request(
        self, method: str, origin: Origin, target: str, headers: CIMultiDict[str], body: Body, timeouts: Timeouts
    ) -> UpstreamResponse:
        """Send one request and read the answer's head; its body is read from the response returned.

        ``target`` is the request target as sent (path and query, already
        encoded). ``headers`` are sent as given, but for Host and the framing,
        which this client writes: Content-Length for bytes; for a streamed body
        the chunks as they are when the caller gives a Content-Length, chunked
        transfer coding otherwise.
        """
        head, chunked = _head(method, target, origin.host_header, headers, body)
        host = self._hosts.get(origin) or self._hosts.setdefault(origin, _Host(self._limit_per_host))
        await host.slots.acquire()
        try:
            await self._slots.acquire()
        except BaseException:
            host.slots.release()
            raise
        try:
            return await self._exchange(host, origin, method, head, body, chunked, timeouts)
        except BaseException:
            self._give_back(host, None, reuse=False)
            raise

    def close(self) -> None:
        """Close every connection, idle or in use."""
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None
        for connection in list(self._connections):
            connection.close()
        self._hosts.clear()

    async def _exchange(
        self, host: _Host, origin: Origin, method: str, head: bytes, body: Body, chunked: bool, timeouts: Timeouts
    ) -> UpstreamResponse:
        """Send on an idle connection or a new one; on failure every connection tried is closed."""
        retry = method in IDEMPOTENT and (body is None or isinstance(body, bytes))
        connection = self._idle(host, probe=not retry)
        while True:
            fresh = connection is None
            if connection is None:
                connection = await self._connect(origin, timeouts.connect)
            response = UpstreamResponse(self, host, connection, timeouts, head_request=method == "HEAD")
            try:
                await response._send(head, body, chunked)
                await response._read_head()
            except BaseException as exc:
                response._abandon()
                if not (isinstance(exc, _Unanswered) and retry and not fresh):
                    raise
                retry, connection = False, None
            else:
                return response

    def _idle(self, host: _Host, *, probe: bool) -> _Connection | None:
        """The most recently used idle connection that is still open and fresh enough, if any.

        With ``probe`` (for a request that is never retried) it must also have
        nothing waiting to be read: a close or stray bytes that arrived after
        its last answer but that the loop has not handled yet. That costs a
        system call, which the requests that may be retried do without.
        """
        oldest = self._now() - self._keepalive
        while host.idle:
            connection = host.idle.pop()
            if (
                connection.open
                and not connection.transport.is_closing()
                and connection.idle_since > oldest
                and not (probe and connection.readable())
            ):
                return connection
            connection.close()
        return None

    async def _connect(self, origin: Origin, seconds: float) -> _Connection:
        loop = asyncio.get_running_loop()
        context = self._tls() if origin.scheme == "https" else None
        try:
            async with asyncio.timeout(seconds):
                addresses = await loop.getaddrinfo(origin.host, origin.port, type=socket.SOCK_STREAM)
                # Happy eyeballs as aiohttp does it (uvloop's create_connection has none): a host whose
                # IPv6 route is broken answers over IPv4 a quarter second later, not at the timeout.
                sock = await aiohappyeyeballs.start_connection(addresses, happy_eyeballs_delay=0.25)
                try:
                    _, connection = await loop.create_connection(
                        lambda: _Connection(loop, self._connections),
                        sock=sock,
                        ssl=context,
                        server_hostname=origin.host if context else None,
                    )
                except BaseException:
                    sock.close()
                    raise
        except TimeoutError as exc:
            raise UpstreamTimeout() from exc
        except OSError as exc:  # refused, reset, DNS, TLS verification
            raise UpstreamUnreachable() from exc
        return connection

    def _tls(self) -> ssl.SSLContext:
        if self._ssl_context is None:
            self._ssl_context = ssl.create_default_context()  # verified against the system's CAs, as aiohttp does
        return self._ssl_context

    def _give_back(self, host: _Host, connection: _Connection | None, *, reuse: bool) -> None:
        """End a lease: free its slots; keep the connection idle when ``reuse``, else close it."""
        self._slots.release()
        host.slots.release()
        if connection is None:
            return
        if reuse and connection.open:
            connection.idle_since = self._now()
            host.idle.append(connection)
            if self._sweep is None:
                self._sweep = asyncio.get_running_loop().call_later(self._keepalive, self._close_expired)
        else:
            connection.close()

    def _close_expired(self) -> None:
        """Close the connections idle for longer than ``keepalive``; look again while any stay idle."""
        self._sweep = None
        oldest = self._now() - self._keepalive
        for host in self._hosts.values():
            while host.idle and host.idle[0].idle_since <= oldest:
                host.idle.popleft().close()
        if any(host.idle for host in self._hosts.values()):
            self._sweep = asyncio.get_running_loop().call_later(self._keepalive, self._close_expired)

    @staticmethod
    def _now() -> float:
        return asyncio.get_running_loop().time()


def _framed(headers: CIMultiDict[str]) -> bool:
    """Whether an answer's body ends where its head says (a length, or chunked coding last), not at the close."""
    if "Content-Length" in headers:
        return True
    codings = ",".join(headers.getall("Transfer-Encoding", ()))
    return codings.rpartition(",")[2].strip().lower() == "chunked"


def _head(method: str, target: str, host: str, headers: CIMultiDict[str], body: Body) -> tuple[bytes, bool]:
    """The request head as bytes, and whether the body goes chunked."""
    whole = isinstance(body, bytes)
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}"]
    if "Host" in headers or "Transfer-Encoding" in headers or (whole and "Content-Length" in headers):
        own = ("host", "transfer-encoding", "content-length") if whole else ("host", "transfer-encoding")
        lines += [f"{name}: {value}" for name, value in headers.items() if name.lower() not in own]
    else:
        lines += [f"{name}: {value}" for name, value in headers.items()]
    chunked = False
    if isinstance(body, bytes):
        lines.append(f"Content-Length: {len(body)}")
    elif "Content-Length" not in headers:  # else the caller's length frames the chunks it streams, or says 0
        if body is not None:
            lines.append("Transfer-Encoding: chunked")
            chunked = True
        elif method not in _BODYLESS:
            lines.append("Content-Length: 0")
    text = "\r\n".join(lines) + "\r\n\r\n"
    # SECURITY: request splitting. A CR or LF inside a header name or value (or the target) would end its
    # line early and pass the rest as headers or as a second request: each line holds exactly one of each.
    if text.count("\r") != len(lines) + 1 or text.count("\n") != len(lines) + 1:
        raise ValueError("a line break in the request target or a header")
    return text.encode("utf-8", "surrogateescape"), chunked

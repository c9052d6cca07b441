"""Slow clients: deadlines on the request head and the request body.

A connection must deliver its first request head within
``requests.header_timeout`` of being accepted (the TLS handshake has the same
deadline, and aiohttp's keep-alive timeout, set to the same, bounds every later
head). A body the gateway reads itself must arrive whole within
``requests.body_timeout`` (and under the size cap): it is read here, before the
handler. A proxied body streams through :func:`timed_body` and may pause for at
most that long between chunks.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from typing import TYPE_CHECKING

from aiohttp import StreamReader, web
from aiohttp.web_protocol import RequestHandler

from gateway.errors import BodyTimeout
from gateway.run.protocol import ProtocolFactory

if TYPE_CHECKING:
    from gateway.edge.pipeline import Stage


class HeadDeadline:
    """Closes every connection whose first request head has not reached the app ``seconds`` after accept."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._waiting: dict[RequestHandler, asyncio.TimerHandle] = {}

    def wrap(self, factory: ProtocolFactory) -> ProtocolFactory:
        """The listener's protocol factory, with a deadline started for each accepted connection."""

        def accept() -> RequestHandler:
            protocol = factory()
            self._waiting[protocol] = asyncio.get_running_loop().call_later(self.seconds, self._expire, protocol)
            return protocol

        return accept

    def _expire(self, protocol: RequestHandler) -> None:
        del self._waiting[protocol]  # still there: a head in time cancels this timer
        # SECURITY: slowloris. A head still incomplete (or a TLS handshake never begun) holds a
        # socket and a buffer for nothing; the connection is dropped.
        if protocol.transport is not None:
            protocol.transport.close()

    def arrived(self, request: web.Request) -> None:
        """A request reached the app: its connection met the deadline, whose timer is dropped at once
        (a pending timer per kept-alive connection is some 0.4 KB held until it fires)."""
        deadline = self._waiting.pop(request.protocol, None)
        if deadline is not None:
            deadline.cancel()


async def timed_body(content: StreamReader, seconds: float) -> AsyncIterator[bytes]:
    """A request body, chunk by chunk as it arrives; raises BodyTimeout when it pauses past ``seconds``."""
    while True:
        try:
            async with asyncio.timeout(seconds):
                chunk = await content.readany()
        except TimeoutError:
            # SECURITY: slow POST (R.U.D.Y.). Raising (never returning) aborts the upstream request,
            # so a cut body is never sent on as a complete, shorter one.
            raise BodyTimeout() from None
        if not chunk:
            return
        yield chunk


def body_stage(seconds: float, streamed_routes: frozenset[str]) -> Stage:
    """Read the body of requests for the gateway's own handlers first, under the deadline and the size cap."""

    async def read(request: web.Request) -> None:
        try:
            async with asyncio.timeout(seconds):
                await request.read()  # kept by aiohttp for the handler's post() or json()
        except TimeoutError:
            raise BodyTimeout() from None

    def stage(request: web.Request) -> Awaitable[None] | None:
        if request.body_exists and request.match_info.route.name not in streamed_routes:
            return read(request)
        return None  # no body to wait for: no coroutine either

    return stage

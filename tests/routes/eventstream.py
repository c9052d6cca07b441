"""Reading ``GET /tickets/events`` through the real gateway, for ``test_events*.py``: a small text/event-stream
reader over an aiohttp response (the format of the HTML standard's "server-sent events")."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp

from tests.conftest import Gateway
from tests.routes.adminapi import portal_token

EVENTS = "/tickets/events"
WAIT = 10.0  # seconds an expected event may take before the test fails (never a measure of speed)


@dataclass(frozen=True)
class Event:
    """One dispatched event: its type, id and JSON data."""

    event: str
    id: str | None
    data: Any


class EventStream:
    """The events of one open stream, as they arrive."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response
        self.comments: list[str] = []

    async def next(self, seconds: float = WAIT) -> Event | None:
        """The next event (comments kept aside), or None when the gateway ended the stream."""
        async with asyncio.timeout(seconds):
            fields: dict[str, str] = {}
            while True:
                raw = await self.response.content.readline()
                if not raw:
                    return None
                line = raw.decode().rstrip("\n")
                if not line:
                    if "data" in fields:
                        return Event(fields.get("event", "message"), fields.get("id"), json.loads(fields["data"]))
                    fields = {}
                    continue
                name, _, value = line.partition(":")
                if not name:
                    self.comments.append(value.strip())
                    continue
                fields[name] = value.removeprefix(" ")

    async def next_comment(self, seconds: float = WAIT) -> str:
        """The next comment line's text (a heartbeat, or the opening ``live``)."""
        async with asyncio.timeout(seconds):
            while True:
                line = (await self.response.content.readline()).decode().rstrip("\n")
                if line.startswith(":"):
                    return line[1:].strip()

    async def ended(self, seconds: float = WAIT) -> list[Event]:
        """The events left until the gateway ends the stream."""
        left = []
        while (event := await self.next(seconds)) is not None:
            left.append(event)
        return left


@asynccontextmanager
async def open_stream(
    gateway: Gateway,
    user_id: str,
    *,
    last_event_id: str | None = None,
    token: str | None = None,
    query: str = "",
) -> AsyncIterator[EventStream]:
    """A stream as a visitor's page opens it (their token in the cookie, as the browser sends it)."""
    headers = {"Cookie": f"portal-jwt={token or portal_token(user_id)}", "Accept": "text/event-stream"}
    if last_event_id is not None:
        headers["Last-Event-ID"] = last_event_id
    async with gateway.client.get(gateway.url.with_path(EVENTS).with_query(query), headers=headers) as response:
        assert response.status == 200, (response.status, await response.text())
        stream = EventStream(response)
        # The gateway's first frame says the stream is set up: writes from now on reach it.
        await stream.next_comment()
        yield stream

"""``GET <portal.path>/events``: the live pages' event stream (text/event-stream), one per open page.

Each change of the store's feed (gateway/store/feed.py) becomes an event for this
visitor only if the store, asked through the same visibility filter the pages use,
shows them the ticket now; what the event carries is what the page would show
(state, update time, the public replies), never more. A ticket the Intercom sync
removed is no longer there to ask about: its event (its id alone) goes to the
visitors whose filter matched it, by the scope key and creator its change kept. The streams woken by one
change share that read per filter (:class:`SharedReads`). ``Last-Event-ID`` resumes
after the last event the page got; a page further behind than the feed's retention
gets a ``reload`` event. The stream re-checks the visitor's access (the access rules
on their current contact) at every change to their memberships or attributes and
every ``portal.events.recheck`` seconds, and ends when that fails, when the token
expires, or when the worker stops. One audit record per stream, when it ends.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any, Literal

from aiohttp import web

from gateway.config import CONFIG, EventsConfig
from gateway.edge.guard import CLOCK, GUARD, STORE, VISIBILITY, VISITOR, Clock
from gateway.errors import BadRequest, ServiceBusy, StoreUnavailable, TooManyRequests
from gateway.namespace import EVENTS_SUFFIX
from gateway.observe.audit import AUDIT_ENTRY, StreamResult
from gateway.policy.visibility import Visitor
from gateway.run.periodic import periodic
from gateway.store.feed import ChangeHub
from gateway.store.models import Change, TicketDetail, TicketFilter
from gateway.store.protocol import Store
from gateway.store.visibility import shows_scope
from routes.portal import initials
from routes.timefmt import exact, iso, relative

HUB = web.AppKey("change_hub", ChangeHub)
_EVENT_ID = re.compile(r"[0-9]{1,18}")
RETRY_MS = 3000  # how long an EventSource waits before it reconnects (a stop, a network blip)
Ended = Literal["client_gone", "expired", "revoked", "shutdown", "error"]


class Streams:
    """The open streams of this worker, in all and per visitor, against ``portal.events``' limits."""

    def __init__(self, config: EventsConfig) -> None:
        self._config = config
        self._open: dict[str, dict[int, web.BaseRequest]] = {}  # by id(): a request is not hashable
        self.total = 0

    @staticmethod
    def _gone(request: web.BaseRequest) -> bool:
        """Whether the page of this stream left: its connection closed, which the stream itself learns only at
        its next write (a heartbeat)."""
        return request.transport is None or request.transport.is_closing()

    def admit(self, request: web.BaseRequest, user_id: str) -> None:
        """Count the stream of ``request`` for ``user_id`` until :meth:`release`; refuse it (429, 503) past a limit.
        A visitor clicking through pages faster than the heartbeat is not refused for the pages they left: at the
        limit, only the streams whose connection is still open count."""
        # Two calls, not a context manager: a generator's frame and its manager are 400 bytes an idle stream would
        # hold, times 5,000.
        mine = self._open.get(user_id, {})
        if len(mine) >= self._config.per_visitor:
            alive = sum(not self._gone(other) for other in mine.values())
            if alive >= self._config.per_visitor:
                # SECURITY: one visitor (or one stolen token) cannot hold a worker's streams for everyone else.
                raise TooManyRequests(
                    f"You have {alive} live pages open; close one, or reload later.", headers=self._retry()
                )
        if self.total >= self._config.max_streams:
            raise ServiceBusy("Too many live pages are open right now; reload later.", headers=self._retry())
        self._open[user_id] = mine
        mine[id(request)] = request
        self.total += 1

    def release(self, request: web.BaseRequest, user_id: str) -> None:
        """Stop counting the stream :meth:`admit` counted."""
        self.total -= 1
        mine = self._open[user_id]
        del mine[id(request)]
        if not mine:
            del self._open[user_id]

    def _retry(self) -> dict[str, str]:
        return {"Retry-After": str(self._config.retry_after)}


STREAMS = web.AppKey("event_streams", Streams)


class SharedReads:
    """A change's event for one visibility filter, read once for every stream that waits on that filter.

    A change wakes every stream at once; those with the same filter (the same
    visitor's pages; visitors whose filters are equal) would each read the same
    ticket through the same filter. The first starts the read, the others wait
    for it; the read is forgotten the moment it ends, so a stream that comes
    later reads again and never gets an answer older than its own request.
    """

    def __init__(self, store: Store, clock: Clock) -> None:
        self._store = store
        self._clock = clock
        self._reading: dict[tuple[int, TicketFilter], asyncio.Task[bytes | None]] = {}

    async def frame(self, change: Change, ticket_id: str, visible: TicketFilter) -> bytes | None:
        """The event of ``change`` (of the ticket ``ticket_id``) for a visitor with the filter ``visible``; None
        when the filter does not show them the ticket now."""
        key = (change.id, visible)  # SECURITY: the filter is in the key: a read is never shared across filters
        reading = self._reading.get(key)
        if reading is None:
            reading = self._reading[key] = asyncio.create_task(self._read(key, change, ticket_id, visible))
        # shield: a stream whose page leaves (its task cancelled) does not cancel the read the others wait on
        return await asyncio.shield(reading)

    async def _read(
        self, key: tuple[int, TicketFilter], change: Change, ticket_id: str, visible: TicketFilter
    ) -> bytes | None:
        try:
            # SECURITY: the pages' own filter and read: an event exists only for a ticket the visitor's detail page
            # would show now, and carries only what that page shows.
            detail = await self._store.get_ticket(visible, ticket_id)
        finally:
            del self._reading[key]
        return None if detail is None else _frame("ticket", ticket_event(change, detail, self._clock()), change.id)


READS = web.AppKey("shared_reads", SharedReads)


async def feed_context(app: web.Application) -> AsyncIterator[None]:
    """Cleanup context: this worker's change hub, watching the store every ``store.change_poll`` seconds, and the
    reads its streams share."""
    config = app[CONFIG]
    hub = ChangeHub(app[STORE])
    await hub.start()
    app[HUB] = hub
    app[READS] = SharedReads(app[STORE], app[CLOCK])
    async with periodic(hub.pump, config.store.change_poll, name="change feed"):
        yield


async def end_streams(app: web.Application) -> None:
    """on_shutdown: end every stream now, so none holds the graceful stop (pages reconnect elsewhere)."""
    app[HUB].close()


def _frame(event: str, data: dict[str, Any], event_id: int | None = None) -> bytes:
    lines = [f"event: {event}", f"data: {json.dumps(data, separators=(',', ':'))}"]
    if event_id is not None:
        lines.insert(0, f"id: {event_id}")
    return ("\n".join(lines) + "\n\n").encode()


def ticket_event(change: Change, detail: TicketDetail, now: float) -> dict[str, Any]:
    """What the page needs to show the change: the row's state and time; for a reply, the public thread."""
    summary = detail.summary
    data: dict[str, Any] = {
        "ticket": summary.ticket_id,
        "kind": change.kind,
        "state": summary.state_label,
        "category": summary.state_category,
        "updated": {"iso": iso(summary.updated_at), "exact": exact(summary.updated_at)},
        "updated_ago": relative(summary.updated_at, now),
    }
    if change.kind == "reply":
        # SECURITY: TicketDetail.parts are the public replies only, exactly what the detail page shows.
        data["parts"] = [
            {
                "author": part.author_name,
                "initials": initials(part.author_name),
                "by_support": part.by_support,
                "body": part.body,
                "at": {"iso": iso(part.created_at), "exact": exact(part.created_at)},
                "ago": relative(part.created_at, now),
            }
            for part in detail.parts
        ]
    return data


class _Stream:
    """One visitor's stream: their current visibility, a cursor into the feed, and the response."""

    # Slots, and the filter made once: 5,000 idle streams hold 5,000 of these, and each change would otherwise
    # build every stream's filter again (garbage the cyclic collector then walks all streams' objects for).
    __slots__ = ("app", "request", "response", "scope", "sent", "visible", "visitor")

    def __init__(self, request: web.Request, response: web.StreamResponse, scope: Literal["all", "mine"]) -> None:
        self.request = request
        self.response = response
        self.scope = scope
        self.visitor: Visitor = request[VISITOR]
        self.app = request.app
        self.visible = self.app[VISIBILITY].ticket_filter(self.visitor, scope)
        """The tickets the page shows; the stream ends (a reload) when the visitor's filter is another."""
        self.sent = 0

    async def unchanged(self) -> bool:
        """Whether the visitor still sees what the page shows: the access stage's decision again, on their contact
        as the store has it now, and the same ticket filter as when the stream opened."""
        identity = self.visitor.identity
        visitor = Visitor(identity, await self.app[STORE].contact_by_user_id(identity.user_id))
        return (
            self.app[GUARD].access(visitor.facts()).allowed
            and self.app[VISIBILITY].ticket_filter(visitor, self.scope) == self.visible
        )

    async def deliver(self, change: Change) -> bool:
        """Send the change if the visitor may see its ticket now; False when what they may see changed."""
        if change.kind == "access":
            contact = self.visitor.contact
            if change.contact_id is None or (contact is not None and change.contact_id == contact.id):
                return await self.unchanged()
            return True
        if change.ticket_id is None:
            return True
        if change.kind == "removed":
            # SECURITY: the ticket is gone, so no read can ask the filter about it: the scope key and creator it had,
            # kept in the change, are matched as the filter matched them; a visitor who could not see it learns nothing.
            shown = shows_scope(self.visible, change.scope, change.contact_id)
            frame = _frame("ticket", {"ticket": change.ticket_id, "kind": "removed"}, change.id) if shown else None
        else:
            frame = await self.app[READS].frame(change, change.ticket_id, self.visible)
        if frame is not None:
            await self.response.write(frame)
            self.sent += 1
        return True

    async def run(self, cursor: int, resumed: bool) -> Ended:
        """Send events after ``cursor`` until the stream must end; why it ended."""
        hub, config, clock = self.app[HUB], self.app[CONFIG].portal.events, self.app[CLOCK]
        expires = self.visitor.identity.expires_at
        recheck_at = clock() + config.recheck
        try:
            await self.response.write(f"retry: {RETRY_MS}\n: live\n\n".encode())
            if resumed:
                behind = await hub.after(cursor)
                if behind.missed(cursor):
                    cursor = await self.reload(behind.latest)
            while True:
                now = clock()
                if expires is not None and now >= expires:
                    return "expired"
                if now >= recheck_at:
                    if not await self.unchanged():
                        return await self.revoked()
                    recheck_at = now + config.recheck
                until_expiry = config.heartbeat if expires is None else expires - now
                await hub.wait(cursor, max(0.0, min(config.heartbeat, recheck_at - now, until_expiry)))
                if hub.closed:
                    return "shutdown"
                batch = await hub.after(cursor)
                if batch.missed(cursor):
                    cursor = await self.reload(batch.latest)
                    continue
                if not batch.changes:
                    await self.response.write(b": heartbeat\n\n")  # also how a page that left is noticed
                for change in batch.changes:
                    if not await self.deliver(change):
                        return await self.revoked()
                    cursor = change.id
        except ConnectionResetError:
            return "client_gone"
        except StoreUnavailable:  # the response is under way: no error page can follow, the page reconnects
            return "error"

    async def revoked(self) -> Ended:
        """End the stream: the visitor lost access, or sees other tickets than the page shows (a membership
        ended). SECURITY: no event follows for the old set; the page reloads into what they see now."""
        await self.response.write(_frame("reload", {"reason": "access"}))
        self.sent += 1
        return "revoked"

    async def reload(self, latest: int) -> int:
        """Tell the page it missed changes the feed no longer holds; it goes on from ``latest``."""
        await self.response.write(_frame("reload", {"reason": "missed"}, latest))
        self.sent += 1
        return latest


async def events(request: web.Request) -> web.StreamResponse:
    """The visitor's event stream; ``scope=mine`` for the "Created by me" list, ``Last-Event-ID`` to resume."""
    visitor = request[VISITOR]
    last = request.headers.get("Last-Event-ID")
    if last is not None and not _EVENT_ID.fullmatch(last):
        raise BadRequest("Last-Event-ID must be the id of an event this stream sent.")
    scope: Literal["all", "mine"] = "mine" if request.query.get("scope") == "mine" else "all"
    streams, user_id = request.app[STREAMS], visitor.identity.user_id
    streams.admit(request, user_id)
    try:
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream; charset=utf-8",
                "Cache-Control": "no-store",
                "X-Accel-Buffering": "no",  # nginx and alike: pass each event on at once, do not buffer
            }
        )
        await response.prepare(request)
        result = StreamResult(
            opened=datetime.fromtimestamp(request.app[CLOCK](), UTC).isoformat(timespec="milliseconds"),
            scope=scope,
            resumed=last is not None,
        )
        request[AUDIT_ENTRY].stream = result
        stream = _Stream(request, response, scope)
        cursor = int(last) if last is not None else request.app[HUB].latest
        result.ended = await stream.run(cursor, resumed=last is not None)
        result.events = stream.sent
        return response
    finally:
        streams.release(request, user_id)


def add_routes(app: web.Application) -> None:
    """Register the stream (before the ticket detail route, which would take ``events`` as a ticket id)."""
    config = app[CONFIG]
    if config.portal.live:
        app[STREAMS] = Streams(config.portal.events)
        # No HEAD: a stream has no headers-only form, and a body after a HEAD would corrupt a kept-alive connection.
        app.router.add_get(config.portal.path + EVENTS_SUFFIX, events, name="portal_events", allow_head=False)

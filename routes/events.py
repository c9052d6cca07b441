"""``GET <portal.path>/events``: the live pages' event stream (text/event-stream), one per open page.

Each change of the store's feed (gateway/store/feed.py) becomes an event for this visitor only if the pages'
visibility filter shows them the ticket now (``shows_ticket``, visible_clause's rule on the ticket as the store has
it now); what the event carries is what the page would show (state, update time, the public replies), never more. A
ticket the Intercom sync removed is no longer there to ask about: its event (its id alone) goes to the visitors whose
filter matched it, by the scope key and creator its change kept. A change's ticket is read once for every stream,
whatever its filter, and its event written to every live stream that may see it from one loop (:class:`Fanout`); a
page that stops reading ends its stream. ``Last-Event-ID`` resumes after the last event the page got; a page further
behind than the feed's retention gets a ``reload`` event. The stream re-checks the visitor's access (the access rules
on their current contact) at every change to their memberships or attributes and every ``portal.events.recheck``
seconds, and ends when that fails, when the token expires, or when the worker stops. One audit record per stream,
when it ends.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Literal

from aiohttp import HttpVersion11, web

from gateway.config import CONFIG, EventsConfig
from gateway.edge.guard import CLOCK, GUARD, STORE, VISIBILITY, VISITOR, Clock
from gateway.errors import BadRequest, ServiceBusy, StoreUnavailable, TooManyRequests
from gateway.namespace import EVENTS_SUFFIX
from gateway.observe.audit import AUDIT_ENTRY, StreamResult
from gateway.policy.visibility import Visitor
from gateway.run.periodic import periodic
from gateway.store.feed import ChangeHub, ring
from gateway.store.models import Change, TicketDetail, TicketFilter
from gateway.store.protocol import Store
from gateway.store.visibility import shows_scope, shows_ticket
from routes.portal import initials
from routes.timefmt import exact, iso, relative

HUB = web.AppKey("change_hub", ChangeHub)
_EVENT_ID = re.compile(r"[0-9]{1,18}")
RETRY_MS = 3000  # how long an EventSource waits before it reconnects (a stop, a network blip)
Ended = Literal["client_gone", "slow", "expired", "revoked", "shutdown", "error"]


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


class Fanout:
    """This worker's live streams by filter, and each change's event, read and built once, written to every live
    stream whose filter shows it, from one loop (the hub's pump): no task, no read and no frame per stream.

    A stream is live once it has sent everything up to the hub's newest change;
    until then (resuming, or after an access change of its visitor) its own task
    catches up with :meth:`event`, one change at a time.
    """

    def __init__(self, store: Store, clock: Clock, max_buffered: int) -> None:
        self._store = store
        self._clock = clock
        self._max_buffered = max_buffered
        self._live: dict[TicketFilter, list[_Stream]] = {}
        """Equal filters share one entry: a change's decision is one call per filter, however many streams."""
        self._done = 0
        """The newest change every live stream is done with: where one that leaves goes on from."""

    def join(self, stream: _Stream) -> None:
        """Make ``stream`` live: from now on it gets the events of changes after its cursor from :meth:`publish`."""
        streams = self._live.get(stream.visible)
        if streams is None:
            self._live[stream.visible] = [stream]
        else:
            # Equal filters, one object: a visitor's five pages hold one filter (its companies' set), not five.
            stream.visible = streams[0].visible
            streams.append(stream)

    def leave(self, stream: _Stream) -> None:
        """Stop writing to ``stream`` (no change if it is not live)."""
        streams = self._live.get(stream.visible, [])
        if stream in streams:
            streams.remove(stream)
            if not streams:
                del self._live[stream.visible]
            stream.cursor = max(stream.cursor, self._done)

    async def event(self, change: Change) -> tuple[Callable[[TicketFilter], bool], bytes] | None:
        """Who may see ``change`` (a pure decision per visibility filter) and its event; None when it is nobody's."""
        if change.ticket_id is None:
            return None
        if change.kind == "removed":
            scope, creator = change.scope, change.contact_id
            # SECURITY: the ticket is gone, so no read can ask about it: the scope key and creator it had, kept in the
            # change, are matched as the filter matched them; a visitor who could not see it learns nothing.
            frame = _frame("ticket", {"ticket": change.ticket_id, "kind": "removed"}, change.id)
            return (lambda visible: shows_scope(visible, scope, creator)), frame
        ticket = await self._store.changed_ticket(change.ticket_id)
        if ticket is None:
            return None
        # SECURITY: read once for every visitor: the event carries what the detail page shows every visitor (public
        # replies only; the detail depends on no visitor but for ``participant``, which no event carries), and who
        # gets it is shows_ticket's: visible_clause's rule on the ticket as it is now.
        frame = _frame("ticket", ticket_event(change, ticket.detail, self._clock()), change.id)
        return (lambda visible: shows_ticket(visible, ticket)), frame

    async def publish(self, changes: Sequence[Change], missed: int | None) -> None:
        """The hub's listener: each new change's event to the live streams that may see it, in order."""
        if missed is not None:  # the feed dropped changes before anyone read them: every live page reloads
            self._each(lambda _: True, missed, _chunk(_frame("reload", {"reason": "missed"}, missed)))
        for change in changes:
            if change.kind == "access":
                self._recheck(change)
                continue
            try:
                event = await self.event(change)
            except StoreUnavailable:  # the pages reconnect and resume from their last event: nothing is lost
                for streams in self._live.values():
                    for stream in streams:
                        stream.end("error")
                return
            if event is not None:
                self._each(event[0], change.id, _chunk(event[1]))  # one chunk for every stream: bytes are immutable
            self._done = change.id

    def _each(self, shows: Callable[[TicketFilter], bool], change_id: int, chunk: bytes) -> None:
        """Write ``chunk`` to every live stream whose filter ``shows`` the change (one decision per filter)."""
        for visible, streams in self._live.items():
            if shows(visible):
                for stream in streams:
                    stream.push(change_id, chunk, self._max_buffered)

    def _recheck(self, change: Change) -> None:
        """An access change: each live stream of its contact (all, for a company's) leaves until its own task has
        checked the visitor's access again. SECURITY: no later change's event reaches it on the old filter."""
        concerned = [stream for streams in self._live.values() for stream in streams if stream.concerns(change)]
        for stream in concerned:
            self.leave(stream)
            stream.recheck(change.id)


FANOUT = web.AppKey("fanout", Fanout)


async def feed_context(app: web.Application) -> AsyncIterator[None]:
    """Cleanup context: this worker's change hub, watching the store every ``store.change_poll`` seconds, and the
    fan-out it hands each change to."""
    config = app[CONFIG]
    fanout = app[FANOUT] = Fanout(app[STORE], app[CLOCK], config.portal.events.max_buffered)
    hub = app[HUB] = ChangeHub(app[STORE], fanout.publish)
    await hub.start()
    async with periodic(hub.pump, config.store.change_poll, name="change feed"):
        yield


async def end_streams(app: web.Application) -> None:
    """on_shutdown: end every stream now, so none holds the graceful stop (pages reconnect elsewhere)."""
    app[HUB].close()


def _chunk(frame: bytes) -> bytes:
    """``frame`` as one chunk of the response's chunked body: how the fan-out writes to a connection directly."""
    return b"%x\r\n%b\r\n" % (len(frame), frame)


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

    # Slots, and the filter made once: 5,000 idle streams hold 5,000 of these.
    __slots__ = (
        "alarm",
        "app",
        "cursor",
        "ended",
        "rechecking",
        "request",
        "response",
        "scope",
        "sent",
        "transport",
        "visible",
        "visitor",
    )

    def __init__(self, request: web.Request, response: web.StreamResponse, scope: Literal["all", "mine"]) -> None:
        self.request = request
        self.response = response
        self.transport = request.transport
        self.scope = scope
        self.visitor: Visitor = request[VISITOR]
        self.app = request.app
        self.visible = self.app[VISIBILITY].ticket_filter(self.visitor, scope)
        """The tickets the page shows; the stream ends (a reload) when the visitor's filter is another."""
        self.sent = 0
        self.cursor = 0
        """The newest change this stream is done with (sent, or not its visitor's)."""
        self.alarm: asyncio.Future[None] | None = None
        self.ended: Ended | None = None
        """Set by the fan-out when the stream must end (its task, woken, returns it)."""
        self.rechecking = False
        """Set by the fan-out on an access change of the visitor: the stream left it until its task checks again."""

    def concerns(self, change: Change) -> bool:
        """Whether an access change is one of this visitor's (None: a company's, everyone's)."""
        contact = self.visitor.contact
        return change.contact_id is None or (contact is not None and change.contact_id == contact.id)

    def push(self, change_id: int, chunk: bytes, max_buffered: int) -> None:
        """The fan-out's write of a change's event (one chunk) straight to the connection, without waiting: a page
        that stopped reading ends its stream once its connection holds ``portal.events.max_buffered`` bytes unsent,
        and blocks no other."""
        if change_id <= self.cursor or self.ended is not None:  # it caught up past the change on its own
            return
        self.cursor = change_id
        transport = self.transport
        if transport is None or transport.is_closing():
            self.end("client_gone")
        elif transport.get_write_buffer_size() > max_buffered:
            transport.abort()  # the page does not read: what it holds unsent is dropped, not sent in a drain
            self.end("slow")
        else:
            transport.write(chunk)
            self.sent += 1

    def end(self, why: Ended) -> None:
        """Make the stream's task end it (the fan-out decided: its page left or stopped reading, the store failed)."""
        self.ended = self.ended or why
        self._wake()

    def recheck(self, change_id: int) -> None:
        """An access change of the visitor: the stream's task checks their access, then catches up after it."""
        self.cursor = max(self.cursor, change_id)
        self.rechecking = True
        self._wake()

    def _wake(self) -> None:
        if self.alarm is not None:
            ring(self.alarm)

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
            return not self.concerns(change) or await self.unchanged()
        event = await self.app[FANOUT].event(change)
        if event is not None and event[0](self.visible):
            await self.response.write(event[1])
            self.sent += 1
        return True

    async def catch_up(self) -> bool:
        """Send, through this task, the changes after the cursor up to the hub's newest, then go live (the fan-out
        writes the rest); False when what the visitor may see changed."""
        hub = self.app[HUB]
        while True:
            batch = await hub.after(self.cursor)
            if batch.missed(self.cursor):
                self.cursor = await self.reload(batch.latest)
                continue
            if not batch.changes:
                # Nothing after the cursor up to the batch's newest id (from memory: the hub's; no await since).
                self.cursor = max(self.cursor, min(batch.latest, hub.latest))
                if self.cursor >= hub.latest:
                    self.app[FANOUT].join(self)
                    return True
            for change in batch.changes:
                if not await self.deliver(change):
                    return False
                self.cursor = change.id

    async def run(self, cursor: int) -> Ended:
        """Send events after ``cursor`` until the stream must end; why it ended."""
        hub, config, clock = self.app[HUB], self.app[CONFIG].portal.events, self.app[CLOCK]
        expires = self.visitor.identity.expires_at
        recheck_at = clock() + config.recheck
        self.cursor = cursor
        try:
            await self.response.write(f"retry: {RETRY_MS}\n: live\n\n".encode())
            # Sent with that first write: the 5,000 idle streams of one worker need not keep 1.5 KB of headers each.
            self.response.headers.clear()
            if not await self.catch_up():
                return await self.revoked()
            while True:
                now = clock()
                if expires is not None and now >= expires:
                    return "expired"
                if now >= recheck_at:
                    self.app[FANOUT].leave(self)
                    self.rechecking = True
                if self.rechecking:
                    self.rechecking = False
                    # SECURITY: off the fan-out meanwhile: nothing reaches the page before the check says yes.
                    if not await self.unchanged() or not await self.catch_up():
                        return await self.revoked()
                    recheck_at = clock() + config.recheck
                    continue
                until_expiry = config.heartbeat if expires is None else expires - now
                self.alarm = hub.alarm(max(0.0, min(config.heartbeat, recheck_at - now, until_expiry)))
                await self.alarm
                self.alarm = None
                if hub.closed:
                    return "shutdown"
                if self.ended is not None:
                    return self.ended
                if not self.rechecking:
                    await self.response.write(b": heartbeat\n\n")  # also how a page that left is noticed
        except ConnectionResetError:
            return self.ended or "client_gone"
        except StoreUnavailable:  # the response is under way: no error page can follow, the page reconnects
            return "error"
        finally:
            self.app[FANOUT].leave(self)

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
    if request.version < HttpVersion11:  # the fan-out writes each event as a chunk of a chunked body
        raise BadRequest("The event stream needs HTTP/1.1.")
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
        response.enable_chunked_encoding()
        await response.prepare(request)
        result = StreamResult(
            opened=datetime.fromtimestamp(request.app[CLOCK](), UTC).isoformat(timespec="milliseconds"),
            scope=scope,
            resumed=last is not None,
        )
        request[AUDIT_ENTRY].stream = result
        stream = _Stream(request, response, scope)
        cursor = int(last) if last is not None else request.app[HUB].latest
        result.ended = await stream.run(cursor)
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

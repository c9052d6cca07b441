"""A worker's one reader of the store's change feed, fanning news out to every event stream of the process.

The store records each change in the write's own transaction (any backend);
each worker process keeps one :class:`ChangeHub` that asks the store
:meth:`~gateway.store.protocol.Store.changes_pending` every ``store.change_poll``
seconds (``periodic()``) and, when something may have been committed, reads the
new changes once for all its streams and hands them to its one listener (the
event streams' fan-out, which writes each change's event to every live stream
from one loop). Streams never poll the store, so 5,000 idle streams cost no
reads at all; each holds an alarm (a future: the alarms that ring in the same
tick share one timer) for its heartbeat, and a stream that is behind takes the
changes after its own cursor from the hub's memory (or, when it is further
behind, from the store, which says whether retention dropped some of them).
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import Awaitable, Callable, Sequence

from gateway.store.models import Change, ChangeBatch
from gateway.store.protocol import Store

READ_BATCH = 500
"""Changes read from the store at once."""
KEPT = 2_000
"""Changes kept in memory: a stream less than this far behind reads nothing from the store."""
TICK = 0.05
"""Seconds an alarm is rounded up to: the alarms that ring in the same tick share one timer."""
Publish = Callable[[Sequence[Change], int | None], Awaitable[None]]
"""The hub's listener: the new changes, oldest first, and (when more were written since the last pump than
retention keeps) the newest change id, from which the streams that missed some go on after a reload; else None."""


class ChangeHub:
    """The newest changes in memory, handed to the listener as they arrive, and the streams' alarms."""

    def __init__(self, store: Store, publish: Publish, *, kept: int = KEPT) -> None:
        self._store = store
        self._publish = publish
        self._kept = kept
        self._recent: deque[Change] = deque()
        self._covered_from = 0  # every change after this id is in _recent (up to latest)
        # The streams' alarms by the tick they ring in, with that tick's one timer: a timer per stream was an idle
        # stream's largest item (530 bytes, times 5,000); a place in a list is 8.
        self._due: dict[int, tuple[list[asyncio.Future[None]], asyncio.TimerHandle]] = {}
        # The last answer from memory, by cursor and limit: the streams catching up together ask alike.
        self._answer: tuple[int, int, ChangeBatch] | None = None
        self.latest = 0
        """The newest change id this worker knows of: where a stream with nothing to resume from starts."""
        self.closed = False
        """Set when the worker stops: every stream ends."""

    async def start(self) -> None:
        """Learn the newest change id, so streams opened from now on start after it."""
        await self._store.changes_pending()  # take the counter's value now: only later commits are news
        self.latest = self._covered_from = (await self._store.changes_after(0, 0)).latest

    async def pump(self) -> None:
        """Read what was committed since the last pump, if anything may have been, and hand it to the listener."""
        if not await self._store.changes_pending():
            return
        before = self.latest
        fresh: list[Change] = []
        missed = False
        while True:
            batch = await self._store.changes_after(self.latest, READ_BATCH)
            if batch.missed(self.latest):  # more written since the last pump than retention keeps
                self._recent.clear()
                self._covered_from = batch.dropped_through
                missed = True
            self._recent.extend(batch.changes)
            fresh.extend(batch.changes)
            if len(batch.changes) == READ_BATCH:  # more to read after the last one
                self.latest = batch.changes[-1].id
                continue
            # All read, in one read of the store: nothing between the last change and the newest id is left.
            self.latest = max(self.latest, batch.latest)
            break
        while len(self._recent) > self._kept:
            self._covered_from = self._recent.popleft().id
        if self.latest != before:
            await self._publish(fresh, self.latest if missed else None)

    async def after(self, cursor: int, limit: int = READ_BATCH) -> ChangeBatch:
        """The changes after ``cursor``: from memory when it holds them all, else from the store."""
        if cursor >= self._covered_from:
            known = self._answer
            # Valid while the newest id is the same: memory grows only with it. A stream asking while the pump
            # reads (a heartbeat's wake) must not get that answer again once the news is in: told nothing is new
            # while it is behind, it would write heartbeats in a loop and never send the change.
            if known is not None and known[:2] == (cursor, limit) and known[2].latest == self.latest:
                return known[2]  # every stream a change woke is at the same cursor: one answer for all
            newer: list[Change] = []
            for change in reversed(self._recent):  # the newest are at the right: a live stream looks at few
                if change.id <= cursor:
                    break
                newer.append(change)
            newer.reverse()
            answer = ChangeBatch(tuple(newer[:limit]), self.latest, 0)
            self._answer = (cursor, limit, answer)
            return answer
        return await self._store.changes_after(cursor, limit)

    def alarm(self, seconds: float) -> asyncio.Future[None]:
        """A future done once ``seconds`` pass (at most a :data:`TICK` more) or the hub closes; its owner may end it
        sooner (a stream woken for its own news)."""
        loop = asyncio.get_running_loop()
        alarm = loop.create_future()
        if self.closed:
            alarm.set_result(None)
            return alarm
        # SECURITY: rounded up: a stream whose token expires ends at most a tick late (rounded down, it would wake
        # early and wait again, once more per tick).
        tick = math.ceil((loop.time() + seconds) / TICK)
        due = self._due.get(tick)
        if due is None:
            due = self._due[tick] = ([], loop.call_at(tick * TICK, self._ring, tick))
        # A bare future (an asyncio.Event's wait inside an asyncio.timeout() holds several times as much). An alarm
        # ended sooner stays in its tick's list, done, until the tick: ring() passes it by.
        due[0].append(alarm)
        return alarm

    def close(self) -> None:
        """End every stream (the worker is stopping: a stream must not hold the graceful stop)."""
        self.closed = True
        due, self._due = self._due, {}
        for alarms, timer in due.values():
            timer.cancel()
            for alarm in alarms:
                ring(alarm)

    def _ring(self, tick: int) -> None:
        alarms, _ = self._due.pop(tick)
        for alarm in alarms:
            ring(alarm)


def ring(alarm: asyncio.Future[None]) -> None:
    """End an alarm now, if nothing ended it yet (its tick, the close and its owner may all come first)."""
    if not alarm.done():
        alarm.set_result(None)

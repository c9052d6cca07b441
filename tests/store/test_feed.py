"""gateway/store/feed.py: the worker's change hub on a real store: a pump with news hands it to the listener once, an
alarm rings by itself after its seconds or when the hub closes, an idle stream costs the hub little, and a ticket
another opener forgot reaches the hub as a removal on every backend."""

from __future__ import annotations

import asyncio
import gc
import time
import tracemalloc
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

import pytest

from gateway.config import StoreConfig
from gateway.store.demo import demo_lines
from gateway.store.feed import ChangeHub, ring
from gateway.store.models import Change
from gateway.store.protocol import Store, open_store
from gateway.store.sqlite import SQLiteStore
from tests.store.contract.conftest import store_config
from tests.store.contract.test_mirror import ticket, world

__all__ = ["store_config"]  # the fixture: a fresh store of each backend

GUARD = 10.0  # seconds a wait that must end may take before the test fails (never a measure of speed)
FOREVER = 3600.0  # a wait's own seconds when only news or the close may end it


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    opened = await SQLiteStore.open(tmp_path / "portal.db")
    yield opened
    await opened.close()


Published = list[tuple[list[int], int | None]]


async def started(store: Store, published: Published | None = None) -> ChangeHub:
    """A started hub whose listener notes each call's change ids (and its missed id) in ``published``."""

    async def publish(changes: Sequence[Change], missed: int | None) -> None:
        if published is not None:
            published.append(([change.id for change in changes], missed))

    hub = ChangeHub(store, publish)
    await hub.start()
    return hub


async def test_a_pump_with_news_hands_each_change_once_and_in_order_to_the_listener(store: SQLiteStore) -> None:
    published: Published = []
    hub = await started(store, published)
    cursor = hub.latest
    await hub.pump()  # nothing written: nothing published
    assert published == []
    await store.seed(demo_lines(int(time.time())))
    await hub.pump()
    assert hub.latest > cursor
    ids = (await hub.after(cursor, limit=1_000)).changes  # the news, from memory
    assert published == [([change.id for change in ids], None)]
    assert ids[-1].id == hub.latest
    seeded = hub.latest
    assert (await hub.after(seeded)).changes == ()  # a stream caught up
    await store.update_ticket("1001", {"state": "Fixed"}, int(time.time()))
    await hub.pump()
    assert published[1:] == [([hub.latest], None)]  # only the next news
    assert [change.id for change in (await hub.after(seeded)).changes] == [hub.latest]


async def test_a_pump_further_behind_than_retention_tells_the_listener_where_to_go_on(tmp_path: Path) -> None:
    store = await SQLiteStore.open(tmp_path / "portal.db", change_retention=2)
    try:
        published: Published = []
        hub = await started(store, published)
        await store.seed(demo_lines(int(time.time())))  # many more changes than two
        await hub.pump()
        assert len(published) == 1
        ids, missed = published[0]
        assert missed == hub.latest
        assert len(ids) <= 2
    finally:
        await store.close()


async def test_a_stream_asking_while_the_pump_reads_gets_the_news_once_it_is_read(store: SQLiteStore) -> None:
    # A stream whose heartbeat comes while the pump reads the store asks the hub then: the hub's answer then (no
    # news) must not be what it gets once the news is in, or the stream, always behind and always told nothing
    # is new, writes heartbeats in a loop and never sends the change.
    await store.seed(demo_lines(int(time.time())))
    hub = await started(store)
    cursor = hub.latest
    await store.update_ticket("1001", {"state": "Fixed"}, int(time.time()))
    pumping = asyncio.create_task(hub.pump())
    asked_meanwhile = 0
    while not pumping.done():
        asked_meanwhile += (await hub.after(cursor)).changes == ()
        await asyncio.sleep(0)  # the pump goes on: its store reads run in the store's thread
    await pumping
    assert asked_meanwhile >= 1
    assert hub.latest > cursor
    assert [change.id for change in (await hub.after(cursor)).changes] == [hub.latest]


async def test_an_alarm_rings_after_its_seconds_and_on_close(store: SQLiteStore) -> None:
    hub = await started(store)
    await asyncio.wait_for(hub.alarm(0.01), GUARD)  # its own tick's timer
    waiting = hub.alarm(FOREVER)
    gone = hub.alarm(FOREVER)
    gone.cancel()  # its stream's task was cancelled (the worker stopping past its grace)
    early = hub.alarm(FOREVER)
    ring(early)  # its owner woke it (a stream's own news): the close passes it by
    hub.close()
    await asyncio.wait_for(waiting, GUARD)
    assert hub.closed
    assert hub.alarm(FOREVER).done()  # closed: done at once


async def held(count: int, waiting: Callable[[], Coroutine[Any, Any, None]]) -> float:
    """The bytes each of ``count`` tasks holds once it waits in ``waiting()``."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        tasks = [asyncio.create_task(waiting()) for _ in range(count)]
        await asyncio.sleep(0)  # each task runs up to its await
        return (tracemalloc.get_traced_memory()[0] - before) / len(tasks)
    finally:
        tracemalloc.stop()


async def test_an_idle_stream_costs_the_hub_little_memory(store: SQLiteStore) -> None:
    # 5,000 idle streams on one process (issue 17): what each holds while it waits counts 5,000 times. The
    # hub's part: beyond what any task waiting on a future holds (its task, its coroutine, the future).
    hub = await started(store)
    news = asyncio.get_running_loop().create_future()

    async def bare() -> None:
        await news

    async def on_hub() -> None:
        await hub.alarm(FOREVER)

    hubs_part = await held(1_000, on_hub) - await held(1_000, bare)
    hub.close()
    news.set_result(None)
    assert (
        0 < hubs_part < 400
    )  # a future and its place in its tick's list (a timer of its own: 800; an Event in a timeout(): 1,100)


async def caught_up(hub: ChangeHub, store: Store) -> None:
    """Pump until the hub knows of every change the store recorded (a notification takes a moment to arrive)."""
    recorded = (await store.changes_after(0, 0)).latest
    async with asyncio.timeout(GUARD):
        while hub.latest < recorded:
            await hub.pump()
            await asyncio.sleep(0.01)


async def test_a_ticket_another_opener_forgot_reaches_the_hub_as_a_removal_with_its_scope(
    store_config: StoreConfig,
) -> None:
    # The writer is another worker or node (its own connections): the hub learns of the commit as of any other.
    writer, watched = await open_store(store_config), await open_store(store_config)
    try:
        hub = await started(watched)
        await world(writer, ticket("t1", "1"))
        await caught_up(hub, writer)
        cursor = hub.latest
        assert await writer.forget("ticket", "t1") is True
        await caught_up(hub, writer)
        ann = await watched.contact_by_user_id("u-ann")
        assert ann is not None
        changes = (await hub.after(cursor)).changes
        assert [(change.kind, change.ticket_id, change.scope, change.contact_id) for change in changes] == [
            ("removed", "1", ann.companies[0].id, ann.id)
        ]
    finally:
        await writer.close()
        await watched.close()

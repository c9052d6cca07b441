"""gateway/run/server.py's collector settings: what ``serve`` sets and puts back, and the fan-out they are for (one
change waking thousands of idle event streams of a real change hub on a real store, each building its event while the
store's read is pending)."""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from gateway.run.server import YOUNG_COLLECTION, Running, serve, settle_collector
from gateway.run.tls import server_context
from gateway.store.demo import demo_lines
from gateway.store.feed import ChangeHub
from gateway.store.models import Change
from gateway.store.sqlite import SQLiteStore
from tests.conftest import MakeConfig

STREAMS = 5_000  # issue 17's benchmark: idle streams on one process


@pytest.fixture
def collector() -> Iterator[None]:
    """The collector as it was after the test: its settings are the whole process's."""
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


async def full_collections_in_a_fan_out(store: SQLiteStore, state: str) -> int:
    """How many full collections start while one change (the ticket to ``state``) reaches ``STREAMS`` idle streams."""
    loop = asyncio.get_running_loop()
    news, read = loop.create_future(), loop.create_future()  # the change; the one store read the streams wait for

    async def publish(changes: Sequence[Change], missed: int | None) -> None:
        news.set_result(None)

    hub = ChangeHub(store, publish)
    await hub.start()
    woken: list[dict[str, Any]] = []
    all_woken = asyncio.Event()

    async def stream() -> None:
        await news
        woken.append({"ticket": "1001", "parts": [{"author": str(n), "at": [n, n]} for n in range(8)]})
        if len(woken) == STREAMS:
            all_woken.set()
        await read  # its event in flight meanwhile, as a stream's is

    streams = [asyncio.create_task(stream()) for _ in range(STREAMS)]
    await asyncio.sleep(0)  # every stream waits
    full: list[int] = []

    def count(phase: str, info: dict[str, Any]) -> None:
        if phase == "start" and info["generation"] == 2:
            full.append(1)

    gc.collect()
    gc.callbacks.append(count)
    try:
        await store.update_ticket("1001", {"state": state}, int(time.time()))
        await hub.pump()
        await all_woken.wait()  # every stream woke and built its event
        read.set_result(None)
        await asyncio.gather(*streams)
    finally:
        gc.callbacks.remove(count)
    return len(full)


@pytest.mark.usefixtures("collector")
async def test_a_change_to_thousands_of_idle_streams_starts_no_full_collection(tmp_path: Path) -> None:
    store = await SQLiteStore.open(tmp_path / "portal.db")
    try:
        await store.seed(demo_lines(int(time.time())))
        settle: Callable[[], object]
        counts = {}
        for name, settle, state in (("freeze only", gc.freeze, "Fixed"), ("settled", settle_collector, "New")):
            settle()
            counts[name] = await full_collections_in_a_fan_out(store, state)  # a new state: a change each time
    finally:
        await store.close()
    # Each walks every live object of every stream: 0.3-0.5 s with 5,000 (bench/bench_events.py).
    assert counts["freeze only"] >= 1  # CPython's thresholds: the fan-out's young objects promoted until one starts
    assert counts["settled"] == 0


async def test_serving_collects_the_youngest_generation_less_often_and_restores_it_when_stopped(
    make_config: MakeConfig,
) -> None:
    """A request leaves no cyclic garbage (tests/proxy/test_proxy.py), so the collector's youngest generation runs
    every YOUNG_COLLECTION allocations instead of CPython's 700; the older generations keep their thresholds."""
    config = make_config()
    before = gc.get_threshold()
    serving: list[tuple[int, ...]] = []

    def ready(running: Running) -> None:
        serving.append(gc.get_threshold())
        os.kill(os.getpid(), signal.SIGTERM)  # serve's own handler: it stops as a supervisor would stop it

    try:
        await serve(config, server_context(config.tls.cert, config.tls.key), lambda: config, ready)
    finally:
        gc.unfreeze()  # serve froze what the test process holds
    assert serving == [(YOUNG_COLLECTION, *before[1:])]
    assert gc.get_threshold() == before

"""``serve``, in this process: how it tunes the cyclic garbage collector for the requests it serves."""

from __future__ import annotations

import gc
import os
import signal

from gateway.run.server import YOUNG_GENERATION, Running, serve
from gateway.run.tls import server_context
from tests.conftest import MakeConfig


async def test_serving_collects_the_youngest_generation_less_often_and_restores_it_when_stopped(
    make_config: MakeConfig,
) -> None:
    """A request leaves no cyclic garbage (tests/proxy/test_proxy.py), so the collector's youngest generation runs
    every YOUNG_GENERATION allocations instead of CPython's 700; the older generations keep their thresholds."""
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
    assert serving == [(YOUNG_GENERATION, *before[1:])]
    assert gc.get_threshold() == before

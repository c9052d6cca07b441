"""Background work on a period: a coroutine run every N seconds while a cleanup context lasts.

The JWKS refresh uses it today, the Intercom connector's sync will: started
when the app starts, cancelled (and awaited) when it stops. A run that fails
is logged and the next one still comes: one bad fetch must not end the loop
for the life of the process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

log = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]


@contextlib.asynccontextmanager
async def periodic(
    work: Callable[[], Awaitable[object]], seconds: float, *, name: str, sleep: Sleep = asyncio.sleep
) -> AsyncIterator[None]:
    """Run ``work()`` every ``seconds`` (the first run one period in) until the block exits; ``sleep`` is the
    clock, so tests decide when a period has passed."""

    async def loop() -> None:
        while True:
            await sleep(seconds)
            try:
                await work()
            except Exception:
                log.exception("%s failed; trying again in %g s", name, seconds)

    task = asyncio.create_task(loop(), name=name)
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

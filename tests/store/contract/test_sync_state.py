"""The Intercom sync's state in the store: checkpoints, and the one lease that lets exactly one worker sync."""

from __future__ import annotations

import asyncio

from gateway.store.protocol import Store

T0 = 1_767_225_600.0


async def test_a_checkpoint_is_none_until_saved_then_replaced(store: Store) -> None:
    assert await store.sync_checkpoint("tickets") is None
    await store.save_sync_checkpoint("tickets", "1767225600")
    await store.save_sync_checkpoint("tickets", "1767229200")
    await store.save_sync_checkpoint("contacts", "x")
    assert await store.sync_checkpoint("tickets") == "1767229200"
    assert await store.sync_checkpoint("contacts") == "x"


async def test_one_holder_at_a_time_until_the_lease_expires(store: Store) -> None:
    assert await store.acquire_lease("sync", "worker-1", 30, T0) is True
    assert await store.acquire_lease("sync", "worker-2", 30, T0 + 10) is False
    assert await store.acquire_lease("sync", "worker-1", 30, T0 + 20) is True  # renewed: now until T0 + 50
    assert await store.acquire_lease("sync", "worker-2", 30, T0 + 40) is False
    assert await store.acquire_lease("sync", "worker-2", 30, T0 + 50) is True  # expired: taken over
    assert await store.acquire_lease("sync", "worker-1", 30, T0 + 51) is False
    assert await store.acquire_lease("other", "worker-1", 30, T0 + 51) is True  # leases are by name


async def test_release_frees_the_lease_only_for_its_holder(store: Store) -> None:
    assert await store.acquire_lease("sync", "worker-1", 30, T0)
    await store.release_lease("sync", "worker-2")
    assert await store.acquire_lease("sync", "worker-2", 30, T0 + 1) is False
    await store.release_lease("sync", "worker-1")
    assert await store.acquire_lease("sync", "worker-2", 30, T0 + 1) is True


async def test_racing_holders_get_exactly_one_lease(store: Store) -> None:
    won = await asyncio.gather(*(store.acquire_lease("sync", f"worker-{n}", 30, T0) for n in range(8)))
    assert won.count(True) == 1

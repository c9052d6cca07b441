"""``serve`` with the connector on: the background sync fills the store (of each backend) through ``periodic()``."""

from __future__ import annotations

import asyncio

from gateway.config import StoreConfig
from gateway.edge.guard import STORE
from gateway.intercom.connector import INTERCOM
from tests.conftest import StartGateway
from tests.intercom.conftest import RunningFake
from tests.intercom.fake import ADMIN_ID, TOKEN
from tests.intercom.mirror import actual, expected
from tests.intercom.test_sync import populate


def connector_config(intercom: RunningFake, **overrides: object) -> dict[str, object]:
    """The ``intercom:`` section for the fake."""
    return {
        "enabled": True,
        "api_url": str(intercom.url).rstrip("/"),
        "access_token": TOKEN,
        "admin_id": ADMIN_ID,
        "sync_interval": 0.05,
        **overrides,
    }


async def test_serve_syncs_in_the_background(
    intercom: RunningFake, start_gateway: StartGateway, store_config: StoreConfig
) -> None:
    populate(intercom.fake)
    dsn = store_config.dsn.get_secret_value() if store_config.dsn else None
    where = {"backend": "postgres", "dsn": dsn} if store_config.backend == "postgres" else {}
    gateway = await start_gateway(intercom=connector_config(intercom), store=where)
    store = gateway.running.app[STORE]
    for _ in range(400):  # bounded: the first run comes one period in
        if await store.remote_ids("ticket"):
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.2)  # and one more period, so a run is not caught halfway
    assert await actual(store) == expected(intercom.fake)
    async with gateway.client.get(gateway.url / "metrics", headers={"Host": "help.example.com"}) as answer:
        exposition = await answer.text()
    assert 'gateway_intercom_syncs_total{outcome="ok"}' in exposition
    assert INTERCOM in gateway.running.app


async def test_serve_without_the_connector_makes_no_call(intercom: RunningFake, start_gateway: StartGateway) -> None:
    gateway = await start_gateway()
    await asyncio.sleep(0.2)
    assert intercom.fake.calls == []
    assert INTERCOM not in gateway.running.app

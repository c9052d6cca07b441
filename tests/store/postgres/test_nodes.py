"""Two gateway nodes on one PostgreSQL database: started at once (migrations and the demo seed raced), a
membership changed through one applying on the other's next request, and one syncer lease between them."""

from __future__ import annotations

import asyncio
from typing import Any

from gateway.edge.guard import STORE
from gateway.store.postgres import PostgresStore
from tests.conftest import Gateway, StartGateway
from tests.pgserver import PostgresServer
from tests.routes.adminapi import DEMO, customer_ticket_of, ok, portal, portal_json


async def two_nodes(start_gateway: StartGateway, postgres: PostgresServer, **overrides: Any) -> list[Gateway]:
    """Two gateways sharing one new database, started together (each migrates and seeds it if it can)."""
    store = {**DEMO["store"], "backend": "postgres", "dsn": postgres.database()}
    return list(await asyncio.gather(*(start_gateway(**{**DEMO, "store": store, **overrides}) for _ in range(2))))


async def view(gateway: Gateway, user_id: str, ticket: str) -> tuple[list[str], int]:
    """The companies a visitor has on this node, and whether the node shows them the ticket."""
    me = await portal_json(gateway, "/api/v1/me", user_id)
    detail = await portal(gateway, f"/api/v1/tickets/{ticket}", user_id)
    return [company["company_id"] for company in me["companies"]], detail.status


async def test_a_membership_changed_on_one_node_applies_on_the_other_at_its_next_request(
    start_gateway: StartGateway, postgres: PostgresServer
) -> None:
    a, b = await two_nodes(start_gateway, postgres)
    ticket = customer_ticket_of("acme")
    await ok(a, "POST", "/admin/api/contacts", {"user_id": "u-new", "email": "new@example.com"}, status=201)
    for _ in range(3):  # each node has read (and may have cached) the contact before every change
        assert await view(b, "u-new", ticket) == ([], 404)
        await ok(a, "PUT", "/admin/api/contacts/u-new/companies/acme")
        assert await view(b, "u-new", ticket) == (["acme"], 200)
        assert await view(b, "u-new", ticket) == (["acme"], 200)
        await ok(b, "DELETE", "/admin/api/contacts/u-new/companies/acme")
        assert await view(a, "u-new", ticket) == ([], 404)
        assert await view(b, "u-new", ticket) == ([], 404)


async def test_nodes_started_at_once_seed_the_demo_once(start_gateway: StartGateway, postgres: PostgresServer) -> None:
    a, b = await two_nodes(start_gateway, postgres)
    contacts = await a.running.app[STORE].contacts()
    assert [contact.user_id for contact in contacts] == [c.user_id for c in await b.running.app[STORE].contacts()]
    assert len({contact.user_id for contact in contacts}) == len(contacts) == 12


async def test_one_node_holds_the_sync_lease_until_it_expires_or_is_released(
    start_gateway: StartGateway, postgres: PostgresServer
) -> None:
    stores = [gateway.running.app[STORE] for gateway in await two_nodes(start_gateway, postgres)]
    assert all(isinstance(store, PostgresStore) for store in stores)
    a, b = (store for store in stores if isinstance(store, PostgresStore))
    now = 1_000.0
    for _ in range(5):  # asked at the same moment, exactly one gets it
        taken = await asyncio.gather(a.acquire_lease("sync", "a", 30, now), b.acquire_lease("sync", "b", 30, now))
        assert sorted(taken) == [False, True]
        holder, other = (a, "a") if taken[0] else (b, "b")
        assert await holder.acquire_lease("sync", other, 30, now + 10)  # renewed by its holder
        assert not await (b if holder is a else a).acquire_lease("sync", "ab".replace(other, ""), 30, now + 39)
        await holder.release_lease("sync", other)
        now += 100
    assert await b.acquire_lease("sync", "b", 30, now)
    await a.release_lease("sync", "a")  # not theirs: nothing changes
    assert not await a.acquire_lease("sync", "a", 30, now + 29)
    assert await a.acquire_lease("sync", "a", 30, now + 30)  # expired: taken over


async def test_a_checkpoint_is_shared_by_the_nodes(start_gateway: StartGateway, postgres: PostgresServer) -> None:
    a, b = (gateway.running.app[STORE] for gateway in await two_nodes(start_gateway, postgres))
    assert isinstance(a, PostgresStore)
    assert isinstance(b, PostgresStore)
    assert await b.sync_checkpoint("tickets") is None
    await a.save_sync_checkpoint("tickets", "cursor-1")
    await a.save_sync_checkpoint("tickets", "cursor-2")
    assert await b.sync_checkpoint("tickets") == "cursor-2"

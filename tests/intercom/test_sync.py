"""The sync from the fake into a real store of each backend: everything mirrored, incrementally, resumable, alone."""

from __future__ import annotations

import asyncio
import time

import pytest

from gateway.config import StoreConfig
from gateway.errors import IntercomUnauthorized, IntercomUnavailable
from gateway.intercom.client import IntercomClient
from gateway.intercom.sync import CHECKPOINT, LEASE, Syncer
from gateway.observe.metrics import Metrics
from gateway.store.protocol import Store, open_store
from tests.intercom.conftest import RunningFake
from tests.intercom.fake import FakeIntercom, Fault
from tests.intercom.mirror import actual, expected

SUPPORT = ("admin", "991", "Sam")


def populate(fake: FakeIntercom) -> dict[str, str]:
    """A workspace: two companies, a contact in twelve, tickets with every kind of part; the ids by name."""
    acme, globex = fake.add_company("acme", "Acme"), fake.add_company("globex", "Globex")
    many = tuple(fake.add_company(f"co-{n}", f"Company {n}") for n in range(11))
    ann = fake.add_contact("u-ann", "Ann", "ann@acme.example", (acme,))
    bob = fake.add_contact("u-bob", "Bob", "bob@example.com", (globex, *many))
    new = fake.add_state("submitted", "New", "Submitted")
    fake.add_state("resolved", "Closed", "Resolved")
    bug = fake.add_type("Bug report")
    first = fake.add_ticket(ann, "Export fails", type_id=bug, state_id=new, description="since Monday")
    fake.add_part(first, "comment", "<p>Any <b>news</b>?</p>", ("user", ann, "Ann"))
    fake.add_part(first, "note", "<p>customer is on the old plan</p>", SUPPORT)
    fake.add_part(first, "quick_reply", "<p>Looking into it</p>", SUPPORT)
    fake.add_part(first, "assignment", "<p>assigned to Sam</p>", SUPPORT)
    second = fake.add_ticket(bob, "Invoices missing", type_id=bug, state_id=new, category="Back-office", is_shared=True)
    fake.add_part(second, "comment", "<p>Still missing</p>", ("user", bob, "Bob"))
    fake.add_ticket(ann, "Internal tracker", type_id=bug, state_id=new, category="Tracker")
    return {"acme": acme, "ann": ann, "bob": bob, "first": first, "second": second, "new": new}


async def test_a_first_sync_mirrors_the_workspace(intercom: RunningFake, client: IntercomClient, store: Store) -> None:
    intercom.fake.scroll_page = 4  # companies across several scroll pages
    populate(intercom.fake)
    metrics = Metrics()
    report = await Syncer(client, store, metrics).run()
    assert report is not None
    assert await actual(store) == expected(intercom.fake)
    first = (await actual(store))["tickets"]["1"]
    assert first["parts"] == [("Any news?", True), ("customer is on the old plan", False), ("Looking into it", True)]
    assert first["company"] == "acme"
    assert (await actual(store))["tickets"]["2"]["company"] is None  # Bob is in twelve companies: none
    assert report.written["tickets"] == 3
    assert metrics.registry.get_sample_value("gateway_intercom_synced_total", {"kind": "tickets"}) == 3
    assert metrics.registry.get_sample_value("gateway_intercom_syncs_total", {"outcome": "ok"}) == 1
    assert (metrics.registry.get_sample_value("gateway_intercom_last_sync_timestamp_seconds") or 0) > 0
    assert await store.remote_conversation("1") == intercom.fake.tickets[ids_of(intercom.fake)["1"]]["conversation_id"]
    assert ("GET", f"/contacts/{ids_of_contact(intercom.fake, 'u-bob')}/companies", 200) in intercom.fake.calls


def ids_of(fake: FakeIntercom) -> dict[str, str]:
    return {ticket["ticket_id"]: key for key, ticket in fake.tickets.items()}


def ids_of_contact(fake: FakeIntercom, external_id: str) -> str:
    return next(key for key, contact in fake.contacts.items() if contact["external_id"] == external_id)


async def test_the_next_sync_reads_only_what_changed_since_the_checkpoint_less_the_overlap(
    intercom: RunningFake, client: IntercomClient, store: Store
) -> None:
    ids = populate(intercom.fake)
    for key, ticket in intercom.fake.tickets.items():
        if key != ids["first"]:
            ticket["updated_at"] -= 7200  # last changed well before the overlap window of the next sync
    syncer = Syncer(client, store)
    await syncer.run()
    intercom.fake.clock += 3600
    intercom.fake.update_ticket(ids["first"], title="Export fails on Mondays")
    intercom.fake.add_part(ids["first"], "note", "<p>escalated</p>", SUPPORT)
    report = await syncer.run()
    assert report is not None
    assert report.written["tickets"] == 1
    assert report.checkpoint == intercom.fake.tickets[ids["first"]]["updated_at"]
    assert await store.sync_checkpoint(CHECKPOINT) == str(report.checkpoint)
    assert await actual(store) == expected(intercom.fake)


async def test_an_expired_scroll_starts_again(intercom: RunningFake, client: IntercomClient, store: Store) -> None:
    intercom.fake.scroll_page, intercom.fake.scroll_expires_after = 3, 1
    populate(intercom.fake)
    await Syncer(client, store).run()
    assert await actual(store) == expected(intercom.fake)
    assert ("GET", "/companies/scroll", 404) in intercom.fake.calls


async def test_a_killed_sync_resumes_and_duplicates_nothing(
    intercom: RunningFake, client: IntercomClient, store: Store
) -> None:
    ids = populate(intercom.fake)
    await Syncer(client, store).run()
    intercom.fake.clock += 3600
    intercom.fake.add_part(ids["first"], "comment", "<p>and now?</p>", ("user", ids["ann"], "Ann"))
    intercom.fake.faults.extend([Fault("status", status=503)] * 3 * 4)  # every try of the next calls
    saved = await store.sync_checkpoint(CHECKPOINT)
    with pytest.raises(IntercomUnavailable):
        await Syncer(client, store).run()
    assert await store.sync_checkpoint(CHECKPOINT) == saved
    intercom.fake.faults.clear()
    await Syncer(client, store).run()
    await Syncer(client, store).run()
    assert await actual(store) == expected(intercom.fake)


async def test_a_full_sync_forgets_what_intercom_deleted(
    intercom: RunningFake, client: IntercomClient, store: Store
) -> None:
    ids = populate(intercom.fake)
    await Syncer(client, store).run()
    intercom.fake.delete_ticket(ids["second"])
    del intercom.fake.contacts[ids["bob"]]
    del intercom.fake.companies[ids["acme"]]
    report = await Syncer(client, store).run(full=True)
    assert report is not None
    assert report.forgotten == {"ticket": 1, "contact": 1, "company": 1}
    assert await actual(store) == expected(intercom.fake)


async def test_only_the_lease_holder_syncs(intercom: RunningFake, client: IntercomClient, store: Store) -> None:
    populate(intercom.fake)
    assert await store.acquire_lease(LEASE, "another-node", 120, time.time())
    assert await Syncer(client, store).run() is None
    assert intercom.fake.calls == []
    await store.release_lease(LEASE, "another-node")
    assert await Syncer(client, store).run() is not None
    assert await store.acquire_lease(LEASE, "another-node", 120, time.time())  # given up after


async def test_two_nodes_on_one_database_race_and_exactly_one_syncs(
    intercom: RunningFake, client: IntercomClient, store_config: StoreConfig
) -> None:
    populate(intercom.fake)
    # The first call to Intercom waits for the test: whoever took the lease holds it while the other tries.
    hold = Fault("hold")
    intercom.fake.faults.append(hold)
    nodes = [await open_store(store_config) for _ in range(2)]  # two gateways' stores on one database
    try:
        runs = [asyncio.create_task(Syncer(client, node, holder=f"node-{n}").run()) for n, node in enumerate(nodes)]
        done, _ = await asyncio.wait(runs, return_when=asyncio.FIRST_COMPLETED)
        assert [run.result() for run in done] == [None]  # the one without the lease skipped its turn
        await hold.held.wait()
        hold.gate.set()
        reports = await asyncio.gather(*runs)
        assert [report is None for report in reports].count(True) == 1
        skipped = nodes[reports.index(None)]
        assert await actual(skipped) == expected(intercom.fake)  # what the one synced, the other node serves
        assert await skipped.sync_checkpoint(CHECKPOINT) == str(next(r for r in reports if r).checkpoint)
        assert await Syncer(client, skipped).run() is not None  # the lease given up: the other's turn next
    finally:
        for node in nodes:
            await node.close()


async def test_a_refused_token_stops_the_sync_and_keeps_the_store(
    intercom: RunningFake, client: IntercomClient, store: Store
) -> None:
    populate(intercom.fake)
    await Syncer(client, store).run()
    intercom.fake.token = "rotated"
    metrics = Metrics()
    with pytest.raises(IntercomUnauthorized):
        await Syncer(client, store, metrics).run()
    assert metrics.registry.get_sample_value("gateway_intercom_syncs_total", {"outcome": "unauthorized"}) == 1
    assert await actual(store) == expected(intercom.fake)  # the portal keeps serving what it has

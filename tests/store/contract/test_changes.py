"""The change feed: every write records what changed (never a note's text), in its own transaction, with
monotonic ids; retention drops the oldest and says so; another worker learns of a commit cheaply."""

from __future__ import annotations

import asyncio

import pytest

from gateway.config import StoreConfig
from gateway.errors import Conflict
from gateway.store.demo import seed_if_empty
from gateway.store.lines import CompanyLine, ContactLine, Line, StateLine
from gateway.store.models import Change
from gateway.store.protocol import Store, open_store
from tests.store.contract.test_mirror import contact, reply, ticket, world
from tests.store.contract.test_records import NOW, new_ticket

TOLD_WITHIN = 10.0  # seconds a notification may take before the test fails (never a measure of speed)


@pytest.fixture
async def demo(store: Store) -> Store:
    """The store with the demo data in it."""
    assert await seed_if_empty(store, NOW) is True
    return store


async def after(store: Store, cursor: int) -> list[tuple[str, str | None]]:
    """The kinds and tickets of the changes after ``cursor``."""
    return [(change.kind, change.ticket_id) for change in (await store.changes_after(cursor, 1000)).changes]


async def latest(store: Store) -> int:
    return (await store.changes_after(0, 0)).latest


async def test_the_seed_records_each_ticket_and_reply_with_growing_ids(store: Store) -> None:
    assert (await store.changes_after(0, 10)).latest == 0
    await seed_if_empty(store, NOW)
    batch = await store.changes_after(0, 100_000)
    ids = [change.id for change in batch.changes]
    assert ids == sorted(set(ids))
    assert batch.latest == ids[-1]
    assert batch.dropped_through == 0
    kinds = {change.kind for change in batch.changes}
    assert {"created", "reply", "access"} <= kinds
    created = [change.ticket_id for change in batch.changes if change.kind == "created"]
    assert len(created) == len(set(created))
    assert "1001" in created


async def test_each_admin_write_records_what_it_changed_and_a_note_records_nothing(demo: Store) -> None:
    start = await latest(demo)
    ticket = await demo.create_ticket(new_ticket(ticket_id="T-1"), NOW)
    assert await after(demo, start) == [("created", "T-1")]
    start = await latest(demo)
    await demo.update_ticket("T-1", {"state": "Investigating"}, NOW + 1)
    await demo.update_ticket("T-1", {"title": "Export fails on Mondays"}, NOW + 2)
    await demo.update_ticket("T-1", {"state": "Investigating", "title": "Export fails on Mondays"}, NOW + 3)
    await demo.add_part("T-1", {"body": "We are on it", "public": True, "author": None, "author_name": None}, NOW + 4)
    await demo.add_part("T-1", {"body": "secret", "public": False, "author": None, "author_name": None}, NOW + 5)
    # SECURITY: the unchanged update (only updated_at moves) and the internal note record nothing at all.
    assert await after(demo, start) == [("state", "T-1"), ("updated", "T-1"), ("reply", "T-1")]
    assert ticket.ticket.ticket_id == "T-1"


async def test_a_refused_write_records_nothing(demo: Store) -> None:
    await demo.create_ticket(new_ticket(ticket_id="T-2"), NOW)
    start = await latest(demo)
    with pytest.raises(Conflict):
        await demo.create_ticket(new_ticket(ticket_id="T-2"), NOW)
    assert await after(demo, start) == []
    assert await latest(demo) == start


async def test_a_membership_or_contact_change_asks_that_contacts_streams_to_check_access(demo: Store) -> None:
    kim = next(contact for contact in await demo.contacts() if contact.user_id == "u-kim")
    start = await latest(demo)
    await demo.add_membership("u-kim", "acme")
    await demo.remove_membership("u-kim", "acme")
    await demo.update_contact("u-kim", {"email": "kim@acme.example.com"})
    await demo.update_company("acme", {"plan": "enterprise"})
    changes = (await demo.changes_after(start, 10)).changes
    assert [(change.kind, change.ticket_id, change.contact_id) for change in changes] == [
        ("access", None, kim.id),
        ("access", None, kim.id),
        ("access", None, kim.id),
        ("access", None, None),  # a company's attributes: every member's access, so everyone checks
    ]


async def test_an_import_records_its_changes(store: Store) -> None:
    lines: list[tuple[int, Line]] = [
        (1, CompanyLine(kind="company", company_id="acme", name="Acme")),
        (2, ContactLine(kind="contact", user_id="u-1", companies=["acme"])),
    ]
    assert await store.import_lines(lines, mode="each") == []
    assert await after(store, 0) == [("access", None)]
    start = await latest(store)
    assert await store.import_lines(lines[:1], mode="all") == []  # the same company again: nothing changed
    assert await after(store, start) == []


async def test_changes_come_in_pages_oldest_first(demo: Store) -> None:
    everything = (await demo.changes_after(0, 100_000)).changes
    pages: list[Change] = []
    cursor = 0
    while page := (await demo.changes_after(cursor, 7)).changes:
        assert len(page) <= 7
        pages.extend(page)
        cursor = page[-1].id
    assert pages == list(everything)


async def test_retention_keeps_the_newest_and_says_which_were_dropped(store_config: StoreConfig) -> None:
    store = await open_store(store_config.model_copy(update={"change_retention": 100}))
    try:
        await seed_if_empty(store, NOW)
        for number in range(150):
            await store.update_ticket("1001", {"title": f"title {number}"}, NOW)
        batch = await store.changes_after(0, 1000)
        assert len(batch.changes) == 100
        assert batch.changes[0].id > batch.dropped_through
        assert batch.changes[-1].id == batch.latest
        assert batch.missed(0)
        assert batch.missed(batch.dropped_through - 1)
        assert not batch.missed(batch.dropped_through)  # a reader who saw the last dropped one misses nothing
    finally:
        await store.close()


async def told(watcher: Store) -> None:
    """Return once ``changes_pending`` says a commit came: at once on SQLite (its counter moved), a moment after the
    commit on PostgreSQL (the notification comes on the listening connection); fail after ``TOLD_WITHIN`` s."""
    async with asyncio.timeout(TOLD_WITHIN):
        while True:
            if await watcher.changes_pending():
                return
            await asyncio.sleep(0.01)  # the listening connection's turn to read the notification


async def test_another_opener_learns_of_a_commit_without_reading_the_changes(
    store_config: StoreConfig, demo: Store
) -> None:
    watcher = await open_store(store_config)
    try:
        await watcher.changes_pending()  # the first answer may be True: from now on, only commits count
        assert await watcher.changes_pending() is False
        await demo.update_ticket("1001", {"state": "Fixed"}, NOW)
        await told(watcher)
        assert await watcher.changes_pending() is False
        assert (await watcher.changes_after(0, 0)).latest == await latest(demo)
    finally:
        await watcher.close()


async def test_the_connectors_writes_record_what_changed_and_a_ticket_synced_again_records_only_whats_new(
    store: Store,
) -> None:
    first, note = reply("first"), reply("a note", public=False, author=None)
    open_state = StateLine(kind="ticket_state", category="in_progress", internal_label="Open", external_label="Open")
    await world(store, open_state, ticket("t1", "1", parts=[first, note]))
    start = await latest(store)
    await store.mirror([ticket("t1", "1", parts=[first, note])])  # the sync's overlap reads it again
    assert await after(store, start) == []
    await store.mirror([ticket("t1", "1", state="Open", parts=[first, note, reply("second")])])
    assert await after(store, start) == [("state", "1"), ("reply", "1")]
    start = await latest(store)
    await store.mirror([ticket("t1", "1", state="Open", parts=[reply("first, edited"), note])])  # replaced whole
    assert await after(store, start) == [("reply", "1")]
    start = await latest(store)
    await store.mirror(
        [ticket("t1", "1", state="Open", parts=[reply("first, edited"), note, reply("x", public=False)])]
    )
    assert await after(store, start) == []  # SECURITY: a new note records nothing


async def test_a_forgotten_ticket_records_its_removal_with_the_scope_and_creator_it_had(store: Store) -> None:
    await world(
        store,
        contact("p2", "u-kim", name="Kim"),  # no company: her tickets' scope key is minus her
        ticket("t1", "1"),
        ticket("t2", "2", category="Tracker"),
        ticket("t3", "3", category="Back-office", is_shared=False),
        ticket("t4", "4", creator="u-kim"),
        ticket("t5", "5", creator="u-kim", category="Back-office", is_shared=True),
    )
    ann, kim = await store.contact_by_user_id("u-ann"), await store.contact_by_user_id("u-kim")
    assert ann is not None
    assert kim is not None
    start = await latest(store)
    for remote_id in ("t1", "t2", "t3"):
        assert await store.forget("ticket", remote_id) is True
    assert await store.forget("contact", "p2") is True  # her tickets go with her, each recorded
    changes = (await store.changes_after(start, 10)).changes
    # SECURITY: the Tracker and the unshared Back-office ticket, which no visitor could see, record nothing.
    assert [(change.kind, change.ticket_id, change.scope, change.contact_id) for change in changes] == [
        ("removed", "1", ann.companies[0].id, ann.id),
        ("removed", "4", -kim.id, kim.id),
        ("removed", "5", -kim.id, kim.id),
    ]
    assert [change.id for change in changes] == sorted({change.id for change in changes})
    assert await store.forget("ticket", "t1") is False
    assert await latest(store) == changes[-1].id  # nothing left to forget: nothing recorded

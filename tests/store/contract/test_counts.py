"""The list's total, creators and types come from ticket_scope_counts: after every kind of write, for every
visitor in both scopes, they agree with the tickets the list itself shows."""

from __future__ import annotations

from gateway.store.demo import seed_if_empty
from gateway.store.lines import TicketLine
from gateway.store.models import TicketFilter, TicketQuery
from gateway.store.protocol import Store
from tests.store.contract.test_mirror import ticket, world
from tests.store.contract.test_records import NOW, new_ticket

EVERYTHING = 10_000


async def assert_counts_agree(store: Store) -> int:
    """Check every contact's views; how many tickets they see in all (so a test knows its writes landed)."""
    seen = 0
    for contact in await store.contacts():
        for own_only in (False, True):
            visible = TicketFilter(frozenset(c.id for c in contact.companies), contact.id, own_only)
            page = await store.list_tickets(visible, TicketQuery(page_size=EVERYTHING))
            assert page.total == len(page.items), (contact.user_id, own_only)
            creators = await store.creators(visible)
            assert {name for _, name in creators} == {item.creator_name for item in page.items}
            types = await store.visible_types(visible)
            assert {kind.name for kind in types} == {item.type_name for item in page.items}
            for kind in types:
                narrowed = await store.list_tickets(visible, TicketQuery(type_id=kind.id, page_size=EVERYTHING))
                assert narrowed.total == sum(item.type_name == kind.name for item in page.items)
            for creator_id, name in creators:
                narrowed = await store.list_tickets(visible, TicketQuery(creator_id=creator_id, page_size=EVERYTHING))
                assert narrowed.total == sum(item.creator_name == name for item in page.items)
            seen += page.total
    return seen


async def test_counts_follow_the_admin_api_and_membership_changes(store: Store) -> None:
    await seed_if_empty(store, NOW)
    before = await assert_counts_agree(store)
    await store.create_ticket(new_ticket(ticket_id="T-1"), NOW)
    await store.create_ticket(new_ticket(ticket_id="T-2", category="Back-office"), NOW)
    after_create = await assert_counts_agree(store)
    assert after_create > before
    await store.update_ticket("T-2", {"is_shared": True}, NOW + 1)  # now shown
    assert await assert_counts_agree(store) > after_create
    await store.update_ticket("T-1", {"category": "Tracker"}, NOW + 2)  # never shown
    await store.update_ticket("T-2", {"ticket_type": "Feature request"}, NOW + 3)
    await assert_counts_agree(store)
    await store.create_ticket(new_ticket(ticket_id="T-3", creator="u-ben", company="acme"), NOW)
    await store.update_ticket("T-3", {"company": "globex"}, NOW + 4)  # another scope
    await assert_counts_agree(store)
    await store.remove_membership("u-ben", "globex")
    await store.add_membership("u-kim", "acme")
    await assert_counts_agree(store)


async def test_counts_follow_the_importer(store: Store) -> None:
    await seed_if_empty(store, NOW)
    before = await assert_counts_agree(store)
    line = TicketLine(
        kind="ticket",
        ticket_id="I-1",
        type="Bug report",
        state="New",
        category="Customer",
        company="acme",
        creator="u-ann",
        title="Imported",
        created_at=NOW,
        updated_at=NOW,
    )
    assert await store.import_lines([(1, line)], mode="each") == []
    assert await store.import_lines([(1, line.model_copy(update={"ticket_id": "I-2"}))], mode="all") == []
    tracker = line.model_copy(update={"ticket_id": "I-3", "category": "Tracker"})
    assert await store.import_lines([(1, tracker)], mode="each") == []
    assert await assert_counts_agree(store) > before


async def test_counts_follow_the_mirror_and_forget(store: Store) -> None:
    await world(store, ticket("t1", "1"), ticket("t2", "2"), ticket("t3", "3", category="Back-office"))
    assert await assert_counts_agree(store) == 2 * 2
    shared = ticket("t3", "3", category="Back-office", is_shared=True)
    await store.mirror([ticket("t2", "2", category="Tracker"), shared])
    assert await assert_counts_agree(store) == 2 * 2  # t2 is internal now, t3 shared
    assert await store.forget("ticket", "t1") is True
    assert await assert_counts_agree(store) == 1 * 2

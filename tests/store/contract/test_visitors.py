"""What visitors read through the store's interface: the demo through the visibility filter, fresh contacts."""

from __future__ import annotations

import time
from dataclasses import replace

from gateway.store.demo import seed_if_empty
from gateway.store.models import Contact, TicketFilter, TicketQuery
from gateway.store.protocol import Store
from gateway.store.visibility import shows_ticket


def sees_everything(store_ids: frozenset[int], contact_id: int | None) -> TicketFilter:
    return TicketFilter(company_ids=store_ids, contact_id=contact_id, own_only=False)


def companies_of(contact: Contact | None) -> list[str]:
    assert contact is not None
    return [company.company_id for company in contact.companies]


async def test_demo_tickets_are_readable_through_the_visibility_filter(store: Store) -> None:
    await seed_if_empty(store, int(time.time()))
    contacts = await store.contacts()
    total = 0
    for contact in contacts:
        visible = sees_everything(frozenset(c.id for c in contact.companies), contact.id)
        page = await store.list_tickets(visible, TicketQuery(page_size=200))
        total += page.total
        assert page.total == len(page.items)
    assert total > 0


async def test_a_commit_through_the_store_empties_the_contact_cache(store: Store) -> None:
    """A membership the admin API ends through the store is gone from the very next read (no cache outlives it)."""
    await seed_if_empty(store, int(time.time()))
    assert companies_of(await store.contact_by_user_id("u-ben")) == ["acme", "globex"]
    await store.remove_membership("u-ben", "globex")
    assert companies_of(await store.contact_by_user_id("u-ben")) == ["acme"]


async def test_a_changed_ticket_read_once_shows_it_to_exactly_whom_get_ticket_shows_it(store: Store) -> None:
    """The event streams read a changed ticket with no filter and decide each visitor's with shows_ticket().

    SECURITY: for every demo ticket and every visitor's filter (and the filters that see nothing), the pure
    decision is the store's own visible_clause, and the detail is the one get_ticket gives whoever sees it."""
    await seed_if_empty(store, int(time.time()))
    filters = [TicketFilter(frozenset(), None, own_only=False), TicketFilter(frozenset(), None, own_only=True)]
    for contact in await store.contacts():
        companies = frozenset(company.id for company in contact.companies)
        filters += [TicketFilter(companies, contact.id, own_only=own_only) for own_only in (False, True)]
    every = await store.find_tickets(None, None, 1, 500)
    assert every.total == len(every.items) > 0
    for item in every.items:
        ticket = await store.changed_ticket(item.ticket_id)
        assert ticket is not None
        for visible in filters:
            detail = await store.get_ticket(visible, item.ticket_id)
            assert shows_ticket(visible, ticket) == (detail is not None), (item, visible)
            if detail is not None:
                assert replace(detail, participant=False) == ticket.detail
    assert await store.changed_ticket("no-such-ticket") is None

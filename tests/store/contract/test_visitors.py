"""What visitors read through the store's interface: the demo through the visibility filter, fresh contacts."""

from __future__ import annotations

import time

from gateway.store.demo import seed_if_empty
from gateway.store.models import Contact, TicketFilter, TicketQuery
from gateway.store.protocol import Store


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

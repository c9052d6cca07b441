"""What the store should hold after a sync of the fake, and what it does hold, in one comparable shape."""

from __future__ import annotations

from typing import Any

from gateway.intercom.objects import INTERNAL_PARTS, PUBLIC_PARTS, text_of
from gateway.store.models import TicketFilter
from gateway.store.protocol import Store
from tests.intercom.fake import FakeIntercom

View = dict[str, Any]


def expected(fake: FakeIntercom) -> View:
    """The fake's workspace as the portal should mirror it (contacts without an external id left out)."""
    company_ids = {key: company["company_id"] for key, company in fake.companies.items()}
    contacts = {}
    for key, contact in fake.contacts.items():
        member_of = sorted(company_ids[c] for c in fake.links.get(key, []) if c in company_ids)
        contacts[contact["external_id"]] = (contact["name"], contact["email"], member_of)
    tickets = {}
    for ticket in fake.tickets.values():
        creator = fake.contacts[ticket["contacts"][0]]["external_id"]
        member_of = contacts[creator][2]
        parts = [
            (text_of(part["body"]), part["part_type"] in PUBLIC_PARTS)
            for part in ticket["parts"]
            if part["part_type"] in PUBLIC_PARTS | INTERNAL_PARTS
        ]
        tickets[ticket["ticket_id"]] = {
            "title": ticket["title"],
            "state": fake.ticket_states[ticket["state_id"]]["internal_label"],
            "category": ticket["category"],
            "is_shared": ticket["is_shared"],
            "company": member_of[0] if len(member_of) == 1 else None,
            "creator": creator,
            "parts": parts,
        }
    return {"companies": set(fake.companies), "contacts": contacts, "tickets": tickets}


async def actual(store: Store) -> View:
    """What the store holds, read through the Store protocol; asserts no visitor is shown a note."""
    people = {contact.user_id: contact for contact in await store.contacts()}
    contacts = {key: (c.name, c.email, sorted(co.company_id for co in c.companies)) for key, c in people.items()}
    page = await store.find_tickets(None, None, 1, 100_000)
    tickets = {}
    for item in page.items:
        detail = await store.support_ticket(item.ticket_id)
        parts = [(part.body, part.public) for part in detail.parts]
        tickets[item.ticket_id] = {
            "title": item.title,
            "state": item.state.internal_label,
            "category": item.category,
            "is_shared": item.is_shared,
            "company": item.company_id,
            "creator": item.creator,
            "parts": parts,
        }
        creator = people[item.creator]
        # SECURITY: the creator's own view of the ticket holds its public parts and never a note.
        visible = TicketFilter(frozenset(company.id for company in creator.companies), creator.id, own_only=True)
        shown = await store.get_ticket(visible, item.ticket_id)
        if shown is not None:
            assert [p.body for p in shown.parts] == [body for body, public in parts if public]
    return {"companies": await store.remote_ids("company"), "contacts": contacts, "tickets": tickets}

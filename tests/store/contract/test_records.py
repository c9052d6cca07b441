"""The admin API's records, the importer's modes and the demo seed, through the store's interface."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from gateway.config import StoreConfig
from gateway.errors import Conflict, Invalid, Missing
from gateway.store.demo import demo_lines, seed_if_empty
from gateway.store.importer import import_lines
from gateway.store.lines import CompanyLine, ContactLine, LineError
from gateway.store.models import AdminCompany, AdminContact, TicketFilter
from gateway.store.protocol import Store, open_store

NOW = 1_767_225_600
ACME = {"company_id": "acme", "name": "Acme", "plan": "pro", "size": 40, "monthly_spend": None}


@pytest.fixture
async def demo(store: Store) -> Store:
    """The store with the demo data in it."""
    assert await seed_if_empty(store, NOW) is True
    return store


def new_ticket(**fields: Any) -> dict[str, Any]:
    """Every field of the admin API's TicketIn, as its handler passes them."""
    return {
        "ticket_id": None,
        "ticket_type": "Bug report",
        "state": "New",
        "category": "Customer",
        "is_shared": False,
        "company": None,
        "creator": "u-ann",
        "title": "Export fails",
        "description": "since Monday",
        "created_at": None,
        **fields,
    }


async def test_a_company_is_created_once_merged_on_update_and_deleted_when_nothing_needs_it(store: Store) -> None:
    created = await store.create_company({**ACME, "custom_attributes": {"tier": "gold", "region": "eu"}})
    assert created == AdminCompany("acme", "Acme", "pro", 40, None, {"tier": "gold", "region": "eu"}, 0)
    with pytest.raises(Conflict):
        await store.create_company({**ACME, "custom_attributes": {}})
    updated = await store.update_company("acme", {"plan": "enterprise", "custom_attributes": {"tier": None, "x": 1}})
    assert (updated.name, updated.plan, updated.custom_attributes) == ("Acme", "enterprise", {"region": "eu", "x": 1})
    assert await store.company("acme") == updated
    await store.delete_company("acme")
    for missing in (store.company("acme"), store.delete_company("acme"), store.update_company("acme", {})):
        with pytest.raises(Missing):
            await missing


async def test_memberships_change_only_through_their_own_calls(store: Store) -> None:
    await store.create_company({**ACME, "custom_attributes": {}})
    contact = await store.create_contact({"user_id": "u-zed", "email": None, "name": "Zed", "custom_attributes": {}})
    assert contact == AdminContact("u-zed", None, "Zed", {}, ())
    assert (await store.add_membership("u-zed", "acme")).companies == ("acme",)
    assert (await store.add_membership("u-zed", "acme")).companies == ("acme",)  # already a member: no change
    assert (await store.update_contact("u-zed", {"name": "Zed Z"})).companies == ("acme",)
    assert (await store.company("acme")).user_count == 1
    with pytest.raises(Conflict):
        await store.create_contact({"user_id": "u-zed", "email": None, "name": "Twin", "custom_attributes": {}})
    assert (await store.remove_membership("u-zed", "acme")).companies == ()
    with pytest.raises(Missing):
        await store.remove_membership("u-zed", "acme")
    with pytest.raises(Missing):
        await store.add_membership("u-zed", "nope")
    await store.delete_contact("u-zed")
    assert await store.contact_by_user_id("u-zed") is None


async def test_a_membership_another_worker_removes_is_gone_for_a_request_arriving_after_it(
    demo: Store, store_config: StoreConfig
) -> None:
    """SECURITY: whatever this worker checked for the requests before it, one that arrives after the removal's
    commit (the visitor's next request) is decided without the membership."""
    worker = await open_store(store_config)
    try:
        before = time.monotonic_ns()
        member = await worker.contact_by_user_id("u-ben", before)
        assert member is not None
        assert "globex" in [company.company_id for company in member.companies]
        assert await worker.contact_by_user_id("u-ben", before) == member  # answered again, as of its arrival
        await demo.remove_membership("u-ben", "globex")  # the admin API, on another worker or node
        after = await worker.contact_by_user_id("u-ben", time.monotonic_ns())
        assert after is not None
        assert "globex" not in [company.company_id for company in after.companies]
    finally:
        await worker.close()


async def test_a_ticket_is_raised_changed_and_answered_and_its_notes_stay_internal(demo: Store) -> None:
    raised = await demo.create_ticket(new_ticket(), NOW)
    ticket = raised.ticket
    # The next free numeric id; Ann is in one company only, so the ticket is that company's.
    assert (ticket.ticket_id, ticket.company_id, ticket.creator, ticket.created_at) == ("1201", "acme", "u-ann", NOW)
    assert (ticket.state.internal_label, ticket.state.external_label, raised.parts) == ("New", "Submitted", ())
    with pytest.raises(Conflict):
        await demo.create_ticket(new_ticket(ticket_id="1201"), NOW)
    with pytest.raises(Invalid):
        await demo.create_ticket(new_ticket(state="Limbo", ticket_type="Novel"), NOW)
    changed = await demo.update_ticket("1201", {"state": "Investigating", "is_shared": True}, NOW + 5)
    assert (changed.ticket.state.external_label, changed.ticket.is_shared, changed.ticket.updated_at) == (
        "In progress",
        True,
        NOW + 5,
    )
    note = {"body": "quokka inside", "public": False, "author": None, "author_name": "Sam", "created_at": None}
    noted = await demo.add_part("1201", note, NOW + 9)
    assert [(part.author_name, part.public) for part in noted.parts] == [("Sam", False)]
    assert noted.ticket.updated_at == NOW + 9
    assert await demo.support_ticket("1201") == noted
    ann = next(contact for contact in await demo.contacts() if contact.user_id == "u-ann")
    seen = await demo.get_ticket(TicketFilter(frozenset(c.id for c in ann.companies), ann.id, False), "1201")
    assert seen is not None
    assert seen.parts == ()  # the note never reaches a visitor
    found = await demo.find_tickets("acme", "export fails", 1, 5)
    assert [item.ticket_id for item in found.items][:1] == ["1201"]
    assert (found.page, found.page_size) == (1, 5)
    with pytest.raises(Missing):
        await demo.find_tickets("nope", None, 1, 5)
    with pytest.raises(Missing):
        await demo.support_ticket("9999")


async def test_an_import_mode_decides_what_is_kept(store: Store) -> None:
    good = CompanyLine(kind="company", company_id="acme", name="Acme")
    orphan = (2, ContactLine(kind="contact", user_id="u-1", companies=["nope"]))
    refused = [(2, "company 'nope' is not in the store")]
    assert await store.import_lines([(1, good), orphan], mode="check") == refused
    assert await store.import_lines([(1, good), orphan], mode="all") == refused
    with pytest.raises(Missing):
        await store.company("acme")  # all or none: none
    assert await store.import_lines([(1, good)], mode="check") == []
    with pytest.raises(Missing):
        await store.company("acme")  # a check keeps nothing, even when every line is fine
    assert await store.import_lines([(1, good), orphan], mode="each") == refused
    assert (await store.company("acme")).name == "Acme"


async def test_the_seed_writes_once_and_a_refused_line_writes_nothing(store: Store) -> None:
    with pytest.raises(LineError):
        await store.seed([*demo_lines(NOW), ContactLine(kind="contact", user_id="u-1", companies=["nope"])])
    assert await store.contacts() == []
    assert await store.seed(demo_lines(NOW)) is True
    assert await store.seed(demo_lines(int(time.time()))) is False
    assert len(await store.contacts()) == sum(isinstance(line, ContactLine) for line in demo_lines(NOW))


async def test_a_strict_import_with_an_unparsable_line_keeps_nothing_it_could_write(store: Store) -> None:
    company = json.dumps({"kind": "company", "company_id": "a", "name": "A"})
    report = await import_lines(store, ["", "not json", company], strict=True)
    assert (report.written, [number for number, _ in report.errors]) == (0, [2])
    with pytest.raises(Missing):
        await store.company("a")

"""The store as a mirror of an Intercom workspace: upserts by Intercom id, replaced conversations, deletions."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.store.lines import CompanyLine, ContactLine, Line, LineError, PartLine, StateLine, TicketLine
from gateway.store.models import TicketFilter, TicketQuery
from gateway.store.protocol import Store

T0 = 1_767_225_600
STATE = StateLine(kind="ticket_state", category="submitted", internal_label="New", external_label="Submitted")


def company(remote_id: str, company_id: str, name: str = "Acme") -> CompanyLine:
    return CompanyLine(kind="company", remote_id=remote_id, company_id=company_id, name=name)


def contact(remote_id: str, user_id: str, *companies: str, name: str = "Ann") -> ContactLine:
    return ContactLine(kind="contact", remote_id=remote_id, user_id=user_id, name=name, companies=list(companies))


def ticket(remote_id: str, ticket_id: str, creator: str = "u-ann", **fields: Any) -> TicketLine:
    values: dict[str, Any] = {
        "kind": "ticket",
        "remote_id": remote_id,
        "conversation": f"conv-{remote_id}",
        "ticket_id": ticket_id,
        "type": "Bug",
        "state": "New",
        "category": "Customer",
        "creator": creator,
        "title": "Export fails",
        "created_at": T0,
        "updated_at": T0,
        "participants": [creator],
        **fields,
    }
    return TicketLine(**values)


def reply(body: str, *, public: bool = True, author: str | None = "u-ann") -> PartLine:
    return PartLine(author=author, author_name=None if author else "Sam", body=body, public=public, created_at=T0)


async def world(store: Store, *more: Line) -> None:
    await store.mirror(
        [STATE, company("c1", "acme"), company("c2", "globex", "Globex"), contact("p1", "u-ann", "acme"), *more]
    )


async def ann_sees(store: Store) -> dict[str, Any]:
    ann = await store.contact_by_user_id("u-ann")
    assert ann is not None
    visible = TicketFilter(frozenset(c.id for c in ann.companies), ann.id, own_only=False)
    page = await store.list_tickets(visible, TicketQuery())
    shown = {}
    for item in page.items:
        detail = await store.get_ticket(visible, item.ticket_id)
        assert detail is not None
        shown[item.ticket_id] = (
            item.title,
            item.company_name,
            [part.body for part in detail.parts],
            detail.participant,
        )
    return shown


async def test_a_mirrored_ticket_is_replaced_whole_and_notes_stay_internal(store: Store) -> None:
    await world(store, ticket("t1", "1", parts=[reply("first"), reply("a note", public=False, author=None)]))
    await store.mirror([ticket("t1", "1", title="Export fails on Mondays", parts=[reply("edited")])])
    await store.mirror([ticket("t1", "1", title="Export fails on Mondays", parts=[reply("edited")])])  # again
    assert await ann_sees(store) == {"1": ("Export fails on Mondays", "Acme", ["edited"], True)}
    assert await store.remote_id("ticket", "1") == "t1"
    assert await store.remote_conversation("1") == "conv-t1"


async def test_the_company_is_the_creators_only_one_and_follows_their_memberships(store: Store) -> None:
    await world(store, ticket("t1", "1"))
    assert (await ann_sees(store))["1"][1] == "Acme"
    await store.mirror([contact("p1", "u-ann", "acme", "globex")])  # two companies: the ticket has none
    assert (await ann_sees(store))["1"][1] is None
    await store.mirror([contact("p1", "u-ann", "globex")])
    assert (await ann_sees(store))["1"][1] == "Globex"


async def test_records_are_found_by_intercom_id_when_their_own_id_changes(store: Store) -> None:
    await world(store, ticket("t1", "1"))
    await store.mirror([company("c1", "acme-inc", "Acme Inc"), contact("p1", "u-ann-2", "acme-inc")])
    assert await store.remote_id("company", "acme-inc") == "c1"
    assert await store.remote_id("company", "acme") is None
    assert await store.remote_id("contact", "u-ann-2") == "p1"
    assert await store.remote_ids("contact") == {"p1"}


async def test_forget_removes_what_intercom_deleted(store: Store) -> None:
    await world(
        store, contact("p2", "u-bob", "acme", name="Bob"), ticket("t1", "1", parts=[reply("hi", author="u-bob")])
    )
    await store.mirror([ticket("t2", "2", creator="u-bob")])
    assert await store.forget("ticket", "t2") is True
    assert await store.forget("ticket", "t2") is False
    assert await store.forget("contact", "p2") is True  # Bob's reply stays on Ann's ticket, unsigned
    assert (await ann_sees(store))["1"][2] == ["hi"]
    assert await store.forget("company", "c1") is True
    assert await store.remote_ids("company") == {"c2"}
    assert await store.remote_ids("ticket") == {"t1"}


async def test_a_line_naming_what_is_not_there_writes_nothing(store: Store) -> None:
    await world(store)
    with pytest.raises(LineError, match="creator"):
        await store.mirror([company("c3", "initech", "Initech"), ticket("t9", "9", creator="u-nobody")])
    assert await store.remote_id("company", "initech") is None


async def test_the_importer_records_intercoms_ids(store: Store) -> None:
    """An import of the connector's lines keeps Intercom's ids, so the next sync finds the same records."""
    lines: list[Line] = [STATE, company("c1", "acme"), contact("p1", "u-ann", "acme"), ticket("t1", "7")]
    assert await store.import_lines(list(enumerate(lines, 1)), mode="all") == []
    assert await store.remote_id("company", "acme") == "c1"
    assert await store.remote_id("contact", "u-ann") == "p1"
    assert await store.remote_id("ticket", "7") == "t1"
    assert await store.remote_conversation("7") == "conv-t1"

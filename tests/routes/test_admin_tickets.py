"""Admin API tickets under the association rules, replies and internal notes, and the support views (a
company's Tickets tab, search for duplicates)."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from tests.conftest import CANARY, Gateway, StartGateway
from tests.routes.adminapi import (
    DEMO,
    TICKETS,
    call,
    demo_ticket_ids,
    demo_tickets,
    dump,
    new_ticket,
    ok,
    portal,
    portal_json,
)

# --- tickets and the association rules ---------------------------------------------------------------

ASSOCIATION: dict[str, tuple[str, str | None, str | None]] = {
    # case: (creator, company asked for, company associated)
    "one company: associated with it": ("u-ann", None, "acme"),
    "one company, asked for": ("u-ann", "acme", "acme"),
    "several companies: none until one is chosen": ("u-ben", None, None),
    "several companies, one chosen": ("u-ben", "globex", "globex"),
    "no company": ("u-kim", None, None),
}
REFUSED_ASSOCIATION: dict[str, tuple[str, str]] = {
    # case: (creator, company asked for)
    "another company": ("u-ann", "globex"),
    "not among several": ("u-ben", "initech"),
    "no company at all": ("u-kim", "acme"),
    "a company that does not exist": ("u-ann", "nope"),
}


@pytest.mark.parametrize("case", sorted(ASSOCIATION))
async def test_a_new_ticket_follows_the_association_rules(start_gateway: StartGateway, case: str) -> None:
    creator, requested, expected = ASSOCIATION[case]
    gateway = await start_gateway(**DEMO)
    body = new_ticket(creator) if requested is None else new_ticket(creator, company=requested)
    created = await ok(gateway, "POST", TICKETS, body, status=201)
    assert created["company_id"] == expected
    assert created["creator"] == creator
    assert created["ticket_id"] not in {line.ticket_id for line in demo_tickets()}
    assert await ok(gateway, "GET", f"{TICKETS}/{created['ticket_id']}") == created


@pytest.mark.parametrize("case", sorted(REFUSED_ASSOCIATION))
async def test_a_new_ticket_in_a_company_its_creator_is_not_in_is_refused(
    start_gateway: StartGateway, case: str
) -> None:
    creator, requested = REFUSED_ASSOCIATION[case]
    gateway = await start_gateway(**DEMO)
    before = dump(gateway)
    refused = await call(gateway, "POST", TICKETS, new_ticket(creator, company=requested))
    assert refused.status == 422
    assert refused.error["fields"][0]["path"] == "company"
    assert refused.paths == ["company"]
    assert dump(gateway) == before


async def test_a_ticket_of_a_creator_in_several_companies_gets_one_when_chosen(start_gateway: StartGateway) -> None:
    gateway = await start_gateway(**DEMO)
    ticket = (await ok(gateway, "POST", "/admin/api/tickets", new_ticket("u-ben"), status=201))["ticket_id"]
    target = f"/admin/api/tickets/{ticket}"
    assert (await ok(gateway, "PATCH", target, {"company": "globex"}))["company_id"] == "globex"
    refused = await call(gateway, "PATCH", target, {"company": "initech"})
    assert refused.status == 422
    assert refused.error["fields"][0]["path"] == "company"
    assert (await ok(gateway, "GET", target))["company_id"] == "globex"
    assert (await ok(gateway, "PATCH", target, {"company": "acme"}))["company_id"] == "acme"
    assert (await ok(gateway, "PATCH", target, {"company": None}))["company_id"] is None
    # Other changes leave the company alone.
    await ok(gateway, "PATCH", target, {"company": "acme"})
    assert (await ok(gateway, "PATCH", target, {"title": "Renamed"}))["company_id"] == "acme"


async def test_a_demo_ticket_cannot_move_to_a_company_its_creator_left(start_gateway: StartGateway) -> None:
    gateway = await start_gateway(**DEMO)
    ticket = next(line for line in demo_tickets() if line.creator == "u-ben" and line.company == "globex")
    await ok(gateway, "DELETE", "/admin/api/contacts/u-ben/companies/acme")
    refused = await call(gateway, "PATCH", f"/admin/api/tickets/{ticket.ticket_id}", {"company": "acme"})
    assert refused.paths == ["company"]
    assert (await ok(gateway, "GET", f"/admin/api/tickets/{ticket.ticket_id}"))["company_id"] == "globex"


async def test_ticket_ids_are_chosen_or_given_and_never_taken_twice(start_gateway: StartGateway) -> None:
    gateway = await start_gateway(**DEMO)
    highest = max(int(line.ticket_id) for line in demo_tickets())
    first = await ok(gateway, "POST", "/admin/api/tickets", new_ticket("u-ann"), status=201)
    second = await ok(gateway, "POST", "/admin/api/tickets", new_ticket("u-ann"), status=201)
    assert (first["ticket_id"], second["ticket_id"]) == (str(highest + 1), str(highest + 2))
    given = await ok(gateway, "POST", "/admin/api/tickets", new_ticket("u-ann", ticket_id="T-42"), status=201)
    assert given["ticket_id"] == "T-42"
    before = dump(gateway)
    for taken in ("T-42", "1001"):
        duplicate = await call(gateway, "POST", "/admin/api/tickets", new_ticket("u-cho", ticket_id=taken))
        assert duplicate.status == 409, taken
    assert dump(gateway) == before
    # Ids past SQLite's integers, given by hand, do not derail the ones chosen after them.
    for huge in (str(2**63 - 1), "9" * 40, "1500x"):
        await ok(gateway, "POST", "/admin/api/tickets", new_ticket("u-ann", ticket_id=huge), status=201)
    chosen = [(await ok(gateway, "POST", TICKETS, new_ticket("u-ann"), status=201))["ticket_id"] for _ in range(2)]
    assert all(ticket_id.isdigit() for ticket_id in chosen), chosen
    assert int(chosen[1]) == int(chosen[0]) + 1


async def test_ticket_state_sharing_and_type_change_and_the_portal_follows(start_gateway: StartGateway) -> None:
    gateway = await start_gateway(**DEMO)
    body = new_ticket("u-ann", category="Back-office", ticket_type="Account review", title="Quarterly review")
    ticket = (await ok(gateway, "POST", "/admin/api/tickets", body, status=201))["ticket_id"]
    target = f"/admin/api/tickets/{ticket}"
    # Ivy is in Acme too: an unshared Back-office ticket is not hers to see, a shared one is.
    assert (await portal(gateway, f"/api/v1/tickets/{ticket}", "u-ivy")).status == 404

    shared = await ok(gateway, "PATCH", target, {"is_shared": True})
    assert shared["is_shared"] is True
    seen = await portal_json(gateway, f"/api/v1/tickets/{ticket}", "u-ivy")
    assert seen["state"]["label"] == "Submitted"

    fixed = await ok(gateway, "PATCH", target, {"state": "Fixed", "ticket_type": "Billing question"})
    assert fixed["state"] == {"internal_label": "Fixed", "external_label": "Resolved", "category": "resolved"}
    assert fixed["ticket_type"] == "Billing question"
    assert fixed["is_shared"] is True
    seen = await portal_json(gateway, f"/api/v1/tickets/{ticket}", "u-ivy")
    assert (seen["state"]["label"], seen["ticket_type"]) == ("Resolved", "Billing question")

    unknown_state = await call(gateway, "PATCH", target, {"state": "Closed forever"})
    assert unknown_state.paths == ["state"]
    assert (await ok(gateway, "PATCH", target, {"is_shared": False}))["is_shared"] is False
    assert (await portal(gateway, f"/api/v1/tickets/{ticket}", "u-ivy")).status == 404
    assert (await call(gateway, "PATCH", "/admin/api/tickets/99999", {"is_shared": True})).status == 404
    assert (await call(gateway, "GET", "/admin/api/tickets/99999")).status == 404


async def test_replies_show_in_the_portal_and_internal_notes_never(start_gateway: StartGateway) -> None:
    gateway = await start_gateway(**DEMO)
    ticket = (await ok(gateway, "POST", "/admin/api/tickets", new_ticket("u-ann"), status=201))["ticket_id"]
    parts = f"/admin/api/tickets/{ticket}/parts"
    reply = {"body": "We shipped the heliotrope fix.", "public": True, "author_name": "Sam"}
    note = {"body": f"Customer is grumpy, escalate to the wolverine team {CANARY}", "public": False}
    by_ann = {"body": "Thanks, heliotrope works now.", "public": True, "author": "u-ann"}
    await ok(gateway, "POST", parts, reply, status=201)
    await ok(gateway, "POST", parts, note, status=201)
    full = await ok(gateway, "POST", parts, by_ann, status=201)
    assert [(part["author_name"], part["body"], part["public"]) for part in full["parts"]] == [
        ("Sam", reply["body"], True),
        ("Support", note["body"], False),
        ("Ann Archer", by_ann["body"], True),
    ]

    seen = await portal_json(gateway, f"/api/v1/tickets/{ticket}", "u-ann")
    assert [part["body"] for part in seen["parts"]] == [reply["body"], by_ann["body"]]
    assert "wolverine" not in json.dumps(seen)
    found = await portal_json(gateway, "/api/v1/tickets?q=heliotrope", "u-ann")
    assert [item["ticket_id"] for item in found["tickets"]] == [ticket]
    assert (await portal_json(gateway, "/api/v1/tickets?q=wolverine", "u-ann"))["total_count"] == 0

    refused = await call(gateway, "POST", parts, {"body": "Hi", "public": True, "author": "u-nobody"})
    assert refused.paths == ["author"]
    assert (await call(gateway, "POST", "/admin/api/tickets/99999/parts", reply)).status == 404


# --- support views ---------------------------------------------------------------------------------


async def all_pages(gateway: Gateway, target: str, per_page: int) -> list[dict[str, Any]]:
    """Every ticket of a paged list, page by page, checking each page's bookkeeping."""
    separator = "&" if "?" in target else "?"
    first = await ok(gateway, "GET", f"{target}{separator}per_page={per_page}")
    total = first["total_count"]
    assert first["pages"] == {"page": 1, "per_page": per_page, "total_pages": max(1, math.ceil(total / per_page))}
    tickets = list(first["data"])
    for page in range(2, first["pages"]["total_pages"] + 1):
        listed = await ok(gateway, "GET", f"{target}{separator}per_page={per_page}&page={page}")
        assert listed["total_count"] == total
        assert listed["pages"]["page"] == page
        tickets += listed["data"]
    assert len(tickets) == total
    return tickets


@pytest.mark.parametrize("company", ["acme", "globex", "initech", "umbrella"])
async def test_a_company_tickets_tab_lists_exactly_its_tickets(start_gateway: StartGateway, company: str) -> None:
    gateway = await start_gateway(**DEMO)
    tickets = await all_pages(gateway, f"/admin/api/companies/{company}/tickets", per_page=100)
    ids = [ticket["ticket_id"] for ticket in tickets]
    assert len(ids) == len(set(ids))
    assert set(ids) == demo_ticket_ids(company)
    assert {ticket["company_id"] for ticket in tickets} == {company}
    # Internal work shows here too: Tracker and unshared Back-office tickets are the support team's.
    assert {ticket["category"] for ticket in tickets} == {"Customer", "Back-office", "Tracker"}


async def test_the_tickets_tab_pages_in_update_order_without_gaps_or_repeats(start_gateway: StartGateway) -> None:
    gateway = await start_gateway(**DEMO)
    tickets = await all_pages(gateway, "/admin/api/companies/acme/tickets", per_page=7)
    ids = [ticket["ticket_id"] for ticket in tickets]
    assert len(ids) == len(set(ids))
    assert set(ids) == demo_ticket_ids("acme")
    updated = [ticket["updated_at"] for ticket in tickets]
    assert updated == sorted(updated, reverse=True)
    beyond = await ok(gateway, "GET", "/admin/api/companies/acme/tickets?per_page=7&page=999")
    assert (beyond["data"], beyond["total_count"]) == ([], len(ids))
    missing = await call(gateway, "GET", "/admin/api/companies/nope/tickets")
    assert missing.status == 404


async def test_ticket_search_finds_a_word_of_the_title_within_a_company(start_gateway: StartGateway) -> None:
    gateway = await start_gateway(**DEMO)
    word = "periwinkle"
    acme = await ok(gateway, "POST", "/admin/api/tickets", new_ticket("u-ann", title=f"The {word} export"), status=201)
    globex = await ok(gateway, "POST", "/admin/api/tickets", new_ticket("u-cho", title=f"{word} again"), status=201)
    await ok(gateway, "POST", "/admin/api/tickets", new_ticket("u-cho", title="Unrelated"), status=201)

    async def found(query: str) -> set[str]:
        listed = await ok(gateway, "GET", f"/admin/api/tickets?{query}")
        assert listed["total_count"] == len(listed["data"])
        return {ticket["ticket_id"] for ticket in listed["data"]}

    both = {acme["ticket_id"], globex["ticket_id"]}
    assert await found(f"q={word}") == both
    assert await found(f"q={word.upper()[:5]}") == both  # a prefix, any case
    assert await found(f"q={word}&company_id=globex") == {globex["ticket_id"]}
    assert await found(f"q={word}&company_id=initech") == set()
    assert await found("q=marzipan") == set()
    assert await found("company_id=initech&per_page=100") == demo_ticket_ids("initech")
    assert (await ok(gateway, "GET", "/admin/api/tickets?per_page=1"))["total_count"] == len(demo_tickets()) + 3
    assert (await call(gateway, "GET", f"/admin/api/tickets?q={word}&company_id=nope")).status == 404
    # The Tickets tab searches the same way.
    tab = await ok(gateway, "GET", f"/admin/api/companies/acme/tickets?q={word}")
    assert [ticket["ticket_id"] for ticket in tab["data"]] == [acme["ticket_id"]]

"""Admin API input: validation errors with their field paths, bodies that are not JSON, and extreme but valid
values."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import StartGateway
from tests.routes.adminapi import (
    ACME,
    ADMIN,
    ANN,
    AUTH,
    COMPANIES,
    CONTACTS,
    DEMO,
    NO_BODY,
    PARTS,
    T1001,
    TICKETS,
    call,
    dump,
    new_ticket,
    ok,
    portal_token,
)


async def test_extreme_but_valid_values_are_stored_and_the_portal_still_shows_them(
    start_gateway: StartGateway,
) -> None:
    gateway = await start_gateway(**DEMO)
    company = {**COMPANY, "size": 2**63 - 1, "custom_attributes": {"big": 10**30, "tiny": 1e-300}}
    assert (await ok(gateway, "POST", COMPANIES, company, status=201))["size"] == 2**63 - 1
    body = new_ticket("u-ann", created_at=LAST_SECOND, title="Far future")
    ticket = (await ok(gateway, "POST", TICKETS, body, status=201))["ticket_id"]
    await ok(
        gateway, "POST", f"{TICKETS}/{ticket}/parts", {"body": "Later", "public": True, "created_at": 0}, status=201
    )
    cookie = {"Cookie": f"portal-jwt={portal_token('u-ann')}"}
    for page in ("/tickets", f"/tickets/{ticket}", "/tickets?sort=created&order=desc"):
        answer = await call(gateway, "GET", page, headers=cookie)
        assert answer.status == 200, page
        assert b"9999" in answer.body, page


COMPANY = {"company_id": "x", "name": "X"}
CONTACT = {"user_id": "u-x"}
TICKET = new_ticket("u-ann")
LAST_SECOND = 253_402_300_799  # 9999-12-31T23:59:59Z
INVALID: dict[str, tuple[str, str, Any, list[str]]] = {
    # case: (method, target, body (bytes: sent as they are), field paths)
    "company: nothing": ("POST", COMPANIES, {}, ["company_id", "name"]),
    "company: id not a string": ("POST", COMPANIES, {**COMPANY, "company_id": 5}, ["company_id"]),
    "company: empty name": ("POST", COMPANIES, {**COMPANY, "name": ""}, ["name"]),
    "company: size as text": ("POST", COMPANIES, {**COMPANY, "size": "5"}, ["size"]),
    "company: size below 0": ("POST", COMPANIES, {**COMPANY, "size": -1}, ["size"]),
    "company: size a float": ("POST", COMPANIES, {**COMPANY, "size": 1.5}, ["size"]),
    "company: spend as text": ("POST", COMPANIES, {**COMPANY, "monthly_spend": "9"}, ["monthly_spend"]),
    "company: size past SQLite's integers": ("POST", COMPANIES, {**COMPANY, "size": 2**63}, ["size"]),
    "company: spend 1e400": (
        "POST",
        COMPANIES,
        b'{"company_id": "x", "name": "X", "monthly_spend": 1e400}',
        ["monthly_spend"],
    ),
    "company: spend NaN": (
        "POST",
        COMPANIES,
        b'{"company_id": "x", "name": "X", "monthly_spend": NaN}',
        ["monthly_spend"],
    ),
    "company: user_count": ("POST", COMPANIES, {**COMPANY, "user_count": 3}, ["user_count"]),
    "company: members": ("POST", COMPANIES, {**COMPANY, "members": ["u-ann"]}, ["members"]),
    "company: not an object": ("POST", COMPANIES, ["x"], ["body"]),
    "company: null": ("POST", COMPANIES, None, ["body"]),
    "company patch: rename the id": ("PATCH", ACME, {"company_id": "acme2"}, ["company_id"]),
    "company patch: null name": ("PATCH", ACME, {"name": None}, ["name"]),
    "company patch: nested attribute": (
        "PATCH",
        ACME,
        {"custom_attributes": {"tier": {"a": 1}}},
        ["custom_attributes.tier"],
    ),
    "company patch: attribute list": (
        "PATCH",
        ACME,
        {"custom_attributes": {"tags": ["a"]}},
        ["custom_attributes.tags"],
    ),
    "company patch: attribute 1e400": ("PATCH", ACME, b'{"custom_attributes": {"x": 1e400}}', ["custom_attributes.x"]),
    "contact: nothing": ("POST", CONTACTS, {}, ["user_id"]),
    "contact: companies": ("POST", CONTACTS, {**CONTACT, "companies": ["acme"]}, ["companies"]),
    "contact: company": ("POST", CONTACTS, {**CONTACT, "company": {"company_id": "acme"}}, ["company"]),
    "contact: company_id": ("POST", CONTACTS, {**CONTACT, "company_id": "acme"}, ["company_id"]),
    "contact: email a list": ("POST", CONTACTS, {**CONTACT, "email": ["a@example.com"]}, ["email"]),
    "contact patch: companies": ("PATCH", f"{CONTACTS}/u-kim", {"companies": ["acme"]}, ["companies"]),
    "contact patch: no companies": ("PATCH", ANN, {"companies": []}, ["companies"]),
    "contact patch: user_id": ("PATCH", ANN, {"user_id": "u-anne"}, ["user_id"]),
    "ticket: nothing": ("POST", TICKETS, {}, ["creator", "state", "ticket_type", "title"]),
    "ticket: shared as text": ("POST", TICKETS, {**TICKET, "is_shared": "true"}, ["is_shared"]),
    "ticket: shared as 1": ("POST", TICKETS, {**TICKET, "is_shared": 1}, ["is_shared"]),
    "ticket: bad category": ("POST", TICKETS, {**TICKET, "category": "Internal"}, ["category"]),
    "ticket: company a number": ("POST", TICKETS, {**TICKET, "company": 5}, ["company"]),
    "ticket: companies": ("POST", TICKETS, {**TICKET, "companies": ["acme"]}, ["companies"]),
    "ticket: bad id": ("POST", TICKETS, {**TICKET, "ticket_id": "has space"}, ["ticket_id"]),
    "ticket: created_at as text": ("POST", TICKETS, {**TICKET, "created_at": "1700000000"}, ["created_at"]),
    "ticket: created_at past 9999": ("POST", TICKETS, {**TICKET, "created_at": LAST_SECOND + 1}, ["created_at"]),
    "ticket: unknown creator": ("POST", TICKETS, {**TICKET, "creator": "u-nobody"}, ["creator"]),
    "ticket: unknown state": ("POST", TICKETS, {**TICKET, "state": "Closed forever"}, ["state"]),
    # A type is never created by a typo: both unknown names are reported at once.
    "ticket: unknown state and type": (
        "POST",
        TICKETS,
        {**TICKET, "ticket_type": "Novel", "state": "Gone"},
        ["state", "ticket_type"],
    ),
    "ticket: unknown type": ("POST", TICKETS, {**TICKET, "ticket_type": "Bug reprot"}, ["ticket_type"]),
    "ticket patch: shared as text": ("PATCH", T1001, {"is_shared": "true"}, ["is_shared"]),
    "ticket patch: empty state": ("PATCH", T1001, {"state": ""}, ["state"]),
    "ticket patch: creator": ("PATCH", T1001, {"creator": "u-ben"}, ["creator"]),
    "ticket patch: ticket_id": ("PATCH", T1001, {"ticket_id": "2001"}, ["ticket_id"]),
    "ticket patch: company_id": ("PATCH", T1001, {"company_id": "globex"}, ["company_id"]),
    "part: no public": ("POST", PARTS, {"body": "Hi"}, ["public"]),
    "part: public as text": ("POST", PARTS, {"body": "Hi", "public": "false"}, ["public"]),
    "part: public as 0": ("POST", PARTS, {"body": "Hi", "public": 0}, ["public"]),
    "part: created_at past 9999": ("POST", PARTS, {"body": "Hi", "public": True, "created_at": 10**20}, ["created_at"]),
    "part: empty body": ("POST", PARTS, {"body": "", "public": True}, ["body"]),
    "query: per_page=0": ("GET", f"{TICKETS}?per_page=0", NO_BODY, ["query.per_page"]),
    "query: per_page=101": ("GET", f"{TICKETS}?per_page=101", NO_BODY, ["query.per_page"]),
    "query: page=0": ("GET", f"{TICKETS}?page=0", NO_BODY, ["query.page"]),
    "query: page=two": ("GET", f"{TICKETS}?page=two", NO_BODY, ["query.page"]),
    "query: page past any store": ("GET", f"{TICKETS}?page=99999999999999999999", NO_BODY, ["query.page"]),
    "query: unknown": ("GET", f"{TICKETS}?sort=id", NO_BODY, ["query.sort"]),
    "query: several": ("GET", f"{TICKETS}?page=-1&per_page=x", NO_BODY, ["query.page", "query.per_page"]),
    "tab query: page past any store": ("GET", f"{ACME}/tickets?page=999999999999999999", NO_BODY, ["query.page"]),
    "tab query: per_page=0": ("GET", f"{ACME}/tickets?per_page=0", NO_BODY, ["query.per_page"]),
}


@pytest.mark.parametrize("case", sorted(INVALID))
async def test_invalid_input_answers_422_naming_each_field_and_changes_nothing(
    start_gateway: StartGateway, case: str
) -> None:
    method, target, body, paths = INVALID[case]
    gateway = await start_gateway(**DEMO)
    before = dump(gateway)
    if isinstance(body, bytes):  # JSON that Python's json.dumps would not write
        answer = await call(gateway, method, target, headers={**AUTH, "Content-Type": "application/json"}, data=body)
    else:
        answer = await call(gateway, method, target, body)
    assert answer.status == 422, answer.body
    error = answer.error
    assert error["title"] == "Unprocessable content"
    assert answer.paths == paths
    assert all(item["reason"] for item in error["fields"])
    assert dump(gateway) == before
    record = await gateway.audit_for(answer.request_id)
    assert record["status"] == 422


NOT_JSON: dict[str, tuple[bytes, str]] = {
    # case: (body, content type)
    "JSON sent as text": (b'{"company_id": "x", "name": "X"}', "text/plain"),
    "a form": (b"company_id=x&name=X", "application/x-www-form-urlencoded"),
    "no content type": (b'{"company_id": "x", "name": "X"}', ""),
    "broken JSON": (b'{"company_id": "x", "name": ', "application/json"),
    "trailing garbage": (b'{"company_id": "x", "name": "X"} {}', "application/json"),
    "empty": (b"", "application/json"),
    "not UTF-8": (b'{"company_id": "x", "name": "\xff"}', "application/json"),
}


@pytest.mark.parametrize("case", sorted(NOT_JSON))
async def test_a_body_that_is_not_json_answers_400(start_gateway: StartGateway, case: str) -> None:
    data, content_type = NOT_JSON[case]
    gateway = await start_gateway(**ADMIN)
    headers = {**AUTH, "Content-Type": content_type} if content_type else AUTH
    answer = await call(gateway, "POST", COMPANIES, headers=headers, data=data)
    assert answer.status == 400, answer.body
    assert answer.error["title"] == "Bad Request"
    assert (await call(gateway, "GET", f"{COMPANIES}/x")).status == 404

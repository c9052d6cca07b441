"""The admin API's audit: every write recorded by field name, never by value."""

from __future__ import annotations

import json
import re
from typing import Any

from gateway.namespace import ADMIN_PREFIX
from routes import admin
from tests.conftest import CANARY, StartGateway
from tests.routes.adminapi import (
    COMPANIES,
    CONTACTS,
    DEMO,
    NO_BODY,
    TICKETS,
    call,
    change,
    new_ticket,
    ok,
)

PLANTED = {"note": CANARY}
AUDITED_WRITES: list[tuple[str, str, Any, dict[str, Any]]] = [
    # method, target ("*": the ticket created on the way), body with planted values, admin_change
    (
        "POST",
        COMPANIES,
        {"company_id": "audited", "name": f"Name {CANARY}", "plan": CANARY, "custom_attributes": PLANTED},
        change("create", "company", "audited", "company_id", "name", "plan", "custom_attributes"),
    ),
    ("PATCH", f"{COMPANIES}/audited", {"name": CANARY}, change("update", "company", "audited", "name")),
    (
        "POST",
        CONTACTS,
        {"user_id": "u-audited", "email": f"{CANARY}@example.com", "name": CANARY},
        change("create", "contact", "u-audited", "user_id", "email", "name"),
    ),
    (
        "PATCH",
        f"{CONTACTS}/u-audited",
        {"custom_attributes": PLANTED},
        change("update", "contact", "u-audited", "custom_attributes"),
    ),
    ("PUT", f"{CONTACTS}/u-audited/companies/audited", NO_BODY, change("add", "membership", "u-audited/audited")),
    (
        "POST",
        TICKETS,
        new_ticket("u-audited", title=CANARY, description=CANARY),
        change("create", "ticket", "*", "creator", "description", "state", "ticket_type", "title"),
    ),
    (
        "PATCH",
        f"{TICKETS}/*",
        {"title": CANARY, "is_shared": True},
        change("update", "ticket", "*", "title", "is_shared"),
    ),
    (
        "POST",
        f"{TICKETS}/*/parts",
        {"body": CANARY, "public": False},
        change("create", "internal note", "*", "body", "public"),
    ),
    (
        "POST",
        f"{TICKETS}/*/parts",
        {"body": CANARY, "public": True, "author_name": CANARY},
        change("create", "public reply", "*", "body", "public", "author_name"),
    ),
    ("DELETE", f"{CONTACTS}/u-audited/companies/audited", NO_BODY, change("remove", "membership", "u-audited/audited")),
    ("POST", CONTACTS, {"user_id": "u-gone"}, change("create", "contact", "u-gone", "user_id")),
    ("DELETE", f"{CONTACTS}/u-gone", NO_BODY, change("delete", "contact", "u-gone")),
    (
        "POST",
        COMPANIES,
        {"company_id": "gone", "name": "Gone"},
        change("create", "company", "gone", "company_id", "name"),
    ),
    ("DELETE", f"{COMPANIES}/gone", NO_BODY, change("delete", "company", "gone")),
]


def route_of(method: str, target: str) -> tuple[str, str] | None:
    """The (method, path template) of ``admin.ROUTES`` that serves ``target``."""
    for route_method, path, _ in admin.ROUTES:
        pattern = re.sub(r"\{\w+\}", "[^/]+", ADMIN_PREFIX + path)
        if route_method == method and re.fullmatch(pattern, target.replace("*", "1001")):
            return method, path
    return None


async def test_every_write_is_audited_by_field_name_never_by_value(start_gateway: StartGateway) -> None:
    gateway = await start_gateway(**DEMO)
    ticket = ""
    for method, target, body, expected in AUDITED_WRITES:
        answer = await call(gateway, method, target.replace("*", ticket), body)
        assert answer.status in (200, 201), (method, target, answer.body)
        if expected["resource"] == "ticket" and method == "POST":
            ticket = answer.json()["ticket_id"]
        record = await gateway.audit_for(answer.request_id)
        assert record["admin_change"] == {**expected, "id": expected["id"].replace("*", ticket)}, (method, target)
        assert record["identity"]["result"] == "verified"
        assert CANARY not in json.dumps(record), (method, target)
    # The table holds every write route of the admin API.
    assert {route_of(method, target) for method, target, _, _ in AUDITED_WRITES} == {
        (method, path) for method, path, _ in admin.ROUTES if method != "GET"
    }

    # The planted values really went in, and only the store holds them.
    assert CANARY in json.dumps(await ok(gateway, "GET", f"{TICKETS}/{ticket}"))
    assert CANARY not in gateway.config.audit.path.read_text()
    read = await call(gateway, "GET", f"{CONTACTS}/u-audited")
    assert (await gateway.audit_for(read.request_id))["admin_change"] is None

"""The admin API (``routes/admin.py``) through the real gateway over TLS.

The bearer token (missing, empty, wrong, wrong scheme, non-ASCII, one character
off), the API's absence without ``admin.token``, unknown paths, companies and
contacts (create, read, update, delete, and the deletes refused while tickets
would be lost), memberships and the portal seeing them change at once, tickets
under the association rules, replies and internal notes, validation errors
with their field paths, the support views (a company's Tickets tab, search for
duplicates) and the audit record of every write.

Stores start from the demo seed (``gateway.store.demo``) unless a test builds
its own data through the API itself; expected answers come from the demo's
lines, not from the gateway. Planted values (``CANARY``) ride in the admin
token and in field values, never in ids or paths, so no audit file may hold one.
"""

from __future__ import annotations

import base64
import json
import math
import re
import sqlite3
import time
from collections.abc import Mapping
from contextlib import closing
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import pytest
from multidict import CIMultiDictProxy
from yarl import URL

from gateway.namespace import ADMIN_PREFIX
from gateway.policy.identity import sign_token
from gateway.store.demo import demo_lines
from gateway.store.importer import TicketLine
from routes import admin
from tests.conftest import CANARY, SECRET, Gateway, RecordingUpstream, StartGateway

TOKEN = f"admin-token-{CANARY}-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
EVERYONE_IN = {"match": "any", "rules": [{"attribute": "person.user_id", "op": "exists"}]}
ADMIN: dict[str, Any] = {"admin": {"token": TOKEN}}
DEMO: dict[str, Any] = {**ADMIN, "store": {"seed_demo": True}, "portal": {"access": EVERYONE_IN}}
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
NO_BODY = object()
"""``body=NO_BODY``: send no body at all (``None`` would send the JSON ``null``)."""
COMPANIES, CONTACTS, TICKETS = "/admin/api/companies", "/admin/api/contacts", "/admin/api/tickets"
ACME, ANN, T1001, PARTS = f"{COMPANIES}/acme", f"{CONTACTS}/u-ann", f"{TICKETS}/1001", f"{TICKETS}/1001/parts"
TABLES = ("companies", "contacts", "memberships", "tickets", "conversation_parts", "ticket_types", "ticket_states")


# --- the demo store as an oracle -----------------------------------------------------------------


def demo_tickets() -> list[TicketLine]:
    """The demo's tickets (their companies, creators and categories do not depend on the seed time)."""
    return [line for line in demo_lines(0) if isinstance(line, TicketLine)]


def demo_ticket_ids(company: str | None) -> set[str]:
    return {line.ticket_id for line in demo_tickets() if line.company == company}


def customer_ticket_of(company: str) -> str:
    """A ticket of ``company`` that its members see in the portal."""
    return next(line.ticket_id for line in demo_tickets() if line.company == company and line.category == "Customer")


def dump(gateway: Gateway) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the store's tables, read straight from the file."""
    database = gateway.config.store.path
    with closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as connection:
        return {table: sorted(connection.execute(f"SELECT * FROM {table}").fetchall()) for table in TABLES}  # noqa: S608


# --- talking to the gateway ------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    """One response, read in full."""

    status: int
    headers: CIMultiDictProxy[str]
    body: bytes

    @property
    def request_id(self) -> str:
        return self.headers["X-Request-Id"]

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def error(self) -> dict[str, Any]:
        """The error object of a JSON error body, checked against the answer's own status and request id."""
        assert self.headers["Content-Type"].startswith("application/json"), self.body[:200]
        error: dict[str, Any] = self.json()["error"]
        assert error["status"] == self.status
        assert error["request_id"] == self.request_id
        return error

    @property
    def paths(self) -> list[str]:
        """The field paths a 422 names, sorted."""
        return sorted(item["path"] for item in self.error["fields"])


async def call(
    gateway: Gateway,
    method: str,
    target: str,
    body: Any = NO_BODY,
    *,
    headers: Mapping[str, str] | None = None,
    data: bytes | None = None,
) -> Answer:
    """``target`` (path and query, sent as written) with a JSON ``body`` or raw ``data``; headers default to AUTH."""
    url = URL(f"{gateway.url}{target}", encoded=True)
    sent = dict(AUTH if headers is None else headers)
    if body is not NO_BODY:
        sent.setdefault("Content-Type", "application/json")
        data = json.dumps(body).encode()
    async with gateway.client.request(method, url, headers=sent, allow_redirects=False, data=data) as response:
        return Answer(response.status, response.headers, await response.read())


async def ok(gateway: Gateway, method: str, target: str, body: Any = NO_BODY, status: int = 200) -> Any:
    """The JSON of an admin call that must answer ``status``."""
    answer = await call(gateway, method, target, body)
    assert answer.status == status, f"{method} {target}: {answer.status} {answer.body[:400]!r}"
    assert answer.headers["Content-Type"].startswith("application/json")
    return answer.json()


def portal_token(user_id: str) -> str:
    """A visitor's token, signed like the customer's app would sign it."""
    return sign_token(SECRET, user_id=user_id, now=time.time(), ttl=600, extra={"note": CANARY})


async def portal(gateway: Gateway, target: str, user_id: str) -> Answer:
    """A portal API call as a verified visitor."""
    return await call(gateway, "GET", target, headers={"Authorization": f"Bearer {portal_token(user_id)}"})


async def portal_json(gateway: Gateway, target: str, user_id: str) -> Any:
    answer = await portal(gateway, target, user_id)
    assert answer.status == 200, f"{target}: {answer.status} {answer.body[:300]!r}"
    return answer.json()


def new_ticket(creator: str, **fields: Any) -> dict[str, Any]:
    """A valid ticket body for the demo store."""
    return {"ticket_type": "Bug report", "state": "New", "creator": creator, "title": "Export is broken", **fields}


# --- the token ---------------------------------------------------------------------------------------


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


BAD_CREDENTIALS: dict[str, tuple[dict[str, str], str]] = {
    # case: (headers, reason in the audit record)
    "missing": ({}, "missing"),
    "empty header": ({"Authorization": ""}, "missing"),
    "scheme only": ({"Authorization": "Bearer"}, "missing"),
    "blank token": ({"Authorization": "Bearer    "}, "missing"),
    "token without scheme": ({"Authorization": TOKEN}, "missing"),
    "wrong token": ({"Authorization": f"Bearer wrong-{CANARY}-0123456789abcdef"}, "bad_token"),
    "same length, last character off": ({"Authorization": f"Bearer {TOKEN[:-1]}X"}, "bad_token"),
    "same length, first character off": ({"Authorization": f"Bearer X{TOKEN[1:]}"}, "bad_token"),
    "prefix": ({"Authorization": f"Bearer {TOKEN[:-1]}"}, "bad_token"),
    "longer": ({"Authorization": f"Bearer {TOKEN}0"}, "bad_token"),
    "twice": ({"Authorization": f"Bearer {TOKEN} {TOKEN}"}, "bad_token"),
    "other case": ({"Authorization": f"Bearer {TOKEN.upper()}"}, "bad_token"),
    "non-ASCII": ({"Authorization": f"Bearer {TOKEN[:-2]}é"}, "bad_token"),
    "non-ASCII only": ({"Authorization": "Bearer ééééééééééééééé"}, "bad_token"),
    "wrong scheme": ({"Authorization": f"Token {TOKEN}"}, "bad_token"),
    "basic": ({"Authorization": basic("admin", TOKEN)}, "bad_token"),
    "in a cookie": ({"Cookie": f"portal-jwt={TOKEN}; admin_token={TOKEN}"}, "missing"),
    "in another header": ({"X-Admin-Token": TOKEN, "X-Api-Key": TOKEN}, "missing"),
    "a visitor's portal token": ({"Authorization": f"Bearer {portal_token('u-ann')}"}, "bad_token"),
}


@pytest.mark.parametrize("case", sorted(BAD_CREDENTIALS))
async def test_bad_credentials_answer_401_json_audited_and_change_nothing(
    start_gateway: StartGateway, case: str
) -> None:
    gateway = await start_gateway(**ADMIN)
    headers, reason = BAD_CREDENTIALS[case]
    answer = await call(gateway, "POST", "/admin/api/companies", {"company_id": "probe", "name": "P"}, headers=headers)
    assert answer.status == 401
    assert answer.headers["WWW-Authenticate"] == 'Bearer realm="admin"'
    error = answer.error
    assert "Authorization: Bearer" in error["detail"]
    assert "fields" not in error
    record = await gateway.audit_for(answer.request_id)
    assert record["identity"] == {"method": "admin_token", "user_id": None, "result": "rejected", "reason": reason}
    assert record["admin_change"] is None
    assert record["status"] == 401
    # Nothing was looked up, nothing written, and no credential presented is in the audit.
    assert (await call(gateway, "GET", "/admin/api/companies/probe")).status == 404
    audit = gateway.config.audit.path.read_text()
    assert TOKEN not in audit
    presented = [word for value in headers.values() for word in value.split() if len(word) >= 16]
    assert not [word for word in presented if word in audit]


@pytest.mark.parametrize(
    "authorization", [f"Bearer {TOKEN}", f"bearer {TOKEN}", f"BEARER   {TOKEN}  "], ids=["Bearer", "bearer", "spaced"]
)
async def test_the_token_opens_the_api_and_never_reaches_the_audit(
    start_gateway: StartGateway, upstream: RecordingUpstream, authorization: str
) -> None:
    gateway = await start_gateway(**ADMIN)
    headers = {"Authorization": authorization}
    answer = await call(gateway, "POST", "/admin/api/companies", {"company_id": "co", "name": "Co"}, headers=headers)
    assert answer.status == 201, answer.body
    record = await gateway.audit_for(answer.request_id)
    assert record["identity"] == {"method": "admin_token", "user_id": None, "result": "verified", "reason": None}
    assert TOKEN not in gateway.config.audit.path.read_text()
    assert upstream.requests == []


async def test_without_the_token_a_known_path_is_401_like_an_unknown_one(start_gateway: StartGateway) -> None:
    """A caller without the token learns nothing: not whether a company exists, nor which paths are routes."""
    gateway = await start_gateway(**DEMO)
    answers: set[tuple[str, str, str]] = set()
    for method, target in [
        ("GET", "/admin/api/companies/acme"),
        ("GET", "/admin/api/companies/no-such-company"),
        ("DELETE", "/admin/api/companies/acme"),
        ("GET", "/admin/api/no-such-route"),
        ("PUT", "/admin/api/contacts/u-kim/companies/acme"),
    ]:
        answer = await call(gateway, method, target, headers={})
        assert answer.status == 401, (method, target)
        assert answer.headers["WWW-Authenticate"] == 'Bearer realm="admin"'
        error = answer.error
        answers.add((error["title"], error["detail"], answer.headers["Content-Type"]))
    assert len(answers) == 1
    assert (await ok(gateway, "GET", "/admin/api/contacts/u-kim"))["companies"] == []


ADMIN_PATHS = (
    "/admin/api",
    "/admin/api/",
    "/admin/api/companies",
    "/admin/api/companies/acme",
    "/admin/api/companies/acme/tickets",
    "/admin/api/contacts/u-ann/companies/acme",
    "/admin/api/tickets?company_id=acme&q=csv",
    "/admin/api/tickets/1001/parts",
    "/admin/api/no/such/route",
)


async def test_without_admin_token_the_api_does_not_exist(
    start_gateway: StartGateway, upstream: RecordingUpstream
) -> None:
    gateway = await start_gateway(store={"seed_demo": True})
    for target in ADMIN_PATHS:
        for method in METHODS:
            for headers in ({}, AUTH):
                answer = await call(gateway, method, target, {"company_id": "x", "name": "X"}, headers=headers)
                assert answer.status == 404, (method, target, headers)
                assert "WWW-Authenticate" not in answer.headers
                if target.startswith("/admin/api/") and method != "HEAD":
                    assert answer.error["title"] == "Not Found"
                record = await gateway.audit_for(answer.request_id)
                assert record["identity"]["method"] != "admin_token"
                assert record["upstream"]["url"] is None
    assert upstream.requests == []
    # The recording upstream does see what is not the admin namespace.
    assert (await call(gateway, "GET", "/admin/apis", headers={})).status == 200
    assert [request.path for request in upstream.requests] == ["/admin/apis"]


UNKNOWN: list[tuple[str, str]] = [
    ("GET", "/admin/api"),
    ("GET", "/admin/api/"),
    ("GET", "/admin/api/nothing"),
    ("GET", "/admin/api/contacts/u-ann/companies"),
    ("GET", "/admin/api/tickets/1001/parts/1"),
    ("GET", "/admin/api/companies/acme/tickets/1001"),
]
WRONG_METHOD: list[tuple[str, str, str]] = [
    ("GET", "/admin/api/companies", "POST"),  # there is no list of companies
    ("GET", "/admin/api/contacts", "POST"),
    ("PUT", "/admin/api/companies/acme", "DELETE,GET,PATCH"),
    ("POST", "/admin/api/companies/acme", "DELETE,GET,PATCH"),
    ("GET", "/admin/api/contacts/u-ann/companies/acme", "DELETE,PUT"),
    ("POST", "/admin/api/contacts/u-ann/companies/acme", "DELETE,PUT"),
    ("PATCH", "/admin/api/contacts/u-ann/companies/acme", "DELETE,PUT"),
    ("DELETE", "/admin/api/tickets/1001", "GET,PATCH"),
    ("PUT", "/admin/api/tickets/1001", "GET,PATCH"),
    ("GET", "/admin/api/tickets/1001/parts", "POST"),
    ("HEAD", "/admin/api/tickets", "GET,POST"),
    ("OPTIONS", "/admin/api/tickets", "GET,POST"),
]


async def test_unknown_admin_paths_are_404_with_the_token_and_401_without(
    start_gateway: StartGateway, upstream: RecordingUpstream
) -> None:
    gateway = await start_gateway(**DEMO)
    before = dump(gateway)
    for method, target in UNKNOWN:
        found = await call(gateway, method, target, {"name": "Renamed"})
        assert found.status == 404, (method, target, found.body)
        assert "Allow" not in found.headers
        refused = await call(gateway, method, target, {"name": "Renamed"}, headers={})
        assert refused.status == 401, (method, target)
        assert refused.headers["WWW-Authenticate"] == 'Bearer realm="admin"'
    assert upstream.requests == []
    assert dump(gateway) == before


async def test_a_wrong_method_on_an_admin_path_is_405_naming_the_methods_and_401_without_the_token(
    start_gateway: StartGateway, upstream: RecordingUpstream
) -> None:
    gateway = await start_gateway(**DEMO)
    before = dump(gateway)
    for method, target, allow in WRONG_METHOD:
        answer = await call(gateway, method, target, {"name": "Renamed"})
        assert answer.status == 405, (method, target, answer.body)
        assert answer.headers["Allow"] == allow, (method, target)
        if method != "HEAD":
            assert answer.json()["error"]["status"] == 405
        refused = await call(gateway, method, target, {"name": "Renamed"}, headers={})
        assert (refused.status, "Allow" in refused.headers) == (401, False), (method, target)
    assert upstream.requests == []
    assert dump(gateway) == before


# --- companies ------------------------------------------------------------------------------------


async def test_a_record_id_stands_in_a_path_and_a_whole_number_may_be_written_5_0(start_gateway: StartGateway) -> None:
    # A company or contact created with an id no path can carry could never be read, changed or deleted.
    gateway = await start_gateway(**ADMIN)
    for key in ("a/b", "a\\b", "50%", "%41", ".hidden", "..", "tab\there", "nul\u0000"):
        for collection, field in ((COMPANIES, "company_id"), (CONTACTS, "user_id")):
            answer = await call(gateway, "POST", collection, {field: key, "name": "Someone"})
            assert answer.status == 422, (collection, key, answer.body)
            assert [item["path"] for item in answer.json()["error"]["fields"]] == [field]
    for key in ("acme-2", "u.dot", "ünïcode", "with space", "a@b.example"):
        assert (await ok(gateway, "POST", COMPANIES, {"company_id": key, "name": "N"}, 201))["company_id"] == key
        assert (await ok(gateway, "GET", f"{COMPANIES}/{quote(key)}"))["company_id"] == key
    # JSON has one kind of number: 5.0 is the whole number 5 (as JSON Schema's "integer" reads it).
    company = await ok(gateway, "POST", COMPANIES, {"company_id": "whole", "name": "W", "size": 5.0}, 201)
    assert company["size"] == 5
    for size in (5.5, "5", True):
        refused = await call(gateway, "POST", COMPANIES, {"company_id": "half", "name": "H", "size": size})
        assert refused.status == 422, size


async def test_company_create_read_update_delete(start_gateway: StartGateway) -> None:
    gateway = await start_gateway(**ADMIN)
    fields = {
        "company_id": "hooli",
        "name": "Hooli",
        "plan": "enterprise",
        "size": 5000,
        "monthly_spend": 99.5,
        "custom_attributes": {"region": "us", "seats": 12, "beta": True, "ratio": 0.5, "none": None},
    }
    created = await ok(gateway, "POST", "/admin/api/companies", fields, status=201)
    assert created == {"type": "company", **fields, "user_count": 0}
    assert await ok(gateway, "GET", "/admin/api/companies/hooli") == created

    # A second create with the same id is refused and loses nothing.
    duplicate = await call(gateway, "POST", "/admin/api/companies", {"company_id": "hooli", "name": "Other"})
    assert duplicate.status == 409
    assert "hooli" in duplicate.error["detail"]
    assert await ok(gateway, "GET", "/admin/api/companies/hooli") == created

    renamed = await ok(gateway, "PATCH", "/admin/api/companies/hooli", {"name": "Hooli XYZ"})
    assert renamed == {**created, "name": "Hooli XYZ"}
    # Custom attributes merge, as in Intercom's API: a value replaces, null removes, the rest stay.
    merged = await ok(gateway, "PATCH", "/admin/api/companies/hooli", {"custom_attributes": {"seats": 13, "tier": "a"}})
    attributes = {"region": "us", "seats": 12, "beta": True, "ratio": 0.5, "none": None}
    assert fields["custom_attributes"] == attributes
    assert merged["custom_attributes"] == {**attributes, "seats": 13, "tier": "a"}
    gone = dict.fromkeys([*attributes, "tier"])
    cleared = await ok(gateway, "PATCH", "/admin/api/companies/hooli", {"plan": None, "custom_attributes": gone})
    assert cleared == {**renamed, "plan": None, "custom_attributes": {}}
    assert await ok(gateway, "GET", "/admin/api/companies/hooli") == cleared

    for method, body in (("GET", NO_BODY), ("PATCH", {"name": "X"}), ("DELETE", NO_BODY)):
        missing = await call(gateway, method, "/admin/api/companies/nope", body)
        assert missing.status == 404, method
        assert "nope" in missing.error["detail"]

    deleted = await ok(gateway, "DELETE", "/admin/api/companies/hooli")
    assert deleted == {"type": "company", "company_id": "hooli", "deleted": True}
    assert (await call(gateway, "GET", "/admin/api/companies/hooli")).status == 404
    assert (await call(gateway, "DELETE", "/admin/api/companies/hooli")).status == 404


async def test_a_company_with_tickets_is_not_deleted_and_nothing_is_lost(start_gateway: StartGateway) -> None:
    gateway = await start_gateway(**DEMO)
    before = dump(gateway)
    refused = await call(gateway, "DELETE", "/admin/api/companies/acme")
    assert refused.status == 409
    assert f"{len(demo_ticket_ids('acme'))} tickets" in refused.error["detail"]
    assert dump(gateway) == before
    # SECURITY: the audit must not read as if Acme was deleted.
    assert (await gateway.audit_for(refused.request_id))["admin_change"] == change("delete", "company", "acme") | {
        "result": "refused"
    }
    # Once its tickets are elsewhere, it can go.
    empty = await ok(gateway, "POST", "/admin/api/companies", {"company_id": "empty", "name": "Empty"}, status=201)
    assert empty["user_count"] == 0
    await ok(gateway, "DELETE", "/admin/api/companies/empty")


async def test_deleting_a_company_ends_its_memberships_for_good(start_gateway: StartGateway) -> None:
    gateway = await start_gateway(**DEMO)
    await ok(gateway, "POST", "/admin/api/companies", {"company_id": "shortlived", "name": "Short"}, status=201)
    await ok(gateway, "PUT", "/admin/api/contacts/u-kim/companies/shortlived")
    await ok(gateway, "PUT", "/admin/api/contacts/u-ann/companies/shortlived")
    assert (await ok(gateway, "GET", "/admin/api/companies/shortlived"))["user_count"] == 2
    await ok(gateway, "DELETE", "/admin/api/companies/shortlived")
    assert (await ok(gateway, "GET", "/admin/api/contacts/u-kim"))["companies"] == []
    assert (await ok(gateway, "GET", "/admin/api/contacts/u-ann"))["companies"] == ["acme"]
    # A company created next (which may reuse the deleted one's row) starts with no members.
    fresh = await ok(gateway, "POST", "/admin/api/companies", {"company_id": "fresh", "name": "Fresh"}, status=201)
    assert fresh["user_count"] == 0
    assert (await ok(gateway, "GET", "/admin/api/contacts/u-kim"))["companies"] == []


# --- contacts and memberships -----------------------------------------------------------------------


async def test_contact_create_read_update_delete(start_gateway: StartGateway) -> None:
    gateway = await start_gateway(**ADMIN)
    fields = {"user_id": "u-zed", "email": "zed@example.com", "name": "Zed", "custom_attributes": {"role": "admin"}}
    created = await ok(gateway, "POST", "/admin/api/contacts", fields, status=201)
    assert created == {"type": "contact", **fields, "companies": []}
    assert await ok(gateway, "GET", "/admin/api/contacts/u-zed") == created

    duplicate = await call(gateway, "POST", "/admin/api/contacts", {"user_id": "u-zed", "email": "other@example.com"})
    assert duplicate.status == 409
    assert await ok(gateway, "GET", "/admin/api/contacts/u-zed") == created

    changed = await ok(gateway, "PATCH", "/admin/api/contacts/u-zed", {"email": "zed@example.org"})
    assert changed == {**created, "email": "zed@example.org"}
    minimal = await ok(gateway, "POST", "/admin/api/contacts", {"user_id": "u-min"}, status=201)
    assert minimal == {
        "type": "contact",
        "user_id": "u-min",
        "email": None,
        "name": None,
        "custom_attributes": {},
        "companies": [],
    }

    for method, body in (("GET", NO_BODY), ("PATCH", {"name": "X"}), ("DELETE", NO_BODY)):
        assert (await call(gateway, method, "/admin/api/contacts/u-nobody", body)).status == 404, method

    assert await ok(gateway, "DELETE", "/admin/api/contacts/u-zed") == {
        "type": "contact",
        "user_id": "u-zed",
        "deleted": True,
    }
    assert (await call(gateway, "GET", "/admin/api/contacts/u-zed")).status == 404


async def test_a_contact_with_tickets_or_replies_is_not_deleted_and_nothing_is_lost(
    start_gateway: StartGateway,
) -> None:
    gateway = await start_gateway(**DEMO)
    # Wrote one reply on someone else's ticket, created no ticket.
    await ok(gateway, "POST", "/admin/api/contacts", {"user_id": "u-replier"}, status=201)
    ticket = customer_ticket_of("acme")
    await ok(
        gateway,
        "POST",
        f"/admin/api/tickets/{ticket}/parts",
        {"body": "Me too", "public": True, "author": "u-replier"},
        status=201,
    )
    before = dump(gateway)
    for user_id, detail in (("u-ann", "created"), ("u-replier", "1 replies")):
        refused = await call(gateway, "DELETE", f"/admin/api/contacts/{user_id}")
        assert refused.status == 409, user_id
        assert detail in refused.error["detail"]
    assert dump(gateway) == before


async def test_deleting_a_contact_ends_their_memberships(start_gateway: StartGateway) -> None:
    gateway = await start_gateway(**DEMO)
    members = (await ok(gateway, "GET", "/admin/api/companies/acme"))["user_count"]
    await ok(gateway, "POST", "/admin/api/contacts", {"user_id": "u-leaving"}, status=201)
    await ok(gateway, "PUT", "/admin/api/contacts/u-leaving/companies/acme")
    assert (await ok(gateway, "GET", "/admin/api/companies/acme"))["user_count"] == members + 1
    await ok(gateway, "DELETE", "/admin/api/contacts/u-leaving")
    assert (await ok(gateway, "GET", "/admin/api/companies/acme"))["user_count"] == members


async def test_membership_put_is_idempotent_and_delete_needs_a_membership(start_gateway: StartGateway) -> None:
    gateway = await start_gateway(**DEMO)
    members = (await ok(gateway, "GET", "/admin/api/companies/acme"))["user_count"]
    first = await ok(gateway, "PUT", "/admin/api/contacts/u-kim/companies/acme")
    assert first["companies"] == ["acme"]
    assert await ok(gateway, "PUT", "/admin/api/contacts/u-kim/companies/acme") == first
    assert (await ok(gateway, "GET", "/admin/api/companies/acme"))["user_count"] == members + 1
    both = await ok(gateway, "PUT", "/admin/api/contacts/u-kim/companies/globex")
    assert both["companies"] == ["acme", "globex"]

    left = await ok(gateway, "DELETE", "/admin/api/contacts/u-kim/companies/acme")
    assert left["companies"] == ["globex"]
    again = await call(gateway, "DELETE", "/admin/api/contacts/u-kim/companies/acme")
    assert again.status == 404
    assert "not a member" in again.error["detail"]
    assert (await ok(gateway, "GET", "/admin/api/companies/acme"))["user_count"] == members

    for method in ("PUT", "DELETE"):
        for target in ("/admin/api/contacts/u-nobody/companies/acme", "/admin/api/contacts/u-kim/companies/nope"):
            assert (await call(gateway, method, target)).status == 404, (method, target)
    assert (await ok(gateway, "GET", "/admin/api/contacts/u-kim"))["companies"] == ["globex"]


async def test_the_portal_sees_a_membership_change_at_once(start_gateway: StartGateway) -> None:
    gateway = await start_gateway(**DEMO)
    await ok(gateway, "POST", "/admin/api/contacts", {"user_id": "u-new", "email": "new@example.com"}, status=201)
    ticket = customer_ticket_of("acme")

    async def portal_view() -> tuple[list[str], set[str], int]:
        me = await portal_json(gateway, "/api/v1/me", "u-new")
        listed = await portal_json(gateway, "/api/v1/tickets", "u-new")
        detail = await portal(gateway, f"/api/v1/tickets/{ticket}", "u-new")
        companies = [company["company_id"] for company in me["companies"]]
        return companies, {item["company"] for item in listed["tickets"]}, detail.status

    assert await portal_view() == ([], set(), 404)
    await ok(gateway, "PUT", "/admin/api/contacts/u-new/companies/acme")
    assert await portal_view() == (["acme"], {"Acme Corp"}, 200)
    await ok(gateway, "DELETE", "/admin/api/contacts/u-new/companies/acme")
    assert await portal_view() == ([], set(), 404)


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


# --- validation -------------------------------------------------------------------------------------

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


# --- the audit ----------------------------------------------------------------------------------------


def change(action: str, resource: str, key: str, *fields: str) -> dict[str, Any]:
    """An expected ``admin_change``; ``*`` in ``key`` stands for the ticket id the gateway chose."""
    return {"action": action, "resource": resource, "id": key, "fields": sorted(fields), "result": "made"}


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

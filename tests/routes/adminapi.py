"""Talking to the admin API (``routes/admin.py``) through the real gateway over TLS, for the ``test_admin_*`` files.

Stores start from the demo seed (``gateway.store.demo``) unless a test builds
its own data through the API itself; expected answers come from the demo's
lines, not from the gateway. Planted values (``CANARY``) ride in the admin
token and in field values, never in ids or paths, so no audit file may hold one.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Mapping
from contextlib import closing
from dataclasses import dataclass
from typing import Any

from multidict import CIMultiDictProxy
from yarl import URL

from gateway.policy.identity import sign_token
from gateway.store.demo import demo_lines
from gateway.store.importer import TicketLine
from tests.conftest import CANARY, SECRET, Gateway

TOKEN = f"admin-token-{CANARY}-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
EVERYONE_IN = {"match": "any", "rules": [{"attribute": "person.user_id", "op": "exists"}]}
ADMIN: dict[str, Any] = {"admin": {"token": TOKEN}}
DEMO: dict[str, Any] = {**ADMIN, "store": {"seed_demo": True}, "portal": {"access": EVERYONE_IN}}
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


# --- what the audit says ------------------------------------------------------------------------------


def change(action: str, resource: str, key: str, *fields: str) -> dict[str, Any]:
    """An expected ``admin_change``; ``*`` in ``key`` stands for the ticket id the gateway chose."""
    return {"action": action, "resource": resource, "id": key, "fields": sorted(fields), "result": "made"}

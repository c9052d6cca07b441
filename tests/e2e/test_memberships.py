"""No portal or public route can change a company membership or a ticket's company (issue 5, deliverable 5).

The gateway runs with the demo store, the portal in render mode, the dev login
on, an admin token set and the Messenger pointed at the recording upstream.
Two verified visitors (Ben, in Acme and Globex, by bearer token; Kim, in no
company, by cookie), whose tokens even sign company claims, send every method
to every route the running app registers outside ``/admin/api``, each time
carrying membership-change attempts in a JSON body, in a form body (with a
valid CSRF token) and in the query string. Afterwards memberships, companies,
contacts and every ticket's company are exactly what they were. The admin API
then changes one membership, to show the snapshot would have seen a change.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web
from yarl import URL

from gateway.policy.csrf import csrf_token, derive_key
from gateway.policy.identity import sign_token
from gateway.store.demo import demo_lines
from gateway.store.importer import TicketLine
from tests.conftest import CANARY, SECRET, Gateway, RecordingUpstream, StartGateway

ADMIN_TOKEN = f"admin-{CANARY}-0123456789abcdef"
ADMIN_PREFIX = "/admin/api"
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
EVERYONE_IN = {"match": "any", "rules": [{"attribute": "person.user_id", "op": "exists"}]}
# Companies each visitor is not in, and so tries to join (or move a ticket to).
TARGETS = {"u-ben": "initech", "u-kim": "acme"}
# Placeholders of the non-admin routes that are not a ticket id; a route with any other placeholder fails
# the sweep until it is given a value here, so a new route cannot slip past it.
FILLS = {
    "tail": "contacts/{user_id}/companies/{company_id}",
    "endpoint": "ping",
}
STATIC_FILE = "gateway.css"
Snapshot = dict[str, list[tuple[Any, ...]]]


@dataclass(frozen=True)
class Visitor:
    """A verified visitor, the ticket of theirs the sweep aims at and how their token travels."""

    user_id: str
    ticket_id: str
    delivery: str  # "bearer" or "cookie"

    @property
    def target(self) -> str:
        return TARGETS[self.user_id]

    def token(self) -> str:
        # The token itself claims the company the visitor is not in: signed claims never write the store.
        claims = {"note": CANARY, "company_id": self.target, "companies": [{"company_id": self.target}]}
        return sign_token(SECRET, user_id=self.user_id, now=time.time(), ttl=600, extra=claims)

    def credentials(self) -> dict[str, str]:
        token = self.token()
        if self.delivery == "bearer":
            return {"Authorization": f"Bearer {token}"}
        return {"Cookie": f"portal-jwt={token}"}


def own_customer_ticket(user_id: str) -> str:
    """The first Customer ticket the demo store gives ``user_id`` (visible to them, so handlers really run)."""
    return next(
        line.ticket_id
        for line in demo_lines(0)
        if isinstance(line, TicketLine) and line.creator == user_id and line.category == "Customer"
    )


def snapshot(database: Path) -> Snapshot:
    """Memberships, companies, contacts and the company of every ticket, read straight from the store."""
    queries = {
        "memberships": "SELECT p.user_id, c.company_id FROM memberships m"
        " JOIN contacts p ON p.id = m.contact_id JOIN companies c ON c.id = m.company_id",
        "ticket_companies": "SELECT t.ticket_id, c.company_id FROM tickets t"
        " LEFT JOIN companies c ON c.id = t.company_id",
        # The raw rows too: a membership of a row id that no longer (or not yet) exists would not join.
        "membership_rows": "SELECT contact_id, company_id FROM memberships",
        "ticket_rows": "SELECT id, company_id, creator_id FROM tickets",
        "companies": "SELECT company_id, name, plan, size, monthly_spend, custom_attributes FROM companies",
        "contacts": "SELECT user_id, email, name, custom_attributes FROM contacts",
    }
    with closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as connection:
        return {name: sorted(connection.execute(sql).fetchall()) for name, sql in queries.items()}


def concrete_paths(app: web.Application, visitor: Visitor) -> Iterator[tuple[str, str]]:
    """(route name, path) for every resource outside the admin API, placeholders filled for ``visitor``."""
    for resource in app.router.resources():
        canonical = resource.canonical
        if canonical.startswith(ADMIN_PREFIX):
            continue
        info = resource.get_info()
        template = str(info.get("formatter", info.get("path")))
        values = {"ticket_id": visitor.ticket_id, "filename": STATIC_FILE, **FILLS}
        path = template.format_map(values).format(user_id=visitor.user_id, company_id=visitor.target)
        yield str(resource.name), path


def attempts(visitor: Visitor) -> Iterator[tuple[str, dict[str, Any]]]:
    """Keyword arguments of one request per way of smuggling a membership or ticket-company change."""
    company = visitor.target
    fields: dict[str, str] = {
        "companies": company,
        "company_id": company,
        "company": company,
        "user_id": visitor.user_id,
        "ticket_id": visitor.ticket_id,
    }
    user_data = {"user_id": visitor.user_id, "companies": [{"company_id": company}], "company": {"id": company}}
    json_body = {
        **fields,
        "companies": [{"company_id": company, "id": company}],
        "company": {"company_id": company, "id": company},
        "user_data": user_data,
        "user_active_company_id": company,
    }
    form = {
        **fields,
        "user_data": json.dumps(user_data),
        "user_active_company_id": company,
        # A valid CSRF token for whichever join form the path is, so the portal's form handler runs in full.
        "csrf_token": csrf_token(derive_key(SECRET), visitor.user_id, f"join:{visitor.ticket_id}"),
    }
    yield "json", {"json": json_body}
    yield "form", {"data": form}
    yield "query", {"params": fields}


Outcome = tuple[str, str, str, str, int]
"""(user_id, route name, method, attempt, status) of one request of the sweep."""


async def sweep(gateway: Gateway, visitor: Visitor) -> list[Outcome]:
    """Every route x method x attempt, as ``visitor``."""
    outcomes: list[Outcome] = []
    for name, path in concrete_paths(gateway.running.app, visitor):
        for method in METHODS:
            for kind, payload in attempts(visitor):
                url = gateway.url.join(URL(path))
                async with gateway.client.request(
                    method, url, headers=visitor.credentials(), allow_redirects=False, **payload
                ) as response:
                    if response.content_type == "text/event-stream":  # a live stream stays open: its status says enough
                        response.close()
                    else:
                        await response.read()
                    outcomes.append((visitor.user_id, name, method, kind, response.status))
    return outcomes


async def test_no_route_outside_the_admin_api_changes_a_membership_or_a_ticket_company(
    start_gateway: StartGateway, upstream: RecordingUpstream
) -> None:
    gateway = await start_gateway(
        store={"seed_demo": True},
        admin={"token": ADMIN_TOKEN},
        portal={"mode": "render", "access": EVERYONE_IN},
        identity={"dev_login": True},
        messenger={"upstream": str(upstream.url)},
    )
    database = gateway.config.store.path
    before = snapshot(database)
    assert ("u-ben", "acme") in before["memberships"]
    assert not [row for row in before["memberships"] if row[0] == "u-kim"]

    visitors = [
        Visitor("u-ben", own_customer_ticket("u-ben"), "bearer"),
        Visitor("u-kim", own_customer_ticket("u-kim"), "cookie"),
    ]
    outcomes = [outcome for visitor in visitors for outcome in await sweep(gateway, visitor)]

    assert snapshot(database) == before

    # The sweep sent every method to every route with every attempt, once per visitor ...
    names = {name for name, _ in concrete_paths(gateway.running.app, visitors[0])}
    assert {"messenger", "api_me", "api_join", "portal_join", "dev_login_post", "proxy", "static"} <= names
    sent = Counter((user_id, name, method, kind) for user_id, name, method, kind, _ in outcomes)
    expected = {
        (visitor.user_id, name, method, kind)
        for visitor in visitors
        for name in names
        for method in METHODS
        for kind in ("json", "form", "query")
    }
    assert set(sent) == expected
    assert set(sent.values()) == {1}
    # ... as verified visitors whose requests the handlers really served (not bounced at the door).
    status = {(user_id, name, method, kind): code for user_id, name, method, kind, code in outcomes}
    for visitor in visitors:
        assert status[(visitor.user_id, "api_me", "GET", "query")] == 200
        assert status[(visitor.user_id, "api_ticket", "GET", "json")] == 200
        assert status[(visitor.user_id, "portal_join", "POST", "form")] == 303  # the CSRF token was accepted
        assert status[(visitor.user_id, "api_join", "POST", "json")] == 200
        assert status[(visitor.user_id, "messenger", "POST", "form")] == 200
    assert any(request.path == "/messenger/web/ping" for request in upstream.requests)

    # The snapshot does see a membership change when one is made, through the admin API.
    async with gateway.client.put(
        gateway.url / "admin/api/contacts/u-kim/companies/acme", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
    ) as response:
        assert response.status == 200
    after = snapshot(database)
    assert after["memberships"] == sorted([*before["memberships"], ("u-kim", "acme")])

"""Who sees which tickets: the product's visibility table on every read path, and properties of the filter.

The store holds real rows: companies A and B; contacts a and a2 (A), ab (A and B), b (B) and
nobody (no company); tickets of every category created in A by a, a2 and ab, in B by b and ab,
and with no company by a. Every ticket carries internal notes with a planted word. The
expected answers come from an oracle written here from DESIGN.md, never from the gateway.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.config import VisibilityConfig
from gateway.policy.identity import Identity, sign_token
from gateway.policy.visibility import Scope, VisibilityPolicy, Visitor
from gateway.store.demo import demo_lines
from gateway.store.importer import import_lines
from gateway.store.models import SORT_KEYS, Contact, TicketFilter, TicketQuery
from gateway.store.sqlite import SQLiteStore
from gateway.store.sqlite.lines import write_line
from gateway.store.visibility import shows_scope, shows_ticket, visible_clause
from tests.conftest import SECRET, Gateway, RecordingUpstream, StartGateway

NOTE = "WOMBATnote"  # planted in every internal note: must never leave the store
INTERNAL_STATE = "Xyzzy"  # in every internal state label: customers only ever see the external label
PAGE_SIZE = 2  # small, so every list spans several pages
NOW = 1_767_225_600
T = TypeVar("T")


@dataclass(frozen=True)
class Person:
    user_id: str
    email: str
    name: str
    companies: tuple[str, ...]
    in_store: bool = True


PEOPLE = (
    Person("a", "a@a.example", "Ann Alpha", ("A",)),
    Person("a2", "a2@elsewhere.example", "Abe Two", ("A",)),
    Person("ab", "ab@both.example", "Abby Both", ("A", "B")),
    Person("b", "b@b.example", "Bo Beta", ("B",)),
    Person("nobody", "nobody@a.example", "Nora Nobody", ()),
)
GHOST = Person("ghost", "ghost@a.example", "Gus Ghost", (), in_store=False)  # verified, but not in the store
VISITORS = (*PEOPLE, GHOST)
BY_ID = {person.user_id: person for person in VISITORS}
COMPANY_NAMES = {"A": "Alpha Ltd", "B": "Beta Inc"}
STATES = (  # (category, internal label, external label)
    ("submitted", f"{INTERNAL_STATE} triage", "Submitted"),
    ("in_progress", f"{INTERNAL_STATE} digging", "In progress"),
    ("waiting_on_customer", f"{INTERNAL_STATE} chasing", "Waiting on you"),
    ("resolved", f"{INTERNAL_STATE} done", "Resolved"),
)
EXTERNAL = {internal: external for _, internal, external in STATES}
KINDS = (("Customer", False), ("Back-office", True), ("Back-office", False), ("Tracker", False))
OWNERS = (("A", "a"), ("A", "a2"), ("A", "ab"), ("B", "b"), ("B", "ab"), (None, "a"))
TYPES = ("Bug report", "Question")


@dataclass(frozen=True)
class Ticket:
    ticket_id: str
    company: str | None
    creator: str
    category: str
    shared: bool
    state: str
    type: str
    updated_at: int

    @property
    def customer_shared(self) -> bool:
        return self.category == "Customer" or (self.category == "Back-office" and self.shared)

    @property
    def public_bodies(self) -> list[str]:
        return [f"Support reply {self.ticket_id}", f"Creator reply {self.ticket_id}"]


def _tickets() -> tuple[Ticket, ...]:
    tickets = []
    for owner_index, (company, creator) in enumerate(OWNERS):
        for kind_index, (category, shared) in enumerate(KINDS):
            n = owner_index * len(KINDS) + kind_index
            tickets.append(
                Ticket(
                    ticket_id=str(101 + n),
                    company=company,
                    creator=creator,
                    category=category,
                    shared=shared,
                    state=STATES[(owner_index + kind_index) % len(STATES)][1],
                    type=TYPES[(n // 2) % len(TYPES)],
                    updated_at=NOW + (n * 7919) % 1000,
                )
            )
    return tuple(tickets)


TICKETS = _tickets()
TICKET_BY_ID = {ticket.ticket_id: ticket for ticket in TICKETS}
MISSING_ID = "999"


def store_lines() -> list[str]:
    """The store as documented import lines."""
    lines = [
        json.dumps({"kind": "company", "company_id": "A", "name": COMPANY_NAMES["A"], "plan": "pro", "size": 10}),
        json.dumps({"kind": "company", "company_id": "B", "name": COMPANY_NAMES["B"], "plan": "basic", "size": 500}),
    ]
    lines += [
        json.dumps(
            {
                "kind": "contact",
                "user_id": p.user_id,
                "email": p.email,
                "name": p.name,
                "companies": list(p.companies),
            }
        )
        for p in PEOPLE
    ]
    lines += [
        json.dumps({"kind": "ticket_state", "category": c, "internal_label": i, "external_label": e})
        for c, i, e in STATES
    ]
    for n, t in enumerate(TICKETS):
        parts: list[dict[str, Any]] = [
            {"author_name": "Sam (support)", "body": f"Support reply {t.ticket_id}", "public": True, "created_at": 10},
            {
                "author_name": "Sam (support)",
                "body": f"{NOTE} escalate {t.ticket_id}",
                "public": False,
                "created_at": 15,
            },
            {"author": t.creator, "body": f"Creator reply {t.ticket_id}", "public": True, "created_at": 20},
        ]
        if n % 2 == 0:  # an internal note written by the customer contact themself
            parts.append({"author": t.creator, "body": f"{NOTE} own {t.ticket_id}", "public": False, "created_at": 30})
        lines.append(
            json.dumps(
                {
                    "kind": "ticket",
                    "ticket_id": t.ticket_id,
                    "type": t.type,
                    "state": t.state,
                    "category": t.category,
                    "is_shared": t.shared,
                    "company": t.company,
                    "creator": t.creator,
                    "title": f"Title of {t.ticket_id}",
                    "description": f"Description of {t.ticket_id}",
                    "created_at": t.updated_at - 5000,
                    "updated_at": t.updated_at,
                    "parts": parts,
                    "participants": [t.creator],
                }
            )
        )
    return lines


def expected_ids(person: Person, restricted: bool, scope: Scope) -> set[str]:
    """DESIGN.md, "Access and visibility": shared tickets of their companies; only their own when restricted
    or in the "Created by me" scope. A ticket with no company belongs to no company: only its creator sees it."""
    own_only = restricted or scope == "mine"
    return {
        t.ticket_id
        for t in TICKETS
        if t.customer_shared
        and person.in_store
        and (t.company in person.companies or (t.company is None and t.creator == person.user_id))
        and (not own_only or t.creator == person.user_id)
    }


def token(person: Person) -> str:
    return sign_token(SECRET, user_id=person.user_id, now=time.time(), ttl=3600, email=person.email)


# --- talking to the gateway --------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes
    request_id: str

    def json(self) -> Any:
        return json.loads(self.body)

    def comparable(self, ticket_id: str | None = None) -> tuple[int, tuple[tuple[str, str], ...], bytes]:
        """Everything but what differs per request (the request id and the date; and the id asked for, if given)."""
        headers = tuple(
            (name, value.replace(self.request_id, "")) for name, value in self.headers if name not in ("date",)
        )
        body = self.body.replace(self.request_id.encode(), b"")
        if ticket_id is not None:
            body = body.replace(ticket_id.encode(), b"{id}")
        return self.status, headers, body


@dataclass
class Portal:
    gateway: Gateway
    state_ids: dict[str, int]
    tokens: dict[str, str] = field(default_factory=dict)

    async def call(
        self, person: Person, method: str, path: str, params: dict[str, str] | None = None, *, body: bytes = b""
    ) -> Answer:
        headers = {"Authorization": f"Bearer {self.tokens[person.user_id]}"}
        url = self.gateway.url.with_path(path)
        async with self.gateway.client.request(
            method, url, params=params, headers=headers, data=body or None, allow_redirects=False
        ) as response:
            raw = await response.read()
            request_id = response.headers.get("X-Request-Id", "")
            names = sorted((name.lower(), value) for name, value in response.headers.items())
            answer = Answer(response.status, tuple(names), raw, request_id)
        assert NOTE.encode() not in raw, f"{method} {path} {params}: internal note leaked"
        assert INTERNAL_STATE.encode() not in raw, f"{method} {path} {params}: internal state label leaked"
        return answer


async def build_store(path: Path) -> dict[str, int]:
    """Write the store through the importer (strict: all or nothing); return state ids by internal label."""
    store = await SQLiteStore.open(path)
    try:
        report = await import_lines(store, store_lines(), strict=True)
        assert report.errors == []
        return {state.internal_label: state.id for state in await store.ticket_states()}
    finally:
        await store.close()


EVERYONE_IN = {"match": "any", "rules": [{"attribute": "person.user_id", "op": "exists"}]}


async def open_portal(start_gateway: StartGateway, tmp_path: Path, visibility: dict[str, Any]) -> Portal:
    state_ids = await build_store(tmp_path / "portal.db")
    gateway = await start_gateway(portal={"access": EVERYONE_IN, "visibility": visibility, "page_size": PAGE_SIZE})
    portal = Portal(gateway, state_ids)
    portal.tokens = {person.user_id: token(person) for person in VISITORS}
    return portal


# --- the visibility table, on every read path ---------------------------------------------------

A_EMAIL = {"attribute": "person.email", "op": "ends_with", "value": "@a.example"}
IN_B = {"attribute": "company.company_id", "op": "equals", "value": "B"}
ALL_IDS = frozenset(person.user_id for person in VISITORS)

TABLE = [
    pytest.param({"enabled": False, "conditions": []}, frozenset[str](), id="off"),
    pytest.param({"enabled": False, "conditions": [A_EMAIL]}, frozenset[str](), id="off-conditions-kept-inactive"),
    pytest.param({"enabled": True, "conditions": []}, ALL_IDS, id="on-no-conditions-everyone-restricted"),
    pytest.param({"enabled": True, "conditions": [A_EMAIL]}, frozenset({"a", "nobody", "ghost"}), id="on-email"),
    pytest.param({"enabled": True, "conditions": [IN_B]}, frozenset({"ab", "b"}), id="on-any-company-matches"),
    pytest.param(
        {"enabled": True, "conditions": [{"match": "any", "rules": [A_EMAIL, IN_B]}]},
        frozenset({"a", "nobody", "ghost", "ab", "b"}),
        id="on-group",
    ),
]


async def check_me(portal: Portal, person: Person, restricted: bool, problems: list[str]) -> None:
    answer = await portal.call(person, "GET", "/api/v1/me")
    if answer.status != 200:
        problems.append(f"{person.user_id}: /api/v1/me answered {answer.status}")
        return
    me = answer.json()
    got = (me["user_id"], me["email"], sorted(c["company_id"] for c in me["companies"]), me["scopes"], me["restricted"])
    want = (
        person.user_id,
        person.email,
        sorted(person.companies),
        ["mine"] if restricted else ["all", "mine"],
        restricted,
    )
    if got != want:
        problems.append(f"{person.user_id}: /api/v1/me (user_id, email, companies, scopes, restricted) {got} != {want}")
    names = sorted(c["name"] for c in me["companies"])
    if names != sorted(COMPANY_NAMES[c] for c in person.companies):
        problems.append(f"{person.user_id}: /api/v1/me company names {names}")


async def collect(
    portal: Portal, person: Person, params: dict[str, str], want: set[str], what: str, problems: list[str]
) -> str | None:
    """Walk every page of one list; check ids, counts, pages, order and the JSON of each item. Return the scope."""
    seen: list[str] = []
    page, pages, scope = 1, 1, None
    while page <= pages:
        answer = await portal.call(person, "GET", "/api/v1/tickets", {**params, "page": str(page)})
        if answer.status != 200:
            problems.append(f"{what} page {page}: status {answer.status}")
            return None
        body = answer.json()
        scope = body["scope"]
        pages = body["pages"]["total_pages"]
        if body["total_count"] != len(want):
            problems.append(f"{what} page {page}: total_count {body['total_count']} != {len(want)}")
        if pages != max(1, -(-len(want) // PAGE_SIZE)) or body["pages"]["page"] != page:
            problems.append(f"{what} page {page}: pages {body['pages']} for {len(want)} tickets")
        if len(body["tickets"]) > PAGE_SIZE:
            problems.append(f"{what} page {page}: {len(body['tickets'])} items on a page of {PAGE_SIZE}")
        for item in body["tickets"]:
            ticket = TICKET_BY_ID.get(item["ticket_id"])
            if ticket is None:
                problems.append(f"{what}: unknown ticket {item['ticket_id']}")
                continue
            facts = (item["state"]["label"], item["company"], item["creator"], item["ticket_type"], item["updated_at"])
            expected = (
                EXTERNAL[ticket.state],
                COMPANY_NAMES[ticket.company] if ticket.company else None,
                BY_ID[ticket.creator].name,
                ticket.type,
                ticket.updated_at,
            )
            if facts != expected:
                problems.append(f"{what}: ticket {ticket.ticket_id} shows {facts}, expected {expected}")
            seen.append(item["ticket_id"])
        page += 1
        if page > 100:
            problems.append(f"{what}: more than 100 pages")
            break
    if sorted(seen) != sorted(want):
        problems.append(f"{what}: listed {sorted(seen)}, expected {sorted(want)}")
    updated = [TICKET_BY_ID[t].updated_at for t in seen if t in TICKET_BY_ID]
    if updated != sorted(updated, reverse=True):
        problems.append(f"{what}: not sorted by updated, descending, across pages")
    beyond = await portal.call(person, "GET", "/api/v1/tickets", {**params, "page": str(pages + 1)})
    if beyond.status != 200 or beyond.json()["tickets"] or beyond.json()["total_count"] != len(want):
        problems.append(f"{what}: the page after the last answered {beyond.status} {beyond.body[:200]!r}")
    return scope


async def check_lists(portal: Portal, person: Person, restricted: bool, problems: list[str]) -> None:
    for asked in ("all", "mine", None):
        params = {"scope": asked} if asked else {}
        effective: Scope = "mine" if restricted or asked == "mine" else "all"
        want = expected_ids(person, restricted, effective)
        what = f"{person.user_id}: GET /api/v1/tickets scope={asked}"
        scope = await collect(portal, person, params, want, what, problems)
        if scope is not None and scope != effective:
            problems.append(f"{what}: answered scope {scope}, expected {effective}")
    for _, internal, _ in STATES:
        state_id = str(portal.state_ids[internal])
        for scope_name in ("all", "mine"):
            effective = "mine" if restricted or scope_name == "mine" else "all"
            want = {t for t in expected_ids(person, restricted, effective) if TICKET_BY_ID[t].state == internal}
            what = f"{person.user_id}: GET /api/v1/tickets scope={scope_name} state={internal}"
            await collect(portal, person, {"scope": scope_name, "state": state_id}, want, what, problems)


async def check_details(portal: Portal, person: Person, restricted: bool, problems: list[str]) -> None:
    missing = await portal.call(person, "GET", f"/api/v1/tickets/{MISSING_ID}")
    if missing.status != 404:
        problems.append(f"{person.user_id}: a ticket that does not exist answered {missing.status}")
    visible = expected_ids(person, restricted, "all")
    for ticket in TICKETS:
        answer = await portal.call(person, "GET", f"/api/v1/tickets/{ticket.ticket_id}")
        what = f"{person.user_id}: GET /api/v1/tickets/{ticket.ticket_id} ({ticket.category}, shared={ticket.shared})"
        if ticket.ticket_id not in visible:
            if answer.comparable() != missing.comparable():
                problems.append(f"{what}: {answer.status}, not the answer for a missing ticket")
            continue
        if answer.status != 200:
            problems.append(f"{what}: {answer.status}, expected 200")
            continue
        detail = answer.json()
        got = (detail["ticket_id"], detail["description"], [p["body"] for p in detail["parts"]], detail["participant"])
        want = (
            ticket.ticket_id,
            f"Description of {ticket.ticket_id}",
            ticket.public_bodies,
            ticket.creator == person.user_id,
        )
        if got != want:
            problems.append(f"{what}: (id, description, parts, participant) {got} != {want}")
        if detail["state"]["label"] != EXTERNAL[ticket.state]:
            problems.append(f"{what}: state label {detail['state']['label']}")


@pytest.mark.parametrize(("visibility", "restricted"), TABLE)
async def test_visibility_table_on_every_read_path(
    start_gateway: StartGateway, tmp_path: Path, visibility: dict[str, Any], restricted: frozenset[str]
) -> None:
    portal = await open_portal(start_gateway, tmp_path, visibility)
    problems: list[str] = []

    async def check(person: Person) -> None:
        is_restricted = person.user_id in restricted
        await check_me(portal, person, is_restricted, problems)
        await check_lists(portal, person, is_restricted, problems)
        await check_details(portal, person, is_restricted, problems)

    await asyncio.gather(*(check(person) for person in VISITORS))
    assert not problems, "\n".join(problems)


def test_the_oracle_covers_the_interesting_cases() -> None:
    """The table above is only as good as its data: make sure it can tell the cases apart."""
    a, a2, ab, b = (BY_ID[user_id] for user_id in ("a", "a2", "ab", "b"))
    # Unrestricted members of A see tickets others created; restricted ones do not.
    assert expected_ids(a, False, "all") - expected_ids(a, True, "all")
    assert expected_ids(a, True, "all") == expected_ids(a, False, "mine") == expected_ids(a, True, "mine")
    # A member of two companies sees more than a member of one; the company-less ticket is its creator's alone.
    assert expected_ids(ab, False, "all") > expected_ids(a2, False, "all")
    assert {t.ticket_id for t in TICKETS if t.company is None and t.customer_shared} <= expected_ids(a, True, "mine")
    assert not expected_ids(a2, False, "all") & {t.ticket_id for t in TICKETS if t.company is None}
    assert not expected_ids(b, False, "all") & {t.ticket_id for t in TICKETS if t.company == "A"}
    assert not expected_ids(BY_ID["nobody"], False, "all")
    assert not expected_ids(GHOST, False, "all")
    # Every visitor's visible set is shared-only and non-trivial for the members.
    hidden = {t.ticket_id for t in TICKETS if not t.customer_shared}
    assert len(hidden) == len(OWNERS) * 2
    for person in (a, a2, ab, b):
        assert expected_ids(person, False, "all")
        assert not expected_ids(person, False, "all") & hidden
        assert len(expected_ids(person, False, "all")) > PAGE_SIZE


# --- never visible, and cross-company ----------------------------------------------------------


async def test_tracker_unshared_back_office_and_internal_notes_never_appear(
    start_gateway: StartGateway, tmp_path: Path
) -> None:
    portal = await open_portal(start_gateway, tmp_path, {"enabled": False})
    hidden = [t for t in TICKETS if not t.customer_shared]
    assert {t.category for t in hidden} == {"Tracker", "Back-office"}
    for person in VISITORS:
        for ticket in hidden:
            assert (await portal.call(person, "GET", f"/api/v1/tickets/{ticket.ticket_id}")).status == 404
        listed: set[str] = set()
        for page in range(1, 20):
            answer = await portal.call(person, "GET", "/api/v1/tickets", {"scope": "all", "page": str(page)})
            listed |= {item["ticket_id"] for item in answer.json()["tickets"]}
            if page >= answer.json()["pages"]["total_pages"]:
                break
        assert len(listed) == answer.json()["total_count"]
        assert not listed & {t.ticket_id for t in hidden}
    # Visible tickets have internal notes too: their detail shows only the public parts.
    a = BY_ID["a"]
    detail = (await portal.call(a, "GET", "/api/v1/tickets/101")).json()
    assert [part["body"] for part in detail["parts"]] == TICKET_BY_ID["101"].public_bodies


METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")
# The detail route; the join route of DESIGN.md; the detail path with a trailing slash.
TICKET_ROUTES = ("/api/v1/tickets/{id}", "/api/v1/tickets/{id}/join", "/api/v1/tickets/{id}/")


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("template", TICKET_ROUTES)
async def test_other_company_tickets_answer_like_missing_ones_on_every_route(
    start_gateway: StartGateway, tmp_path: Path, upstream: RecordingUpstream, template: str, method: str
) -> None:
    """Visitor b (company B) asks for every ticket they may not see: A's, B's hidden ones, a's company-less one."""
    portal = await open_portal(start_gateway, tmp_path, {"enabled": False})
    b = BY_ID["b"]
    invisible = [t.ticket_id for t in TICKETS if t.ticket_id not in expected_ids(b, False, "all")]
    assert {TICKET_BY_ID[t].company for t in invisible} == {"A", "B", None}
    body = b'{"ticket_id": "x", "participants": ["b"]}' if method in ("POST", "PUT", "PATCH") else b""
    problems: list[str] = []
    missing = await portal.call(b, method, template.format(id=MISSING_ID), body=body)
    if missing.status not in (404, 405):
        problems.append(f"no such ticket: {missing.status} {missing.body[:100]!r}, expected 404 or 405")
    elif method != "HEAD" and missing.json()["error"]["status"] != missing.status:
        problems.append(f"no such ticket: {missing.status} without the JSON error body")
    differing: list[str] = []
    for ticket_id in invisible:
        answer = await portal.call(b, method, template.format(id=ticket_id), body=body)
        if answer.status not in (404, 405) or answer.comparable(ticket_id) != missing.comparable(MISSING_ID):
            differing.append(f"{ticket_id}: {answer.status}")
    if differing:
        problems.append(f"{len(differing)} invisible tickets not answered 404/405 like a missing one: {differing[:5]}")
    forwarded = [f"{r.method} {r.path}" for r in upstream.requests if r.path.startswith("/api/")]
    if forwarded:
        problems.append(f"{len(forwarded)} portal API requests were forwarded upstream, e.g. {forwarded[:3]}")
    assert not problems, "\n".join(problems)


async def test_other_company_tickets_are_never_listed(start_gateway: StartGateway, tmp_path: Path) -> None:
    """The list, however it is asked (scopes, sorts, states, made-up filters), never holds a ticket of company A."""
    portal = await open_portal(start_gateway, tmp_path, {"enabled": False})
    b = BY_ID["b"]
    of_a = {t.ticket_id for t in TICKETS if t.company == "A"}
    attempts: list[dict[str, str]] = [
        {"scope": scope, "sort": sort, "order": order}
        for scope in ("all", "mine")
        for sort in SORT_KEYS
        for order in ("asc", "desc")
    ]
    attempts += [{"state": str(state_id)} for state_id in portal.state_ids.values()]
    attempts += [
        {"company": "A"},
        {"company_id": "1"},
        {"creator": "1"},
        {"creator": "2"},
        {"ticket_id": "101"},
        {"q": "101"},
    ]
    listed_any: set[str] = set()
    for params in attempts:
        first = await portal.call(b, "GET", "/api/v1/tickets", params)
        assert first.status == 200, params
        for page in range(1, first.json()["pages"]["total_pages"] + 1):
            answer = await portal.call(b, "GET", "/api/v1/tickets", {**params, "page": str(page)})
            listed = {item["ticket_id"] for item in answer.json()["tickets"]}
            assert not listed & of_a, f"GET /api/v1/tickets {params} page {page} listed company A tickets"
            listed_any |= listed
    assert listed_any == expected_ids(b, False, "all")  # b does see tickets (ab's in B): the list is not just empty


async def test_invisible_ticket_404_is_byte_identical_to_a_missing_one(
    start_gateway: StartGateway, tmp_path: Path
) -> None:
    portal = await open_portal(start_gateway, tmp_path, {"enabled": True, "conditions": [A_EMAIL]})
    a = BY_ID["a"]  # restricted: a2's ticket 105 in their own company is out of scope
    assert "105" not in expected_ids(a, True, "all")
    assert TICKET_BY_ID["105"].company == "A"
    assert TICKET_BY_ID["105"].customer_shared
    missing = await portal.call(a, "GET", f"/api/v1/tickets/{MISSING_ID}")
    out_of_scope = await portal.call(a, "GET", "/api/v1/tickets/105")
    assert missing.status == out_of_scope.status == 404
    assert missing.request_id != out_of_scope.request_id
    assert missing.request_id.encode() in missing.body
    assert out_of_scope.comparable() == missing.comparable()
    assert out_of_scope.json()["error"]["request_id"] == out_of_scope.request_id


async def test_a_verified_visitor_not_in_the_store_sees_nothing(start_gateway: StartGateway, tmp_path: Path) -> None:
    portal = await open_portal(start_gateway, tmp_path, {"enabled": False})
    me = (await portal.call(GHOST, "GET", "/api/v1/me")).json()
    assert (me["user_id"], me["email"], me["companies"], me["scopes"]) == ("ghost", GHOST.email, [], ["all", "mine"])
    for scope in ("all", "mine"):
        listed = (await portal.call(GHOST, "GET", "/api/v1/tickets", {"scope": scope})).json()
        assert (listed["tickets"], listed["total_count"]) == ([], 0)
    for ticket in TICKETS:
        assert (await portal.call(GHOST, "GET", f"/api/v1/tickets/{ticket.ticket_id}")).status == 404


# --- properties of the pure policy and the store's filter ---------------------------------------


@dataclass(frozen=True)
class Fixed:
    """A store built once for the module, with its facts read back for the oracles."""

    loop: asyncio.AbstractEventLoop
    store: SQLiteStore
    contacts: tuple[Contact, ...]
    company_ids: tuple[int, ...]
    state_ids: tuple[int, ...]
    type_ids: tuple[int, ...]
    category: dict[str, tuple[str, bool]]  # ticket_id -> (category, is_shared)
    creator: dict[str, int]  # ticket_id -> creator contact id
    scope: dict[str, int]  # ticket_id -> scope key (its company, or minus its creator)
    notes: frozenset[str]  # bodies of internal notes

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coroutine)

    def ids(self, visible: TicketFilter, query: TicketQuery) -> set[str]:
        page = self.run(self.store.list_tickets(visible, query))
        return {item.ticket_id for item in page.items}

    def clause_ids(self, visible: TicketFilter) -> set[str]:
        where, params = visible_clause(visible)
        sql = f"SELECT t.ticket_id FROM tickets t WHERE {where}"  # noqa: S608 (placeholders only)
        rows = self.run(self.store.transaction(lambda connection: connection.execute(sql, params).fetchall()))
        return {row[0] for row in rows}


@pytest.fixture(scope="module")
def fixed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fixed]:
    loop = asyncio.new_event_loop()
    path = tmp_path_factory.mktemp("visibility") / "portal.db"

    async def build() -> SQLiteStore:
        store = await SQLiteStore.open(path)
        assert (await import_lines(store, store_lines(), strict=True)).errors == []

        def demo(connection: Any) -> None:
            for line in demo_lines(NOW):
                write_line(connection, line)

        await store.transaction(demo)
        return store

    store = loop.run_until_complete(build())

    def read(sql: str) -> list[tuple[Any, ...]]:
        result: list[tuple[Any, ...]] = loop.run_until_complete(
            store.transaction(lambda connection: connection.execute(sql).fetchall())
        )
        return result

    tickets = read("SELECT ticket_id, category, is_shared, creator_id, coalesce(company_id, -creator_id) FROM tickets")
    try:
        yield Fixed(
            loop=loop,
            store=store,
            contacts=tuple(loop.run_until_complete(store.contacts())),
            company_ids=tuple(row[0] for row in read("SELECT id FROM companies")),
            state_ids=tuple(row[0] for row in read("SELECT id FROM ticket_states")),
            type_ids=tuple(row[0] for row in read("SELECT id FROM ticket_types")),
            category={row[0]: (row[1], bool(row[2])) for row in tickets},
            creator={row[0]: row[3] for row in tickets},
            scope={row[0]: row[4] for row in tickets},
            notes=frozenset(row[0] for row in read("SELECT body FROM conversation_parts WHERE is_public = 0")),
        )
    finally:
        loop.run_until_complete(store.close())
        loop.close()


CONDITIONS: list[dict[str, Any]] = [
    A_EMAIL,
    IN_B,
    {"attribute": "person.email", "op": "contains", "value": "acme"},
    {"attribute": "person.email_domain", "op": "equals", "value": "globex.example.com"},
    {"attribute": "company.plan", "op": "equals", "value": "pro"},
    {"attribute": "company.size", "op": "greater_than", "value": 100},
    {"attribute": "person.user_id", "op": "in", "value": ["a", "ab", "u-ann", "u-ben", "u-kim", "ghost"]},
    {"attribute": "person.name", "op": "starts_with", "value": "a"},
    {"attribute": "person.user_id", "op": "exists"},
    {"attribute": "company.company_id", "op": "not_exists"},
    {"attribute": "person.email", "op": "not_contains", "value": "globex"},
]
EMAILS = [None, "someone@a.example", "a@evil.example@a.example", "x@globex.example.com", "Upper@A.EXAMPLE"]

configs = st.builds(
    lambda enabled, conditions: VisibilityConfig.model_validate({"enabled": enabled, "conditions": conditions}),
    st.booleans(),
    st.lists(st.sampled_from(CONDITIONS), max_size=3),
)
scopes: st.SearchStrategy[Scope] = st.sampled_from(["all", "mine"])


@st.composite
def visitors(draw: st.DrawFn, fixed: Fixed) -> Visitor:
    """A store contact (or someone the store does not know) with a token that may carry another email."""
    contact = draw(st.sampled_from([*fixed.contacts, None]))
    user_id = contact.user_id if contact and contact.user_id else "ghost"
    email = draw(st.sampled_from(EMAILS)) or (contact.email if contact else None)
    claims = {"user_id": user_id, **({"email": email} if email else {})}
    return Visitor(Identity(user_id=user_id, method="jwt", email=email, claims=claims), contact)


@st.composite
def queries(draw: st.DrawFn, fixed: Fixed, *, whole: bool = False) -> TicketQuery:
    """Any filter, sort and page the store accepts; ``whole``: one page holding everything."""
    maybe_id = st.one_of(st.none(), st.integers(min_value=-1, max_value=400))
    times = st.one_of(st.none(), st.integers(min_value=NOW - 200 * 86_400, max_value=NOW + 2000))
    return TicketQuery(
        state_id=draw(st.one_of(st.none(), st.sampled_from(fixed.state_ids), maybe_id)),
        type_id=draw(st.one_of(st.none(), st.sampled_from(fixed.type_ids))),
        creator_id=draw(st.one_of(st.none(), st.sampled_from([c.id for c in fixed.contacts]), maybe_id)),
        created_after=draw(times),
        created_before=draw(times),
        updated_after=draw(times),
        updated_before=draw(times),
        q=draw(st.one_of(st.none(), st.text(max_size=5))),
        sort=draw(st.sampled_from(SORT_KEYS)),
        descending=draw(st.booleans()),
        page=1 if whole else draw(st.integers(min_value=1, max_value=6)),
        page_size=10_000 if whole else draw(st.integers(min_value=1, max_value=60)),
    )


def tightened(config: VisibilityConfig, how: str, extra: dict[str, Any]) -> VisibilityConfig:
    """A config that restricts at least everyone ``config`` restricts."""
    conditions = [rule.model_dump(exclude_none=True) for rule in config.conditions]
    if how == "turn_on":
        changed: dict[str, Any] = {"enabled": True, "conditions": conditions}
    elif how == "no_conditions":
        changed = {"enabled": True, "conditions": []}
    elif how == "drop_a_condition":  # all-of: fewer conditions match more people (none left: everyone)
        changed = {"enabled": config.enabled, "conditions": conditions[:-1]}
    elif conditions:  # "or_another": conditions OR one more condition match more people
        either = {"match": "any", "rules": [{"match": "all", "rules": conditions}, extra]}
        changed = {"enabled": config.enabled, "conditions": [either]}
    else:
        changed = {"enabled": config.enabled, "conditions": []}
    return VisibilityConfig.model_validate(changed)


SETTINGS = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(data=st.data())
def test_restricting_more_people_never_widens_what_anyone_sees(fixed: Fixed, data: st.DataObject) -> None:
    base = data.draw(configs, label="base")
    how = data.draw(st.sampled_from(["turn_on", "no_conditions", "drop_a_condition", "or_another"]), label="how")
    tight = tightened(base, how, data.draw(st.sampled_from(CONDITIONS), label="extra"))
    visitor = data.draw(visitors(fixed), label="visitor")
    query = data.draw(queries(fixed, whole=True), label="query")
    loose_policy, tight_policy = VisibilityPolicy(base), VisibilityPolicy(tight)

    loose_decision, tight_decision = loose_policy.decide(visitor), tight_policy.decide(visitor)
    assert loose_decision.restricted <= tight_decision.restricted
    assert set(tight_decision.scopes) <= set(loose_decision.scopes)
    for scope in ("all", "mine"):
        loose, strict = loose_policy.ticket_filter(visitor, scope), tight_policy.ticket_filter(visitor, scope)
        assert fixed.ids(strict, query) <= fixed.ids(loose, query)
        assert fixed.clause_ids(strict) <= fixed.clause_ids(loose)
        page = fixed.run(fixed.store.list_tickets(strict, query))
        assert page.total <= fixed.run(fixed.store.list_tickets(loose, query)).total
    # "Created by me" is never more than "All".
    assert fixed.clause_ids(tight_policy.ticket_filter(visitor, "mine")) <= fixed.clause_ids(
        tight_policy.ticket_filter(visitor, "all")
    )


@SETTINGS
@given(data=st.data())
def test_a_restricted_visitor_never_sees_another_creators_ticket(fixed: Fixed, data: st.DataObject) -> None:
    config = data.draw(configs.map(lambda c: c.model_copy(update={"enabled": True})), label="config")
    visitor = data.draw(visitors(fixed), label="visitor")
    policy = VisibilityPolicy(config)
    decision = policy.decide(visitor)
    if not config.conditions:
        assert decision.restricted
    if not decision.restricted:
        return
    assert decision.scopes == ("mine",)
    me = visitor.contact.id if visitor.contact else None
    scope = data.draw(scopes, label="scope")
    visible = policy.ticket_filter(visitor, scope)
    assert visible.own_only
    query = data.draw(queries(fixed), label="query")
    page = fixed.run(fixed.store.list_tickets(visible, query))
    assert {fixed.creator[item.ticket_id] for item in page.items} <= {me}
    everything = fixed.clause_ids(visible)
    assert {fixed.creator[ticket_id] for ticket_id in everything} <= {me}
    ticket_id = data.draw(st.sampled_from(sorted(fixed.creator)), label="ticket_id")
    detail = fixed.run(fixed.store.get_ticket(visible, ticket_id))
    assert detail is None or fixed.creator[ticket_id] == me


filters = st.builds(
    TicketFilter,
    company_ids=st.frozensets(st.integers(min_value=-1, max_value=8), max_size=6),
    contact_id=st.one_of(st.none(), st.integers(min_value=-1, max_value=20)),
    own_only=st.booleans(),
)


def shown_category(category: str, shared: bool) -> bool:
    """Whether a visitor may ever see a ticket of this category: Customer, or Back-office shared with customers."""
    return category == "Customer" or (category == "Back-office" and shared)


def any_filter(fixed: Fixed, data: st.DataObject) -> TicketFilter:
    """A filter the policy makes for some visitor, config and scope, or any filter at all."""
    if data.draw(st.booleans(), label="through the policy"):
        visitor = data.draw(visitors(fixed), label="visitor")
        return VisibilityPolicy(data.draw(configs, label="config")).ticket_filter(visitor, data.draw(scopes))
    return data.draw(filters, label="filter")


@SETTINGS
@given(data=st.data())
def test_no_filter_scope_state_or_page_ever_yields_a_tracker_unshared_ticket_or_a_note(
    fixed: Fixed, data: st.DataObject
) -> None:
    visible = any_filter(fixed, data)
    query = data.draw(queries(fixed), label="query")

    def customer_shared(ticket_id: str) -> bool:
        return shown_category(*fixed.category[ticket_id])

    page = fixed.run(fixed.store.list_tickets(visible, query))
    assert all(customer_shared(item.ticket_id) for item in page.items)
    assert len(page.items) <= query.page_size
    assert all(customer_shared(ticket_id) for ticket_id in fixed.clause_ids(visible))
    ticket_id = data.draw(st.sampled_from(sorted(fixed.category)), label="ticket_id")
    detail = fixed.run(fixed.store.get_ticket(visible, ticket_id))
    if detail is not None:
        assert customer_shared(ticket_id)
        assert not {part.body for part in detail.parts} & fixed.notes
        assert all(NOTE not in part.body for part in detail.parts)


@SETTINGS
@given(data=st.data())
def test_a_removed_tickets_scope_and_creator_show_it_to_exactly_whom_the_clause_showed_it(
    fixed: Fixed, data: st.DataObject
) -> None:
    # A ticket the Intercom sync forgot is no longer there for the clause to match: its event goes by the scope key
    # and creator it had (a removed change records them for the categories a visitor may see). SECURITY: never to
    # a visitor the clause would not have shown it to.
    visible = any_filter(fixed, data)
    shown = fixed.clause_ids(visible)
    for ticket_id, (category, shared) in fixed.category.items():
        if shown_category(category, shared):
            assert shows_scope(visible, fixed.scope[ticket_id], fixed.creator[ticket_id]) == (ticket_id in shown)
    assert not shows_scope(visible, None, None)


@SETTINGS
@given(data=st.data())
def test_a_changed_tickets_facts_show_it_to_exactly_whom_the_clause_shows_it(fixed: Fixed, data: st.DataObject) -> None:
    # The event streams read a changed ticket once, with no filter, and decide every visitor's with shows_ticket().
    # SECURITY: for any ticket and any filter it agrees with visible_clause run in the store.
    visible = any_filter(fixed, data)
    shown = fixed.clause_ids(visible)
    for ticket_id in fixed.category:
        ticket = fixed.run(fixed.store.changed_ticket(ticket_id))
        assert ticket is not None
        assert shows_ticket(visible, ticket) == (ticket_id in shown)

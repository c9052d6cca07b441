"""A fake Intercom REST API (2.16) on loopback: the workspace's data, its pagination, its faults on demand.

It holds companies, contacts and their companies, ticket types and states,
tickets with their parts, and conversations, and pages them the way Intercom
does: cursor pages for ``POST /tickets/search`` and ``GET /contacts``, a scroll
for ``/companies/scroll`` (whose parameter :meth:`FakeIntercom.expire_scrolls`
can expire), page links for ``/contacts/{id}/companies``. A window rate limit
answers ``X-RateLimit-*`` on every answer and 429 past it; :attr:`faults` makes
the next answers 5xx, slow or malformed. Every answer it sends (but those it
was told to spoil) is checked against the 2.16 description, and what breaks it
is kept in :attr:`FakeIntercom.invalid` for the fixture to fail the test on.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import web

from tests.intercom.openapi import IntercomSpec, spec

TOKEN = "fake-intercom-token-0123456789"
CLIENT_SECRET = "fake-intercom-client-secret"
ADMIN_ID = "991"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Fault:
    """What the fake does to one coming answer instead of (or before) answering it."""

    kind: Literal["status", "slow", "malformed", "reset", "hold"]
    status: int = 503
    seconds: float = 0.0
    gate: asyncio.Event = field(default_factory=asyncio.Event)
    """For ``hold``: the answer waits until the test sets this (``held`` is set once it waits)."""
    held: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass
class RateLimit:
    """``limit`` calls in each window of ``window`` seconds, windows aligned on the epoch (as Reset says)."""

    limit: int = 10_000
    window: float = 10.0
    used: int = 0
    window_start: float = 0.0

    def take(self, now: float) -> tuple[bool, int, int]:
        """Count one call at ``now``: whether it is within the limit, the calls remaining, the reset time."""
        start = math.floor(now / self.window) * self.window
        if start != self.window_start:
            self.window_start, self.used = start, 0
        allowed = self.used < self.limit
        if allowed:
            self.used += 1
        return allowed, max(0, self.limit - self.used), math.ceil(start + self.window)


@dataclass
class FakeIntercom:
    """The workspace's data and what the fake was told to do; ``app`` serves it."""

    validator: IntercomSpec = field(default_factory=spec)
    companies: dict[str, dict[str, Any]] = field(default_factory=dict)
    contacts: dict[str, dict[str, Any]] = field(default_factory=dict)
    links: dict[str, list[str]] = field(default_factory=dict)  # contact id -> company ids, in attach order
    ticket_types: dict[str, dict[str, Any]] = field(default_factory=dict)
    ticket_states: dict[str, dict[str, Any]] = field(default_factory=dict)
    tickets: dict[str, dict[str, Any]] = field(default_factory=dict)
    conversations: dict[str, list[str]] = field(default_factory=dict)  # conversation id -> contact ids
    rate: RateLimit = field(default_factory=RateLimit)
    faults: deque[Fault] = field(default_factory=deque)
    calls: list[tuple[str, str, int]] = field(default_factory=list)  # method, path, status
    invalid: list[str] = field(default_factory=list)
    limit_crossed: int = 0
    scroll_page: int = 50
    scroll_expires_after: int | None = None  # scroll pages served with a parameter before every scroll expires
    companies_page: int = 10
    token: str = TOKEN
    clock: int = 1_767_225_600
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1000))
    _numbers: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _scrolls: dict[str, list[str]] = field(default_factory=dict)  # open scroll param -> company ids left

    # --- changes, as a teammate or a customer makes them in Intercom ---------------------------------------

    def tick(self) -> int:
        """Move the workspace's clock on a second and return it (every change stamps ``updated_at``)."""
        self.clock += 1
        return self.clock

    def new_id(self) -> str:
        """A fresh object id."""
        return str(next(self._ids))

    def add_state(self, category: str, internal: str, external: str) -> str:
        """A ticket state."""
        state_id = self.new_id()
        self.ticket_states[state_id] = {
            "type": "ticket_state",
            "id": state_id,
            "category": category,
            "internal_label": internal,
            "external_label": external,
        }
        return state_id

    def add_type(self, name: str, category: str = "Customer") -> str:
        """A ticket type."""
        type_id = self.new_id()
        self.ticket_types[type_id] = {
            "type": "ticket_type",
            "id": type_id,
            "name": name,
            "category": category,
            "description": "",
            "icon": "",
            "workspace_id": "fakews",
            "archived": False,
            "created_at": self.clock,
            "updated_at": self.clock,
        }
        return type_id

    def add_company(self, company_id: str, name: str, **extra: Any) -> str:
        """A company with the customer's own ``company_id``; its Intercom id."""
        intercom_id = self.new_id()
        self.companies[intercom_id] = {"id": intercom_id, "company_id": company_id, "name": name, **extra}
        self.tick()
        return intercom_id

    def add_contact(self, external_id: str, name: str, email: str, companies: tuple[str, ...] = ()) -> str:
        """A user with the customer's ``external_id``, attached to the companies (Intercom ids); their id."""
        contact_id = self.new_id()
        self.contacts[contact_id] = {
            "id": contact_id,
            "external_id": external_id,
            "name": name,
            "email": email,
            "updated_at": self.tick(),
        }
        self.links[contact_id] = list(companies)
        return contact_id

    def add_ticket(
        self,
        contact_id: str,
        title: str,
        *,
        type_id: str,
        state_id: str,
        category: str = "Customer",
        is_shared: bool = False,
        description: str = "",
    ) -> str:
        """A ticket raised by the contact, with a linked conversation; its Intercom id."""
        ticket_id, conversation_id = self.new_id(), self.new_id()
        now = self.tick()
        self.conversations[conversation_id] = [contact_id]
        self.tickets[ticket_id] = {
            "id": ticket_id,
            "ticket_id": str(next(self._numbers)),  # the number customers see; never reused, as in Intercom
            "category": category,
            "title": title,
            "description": description,
            "type_id": type_id,
            "state_id": state_id,
            "contacts": [contact_id],
            "created_at": now,
            "updated_at": now,
            "is_shared": is_shared,
            "conversation_id": conversation_id,
            "parts": [],
        }
        return ticket_id

    def add_part(self, ticket_id: str, part_type: str, body: str, author: tuple[str, str, str | None]) -> str:
        """Append a part (``comment``, ``quick_reply``, ``note``...) by (author type, id, name); its id."""
        part_id, now = self.new_id(), self.tick()
        kind, author_id, name = author
        self.tickets[ticket_id]["parts"].append(
            {
                "type": "ticket_part",
                "id": part_id,
                "part_type": part_type,
                "body": body,
                "created_at": now,
                "updated_at": now,
                "author": {"type": kind, "id": author_id, "name": name, "email": "someone@example.com"},
                "attachments": [],
                "redacted": False,
            }
        )
        self.tickets[ticket_id]["updated_at"] = now
        return part_id

    def update_ticket(self, ticket_id: str, **fields: Any) -> None:
        """Change the ticket's fields (title, state_id, is_shared...)."""
        self.tickets[ticket_id].update(fields, updated_at=self.tick())

    def delete_ticket(self, ticket_id: str) -> None:
        """Remove the ticket (Intercom's ticket deletion)."""
        del self.tickets[ticket_id]

    def delete_company(self, company_id: str) -> None:
        """Remove the company, and every contact's link to it."""
        del self.companies[company_id]
        for contact, linked in self.links.items():
            if company_id in linked:
                linked.remove(company_id)
                self.contacts[contact]["updated_at"] = self.tick()

    def expire_scrolls(self) -> None:
        """Every open scroll parameter stops working (unused for a minute, in Intercom)."""
        self._scrolls.clear()

    # --- the API's objects ------------------------------------------------------------------------------

    def company_object(self, intercom_id: str) -> dict[str, Any]:
        """The company as the API shows it."""
        company = self.companies[intercom_id]
        members = sum(intercom_id in linked for linked in self.links.values())
        return {
            "type": "company",
            "app_id": "fakews",
            "created_at": 1_767_000_000,
            "updated_at": self.clock,
            "remote_created_at": 1_767_000_000,
            "session_count": 0,
            "user_count": members,
            "monthly_spend": 0,
            "plan": {},
            "custom_attributes": {},
            "tags": {"type": "tag.list", "tags": []},
            "segments": {"type": "segment.list", "segments": []},
            **company,
        }

    def contact_object(self, contact_id: str) -> dict[str, Any]:
        """The contact as the API shows it (its ``companies`` holds at most 10, as Intercom's does)."""
        contact = self.contacts[contact_id]
        linked = self.links.get(contact_id, [])
        return {
            "type": "contact",
            "workspace_id": "fakews",
            "role": "user",
            "created_at": 1_767_000_000,
            "custom_attributes": {},
            "companies": {
                "type": "list",
                "data": [{"type": "company", "id": company, "url": f"/companies/{company}"} for company in linked[:10]],
                "url": f"/contacts/{contact_id}/companies",
                "total_count": len(linked),
                "has_more": len(linked) > 10,
            },
            **contact,
        }

    def ticket_object(self, ticket_id: str) -> dict[str, Any]:
        """The ticket as the API shows it, with every part."""
        ticket = self.tickets[ticket_id]
        contacts = ticket["contacts"]
        return {
            "type": "ticket",
            "id": ticket["id"],
            "ticket_id": ticket["ticket_id"],
            "category": ticket["category"],
            "ticket_attributes": {"_default_title_": ticket["title"], "_default_description_": ticket["description"]},
            "ticket_state": self.ticket_states[ticket["state_id"]],
            "ticket_type": self.ticket_types[ticket["type_id"]],
            "contacts": {
                "type": "contact.list",
                "contacts": [
                    {"type": "contact", "id": contact, "external_id": self.contacts[contact]["external_id"]}
                    for contact in contacts
                    if contact in self.contacts
                ],
            },
            "admin_assignee_id": 0,
            "team_assignee_id": 0,
            "created_at": ticket["created_at"],
            "updated_at": ticket["updated_at"],
            "open": True,
            "is_shared": ticket["is_shared"],
            "linked_objects": {
                "type": "list",
                "total_count": 1,
                "has_more": False,
                "data": [{"type": "conversation", "id": ticket["conversation_id"], "category": None}],
            },
            "ticket_parts": {
                "type": "ticket_part.list",
                "ticket_parts": ticket["parts"],
                "total_count": len(ticket["parts"]),
            },
        }

    # --- the server -------------------------------------------------------------------------------------

    def app(self) -> web.Application:
        """The aiohttp app serving the API."""
        app = web.Application(middlewares=[self._checked])
        app.add_routes(
            [
                web.get("/me", self._me),
                web.get("/ticket_types", self._ticket_types),
                web.get("/ticket_states", self._ticket_states),
                web.get("/companies/scroll", self._scroll),
                web.get("/companies/{id}", self._company),
                web.get("/contacts", self._contacts),
                web.get("/contacts/{id}", self._contact),
                web.get("/contacts/{id}/companies", self._contact_companies),
                web.post("/contacts/{id}/companies", self._attach),
                web.delete("/contacts/{id}/companies/{company}", self._detach),
                web.post("/tickets/search", self._search),
                web.get("/tickets/{id}", self._ticket),
                web.post("/conversations/{id}/customers", self._add_customer),
            ]
        )
        return app

    @web.middleware
    async def _checked(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Authentication, version, rate limit and faults around every call; each answer held to the spec."""
        response, spoiled = await self._answer(request, handler)
        self.calls.append((request.method, request.path, response.status))
        if not spoiled:
            self._validate(request, response)
        return response

    async def _answer(self, request: web.Request, handler: Handler) -> tuple[web.Response, bool]:
        allowed, remaining, reset = self.rate.take(time.time())
        limits = {
            "X-RateLimit-Limit": str(self.rate.limit),
            "X-RateLimit-Remaining": str(remaining),
            "X-RateLimit-Reset": str(reset),
        }
        if not allowed:
            self.limit_crossed += 1
            return _error(429, "rate_limit_exceeded", "Exceeded rate limit", limits), False
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return _error(401, "unauthorized", "Access Token Invalid", limits), False
        if request.headers.get("Intercom-Version") != "2.16":
            return _error(400, "intercom_version_invalid", "Intercom-Version must be 2.16 here", limits), False
        fault = self.faults.popleft() if self.faults else None
        if fault is not None and fault.kind == "slow":
            await asyncio.sleep(fault.seconds)
        elif fault is not None and fault.kind == "hold":
            fault.held.set()
            await fault.gate.wait()
        elif fault is not None and fault.kind == "reset" and request.transport is not None:
            request.transport.abort()  # the connection dies before any answer: the client sees a reset
            return web.Response(status=500), True
        if fault is not None and fault.kind == "status":
            return _error(fault.status, "server_error", "Server Error", limits), False
        if fault is not None and fault.kind == "malformed":
            return web.Response(text='{"type": "list", "data": [', content_type="application/json"), True
        if problem := await self._request_problem(request):
            return _error(400, "parameter_invalid", problem, limits), False
        try:
            response = await handler(request)
        except web.HTTPNotFound:
            response = _error(404, "not_found", "Resource Not Found", {})
        assert isinstance(response, web.Response)
        response.headers.update(limits)
        return response, False

    async def _request_problem(self, request: web.Request) -> str | None:
        """What in the request body breaks the description, or None."""
        ref = self.validator.request_schema_ref(request.method, request.path)
        if ref is None:
            return None
        try:
            body = await request.json()
        except json.JSONDecodeError:
            return "the body is not JSON"
        errors = self.validator.errors(ref, body)
        return "; ".join(errors) if errors else None

    def _validate(self, request: web.Request, response: web.Response) -> None:
        assert response.text is not None
        ref = self.validator.response_schema_ref(request.method, request.path, response.status)
        problems = self.validator.errors(ref, json.loads(response.text))
        self.invalid.extend(f"{request.method} {request.path} {response.status}: {problem}" for problem in problems)

    async def _me(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "type": "admin",
                "id": ADMIN_ID,
                "name": "Fake Admin",
                "email": "admin@example.com",
                "email_verified": True,
                "app": {
                    "type": "app",
                    "id_code": "fakews",
                    "name": "Fake workspace",
                    "created_at": 1_767_000_000,
                    "secure": True,
                    "identity_verification": True,
                    "timezone": "UTC",
                    "region": "US",
                },
            }
        )

    async def _ticket_types(self, request: web.Request) -> web.Response:
        return web.json_response({"type": "list", "data": list(self.ticket_types.values())})

    async def _ticket_states(self, request: web.Request) -> web.Response:
        return web.json_response({"type": "list", "data": list(self.ticket_states.values())})

    async def _scroll(self, request: web.Request) -> web.Response:
        param = request.query.get("scroll_param")
        if param is None:
            left = list(self.companies)
        elif param in self._scrolls:
            left = self._scrolls.pop(param)
            if self.scroll_expires_after is not None:
                self.scroll_expires_after -= 1
                if self.scroll_expires_after < 0:  # once: the next scroll runs to its end
                    self.scroll_expires_after = None
                    return _error(404, "scroll_parameter_not_found", "scroll parameter not found", {})
        else:
            return _error(404, "scroll_parameter_not_found", "scroll parameter not found, restart the scroll", {})
        page, rest = left[: self.scroll_page], left[self.scroll_page :]
        next_param = self.new_id() + "-scroll"
        if page:  # the end of the scroll: no companies, and the parameter expires
            self._scrolls[next_param] = rest
        data = [self.company_object(company) for company in page if company in self.companies]
        return web.json_response({"type": "list", "data": data, "pages": None, "scroll_param": next_param})

    async def _company(self, request: web.Request) -> web.Response:
        company = request.match_info["id"]
        if company not in self.companies:
            raise web.HTTPNotFound
        return web.json_response(self.company_object(company))

    async def _contacts(self, request: web.Request) -> web.Response:
        ids = sorted(self.contacts, key=int)
        after = request.query.get("starting_after")
        per_page = int(request.query.get("per_page", "50"))
        start = (
            next((index for index, contact in enumerate(ids) if int(contact) > int(after)), len(ids)) if after else 0
        )
        chunk = ids[start : start + per_page]
        pages: dict[str, Any] = {
            "type": "pages",
            "page": start // per_page + 1,
            "per_page": per_page,
            "total_pages": max(1, -(-len(ids) // per_page)),
        }
        if start + per_page < len(ids):
            pages["next"] = {"per_page": per_page, "starting_after": chunk[-1]}
        return web.json_response(
            {"type": "list", "data": [self.contact_object(c) for c in chunk], "total_count": len(ids), "pages": pages}
        )

    async def _contact(self, request: web.Request) -> web.Response:
        contact = request.match_info["id"]
        if contact not in self.contacts:
            raise web.HTTPNotFound
        return web.json_response(self.contact_object(contact))

    async def _contact_companies(self, request: web.Request) -> web.Response:
        contact = request.match_info["id"]
        if contact not in self.contacts:
            raise web.HTTPNotFound
        linked = [company for company in self.links.get(contact, []) if company in self.companies]
        page = int(request.query.get("page", "1"))
        per_page = self.companies_page
        chunk = linked[(page - 1) * per_page : page * per_page]
        total_pages = max(1, -(-len(linked) // per_page))
        pages: dict[str, Any] = {"type": "pages", "page": page, "per_page": per_page, "total_pages": total_pages}
        if page < total_pages:
            pages["next"] = str(request.url.with_query(page=page + 1))
        return web.json_response(
            {
                "type": "list",
                "companies": [self.company_object(company) for company in chunk],
                "total_count": len(linked),
                "pages": pages,
            }
        )

    async def _attach(self, request: web.Request) -> web.Response:
        contact, company = request.match_info["id"], (await request.json())["id"]
        if contact not in self.contacts or company not in self.companies:
            raise web.HTTPNotFound
        if company not in self.links.setdefault(contact, []):
            self.links[contact].append(company)
        self.contacts[contact]["updated_at"] = self.tick()
        return web.json_response(self.company_object(company))

    async def _detach(self, request: web.Request) -> web.Response:
        contact, company = request.match_info["id"], request.match_info["company"]
        if contact not in self.contacts or company not in self.links.get(contact, []):
            raise web.HTTPNotFound
        self.links[contact].remove(company)
        self.contacts[contact]["updated_at"] = self.tick()
        return web.json_response(self.company_object(company))

    async def _search(self, request: web.Request) -> web.Response:
        body = await request.json()
        try:
            matching = [ticket for ticket in self.tickets.values() if _matches(body["query"], ticket)]
        except ValueError as exc:
            return _error(400, "parameter_invalid", str(exc), {})
        matching.sort(key=lambda ticket: int(ticket["id"]))
        pagination = body.get("pagination") or {}
        per_page = min(int(pagination.get("per_page", 20)), 150)
        after = pagination.get("starting_after")
        start = int(after) if after else 0
        chunk = matching[start : start + per_page]
        pages: dict[str, Any] = {
            "type": "pages",
            "page": start // per_page + 1,
            "per_page": per_page,
            "total_pages": max(1, -(-len(matching) // per_page)),
        }
        if start + per_page < len(matching):
            # The cursor is opaque to the client; here it is the offset of the next page.
            pages["next"] = {"per_page": per_page, "starting_after": str(start + per_page)}
        tickets = [self.ticket_object(ticket["id"]) for ticket in chunk]
        return web.json_response(
            {"type": "ticket.list", "tickets": tickets, "total_count": len(matching), "pages": pages}
        )

    async def _ticket(self, request: web.Request) -> web.Response:
        ticket = request.match_info["id"]
        if ticket not in self.tickets:
            raise web.HTTPNotFound
        return web.json_response(self.ticket_object(ticket))

    async def _add_customer(self, request: web.Request) -> web.Response:
        conversation = request.match_info["id"]
        body = await request.json()
        contact = (body.get("customer") or {}).get("intercom_user_id")
        if conversation not in self.conversations or contact not in self.contacts:
            raise web.HTTPNotFound
        if body.get("admin_id") != ADMIN_ID:
            return _error(403, "admin_not_found", "admin_id is not a teammate of this workspace", {})
        if contact not in self.conversations[conversation]:
            self.conversations[conversation].append(contact)
        for ticket in self.tickets.values():
            if ticket["conversation_id"] == conversation and contact not in ticket["contacts"]:
                ticket["contacts"].append(contact)
                ticket["updated_at"] = self.tick()
        contacts = [{"type": "contact", "id": c, "external_id": None} for c in self.conversations[conversation]]
        return web.json_response(
            {
                "type": "conversation",
                "id": conversation,
                "created_at": 1_767_000_000,
                "updated_at": self.clock,
                "open": True,
                "state": "open",
                "read": False,
                "contacts": {"type": "contact.list", "contacts": contacts},
            }
        )

    def signed(self, body: bytes, secret: str = CLIENT_SECRET) -> dict[str, str]:
        """The headers of a webhook delivery of ``body``, signed as Intercom signs them."""
        digest = hmac.new(secret.encode(), body, hashlib.sha1).hexdigest()
        return {"X-Hub-Signature": f"sha1={digest}", "Content-Type": "application/json"}


_FIELDS = {"updated_at", "created_at", "id"}


def _matches(query: dict[str, Any], ticket: dict[str, Any]) -> bool:
    """Whether the ticket meets the query: ``AND``/``OR`` of filters on ``updated_at``, ``created_at`` or ``id``."""
    if query.get("operator") in ("AND", "OR"):
        results = [_matches(part, ticket) for part in query["value"]]
        return all(results) if query["operator"] == "AND" else any(results)
    field_name, operator, value = query.get("field"), query.get("operator"), int(query.get("value") or 0)
    if field_name not in _FIELDS:
        raise ValueError(f"the fake searches only {sorted(_FIELDS)}, not {field_name!r}")
    have = int(ticket[field_name])
    # Intercom's > and < include the value itself ("Greater (or equal) than"): its date filters are coarse.
    match operator:
        case ">" | ">=":
            return have >= value
        case "<" | "<=":
            return have <= value
        case "=":
            return have == value
        case _:
            raise ValueError(f"operator {operator!r} is not one the fake knows")


def _error(status: int, code: str, message: str, headers: dict[str, str]) -> web.Response:
    body = {"type": "error.list", "request_id": "fake-request", "errors": [{"code": code, "message": message}]}
    return web.json_response(body, status=status, headers=headers)

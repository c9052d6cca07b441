"""``/admin/api/...``: the admin REST API, the only way company memberships change.

Every route needs ``Authorization: Bearer <admin.token>`` (compared in
constant time; 401 otherwise, before anything else is looked at), and every
write is audited by name: the resource, its id and the fields set, never
their values. Without ``admin.token`` the API does not exist: the whole
namespace answers 404 and nothing of it reaches the upstream.

    GET|PATCH|DELETE  /admin/api/companies/{company_id}      POST /admin/api/companies
    GET               /admin/api/companies/{company_id}/tickets   (the company's Tickets tab)
    GET|PATCH|DELETE  /admin/api/contacts/{user_id}           POST /admin/api/contacts
    PUT|DELETE        /admin/api/contacts/{user_id}/companies/{company_id}   (memberships)
    GET               /admin/api/tickets?company_id=&q=       POST /admin/api/tickets
    GET|PATCH         /admin/api/tickets/{ticket_id}          POST /admin/api/tickets/{ticket_id}/parts
"""

from __future__ import annotations

import hmac
import math
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass
from functools import wraps
from typing import Annotated, Any, Generic, TypeVar

from aiohttp import web
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, WithJsonSchema

from gateway.config import CONFIG
from gateway.edge.guard import CLOCK, STORE
from gateway.errors import BadRequest, Invalid, Unauthorized
from gateway.intercom import writes as intercom_writes
from gateway.intercom.connector import INTERCOM
from gateway.namespace import ADMIN_PREFIX
from gateway.observe.audit import AUDIT_ENTRY, AdminChange, IdentityResult
from gateway.observe.metrics import METRICS
from gateway.store.models import (
    TICKET_ID_PATTERN,
    AdminCompany,
    AdminContact,
    AdminTicket,
    AdminTicketDetail,
    AdminTicketPage,
    TicketCategory,
)
from gateway.store.protocol import Store
from routes.fallback import namespace_fallback

MAX_PAGE_SIZE = 100
MAX_PAGE = 1_000_000  # far past any store, and (page - 1) * per_page stays an SQLite integer
MAX_INTEGER = 2**63 - 1  # SQLite's largest integer: a bigger one is a 422 here, not an OverflowError (500) there
MAX_TIMESTAMP = 253_402_300_799  # 9999-12-31T23:59:59Z: the portal still shows it as a date
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Model = TypeVar("Model", bound=BaseModel)


def _scalar(value: Any) -> Any:
    if value is not None and not isinstance(value, str | int | float | bool):
        raise ValueError("must be a string, a number, a boolean or null")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("must be a finite number")  # json.dumps would answer Infinity, which is not JSON
    return value


def _whole(value: Any) -> Any:
    # JSON has one kind of number: 5.0 is the whole number 5 (JSON Schema's "integer" reads it so too).
    return int(value) if isinstance(value, float) and value.is_integer() else value


Whole = Annotated[int, BeforeValidator(_whole)]
"""A whole number, written 5 or 5.0; never "5" or true."""
# The external id of a company or contact: it stands in admin API paths as one segment, so nothing the
# gateway refuses in a path (control characters, slashes, backslashes, percent signs, ? and #, a leading dot).
RECORD_KEY = r"^[^\x00-\x1f\x7f/\\%?#.][^\x00-\x1f\x7f/\\%?#]*$"

# A custom attribute value. Not a plain union: pydantic would name each member type in the error's path
# (custom_attributes.tier.str, .int, ...), where the client needs the one path it sent.
Scalar = Annotated[Any, AfterValidator(_scalar), WithJsonSchema({"type": ["string", "number", "boolean", "null"]})]


class _Body(BaseModel):
    # Strict: "true" is not a boolean and "5" not a number; an internal note is never published by coercion.
    # No 1e400 or NaN: answered back, they would not be JSON.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


class CompanyIn(_Body):
    """A new company."""

    company_id: str = Field(max_length=255, pattern=RECORD_KEY)
    name: str = Field(min_length=1, max_length=255)
    plan: str | None = None
    size: Whole | None = Field(default=None, ge=0, le=MAX_INTEGER)
    monthly_spend: float | None = Field(default=None, ge=0)
    custom_attributes: dict[str, Scalar] = Field(default_factory=dict)


class CompanyPatch(_Body):
    """Company fields to change."""

    name: str = Field(default="", min_length=1, max_length=255)
    plan: str | None = None
    size: Whole | None = Field(default=None, ge=0, le=MAX_INTEGER)
    monthly_spend: float | None = Field(default=None, ge=0)
    custom_attributes: dict[str, Scalar] = Field(default_factory=dict)


class ContactIn(_Body):
    """A new contact; companies are joined one by one through the membership routes."""

    user_id: str = Field(max_length=255, pattern=RECORD_KEY)
    email: str | None = Field(default=None, max_length=320)
    name: str | None = Field(default=None, max_length=255)
    custom_attributes: dict[str, Scalar] = Field(default_factory=dict)


class ContactPatch(_Body):
    """Contact fields to change (never companies)."""

    email: str | None = Field(default=None, max_length=320)
    name: str | None = Field(default=None, max_length=255)
    custom_attributes: dict[str, Scalar] = Field(default_factory=dict)


class TicketIn(_Body):
    """A new ticket; ``company`` left out follows the association rules."""

    ticket_id: str | None = Field(default=None, pattern=TICKET_ID_PATTERN)
    ticket_type: str = Field(min_length=1, max_length=255)
    state: str = Field(min_length=1, description="internal_label of a ticket state")
    category: TicketCategory = "Customer"
    is_shared: bool = False
    company: str | None = None
    creator: str = Field(min_length=1, description="user_id of the contact the ticket is for")
    title: str = Field(min_length=1, max_length=500)
    description: str = ""
    created_at: Whole | None = Field(default=None, ge=0, le=MAX_TIMESTAMP)


class TicketPatch(_Body):
    """Ticket fields to change; ``company: null`` takes the ticket out of its company."""

    ticket_type: str = Field(default="", min_length=1, max_length=255)
    state: str = Field(default="", min_length=1)
    category: TicketCategory = "Customer"
    is_shared: bool = False
    company: str | None = None
    title: str = Field(default="", min_length=1, max_length=500)
    description: str = ""


class PartIn(_Body):
    """A reply (``public: true``) or an internal note (``public: false``): always said, never assumed."""

    body: str = Field(min_length=1)
    public: bool
    author: str | None = Field(default=None, description="user_id of a contact author")
    author_name: str | None = Field(default=None, max_length=255, description="a teammate's display name")
    created_at: Whole | None = Field(default=None, ge=0, le=MAX_TIMESTAMP)


class ListQuery(BaseModel):
    """The query string of the ticket lists."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    company_id: str | None = None
    q: str | None = None
    page: int = Field(default=1, ge=1, le=MAX_PAGE)
    per_page: int = Field(default=25, ge=1, le=MAX_PAGE_SIZE)


def _problems(error: ValidationError, where: str = "") -> list[tuple[str, str]]:
    return [
        (where + ".".join(str(part) for part in item["loc"]) or "body", str(item["msg"]).removeprefix("Value error, "))
        for item in error.errors()
    ]


async def _body(request: web.Request, model: type[Model]) -> tuple[Model, dict[str, Any]]:
    """The JSON body as ``model`` and the fields it set; 400 when it is not JSON, 422 naming each bad field."""
    if request.content_type != "application/json":
        raise BadRequest("send the body as Content-Type: application/json")
    raw = await request.read()
    try:
        parsed = model.model_validate_json(raw)
    except ValidationError as exc:
        if any(item["type"] == "json_invalid" for item in exc.errors()):
            raise BadRequest("the body is not JSON") from None
        raise Invalid(*_problems(exc)) from None
    return parsed, parsed.model_dump(exclude_unset=True)


def _list_query(request: web.Request) -> ListQuery:
    try:
        return ListQuery.model_validate(dict(request.query))
    except ValidationError as exc:
        raise Invalid(*_problems(exc, "query.")) from None


def _audit(
    request: web.Request, action: str, resource: str, key: str, fields: dict[str, Any] | None = None
) -> AdminChange:
    """Record the change asked for; :func:`_run` marks it made once the store commits it."""
    change = AdminChange(action, resource, key, sorted(fields or {}))
    request[AUDIT_ENTRY].admin_change = change
    return change


T = TypeVar("T")
JSON = dict[str, Any]


async def _run(request: web.Request, change: Callable[[Store], Awaitable[T]]) -> T:
    done = await change(request.app[STORE])
    if (audited := request[AUDIT_ENTRY].admin_change) is not None:
        audited.result = "made"  # committed: only now does the audit record say the write happened
    return done


def _now(request: web.Request) -> int:
    return int(request.app[CLOCK]())


def _json(body: dict[str, Any], status: int = 200) -> web.Response:
    return web.json_response(body, status=status)


# --- authorization ---------------------------------------------------------------------------------------

ADMIN_TOKEN = web.AppKey("admin_token", bytes)


def admin_token_valid(request: web.Request) -> bool:
    """Whether the request carries the admin bearer token; the outcome goes to the audit and metrics."""
    scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
    token = presented.strip().encode("utf-8", "surrogateescape")
    # SECURITY: constant-time comparison; an empty or missing token never matches.
    valid = scheme.lower() == "bearer" and bool(token) and hmac.compare_digest(token, request.app[ADMIN_TOKEN])
    return admin_credential_checked(request, None if valid else ("missing" if not token else "bad_token"))


def admin_credential_checked(request: web.Request, reason: str | None) -> bool:
    """Audit and count how the admin credential fared (``reason`` None: verified); whether it was verified."""
    valid = reason is None
    request[AUDIT_ENTRY].identity = IdentityResult(
        method="admin_token", result="verified" if valid else "rejected", reason=reason
    )
    metrics = request.app[METRICS]
    metrics.count(metrics.identity_results, "admin_token", "verified" if valid else "rejected", reason or "")
    return valid


def _authorize(request: web.Request) -> None:
    """401 unless the request carries the admin bearer token."""
    if not admin_token_valid(request):
        # Not the portal's "sign in through your company's app": an admin client needs to know what to send.
        refusal = Unauthorized("send the admin token as Authorization: Bearer <admin.token>")
        refusal.headers["WWW-Authenticate"] = 'Bearer realm="admin"'
        raise refusal


def _admin(handler: Handler) -> Handler:
    @wraps(handler)
    async def authorized(request: web.Request) -> web.StreamResponse:
        _authorize(request)
        return await handler(request)

    return authorized


# --- the JSON of each record ----------------------------------------------------------------------------
# Shaped here, once for every backend: the store returns typed records and knows nothing of the API's JSON.


def company_json(company: AdminCompany) -> JSON:
    """A company as the admin API shows it."""
    return {"type": "company", **asdict(company)}


def contact_json(contact: AdminContact) -> JSON:
    """A contact with the ``company_id`` of each company they belong to."""
    return {"type": "contact", **asdict(contact), "companies": list(contact.companies)}


def _ticket_json(ticket: AdminTicket) -> JSON:
    state = ticket.state
    return {
        "type": "ticket",
        "ticket_id": ticket.ticket_id,
        "title": ticket.title,
        "ticket_type": ticket.ticket_type,
        "state": {
            "internal_label": state.internal_label,
            "external_label": state.external_label,
            "category": state.category,
        },
        "category": ticket.category,
        "is_shared": ticket.is_shared,
        "company_id": ticket.company_id,
        "creator": ticket.creator,
        "created_at": ticket.created_at,
        "updated_at": ticket.updated_at,
    }


def ticket_json(detail: AdminTicketDetail) -> JSON:
    """A ticket with its whole conversation: public replies and internal notes, oldest first."""
    return {
        **_ticket_json(detail.ticket),
        "description": detail.description,
        "parts": [asdict(part) for part in detail.parts],
    }


def page_json(page: AdminTicketPage) -> JSON:
    """One page of a ticket list."""
    return {
        "type": "list",
        "data": [_ticket_json(ticket) for ticket in page.items],
        "total_count": page.total,
        "pages": {"page": page.page, "per_page": page.page_size, "total_pages": page.pages},
    }


# --- companies and contacts ------------------------------------------------------------------------------

Record = TypeVar("Record", AdminCompany, AdminContact)


@dataclass(frozen=True)
class Records(Generic[Record]):
    """Companies or contacts through the admin API: their body models, their key and the store's calls."""

    what: str
    key: str
    new: type[_Body]
    patch: type[_Body]
    get: Callable[[Store, str], Awaitable[Record]]
    create: Callable[[Store, Mapping[str, Any]], Awaitable[Record]]
    update: Callable[[Store, str, Mapping[str, Any]], Awaitable[Record]]
    delete: Callable[[Store, str], Awaitable[None]]
    json: Callable[[Record], JSON]

    async def read(self, request: web.Request) -> web.Response:
        """One record."""
        key = request.match_info[self.key]
        return _json(self.json(await _run(request, lambda store: self.get(store, key))))

    async def add(self, request: web.Request) -> web.Response:
        """A new record (409 when its key is taken)."""
        record, fields = await _body(request, self.new)
        values = record.model_dump()
        _audit(request, "create", self.what, values[self.key], fields)
        return _json(self.json(await _run(request, lambda store: self.create(store, values))), 201)

    async def change(self, request: web.Request) -> web.Response:
        """Change the fields the body sets."""
        key = request.match_info[self.key]
        _, fields = await _body(request, self.patch)
        _audit(request, "update", self.what, key, fields)
        return _json(self.json(await _run(request, lambda store: self.update(store, key, fields))))

    async def remove(self, request: web.Request) -> web.Response:
        """Delete a record nothing else depends on (409 otherwise: nothing is lost)."""
        key = request.match_info[self.key]
        _audit(request, "delete", self.what, key)
        await _run(request, lambda store: self.delete(store, key))
        return _json({"type": self.what, self.key: key, "deleted": True})

    def routes(self, collection: str) -> tuple[tuple[str, str, Handler], ...]:
        """POST to the collection; GET, PATCH and DELETE on one record."""
        record = f"{collection}/{{{self.key}}}"
        return (
            ("POST", collection, self.add),
            ("GET", record, self.read),
            ("PATCH", record, self.change),
            ("DELETE", record, self.remove),
        )


COMPANIES = Records(
    "company",
    "company_id",
    CompanyIn,
    CompanyPatch,
    get=lambda store, key: store.company(key),
    create=lambda store, fields: store.create_company(fields),
    update=lambda store, key, fields: store.update_company(key, fields),
    delete=lambda store, key: store.delete_company(key),
    json=company_json,
)
CONTACTS = Records(
    "contact",
    "user_id",
    ContactIn,
    ContactPatch,
    get=lambda store, key: store.contact(key),
    create=lambda store, fields: store.create_contact(fields),
    update=lambda store, key, fields: store.update_contact(key, fields),
    delete=lambda store, key: store.delete_contact(key),
    json=contact_json,
)


async def company_tickets(request: web.Request) -> web.Response:
    """The company's Tickets tab."""
    query = _list_query(request)
    if query.company_id is not None:
        raise Invalid(("query.company_id", "the company is the one in the path"))
    company_id = request.match_info["company_id"]
    page = await _run(request, lambda store: store.find_tickets(company_id, query.q, query.page, query.per_page))
    return _json(page_json(page))


# --- memberships -----------------------------------------------------------------------------------------


async def put_membership(request: web.Request) -> web.Response:
    """Make the contact a member of the company."""
    user_id, company_id = request.match_info["user_id"], request.match_info["company_id"]
    _audit(request, "add", "membership", f"{user_id}/{company_id}")

    async def add(store: Store) -> AdminContact:
        if INTERCOM in request.app:  # Intercom first: the store follows only what it accepted
            await intercom_writes.attach(request.app[INTERCOM], store, user_id, company_id)
        return await store.add_membership(user_id, company_id)

    return _json(contact_json(await _run(request, add)))


async def delete_membership(request: web.Request) -> web.Response:
    """End the contact's membership of the company."""
    user_id, company_id = request.match_info["user_id"], request.match_info["company_id"]
    _audit(request, "remove", "membership", f"{user_id}/{company_id}")

    async def remove(store: Store) -> AdminContact:
        if INTERCOM in request.app:
            await intercom_writes.detach(request.app[INTERCOM], store, user_id, company_id)
        return await store.remove_membership(user_id, company_id)

    return _json(contact_json(await _run(request, remove)))


# --- tickets ---------------------------------------------------------------------------------------------


async def find_tickets(request: web.Request) -> web.Response:
    """Tickets of one company or all, matching ``q``: for spotting a duplicate before raising a new one."""
    query = _list_query(request)
    page = await _run(request, lambda store: store.find_tickets(query.company_id, query.q, query.page, query.per_page))
    return _json(page_json(page))


async def get_ticket(request: web.Request) -> web.Response:
    """One ticket with its whole conversation, internal notes included."""
    ticket_id = request.match_info["ticket_id"]
    return _json(ticket_json(await _run(request, lambda store: store.support_ticket(ticket_id))))


async def create_ticket(request: web.Request) -> web.Response:
    """Raise a ticket for a contact."""
    ticket, fields = await _body(request, TicketIn)
    change = _audit(request, "create", "ticket", ticket.ticket_id or "(next free id)", fields)
    values, now = ticket.model_dump(), _now(request)
    created = await _run(request, lambda store: store.create_ticket(values, now))
    change.id = created.ticket.ticket_id
    return _json(ticket_json(created), 201)


async def update_ticket(request: web.Request) -> web.Response:
    """Change a ticket's state, type, sharing, text or company."""
    ticket_id = request.match_info["ticket_id"]
    _, fields = await _body(request, TicketPatch)
    _audit(request, "update", "ticket", ticket_id, fields)
    now = _now(request)
    return _json(ticket_json(await _run(request, lambda store: store.update_ticket(ticket_id, fields, now))))


async def add_part(request: web.Request) -> web.Response:
    """Add a public reply or an internal note."""
    ticket_id = request.match_info["ticket_id"]
    part, fields = await _body(request, PartIn)
    _audit(request, "create", "public reply" if part.public else "internal note", ticket_id, fields)
    values, now = part.model_dump(), _now(request)
    return _json(ticket_json(await _run(request, lambda store: store.add_part(ticket_id, values, now))), 201)


# Anything else under /admin/api: a 405 naming the methods when the path is an admin route's, else the
# gateway's own 404; never the upstream. Either answer is given only to a caller with the token.
not_found = namespace_fallback(ADMIN_PREFIX + "/")


ROUTES: tuple[tuple[str, str, Handler], ...] = (
    *COMPANIES.routes("/companies"),
    ("GET", "/companies/{company_id}/tickets", company_tickets),
    *CONTACTS.routes("/contacts"),
    ("PUT", "/contacts/{user_id}/companies/{company_id}", put_membership),
    ("DELETE", "/contacts/{user_id}/companies/{company_id}", delete_membership),
    ("GET", "/tickets", find_tickets),
    ("POST", "/tickets", create_ticket),
    ("GET", "/tickets/{ticket_id}", get_ticket),
    ("PATCH", "/tickets/{ticket_id}", update_ticket),
    ("POST", "/tickets/{ticket_id}/parts", add_part),
)


def _route_name(method: str, path: str) -> str:
    """A metrics label for one admin route: admin_get_companies_company_id, for example."""
    return "admin_" + "_".join([method.lower(), *re.findall(r"[a-z]+", path)])


def add_routes(app: web.Application, openapi: Handler) -> None:
    """The admin API when ``admin.token`` is set, described by ``openapi`` at /admin/api/openapi.json; either way
    its namespace never falls through to the proxy."""
    token = app[CONFIG].admin.token
    if token is None:
        # SECURITY: no token, no admin API: not even a 401 that says it is there.
        app.router.add_route("*", ADMIN_PREFIX + "{tail:(/.*)?}", not_found, name="admin_absent")
        return
    app[ADMIN_TOKEN] = token.get_secret_value().encode("utf-8", "surrogateescape")
    for method, path, handler in (*ROUTES, ("GET", "/openapi.json", openapi)):
        app.router.add_route(method, ADMIN_PREFIX + path, _admin(handler), name=_route_name(method, path))
    app.router.add_route("*", ADMIN_PREFIX + "{tail:(/.*)?}", _admin(not_found), name="admin_not_found")

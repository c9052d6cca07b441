"""``portal-gateway import FILE``: companies, contacts, ticket states and tickets from JSON lines.

One object per line, told apart by ``kind``::

    {"kind": "company", "company_id": "acme", "name": "Acme", "plan": "pro", "size": 40, "monthly_spend": 990}
    {"kind": "contact", "user_id": "u-1", "email": "ann@acme.example", "name": "Ann", "companies": ["acme"]}
    {"kind": "ticket_state", "category": "in_progress", "internal_label": "Investigating",
     "external_label": "In progress"}
    {"kind": "ticket", "ticket_id": "1001", "type": "Bug report", "state": "Investigating", "category": "Customer",
     "is_shared": false, "company": "acme", "creator": "u-1", "title": "Export fails", "description": "...",
     "created_at": 1767225600, "updated_at": 1767312000,
     "parts": [{"author": "u-1", "body": "Any news?", "public": true, "created_at": 1767300000},
               {"author_name": "Sam (support)", "body": "Looking at logs", "public": false, "created_at": 1767301000}],
     "participants": ["u-1"]}

Companies and contacts are upserted by their external ids; a ticket's type is
created by name when new; its state is named by ``internal_label`` and must
exist. A ticket already in the store is matched by ``ticket_id``: when the line
says the same of it (type, state, category, sharing, company, creator, title,
description, creation time) only its parts and participants not there yet are
added, so importing a file again changes nothing; a line that says otherwise is
refused and the stored ticket kept (the admin API may have changed it since, and
an old export must not silently undo that). Each line is written in its own
transaction: a bad line is reported with its number and reason and nothing of
it is written.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import partial
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from gateway.store.models import TICKET_ID_PATTERN, StateCategory, TicketCategory
from gateway.store.sqlite import SQLiteStore, writes


class _Line(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CompanyLine(_Line):
    """A company, upserted by ``company_id``."""

    kind: Literal["company"]
    company_id: str = Field(min_length=1)
    name: str = Field(min_length=1)
    plan: str | None = None
    size: int | None = None
    monthly_spend: float | None = None
    custom_attributes: dict[str, Any] = Field(default_factory=dict)


class ContactLine(_Line):
    """A contact, upserted by ``user_id``; ``companies`` replaces their memberships."""

    kind: Literal["contact"]
    user_id: str = Field(min_length=1)
    email: str | None = None
    name: str | None = None
    companies: list[str] = Field(default_factory=list)
    custom_attributes: dict[str, Any] = Field(default_factory=dict)


class StateLine(_Line):
    """A ticket state; tickets refer to it by ``internal_label``."""

    kind: Literal["ticket_state"]
    category: StateCategory
    internal_label: str = Field(min_length=1)
    external_label: str = Field(min_length=1)


class PartLine(_Line):
    """A conversation part: a public reply or an internal note."""

    author: str | None = Field(default=None, description="user_id of a contact author")
    author_name: str | None = Field(default=None, description="display name of a teammate author")
    body: str
    public: bool
    created_at: int


class TicketLine(_Line):
    """A ticket with its conversation."""

    kind: Literal["ticket"]
    ticket_id: str = Field(pattern=TICKET_ID_PATTERN)
    type: str = Field(min_length=1)
    state: str = Field(min_length=1)
    category: TicketCategory
    is_shared: bool = False
    company: str | None = None
    creator: str = Field(min_length=1)
    title: str = Field(min_length=1)
    description: str = ""
    created_at: int
    updated_at: int
    parts: list[PartLine] = Field(default_factory=list)
    participants: list[str] = Field(default_factory=list)


Line = CompanyLine | ContactLine | StateLine | TicketLine
_LINE: TypeAdapter[Line] = TypeAdapter(Annotated[Line, Field(discriminator="kind")])


class LineError(ValueError):
    """A line refers to something that is not in the store."""


class _Refused(Exception):
    """A strict import with refused lines: aborts the whole transaction."""


@dataclass
class ImportReport:
    """What an import did: lines written, and each refused line with its reason."""

    written: int = 0
    errors: list[tuple[int, str]] = field(default_factory=list)


def parse_line(text: str) -> Line:
    """Validate one JSON line; ValueError names the field and the reason."""
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON ({exc.msg} at column {exc.colno})") from None
    try:
        return _LINE.validate_python(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise ValueError(f"{where}: {first['msg']}" if where else str(first["msg"])) from None


def _id_of(connection: sqlite3.Connection, sql: str, key: str, what: str) -> int:
    row = connection.execute(sql, (key,)).fetchone()
    if row is None:
        raise LineError(f"{what} {key!r} is not in the store")
    return int(row[0])


def write_line(connection: sqlite3.Connection, line: Line) -> None:
    """Write one validated line on ``connection`` (the caller owns the transaction)."""
    if isinstance(line, CompanyLine):
        writes.upsert_company(
            connection, line.company_id, line.name, line.plan, line.size, line.monthly_spend, line.custom_attributes
        )
    elif isinstance(line, ContactLine):
        companies = [
            _id_of(connection, "SELECT id FROM companies WHERE company_id = ?", key, "company")
            for key in line.companies
        ]
        contact = writes.upsert_contact(connection, line.user_id, line.email, line.name, line.custom_attributes)
        writes.set_memberships(connection, contact, companies)
    elif isinstance(line, StateLine):
        writes.upsert_ticket_state(connection, line.category, line.internal_label, line.external_label)
    else:
        _write_ticket(connection, line)


# What a ticket line says of the ticket itself, and how to read the same from the store.
_TICKET_FIELDS = ("type", "state", "category", "is_shared", "company", "creator", "title", "description", "created_at")
_STORED_TICKET = (
    "SELECT ty.name, s.internal_label, t.category, t.is_shared, c.company_id, cr.user_id, t.title, t.description,"
    " t.created_at, t.conversation_id FROM tickets t JOIN ticket_types ty ON ty.id = t.type_id"
    " JOIN ticket_states s ON s.id = t.state_id LEFT JOIN companies c ON c.id = t.company_id"
    " JOIN contacts cr ON cr.id = t.creator_id WHERE t.ticket_id = ?"
)


def _stored_conversation(connection: sqlite3.Connection, line: TicketLine) -> int | None:
    """The conversation of the ticket ``line`` names when the store has it as the line says; None when new."""
    row = connection.execute(_STORED_TICKET, (line.ticket_id,)).fetchone()
    if row is None:
        return None
    *stored, conversation = row
    said = [getattr(line, name) for name in _TICKET_FIELDS]
    said[_TICKET_FIELDS.index("is_shared")] = int(line.is_shared)
    differing = [name for name, old, new in zip(_TICKET_FIELDS, stored, said, strict=True) if old != new]
    if differing:
        raise LineError(
            f"ticket {line.ticket_id} already exists with another {', '.join(differing)}; the stored ticket is kept"
        )
    return int(conversation)


def _write_ticket(connection: sqlite3.Connection, line: TicketLine) -> None:
    contact_sql = "SELECT id FROM contacts WHERE user_id = ?"
    state = _id_of(connection, "SELECT id FROM ticket_states WHERE internal_label = ?", line.state, "ticket state")
    creator = _id_of(connection, contact_sql, line.creator, "creator")
    company = (
        _id_of(connection, "SELECT id FROM companies WHERE company_id = ?", line.company, "company")
        if line.company
        else None
    )
    conversation = _stored_conversation(connection, line)
    known = conversation is not None  # read again: add only the parts it does not hold yet
    if conversation is None:
        conversation = writes.add_ticket(
            connection,
            ticket_id=line.ticket_id,
            type_id=writes.ticket_type_id(connection, line.type),
            state_id=state,
            category=line.category,
            is_shared=line.is_shared,
            company_id=company,
            creator_id=creator,
            title=line.title,
            description=line.description,
            created_at=line.created_at,
            updated_at=line.updated_at,
        )
    for part in line.parts:
        author = _id_of(connection, contact_sql, part.author, "part author") if part.author else None
        name = part.author_name or _contact_name(connection, author) or "Support"
        writes.add_part(connection, conversation, author, name, part.body, part.public, part.created_at, once=known)
    for user_id in line.participants:
        writes.add_participant(connection, conversation, _id_of(connection, contact_sql, user_id, "participant"))


def _contact_name(connection: sqlite3.Connection, contact_id: int | None) -> str | None:
    if contact_id is None:
        return None
    row = connection.execute("SELECT coalesce(name, email) FROM contacts WHERE id = ?", (contact_id,)).fetchone()
    return str(row[0]) if row and row[0] else None


async def import_lines(store: SQLiteStore, lines: Iterable[str], *, strict: bool = False) -> ImportReport:
    """Import every line in its own transaction; ``strict``: all lines in one, refused whole at the first error."""
    report = ImportReport()
    numbered = [(number, text) for number, text in enumerate(lines, start=1) if text.strip()]
    if strict:

        def write_all(connection: sqlite3.Connection) -> None:
            # Every line is tried, each under a savepoint so a bad one leaves nothing for the next to build on,
            # and every bad line is reported; then any refusal takes the whole transaction back.
            for number, text in numbered:
                connection.execute("SAVEPOINT line")
                try:
                    write_line(connection, parse_line(text))
                except (ValueError, sqlite3.IntegrityError) as exc:
                    connection.execute("ROLLBACK TO line")
                    report.errors.append((number, _reason(exc)))
                connection.execute("RELEASE line")
            if report.errors:
                raise _Refused

        try:
            await store.transaction(write_all)
        except _Refused:
            pass  # the refused lines are in the report; nothing was written
        else:
            report.written = len(numbered)
        return report
    for number, text in numbered:
        try:
            line = parse_line(text)
            await store.transaction(partial(write_line, line=line))
        except (ValueError, sqlite3.IntegrityError) as exc:
            report.errors.append((number, _reason(exc)))
        else:
            report.written += 1
    return report


def _reason(exc: Exception) -> str:
    if isinstance(exc, sqlite3.IntegrityError):
        return f"conflicts with the store ({exc})"
    return str(exc)

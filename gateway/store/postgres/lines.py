"""Import lines written on a connection: the PostgreSQL side of ``portal-gateway import`` and the demo seed.

Async functions on one :class:`~gateway.store.postgres.db.Sql` connection, with the semantics of
``gateway/store/sqlite/lines.py``; :class:`~gateway.store.postgres.store.PostgresStore` owns the transactions.
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from gateway.store.lines import CompanyLine, ContactLine, Line, LineError, StateLine, TakenBack, TicketLine
from gateway.store.postgres import writes
from gateway.store.postgres.db import Sql
from gateway.store.protocol import ImportMode

REFUSED = (ValueError, asyncpg.IntegrityConstraintViolationError, asyncpg.DataError)
"""What refuses one line (and only that line): a reference to nothing, a constraint, a value PostgreSQL cannot hold."""


async def _id_of(sql: Sql, query: str, key: str, what: str) -> int:
    found = await sql.value(query, key)
    if found is None:
        raise LineError(f"{what} {key!r} is not in the store")
    return int(found)


_CONTACT = "SELECT id FROM contacts WHERE user_id = ?"
_COMPANY = "SELECT id FROM companies WHERE company_id = ?"


async def write_line(sql: Sql, line: Line) -> None:
    """Write one validated line (the caller owns the transaction)."""
    if isinstance(line, CompanyLine):
        company = await writes.upsert_company(
            sql, line.company_id, line.name, line.plan, line.size, line.monthly_spend, line.custom_attributes
        )
        await writes.set_remote_id(sql, "companies", company, line.remote_id)
    elif isinstance(line, ContactLine):
        companies = [await _id_of(sql, _COMPANY, key, "company") for key in line.companies]
        contact = await writes.upsert_contact(sql, line.user_id, line.email, line.name, line.custom_attributes)
        await writes.set_remote_id(sql, "contacts", contact, line.remote_id)
        await writes.set_memberships(sql, contact, companies)
    elif isinstance(line, StateLine):
        await writes.upsert_ticket_state(sql, line.category, line.internal_label, line.external_label)
    else:
        await _write_ticket(sql, line)


# What a ticket line says of the ticket itself, and how to read the same from the store.
_TICKET_FIELDS = ("type", "state", "category", "is_shared", "company", "creator", "title", "description", "created_at")
_STORED_TICKET = (
    "SELECT ty.name, s.internal_label, t.category, t.is_shared, c.company_id, cr.user_id, t.title, t.description,"
    " t.created_at, t.conversation_id FROM tickets t JOIN ticket_types ty ON ty.id = t.type_id"
    " JOIN ticket_states s ON s.id = t.state_id LEFT JOIN companies c ON c.id = t.company_id"
    " JOIN contacts cr ON cr.id = t.creator_id WHERE t.ticket_id = ?"
)


async def _stored_conversation(sql: Sql, line: TicketLine) -> int | None:
    """The conversation of the ticket ``line`` names when the store has it as the line says; None when new."""
    row = await sql.row(_STORED_TICKET, line.ticket_id)
    if row is None:
        return None
    *stored, conversation = tuple(row)
    said = [getattr(line, name) for name in _TICKET_FIELDS]
    said[_TICKET_FIELDS.index("is_shared")] = int(line.is_shared)
    differing = [name for name, old, new in zip(_TICKET_FIELDS, stored, said, strict=True) if old != new]
    if differing:
        raise LineError(
            f"ticket {line.ticket_id} already exists with another {', '.join(differing)}; the stored ticket is kept"
        )
    return int(conversation)


async def _write_ticket(sql: Sql, line: TicketLine) -> None:
    state = await _id_of(sql, "SELECT id FROM ticket_states WHERE internal_label = ?", line.state, "ticket state")
    creator = await _id_of(sql, _CONTACT, line.creator, "creator")
    company = await _id_of(sql, _COMPANY, line.company, "company") if line.company else None
    conversation = await _stored_conversation(sql, line)
    known = conversation is not None  # read again: add only the parts it does not hold yet
    if conversation is None:
        type_id = await writes.ticket_type_id(sql, line.type)
        conversation = await insert_ticket(
            sql, line, type_id=type_id, state_id=state, company_id=company, creator_id=creator
        )
    for part in line.parts:
        author = await _id_of(sql, _CONTACT, part.author, "part author") if part.author else None
        name = part.author_name or await _contact_name(sql, author) or "Support"
        await writes.add_part(sql, conversation, author, name, part.body, part.public, part.created_at, once=known)
    for user_id in line.participants:
        await writes.add_participant(sql, conversation, await _id_of(sql, _CONTACT, user_id, "participant"))


async def _contact_name(sql: Sql, contact_id: int | None) -> str | None:
    if contact_id is None:
        return None
    name = await sql.value("SELECT coalesce(name, email) FROM contacts WHERE id = ?", contact_id)
    return str(name) if name else None


async def write_all(sql: Sql, lines: Sequence[tuple[int, Line]], mode: ImportMode) -> None:
    """Write every line in this one transaction; raise :class:`TakenBack` (taking all of it back) when a line
    is refused, or always in "check" mode."""
    refused: list[tuple[int, str]] = []
    # Every line is tried, each under a savepoint so a bad one leaves nothing for the next to build on.
    for number, line in lines:
        try:
            async with sql.connection.transaction():
                await write_line(sql, line)
        except REFUSED as exc:
            refused.append((number, reason(exc)))
    if refused or mode == "check":
        raise TakenBack(refused)


async def seed(sql: Sql, lines: Sequence[Line]) -> bool:
    """Write the lines unless the store already holds contacts; whether it did (a refused line raises)."""
    # Two nodes seeding an empty database at once: the second waits here, then finds the contacts.
    await sql.execute("LOCK TABLE contacts IN SHARE ROW EXCLUSIVE MODE")
    if await sql.value("SELECT 1 FROM contacts LIMIT 1"):
        return False
    for line in lines:
        await write_line(sql, line)
    return True


def reason(exc: Exception) -> str:
    """Why a line was refused, as the import report says it."""
    if isinstance(exc, asyncpg.PostgresError):
        return f"conflicts with the store ({exc})"
    return str(exc)


async def insert_ticket(
    sql: Sql, line: TicketLine, *, type_id: int, state_id: int, company_id: int | None, creator_id: int
) -> int:
    """Insert the line's ticket (its fields, the row ids given) with Intercom's ids when it has them; the
    conversation id."""
    conversation = await writes.add_ticket(
        sql,
        ticket_id=line.ticket_id,
        type_id=type_id,
        state_id=state_id,
        category=line.category,
        is_shared=line.is_shared,
        company_id=company_id,
        creator_id=creator_id,
        title=line.title,
        description=line.description,
        created_at=line.created_at,
        updated_at=line.updated_at,
    )
    await writes.set_remote_ticket(sql, conversation, line.remote_id, line.conversation)
    return conversation

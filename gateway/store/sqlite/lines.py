"""Import lines written on a connection: the SQLite side of ``portal-gateway import`` and the demo seed.

Plain functions on a connection; :class:`~gateway.store.sqlite.store.SQLiteStore` owns the transactions.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from gateway.store.lines import CompanyLine, ContactLine, Line, LineError, StateLine, TakenBack, TicketLine
from gateway.store.protocol import ImportMode
from gateway.store.sqlite import writes

REFUSED = (ValueError, sqlite3.IntegrityError)
"""What refuses one line (and only that line): a reference to nothing, a constraint."""


def _id_of(connection: sqlite3.Connection, sql: str, key: str, what: str) -> int:
    row = connection.execute(sql, (key,)).fetchone()
    if row is None:
        raise LineError(f"{what} {key!r} is not in the store")
    return int(row[0])


def write_line(connection: sqlite3.Connection, line: Line) -> None:
    """Write one validated line on ``connection`` (the caller owns the transaction)."""
    if isinstance(line, CompanyLine):
        company = writes.upsert_company(
            connection, line.company_id, line.name, line.plan, line.size, line.monthly_spend, line.custom_attributes
        )
        writes.set_remote_id(connection, "companies", company, line.remote_id)
    elif isinstance(line, ContactLine):
        companies = [
            _id_of(connection, "SELECT id FROM companies WHERE company_id = ?", key, "company")
            for key in line.companies
        ]
        contact = writes.upsert_contact(connection, line.user_id, line.email, line.name, line.custom_attributes)
        writes.set_remote_id(connection, "contacts", contact, line.remote_id)
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
        conversation = insert_ticket(
            connection,
            line,
            type_id=writes.ticket_type_id(connection, line.type),
            state_id=state,
            company_id=company,
            creator_id=creator,
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


def write_all(connection: sqlite3.Connection, lines: Sequence[tuple[int, Line]], mode: ImportMode) -> None:
    """Write every line in this one transaction; raise :class:`TakenBack` (taking all of it back) when a line
    is refused, or always in "check" mode."""
    refused: list[tuple[int, str]] = []
    # Every line is tried, each under a savepoint so a bad one leaves nothing for the next to build on,
    # and every bad line is reported; then any refusal takes the whole transaction back.
    for number, line in lines:
        connection.execute("SAVEPOINT line")
        try:
            write_line(connection, line)
        except REFUSED as exc:
            connection.execute("ROLLBACK TO line")
            refused.append((number, reason(exc)))
        connection.execute("RELEASE line")
    if refused or mode == "check":
        raise TakenBack(refused)


def seed(connection: sqlite3.Connection, lines: Sequence[Line]) -> bool:
    """Write the lines unless the store already holds contacts; whether it did (a refused line raises)."""
    if connection.execute("SELECT 1 FROM contacts LIMIT 1").fetchone():
        return False
    for line in lines:
        write_line(connection, line)
    return True


def reason(exc: Exception) -> str:
    """Why a line was refused, as the import report says it."""
    if isinstance(exc, sqlite3.IntegrityError):
        return f"conflicts with the store ({exc})"
    return str(exc)


def insert_ticket(
    connection: sqlite3.Connection,
    line: TicketLine,
    *,
    type_id: int,
    state_id: int,
    company_id: int | None,
    creator_id: int,
) -> int:
    """Insert the line's ticket (its fields, the row ids given) with Intercom's ids when it has them; the
    conversation id."""
    conversation = writes.add_ticket(
        connection,
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
    writes.set_remote_ticket(connection, conversation, line.remote_id, line.conversation)
    return conversation

"""The store as a mirror of an Intercom workspace: the connector's writes, once for every backend.

Unlike an import, which never overwrites a ticket (an old export must not undo an admin's change), a
mirrored line is the truth: Intercom holds the record, the store only shows it. Records are found by
Intercom's id first, so a company whose ``company_id`` changed, or a contact whose ``external_id`` did,
stays one record.

Written without I/O (sans-I/O): each function is a generator that yields what it needs done, a :class:`Query`
(``?`` SQL both backends speak, answered with its rows) or one of the backend's own writes (:data:`Write`,
answered with its result), and returns its answer. Each backend's ``mirror.py`` runs these programs on
its connection (SQLite's in its worker thread, PostgreSQL's awaiting each step) inside the store's transaction.
"""

# ruff: noqa: S608 -- table and column names come from the constant TABLES (WHERE clauses from this file and
# visibility.py's constants), never from input: every value is a bound parameter.
from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from gateway.policy.associations import company_for_new_ticket
from gateway.store.lines import CompanyLine, ContactLine, Line, LineError, TicketLine
from gateway.store.protocol import RemoteKind
from gateway.store.visibility import SCOPE, SHOWN

TABLES: dict[RemoteKind, tuple[str, str]] = {
    "company": ("companies", "company_id"),
    "contact": ("contacts", "user_id"),
    "ticket": ("tickets", "ticket_id"),
}
"""Each mirrored kind's table and the column of the store's own id for it."""

PartRow = tuple[int | None, str, str, bool, int]
"""A part as both the line and the store hold it: author contact row, author name, body, public, time."""


@dataclass(frozen=True)
class Query:
    """A statement in ``?`` SQL; the program is sent back every row it returns (a list of tuples)."""

    sql: str
    args: tuple[Any, ...] = ()


@dataclass(frozen=True)
class WriteLine:
    """The backend's import of one line that is no ticket (an upsert by its own id); sent back None."""

    line: Line


@dataclass(frozen=True)
class TypeId:
    """The row of the ticket type with this name, created when new; sent back the row id."""

    name: str


@dataclass(frozen=True)
class InsertTicket:
    """The backend's insert of the line's ticket with a new conversation and Intercom's ids; sent back the
    conversation id."""

    line: TicketLine
    type_id: int
    state_id: int
    company_id: int | None
    creator_id: int


@dataclass(frozen=True)
class AddPart:
    """Append one part to the conversation; sent back None."""

    conversation: int
    part: PartRow


@dataclass(frozen=True)
class AddParticipant:
    """Make the contact a participant of the conversation (idempotent); sent back None."""

    conversation: int
    contact: int


Write = WriteLine | TypeId | InsertTicket | AddPart | AddParticipant
"""The writes each backend makes its own way (ids chosen, changes recorded) and shares with its importer."""
T = TypeVar("T")
Program = Generator[Query | Write, Any, T]
"""What the backends run: yields the steps, is sent each one's answer, returns the result."""


def mirror_line(line: Line) -> Program[None]:
    """Write the line as Intercom holds it (the caller owns the transaction)."""
    if isinstance(line, TicketLine):
        yield from _mirror_ticket(line)
        return
    if isinstance(line, CompanyLine | ContactLine) and line.remote_id is not None:
        yield from _rekey(line)
    yield WriteLine(line)
    if isinstance(line, ContactLine):
        yield from _follow_memberships(line.user_id)


def _rekey(line: CompanyLine | ContactLine) -> Program[None]:
    """Give the record Intercom knows by ``remote_id`` the line's own id, so the upsert after it finds it."""
    table, key = TABLES["company" if isinstance(line, CompanyLine) else "contact"]
    own = line.company_id if isinstance(line, CompanyLine) else line.user_id
    yield Query(f"UPDATE {table} SET {key} = ? WHERE remote_id = ?", (own, line.remote_id))


def _one(rows: Sequence[Sequence[Any]]) -> Any:
    """The first column of the first row, or None."""
    return rows[0][0] if rows else None


def _company_row(contact_row: int) -> Program[int | None]:
    """The row of the company a ticket of this creator belongs to: their only one, none with several."""
    rows = yield Query(
        "SELECT c.company_id FROM memberships m JOIN companies c ON c.id = m.company_id"
        " WHERE m.contact_id = ? ORDER BY c.company_id",
        (contact_row,),
    )
    company = company_for_new_ticket([str(row[0]) for row in rows], None)
    if company is None:
        return None
    return int(_one((yield Query("SELECT id FROM companies WHERE company_id = ?", (company,)))))


def _contact_row(user_id: str, what: str) -> Program[int]:
    found = _one((yield Query("SELECT id FROM contacts WHERE user_id = ?", (user_id,))))
    if found is None:
        raise LineError(f"{what} {user_id!r} is not in the store")
    return int(found)


def _follow_memberships(user_id: str) -> Program[None]:
    """A contact's mirrored tickets belong to the company their memberships now give them."""
    contact_row = yield from _contact_row(user_id, "contact")
    company = yield from _company_row(contact_row)
    yield Query(
        "UPDATE tickets SET company_id = ? WHERE creator_id = ? AND remote_id IS NOT NULL", (company, contact_row)
    )


def _mirror_ticket(line: TicketLine) -> Program[None]:
    state = _one((yield Query("SELECT id FROM ticket_states WHERE internal_label = ?", (line.state,))))
    if state is None:
        raise LineError(f"ticket state {line.state!r} is not in the store")
    creator = yield from _contact_row(line.creator, "creator")
    type_id = yield TypeId(line.type)
    company = yield from _company_row(creator)
    # By Intercom's id, else an unmirrored ticket with the same id (``remote_id = NULL`` matches nothing).
    found = yield Query(
        "SELECT id, conversation_id FROM tickets WHERE remote_id = ? OR (remote_id IS NULL AND ticket_id = ?)"
        " ORDER BY remote_id IS NULL LIMIT 1",
        (line.remote_id, line.ticket_id),
    )
    if not found:
        conversation = yield InsertTicket(line, type_id, int(state), company, creator)
    else:
        conversation = int(found[0][1])
        yield Query(
            "UPDATE tickets SET type_id = ?, state_id = ?, category = ?, is_shared = ?, company_id = ?,"
            " creator_id = ?, title = ?, description = ?, created_at = ?, updated_at = ?, remote_conversation = ?,"
            " ticket_id = ?, remote_id = ? WHERE id = ?",
            (
                type_id,
                int(state),
                line.category,
                int(line.is_shared),
                company,
                creator,
                line.title,
                line.description,
                line.created_at,
                line.updated_at,
                line.conversation,
                line.ticket_id,
                line.remote_id,
                found[0][0],
            ),
        )
        yield Query("DELETE FROM participants WHERE conversation_id = ?", (conversation,))
    parts: list[PartRow] = []
    for part in line.parts:
        author = (yield from _contact_row(part.author, "part author")) if part.author else None
        parts.append((author, part.author_name or "Support", part.body, part.public, part.created_at))
    kept = yield from _kept_parts(conversation, parts)
    for row in parts[kept:]:
        yield AddPart(conversation, row)
    for user_id in line.participants:
        yield AddParticipant(conversation, (yield from _contact_row(user_id, "participant")))


def _kept_parts(conversation: int, parts: list[PartRow]) -> Program[int]:
    """How many of the conversation's stored parts stay: all when Intercom's begin with them, else none.

    A ticket synced again usually only gained replies: appending just those keeps the change feed to what is
    new (a part deleted and written again would be a "reply" to every open page). Parts edited, redacted or
    made internal are replaced whole.
    """
    rows = yield Query(
        "SELECT author_contact_id, author_name, body, is_public, created_at FROM conversation_parts"
        " WHERE conversation_id = ? ORDER BY id",
        (conversation,),
    )
    stored = [(row[0], row[1], row[2], bool(row[3]), row[4]) for row in rows]
    if parts[: len(stored)] == stored:
        return len(stored)
    yield Query("DELETE FROM conversation_parts WHERE conversation_id = ?", (conversation,))
    return 0


def forget(kind: RemoteKind, remote_id: str) -> Program[bool]:
    """Delete the record Intercom deleted, and what hangs on it (a ticket deleted records a change); whether there
    was one."""
    table, _ = TABLES[kind]
    found = _one((yield Query(f"SELECT id FROM {table} WHERE remote_id = ?", (remote_id,))))
    if found is None:
        return False
    row_id = int(found)
    if kind == "ticket":
        yield from _delete_tickets("id = ?", row_id)
    elif kind == "contact":
        yield from _delete_tickets("creator_id = ?", row_id)
        yield Query("UPDATE conversation_parts SET author_contact_id = NULL WHERE author_contact_id = ?", (row_id,))
    else:
        yield Query("UPDATE tickets SET company_id = NULL WHERE company_id = ?", (row_id,))
    yield Query(f"DELETE FROM {table} WHERE id = ?", (row_id,))
    return True


def _delete_tickets(where: str, value: int) -> Program[None]:
    # A live page may show these tickets, which no stream can read once they are gone: each records a "removed"
    # change with the scope key and creator that decided who saw it (routes/events.py matches them as
    # visible_clause() did). SECURITY: only the categories a visitor may see: a Tracker ticket tells nobody.
    yield Query(
        f"INSERT INTO changes (kind, ticket_id, scope, contact_id) SELECT 'removed', t.ticket_id, {SCOPE},"
        f" t.creator_id FROM tickets t WHERE t.{where} AND {SHOWN} ORDER BY t.id",
        (value,),
    )
    conversations = f"SELECT conversation_id FROM tickets WHERE {where}"
    yield Query(f"DELETE FROM conversation_parts WHERE conversation_id IN ({conversations})", (value,))
    yield Query(f"DELETE FROM participants WHERE conversation_id IN ({conversations})", (value,))
    yield Query(f"DELETE FROM tickets WHERE {where}", (value,))


def remote_ids(kind: RemoteKind) -> Program[set[str]]:
    """The Intercom ids of every mirrored record of that kind."""
    table, _ = TABLES[kind]
    rows = yield Query(f"SELECT remote_id FROM {table} WHERE remote_id IS NOT NULL")
    return {str(row[0]) for row in rows}


def remote_id(kind: RemoteKind, key: str) -> Program[str | None]:
    """Intercom's id of the record with this id of the store's."""
    table, column = TABLES[kind]
    found = _one((yield Query(f"SELECT remote_id FROM {table} WHERE {column} = ?", (key,))))
    return None if found is None else str(found)


def remote_conversation(ticket_id: str) -> Program[str | None]:
    """Intercom's id of the ticket's linked conversation."""
    found = _one((yield Query("SELECT remote_conversation FROM tickets WHERE ticket_id = ?", (ticket_id,))))
    return None if found is None else str(found)

"""The store as a mirror of an Intercom workspace: the connector's writes, on a connection.

Unlike an import, which never overwrites a ticket (an old export must not undo
an admin's change), a mirrored line is the truth: Intercom holds the record, the
store only shows it. Records are found by Intercom's id first, so a company whose
``company_id`` changed, or a contact whose ``external_id`` did, stays one record.
Plain functions; :class:`~gateway.store.sqlite.store.SQLiteStore` owns the transactions.
"""

# ruff: noqa: S608 -- table and column names come from the constant _TABLES (and WHERE clauses from this file),
# never from input: every value is a bound parameter.
from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from gateway.policy.associations import company_for_new_ticket
from gateway.store.lines import CompanyLine, ContactLine, Line, LineError, TicketLine
from gateway.store.protocol import RemoteKind
from gateway.store.sqlite import lines as imports
from gateway.store.sqlite import writes

_TABLES: dict[RemoteKind, tuple[str, str]] = {
    "company": ("companies", "company_id"),
    "contact": ("contacts", "user_id"),
    "ticket": ("tickets", "ticket_id"),
}


def mirror_lines(connection: sqlite3.Connection, lines: Sequence[Line]) -> None:
    """Write each line as Intercom holds it (the caller owns the transaction)."""
    for line in lines:
        try:
            if isinstance(line, TicketLine):
                _mirror_ticket(connection, line)
                continue
            if isinstance(line, CompanyLine | ContactLine) and line.remote_id is not None:
                _rekey(connection, "company" if isinstance(line, CompanyLine) else "contact", line)
            imports.write_line(connection, line)
            if isinstance(line, ContactLine):
                _follow_memberships(connection, line.user_id)
        except sqlite3.IntegrityError as exc:
            raise LineError(f"{line.kind} conflicts with the store ({exc})") from None


def _rekey(connection: sqlite3.Connection, kind: RemoteKind, line: CompanyLine | ContactLine) -> None:
    """Give the record Intercom knows by ``remote_id`` the line's own id, so the upsert after it finds it."""
    table, key = _TABLES[kind]
    own = line.company_id if isinstance(line, CompanyLine) else line.user_id
    connection.execute(f"UPDATE {table} SET {key} = ? WHERE remote_id = ?", (own, line.remote_id))


def _member_of(connection: sqlite3.Connection, contact_row: int) -> list[str]:
    return [
        str(row[0])
        for row in connection.execute(
            "SELECT c.company_id FROM memberships m JOIN companies c ON c.id = m.company_id"
            " WHERE m.contact_id = ? ORDER BY c.company_id",
            (contact_row,),
        )
    ]


def _company_row(connection: sqlite3.Connection, contact_row: int) -> int | None:
    """The row of the company a ticket of this creator belongs to: their only one, none with several."""
    company = company_for_new_ticket(_member_of(connection, contact_row), None)
    if company is None:
        return None
    return int(connection.execute("SELECT id FROM companies WHERE company_id = ?", (company,)).fetchone()[0])


def _follow_memberships(connection: sqlite3.Connection, user_id: str) -> None:
    """A contact's mirrored tickets belong to the company their memberships now give them."""
    contact_row = int(connection.execute("SELECT id FROM contacts WHERE user_id = ?", (user_id,)).fetchone()[0])
    connection.execute(
        "UPDATE tickets SET company_id = ? WHERE creator_id = ? AND remote_id IS NOT NULL",
        (_company_row(connection, contact_row), contact_row),
    )


def _contact_row(connection: sqlite3.Connection, user_id: str, what: str) -> int:
    row = connection.execute("SELECT id FROM contacts WHERE user_id = ?", (user_id,)).fetchone()
    if row is None:
        raise LineError(f"{what} {user_id!r} is not in the store")
    return int(row[0])


def _mirror_ticket(connection: sqlite3.Connection, line: TicketLine) -> None:
    state = connection.execute("SELECT id FROM ticket_states WHERE internal_label = ?", (line.state,)).fetchone()
    if state is None:
        raise LineError(f"ticket state {line.state!r} is not in the store")
    creator = _contact_row(connection, line.creator, "creator")
    fields = (
        writes.ticket_type_id(connection, line.type),
        int(state[0]),
        line.category,
        int(line.is_shared),
        _company_row(connection, creator),
        creator,
        line.title,
        line.description,
        line.created_at,
        line.updated_at,
        line.conversation,
    )
    found = connection.execute(
        "SELECT id, conversation_id FROM tickets WHERE remote_id IS ? OR (remote_id IS NULL AND ticket_id = ?)"
        " ORDER BY remote_id IS NULL LIMIT 1",
        (line.remote_id, line.ticket_id),
    ).fetchone()
    if found is None:
        conversation = imports.insert_ticket(
            connection, line, type_id=fields[0], state_id=fields[1], company_id=fields[4], creator_id=creator
        )
    else:
        conversation = int(found[1])
        connection.execute(
            "UPDATE tickets SET type_id = ?, state_id = ?, category = ?, is_shared = ?, company_id = ?,"
            " creator_id = ?, title = ?, description = ?, created_at = ?, updated_at = ?, remote_conversation = ?,"
            " ticket_id = ?, remote_id = ? WHERE id = ?",
            (*fields, line.ticket_id, line.remote_id, found[0]),
        )
        connection.execute("DELETE FROM participants WHERE conversation_id = ?", (conversation,))
    parts = [
        (
            _contact_row(connection, part.author, "part author") if part.author else None,
            part.author_name or "Support",
            part.body,
            part.public,
            part.created_at,
        )
        for part in line.parts
    ]
    for part in parts[_kept_parts(connection, conversation, parts) :]:
        writes.add_part(connection, conversation, *part)
    for user_id in line.participants:
        writes.add_participant(connection, conversation, _contact_row(connection, user_id, "participant"))


def _kept_parts(
    connection: sqlite3.Connection, conversation: int, parts: list[tuple[int | None, str, str, bool, int]]
) -> int:
    """How many of the conversation's stored parts stay: all when Intercom's begin with them, else none.

    A ticket synced again usually only gained replies: appending just those keeps the change feed to what is
    new (a part deleted and written again would be a "reply" to every open page). Parts edited, redacted or
    made internal are replaced whole.
    """
    stored = [
        (row[0], row[1], row[2], bool(row[3]), row[4])
        for row in connection.execute(
            "SELECT author_contact_id, author_name, body, is_public, created_at FROM conversation_parts"
            " WHERE conversation_id = ? ORDER BY id",
            (conversation,),
        )
    ]
    if parts[: len(stored)] == stored:
        return len(stored)
    connection.execute("DELETE FROM conversation_parts WHERE conversation_id = ?", (conversation,))
    return 0


def forget(connection: sqlite3.Connection, kind: RemoteKind, remote_id: str) -> bool:
    """Delete the record Intercom deleted, and what hangs on it; whether there was one."""
    table, _ = _TABLES[kind]
    row = connection.execute(f"SELECT id FROM {table} WHERE remote_id = ?", (remote_id,)).fetchone()
    if row is None:
        return False
    row_id = int(row[0])
    if kind == "ticket":
        _delete_tickets(connection, "id = ?", row_id)
    elif kind == "contact":
        _delete_tickets(connection, "creator_id = ?", row_id)
        connection.execute(
            "UPDATE conversation_parts SET author_contact_id = NULL WHERE author_contact_id = ?", (row_id,)
        )
    else:
        connection.execute("UPDATE tickets SET company_id = NULL WHERE company_id = ?", (row_id,))
    connection.execute(f"DELETE FROM {table} WHERE id = ?", (row_id,))
    return True


def _delete_tickets(connection: sqlite3.Connection, where: str, value: int) -> None:
    conversations = f"SELECT conversation_id FROM tickets WHERE {where}"
    connection.execute(f"DELETE FROM conversation_parts WHERE conversation_id IN ({conversations})", (value,))
    connection.execute(f"DELETE FROM participants WHERE conversation_id IN ({conversations})", (value,))
    connection.execute(f"DELETE FROM tickets WHERE {where}", (value,))


def remote_ids(connection: sqlite3.Connection, kind: RemoteKind) -> set[str]:
    """The Intercom ids of every mirrored record of that kind."""
    table, _ = _TABLES[kind]
    return {str(row[0]) for row in connection.execute(f"SELECT remote_id FROM {table} WHERE remote_id IS NOT NULL")}


def remote_id(connection: sqlite3.Connection, kind: RemoteKind, key: str) -> str | None:
    """Intercom's id of the record with this id of the store's."""
    table, column = _TABLES[kind]
    row = connection.execute(f"SELECT remote_id FROM {table} WHERE {column} = ?", (key,)).fetchone()
    return None if row is None or row[0] is None else str(row[0])


def remote_conversation(connection: sqlite3.Connection, ticket_id: str) -> str | None:
    """Intercom's id of the ticket's linked conversation."""
    row = connection.execute("SELECT remote_conversation FROM tickets WHERE ticket_id = ?", (ticket_id,)).fetchone()
    return None if row is None or row[0] is None else str(row[0])


def checkpoint(connection: sqlite3.Connection, name: str) -> str | None:
    """The checkpoint saved under ``name``."""
    row = connection.execute("SELECT value FROM sync_checkpoints WHERE name = ?", (name,)).fetchone()
    return None if row is None else str(row[0])


def save_checkpoint(connection: sqlite3.Connection, name: str, value: str) -> None:
    """Save (replace) the checkpoint under ``name``."""
    connection.execute(
        "INSERT INTO sync_checkpoints (name, value) VALUES (?, ?)"
        " ON CONFLICT (name) DO UPDATE SET value = excluded.value",
        (name, value),
    )


def acquire_lease(connection: sqlite3.Connection, name: str, holder: str, ttl: float, now: float) -> bool:
    """Take or renew the lease for ``holder``; False while another holder's has not expired."""
    # One statement, in the caller's write transaction: two workers racing for it cannot both win.
    row = connection.execute(
        "INSERT INTO leases (name, holder, expires_at) VALUES (?, ?, ?) ON CONFLICT (name) DO UPDATE"
        " SET holder = excluded.holder, expires_at = excluded.expires_at"
        " WHERE leases.holder = excluded.holder OR leases.expires_at <= ? RETURNING holder",
        (name, holder, now + ttl, now),
    ).fetchone()
    return row is not None


def release_lease(connection: sqlite3.Connection, name: str, holder: str) -> None:
    """Give the lease up if ``holder`` holds it."""
    connection.execute("DELETE FROM leases WHERE name = ? AND holder = ?", (name, holder))

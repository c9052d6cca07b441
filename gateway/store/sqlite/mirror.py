"""The connector's writes on SQLite: ``gateway/store/mirror.py``'s programs run on a connection, and the sync's state.

Plain functions; :class:`~gateway.store.sqlite.store.SQLiteStore` owns the transactions.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any, TypeVar

from gateway.store import mirror
from gateway.store.lines import Line, LineError
from gateway.store.sqlite import lines as imports
from gateway.store.sqlite import writes

T = TypeVar("T")


def run(connection: sqlite3.Connection, program: mirror.Program[T]) -> T:
    """Run one of ``gateway/store/mirror.py``'s programs on the connection; what it returns."""
    try:
        step = next(program)
        while True:
            step = program.send(_do(connection, step))
    except StopIteration as done:
        result: T = done.value
        return result


def _do(connection: sqlite3.Connection, step: mirror.Query | mirror.Write) -> Any:
    match step:
        case mirror.Query(sql, args):
            return connection.execute(sql, args).fetchall()
        case mirror.WriteLine(line):
            return imports.write_line(connection, line)
        case mirror.TypeId(name):
            return writes.ticket_type_id(connection, name)
        case mirror.InsertTicket(line, type_id, state_id, company_id, creator_id):
            return imports.insert_ticket(
                connection, line, type_id=type_id, state_id=state_id, company_id=company_id, creator_id=creator_id
            )
        case mirror.AddPart(conversation, part):
            return writes.add_part(connection, conversation, *part)
        case mirror.AddParticipant(conversation, contact):
            return writes.add_participant(connection, conversation, contact)


def mirror_lines(connection: sqlite3.Connection, lines: Sequence[Line]) -> None:
    """Write each line as Intercom holds it (the caller owns the transaction)."""
    for line in lines:
        try:
            run(connection, mirror.mirror_line(line))
        except sqlite3.IntegrityError as exc:
            raise LineError(f"{line.kind} conflicts with the store ({exc})") from None


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

"""The embedded store: SQLite in WAL mode, used from one worker thread so the event loop never waits on disk.

Every read of tickets takes a :class:`~gateway.visibility.TicketFilter` and goes
through :func:`visible_clause`; there is no way to list or fetch a ticket without one.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from gateway.store.models import (
    Company,
    Contact,
    Part,
    TicketDetail,
    TicketPage,
    TicketQuery,
    TicketState,
    TicketSummary,
    TicketType,
)
from gateway.store.schema import migrate
from gateway.visibility import TicketFilter

T = TypeVar("T")

_SORT_COLUMNS = {
    "id": "CAST(t.ticket_id AS INTEGER) {dir}, t.ticket_id {dir}",
    "type": "ty.name COLLATE NOCASE {dir}",
    "state": (
        "CASE s.category WHEN 'submitted' THEN 0 WHEN 'in_progress' THEN 1 "
        "WHEN 'waiting_on_customer' THEN 2 ELSE 3 END {dir}, s.external_label {dir}"
    ),
    "created": "t.created_at {dir}",
    "updated": "t.updated_at {dir}",
}
_SUMMARY_COLUMNS = """
    t.ticket_id, t.title, ty.name, s.external_label, s.category, c.name, p.name, t.created_at, t.updated_at
"""
_SUMMARY_JOINS = """
    FROM tickets t
    JOIN ticket_types ty ON ty.id = t.type_id
    JOIN ticket_states s ON s.id = t.state_id
    LEFT JOIN companies c ON c.id = t.company_id
    LEFT JOIN contacts p ON p.id = t.creator_id
"""


def visible_clause(visible: TicketFilter) -> tuple[str, list[Any]]:
    """The WHERE clause of everything a visitor may see: shared tickets of their companies, maybe only their own.

    SECURITY: the one place visibility becomes SQL. Tracker tickets and unshared
    Back-office tickets never match; a visitor with no company and no contact
    matches nothing (deny by default).
    """
    me = visible.contact_id if visible.contact_id is not None else -1
    companies = sorted(visible.company_ids)
    in_companies = f"t.company_id IN ({','.join('?' * len(companies))})" if companies else "0"
    clause = (
        "(t.category = 'Customer' OR (t.category = 'Back-office' AND t.is_shared = 1))"
        f" AND ({in_companies} OR (t.company_id IS NULL AND t.creator_id = ?))"
    )
    params: list[Any] = [*companies, me]
    if visible.own_only:
        clause += " AND t.creator_id = ?"
        params.append(me)
    return clause, params


def _query_clause(query: TicketQuery) -> tuple[str, list[Any]]:
    conditions, params = [], []
    for column, value in (
        ("t.state_id = ?", query.state_id),
        ("t.type_id = ?", query.type_id),
        ("t.creator_id = ?", query.creator_id),
        ("t.created_at >= ?", query.created_after),
        ("t.created_at < ?", query.created_before),
        ("t.updated_at >= ?", query.updated_after),
        ("t.updated_at < ?", query.updated_before),
    ):
        if value is not None:
            conditions.append(column)
            params.append(value)
    return "".join(f" AND {condition}" for condition in conditions), params


def _summary(row: Sequence[Any]) -> TicketSummary:
    return TicketSummary(*row[:9])


def _company(row: Sequence[Any]) -> Company:
    return Company(row[0], row[1], row[2], row[3], row[4], row[5], json.loads(row[6]))


class SQLiteStore:
    """The async store over one SQLite connection owned by one worker thread."""

    def __init__(self, connection: sqlite3.Connection, executor: ThreadPoolExecutor) -> None:
        self._connection = connection
        self._executor = executor

    @classmethod
    async def open(cls, path: Path) -> SQLiteStore:
        """Open (creating and migrating) the database at ``path``."""
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store")

        def connect() -> sqlite3.Connection:
            path.parent.mkdir(parents=True, exist_ok=True)
            connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            connection.execute("PRAGMA journal_mode = WAL")
            connection.execute("PRAGMA synchronous = NORMAL")
            connection.execute("PRAGMA foreign_keys = ON")
            connection.execute("PRAGMA busy_timeout = 5000")
            migrate(connection)
            return connection

        connection = await asyncio.get_running_loop().run_in_executor(executor, connect)
        return cls(connection, executor)

    async def close(self) -> None:
        """Close the connection and stop the worker."""
        await self._run(self._connection.close)
        self._executor.shutdown(wait=True)

    async def _run(self, function: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, function)

    async def transaction(self, function: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``function`` on the connection inside one transaction: all of it is written, or none."""

        def run() -> T:
            self._connection.execute("BEGIN IMMEDIATE")
            try:
                result = function(self._connection)
            except BaseException:
                self._connection.execute("ROLLBACK")
                raise
            self._connection.execute("COMMIT")
            return result

        return await self._run(run)

    async def ping(self) -> None:
        """Raise if the database cannot answer a query."""
        await self._run(lambda: self._connection.execute("SELECT 1").fetchone())

    def _contact(self, row: Sequence[Any]) -> Contact:
        companies = self._connection.execute(
            "SELECT c.id, c.company_id, c.name, c.plan, c.size, c.monthly_spend, c.custom_attributes"
            " FROM memberships m JOIN companies c ON c.id = m.company_id WHERE m.contact_id = ? ORDER BY c.name",
            (row[0],),
        ).fetchall()
        return Contact(row[0], row[1], row[2], row[3], json.loads(row[4]), tuple(map(_company, companies)))

    async def contact_by_user_id(self, user_id: str) -> Contact | None:
        """The contact whose external ``user_id`` this is, with their companies."""

        def read() -> Contact | None:
            row = self._connection.execute(
                "SELECT id, user_id, email, name, custom_attributes FROM contacts WHERE user_id = ?", (user_id,)
            ).fetchone()
            return self._contact(row) if row else None

        return await self._run(read)

    async def contacts(self) -> list[Contact]:
        """Every contact with their companies, by name (for previews and the dev login)."""

        def read() -> list[Contact]:
            rows = self._connection.execute(
                "SELECT id, user_id, email, name, custom_attributes FROM contacts ORDER BY name, id"
            ).fetchall()
            return [self._contact(row) for row in rows]

        return await self._run(read)

    async def ticket_states(self) -> list[TicketState]:
        """All ticket states in workflow order."""
        rows = await self._run(
            lambda: self._connection.execute(
                "SELECT id, category, internal_label, external_label FROM ticket_states ORDER BY"
                " CASE category WHEN 'submitted' THEN 0 WHEN 'in_progress' THEN 1"
                " WHEN 'waiting_on_customer' THEN 2 ELSE 3 END, id"
            ).fetchall()
        )
        return [TicketState(*row) for row in rows]

    async def ticket_types(self) -> list[TicketType]:
        """All ticket types by name."""
        rows = await self._run(
            lambda: self._connection.execute("SELECT id, name FROM ticket_types ORDER BY name").fetchall()
        )
        return [TicketType(*row) for row in rows]

    async def list_tickets(self, visible: TicketFilter, query: TicketQuery) -> TicketPage:
        """One page of the tickets the filter lets the visitor see, and their total."""
        where, params = visible_clause(visible)
        extra, extra_params = _query_clause(query)
        direction = "DESC" if query.descending else "ASC"
        order = _SORT_COLUMNS[query.sort].format(dir=direction)
        offset = (query.page - 1) * query.page_size

        def read() -> TicketPage:
            total = self._connection.execute(
                f"SELECT count(*) FROM tickets t WHERE {where}{extra}",  # noqa: S608 (placeholders only)
                [*params, *extra_params],
            ).fetchone()[0]
            rows = self._connection.execute(
                f"SELECT {_SUMMARY_COLUMNS} {_SUMMARY_JOINS} WHERE {where}{extra}"
                f" ORDER BY {order}, t.id {direction} LIMIT ? OFFSET ?",
                [*params, *extra_params, query.page_size, offset],
            ).fetchall()
            return TicketPage(tuple(map(_summary, rows)), int(total), query.page, query.page_size)

        return await self._run(read)

    async def get_ticket(self, visible: TicketFilter, ticket_id: str) -> TicketDetail | None:
        """The ticket with that customer-facing id, if the filter lets the visitor see it."""
        where, params = visible_clause(visible)

        def read() -> TicketDetail | None:
            row = self._connection.execute(
                f"SELECT {_SUMMARY_COLUMNS}, t.description, t.conversation_id {_SUMMARY_JOINS}"
                f" WHERE {where} AND t.ticket_id = ?",
                [*params, ticket_id],
            ).fetchone()
            if row is None:
                return None
            parts = self._connection.execute(
                "SELECT author_name, body, created_at FROM conversation_parts"
                " WHERE conversation_id = ? AND is_public = 1 ORDER BY created_at, id",
                (row[10],),
            ).fetchall()
            participant = self._connection.execute(
                "SELECT 1 FROM participants WHERE conversation_id = ? AND contact_id = ?",
                (row[10], visible.contact_id),
            ).fetchone()
            return TicketDetail(
                summary=_summary(row),
                description=row[9],
                conversation_id=row[10],
                parts=tuple(Part(*part) for part in parts),
                participant=participant is not None,
            )

        return await self._run(read)

"""The shared store: PostgreSQL through a bounded asyncpg pool, for several gateways on one database.

Every read of tickets takes a :class:`~gateway.store.models.TicketFilter` and goes through
:func:`~gateway.store.visibility.visible_clause`, the same clause builder as SQLite's.

The contact cache is invalidated across nodes: a trigger notifies ``portal_store_changed`` at the commit
of any write to contacts, companies or memberships (whoever makes it), and each node's listening
connection empties its cache when told. A notification travels on its own, so before answering from the
cache a node makes one round trip on that connection (shared by every request waiting at that moment):
the server hands over every notification committed before it. While that connection is down, nothing is cached.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from functools import partial
from typing import Any, TypeVar

import asyncpg
from cachetools import LRUCache

from gateway.errors import CopyRefused, StoreUnavailable
from gateway.store import mirror as programs
from gateway.store.copy import Table
from gateway.store.delegation import Delegating
from gateway.store.models import (
    Change,
    ChangeBatch,
    ChangedTicket,
    Contact,
    TicketDetail,
    TicketFilter,
    TicketPage,
    TicketQuery,
    TicketState,
    TicketType,
)
from gateway.store.postgres import lines as imports
from gateway.store.postgres import mirror, support
from gateway.store.postgres.db import AWAY, LOST, Sql, create_pool, reachable
from gateway.store.postgres.schema import CHANGES_CHANNEL, FEED_CHANNEL, MIGRATION_WAIT, migrate
from gateway.store.postgres.search import FIRST_TIER, HEADLINE_OPTIONS, ts_any, ts_match
from gateway.store.postgres.writes import add_participant
from gateway.store.protocol import RemoteKind
from gateway.store.rows import (
    CHANGED_SELECT,
    DETAIL_SELECT,
    PARTICIPANT,
    PUBLIC_PARTS,
    STATE_ORDER,
    SUMMARY_COLUMNS,
    SUMMARY_JOINS,
    SUMMARY_LOOKUPS,
    changed_ticket,
    company,
    summary,
    ticket_detail,
)
from gateway.store.search import PART_SEPARATOR, best_reply, excerpt
from gateway.store.visibility import count_sql, counted_sql, page_sql, query_clause, scope_keys, visible_clause

T = TypeVar("T")
CONTACT_CACHE_SIZE = 10_000
# How long the listener waits between attempts to reconnect (doubling up to the last).
RELISTEN_DELAYS = (0.1, 0.2, 0.5, 1.0, 2.0)
log = logging.getLogger(__name__)

# As SQLite sorts: ids by their leading number then as text, names without (ASCII) case, text by code point.
_SORT_COLUMNS = {
    "id": "coalesce(substring(t.ticket_id from '^[0-9]{{1,18}}')::bigint, 0) {dir}, t.ticket_id COLLATE \"C\" {dir}",
    "type": 'lower(ty.name) COLLATE "C" {dir}',
    "state": STATE_ORDER.format(category="s.category") + ' {dir}, s.external_label COLLATE "C" {dir}',
    "created": "t.created_at {dir}",
    "updated": "t.updated_at {dir}",
}
# The best field a ticket matched in: 0 title or ticket id, 1 description, 2 replies; within a tier the most
# recently updated come first, as on SQLite (no ts_rank: it reads every hit's tsvector, bench/README.md).
_TIER = "CASE WHEN t.search @@ q.title_or_id THEN 0 WHEN t.search @@ q.description THEN 1 ELSE 2 END"
# The column a snippet is cut from: the title, else the ticket id, else the description, else the replies.
_TITLE, _DESCRIPTION, _TICKET_ID, _REPLIES = range(4)
_SNIPPET_COLUMN = (
    f"CASE WHEN t.search @@ q.title THEN {_TITLE} WHEN t.search @@ q.ticket_id THEN {_TICKET_ID}"
    f" WHEN t.search @@ q.description THEN {_DESCRIPTION} ELSE {_REPLIES} END"
)
# The deepest page end (in rows) a search best first looks for in its head (see _hits): a head that falls short of
# its page has ordered every first-tier hit for nothing, which this bounds; a page past it orders all hits at once.
_HEAD_ROWS = 500
# The query's tsqueries, computed once per statement.
_QUERIES = (
    # plain: the query holds no phrase (the parser splits a term like 'ab²c' into one), so a match in tickets.scoped,
    # which has no positions, is exactly a match in tickets.search for a ticket visible_clause() lets through.
    "q AS (SELECT *, strpos(query::text, '<') = 0 AS plain FROM (SELECT to_tsquery('portal_search', ?) AS query,"
    " to_tsquery('portal_search', ?) AS title_or_id,"
    " to_tsquery('portal_search', ?) AS title, to_tsquery('portal_search', ?) AS ticket_id,"
    " to_tsquery('portal_search', ?) AS description,"
    # The visitor's match in tickets.scoped (schema migration 8): their own keys' posting lists only.
    " portal_scoped_query(to_tsquery('portal_search', ?), ?::bigint[]) AS scoped,"
    # Any of the words in the first tier's lexemes (FIRST_TIER), behind the same keys.
    " portal_scoped_query(to_tsquery('portal_search', ?), ?::bigint[]) AS first) AS parsed)"
)


def _relevance(descending: bool) -> str:
    """ORDER BY for relevance: the exact ticket id first, then by tier, then the most recently updated."""
    best, worst = ("DESC", "ASC") if descending else ("ASC", "DESC")
    return f"hits.exact {best}, hits.tier {worst}, hits.updated {best}, hits.id {best}"


def _hits(where: str, params: list[Any], query: TicketQuery, exact: str) -> tuple[str, list[Any], str]:
    """The CTEs ``hits`` (the matches the page is cut from: id, exact, tier, updated) and ``total`` (their number) over
    ``where``, their parameters, and the page's source.

    Found in tickets.scoped's index alone: IS TRUE keeps the planner off the other indexes (a bitmap of the whole
    scope, or of every company's matches, only to AND it with the visitor's).
    """
    found = f"t.scoped @@ q.scoped AND (t.search @@ q.query AND {where}) IS TRUE"
    total = "total AS (SELECT count(*) AS n FROM hits)"
    if query.order != "relevance":
        hits = (
            "hits AS MATERIALIZED (SELECT t.id, false AS exact, 0 AS tier, 0 AS updated"  # noqa: S608 (placeholders only)
            f" FROM tickets t, q WHERE {found})"
        )
        return f"{hits}, {total}", params, "hits"
    hits = f"hits AS MATERIALIZED (SELECT t.id, t.ticket_id = ? AS exact, {_TIER} AS tier, t.updated_at AS updated"
    hits += f" FROM tickets t, q WHERE {found}"
    end = query.page * query.page_size
    if not query.descending or end > _HEAD_ROWS:
        return f"{hits}), {total}", [exact, *params], "hits"
    # Best first, the exact id and the first tier (a title or ticket id match) most often fill the page: the head
    # finds them alone, in tickets_scoped_first (schema migration 10), and orders only those. Only when they do not
    # fill the page are all the hits given a tier (a one-time filter: else that scan never runs); the
    # total is then their count, else a count of the scoped matches that never reads a ticket's tsvectors: a
    # scoped match implies the search match (tickets.scoped holds tickets.search's lexemes without positions, and a
    # phrase, all ts_match makes beside lexemes and &, never matches without them). The head's first tier is
    # exactly the hits' for a plain query (q.plain), and empty for any other, which the full pass then serves.
    # SECURITY: visible_clause() is still tested on every ticket counted or shown.
    head = (
        f"head AS MATERIALIZED ((SELECT t.id, true AS exact, {_TIER} AS tier, t.updated_at AS updated FROM tickets t, q"  # noqa: S608
        f" WHERE t.ticket_id = ? AND {found}) UNION ALL (SELECT t.id, false, 0, t.updated_at FROM tickets t, q"
        f" WHERE q.plain AND {FIRST_TIER} @@ q.first AND (t.ticket_id <> ?"
        " AND t.search @@ q.query AND t.search @@ q.title_or_id"
        f" AND {where}) IS TRUE ORDER BY 4 DESC, 1 DESC LIMIT ?)), enough AS (SELECT count(*) >= ? AS head FROM head)"
    )
    total = (
        "total AS (SELECT CASE WHEN (SELECT head FROM enough) THEN (SELECT count(*) FROM tickets t, q"  # noqa: S608
        f" WHERE t.scoped @@ q.scoped AND ({where}) IS TRUE) ELSE (SELECT count(*) FROM hits) END AS n)"
    )
    return (
        f"{head}, {hits} AND NOT (SELECT head FROM enough)), {total}",  # noqa: S608
        [exact, *params, exact, *params, end, end, exact, *params, *params],
        "(SELECT * FROM head WHERE (SELECT head FROM enough) UNION ALL SELECT * FROM hits) AS hits",
    )


class PostgresStore(Delegating):
    """The async store over a bounded pool of connections to one PostgreSQL database."""

    # The admin API, the importer's writes and the connector's: delegation.py, calling these modules.
    _support = support
    _imports = imports
    _mirror = mirror

    def __init__(self, pool: asyncpg.Pool, dsn: str, timeout: float) -> None:
        self._pool = pool
        self._dsn = dsn
        self._timeout = timeout
        self._contacts: LRUCache[str, Contact | None] = LRUCache(CONTACT_CACHE_SIZE)
        self._generation = 0
        self._listener: asyncpg.Connection | None = None
        self._relisten: asyncio.Task[None] | None = None
        self._closed = False
        self._barrier = asyncio.Lock()
        self._barriers_started = 0
        self._barrier_done = 0
        self._feed_news = True  # until the first call: whatever was committed before this store opened

    @classmethod
    async def open(
        cls,
        dsn: str,
        *,
        pool_size: int = 10,
        statement_timeout: float = 5.0,
        change_retention: int = 10_000,
        migration_wait: float = MIGRATION_WAIT,
    ) -> PostgresStore:
        """Connect to ``dsn`` and migrate it (once, whoever else starts at the same time: waiting up to
        ``migration_wait`` seconds for another node's migration), keeping the newest ``change_retention``
        changes; StoreUnavailable."""
        pool = await create_pool(dsn, size=pool_size, statement_timeout=statement_timeout)
        try:
            async with reachable(), pool.acquire() as connection:
                await migrate(connection, migration_wait)
                # The trigger that prunes the feed reads the retention from the database: every opener sets it.
                await connection.execute("UPDATE change_feed SET retained = $1 WHERE retained <> $1", change_retention)
            store = cls(pool, dsn, statement_timeout)
            await store._listen()
        except BaseException:
            await pool.close()
            raise
        return store

    # --- the contact cache's signal ----------------------------------------------------------------------

    async def _listen(self) -> None:
        """Open the listening connection; raise StoreUnavailable when the database cannot be reached."""
        async with reachable():
            listener = await asyncpg.connect(self._dsn, timeout=self._timeout)
        try:
            await listener.add_listener(CHANGES_CHANNEL, self._changed)
            await listener.add_listener(FEED_CHANNEL, self._fed)
        except BaseException:
            await listener.close()
            raise
        listener.add_termination_listener(self._lost)
        self._changed()  # whatever was committed while no one listened
        self._fed()  # the change hub reads the changes table after a reconnect: nothing missed
        self._listener = listener

    def _fed(self, *_: object) -> None:
        """A transaction that recorded changes committed: the next changes_pending says so."""
        self._feed_news = True

    def _changed(self, *_: object) -> None:
        """Something cached may be stale: forget it all."""
        self._generation += 1
        self._contacts.clear()

    async def _caught_up(self) -> bool:
        """Whether every change committed before this call has been announced here (False: not listening).

        PostgreSQL sends a listener its pending notifications before the answer to its next statement, so
        one ``SELECT 1`` on the listening connection, started after this call began, is enough; callers
        arriving together share one.
        """
        arrived = self._barriers_started
        async with self._barrier:
            listener = self._listener
            if listener is None:
                return False
            if self._barrier_done > arrived:  # a round trip begun after this call's arrival has ended
                return True
            self._barriers_started += 1
            number = self._barriers_started
            try:
                await listener.fetchval("SELECT 1")
            except AWAY:
                listener.terminate()
                self._lost()
                return False
            self._barrier_done = number
            return self._listener is listener

    def _lost(self, *_: object) -> None:
        """The listening connection died: cache nothing until it is back."""
        if self._listener is None and self._relisten is not None and not self._relisten.done():
            return  # already being replaced
        self._listener = None
        self._changed()
        self._fed()  # unsure while not listening: the hub reads the table on each poll until it is back
        if not self._closed and (self._relisten is None or self._relisten.done()):
            self._relisten = asyncio.get_running_loop().create_task(self._listen_again())

    async def _listen_again(self) -> None:
        for attempt in range(1_000_000):
            await asyncio.sleep(RELISTEN_DELAYS[min(attempt, len(RELISTEN_DELAYS) - 1)])
            try:
                await self._listen()
            except StoreUnavailable:
                continue
            log.info("store: listening for changes again")
            return

    # --- connections and transactions --------------------------------------------------------------------

    async def close(self) -> None:
        """Stop listening and close every connection."""
        self._closed = True
        if self._relisten is not None:
            self._relisten.cancel()
        if self._listener is not None:
            listener, self._listener = self._listener, None
            await listener.close()
        await self._pool.close()

    async def _read(self, work: Callable[[Sql], Awaitable[T]]) -> T:
        """Run ``work`` on a pooled connection, each statement its own snapshot (as SQLite's reads are; no
        BEGIN and COMMIT round trips on a page's many small reads).

        A read that finds its connection lost (the server restarted since it was opened) is tried once more
        on a fresh one: it wrote nothing, so the visitor gets their page instead of a 503.
        """
        try:
            return await self._once(work)
        except StoreUnavailable as exc:
            if not isinstance(exc.__cause__, LOST):
                raise
        return await self._once(work)

    async def _once(self, work: Callable[[Sql], Awaitable[T]]) -> T:
        async with reachable(self._pool), self._pool.acquire(timeout=self._timeout) as connection:
            return await work(Sql(connection))

    async def transaction(self, work: Callable[[Sql], Awaitable[T]]) -> T:
        """Run ``work`` inside one transaction: all of it is written, or none.

        Never tried again here: a commit lost with its connection may have been applied, and the 503 says so.
        """
        async with (
            reachable(self._pool),
            self._pool.acquire(timeout=self._timeout) as connection,
            connection.transaction(),
        ):
            return await work(Sql(connection))

    async def ping(self) -> None:
        """Raise StoreUnavailable unless the database answers and takes writes (not a standby after a failover)."""
        async with reachable(self._pool), self._pool.acquire(timeout=self._timeout) as connection:
            if await connection.fetchval("SELECT pg_is_in_recovery()"):
                raise StoreUnavailable("the database is read-only (a standby)")

    # --- visitors ----------------------------------------------------------------------------------------

    @staticmethod
    async def _contact(sql: Sql, row: asyncpg.Record) -> Contact:
        companies = await sql.fetch(
            "SELECT c.id, c.company_id, c.name, c.plan, c.size, c.monthly_spend, c.custom_attributes"
            " FROM memberships m JOIN companies c ON c.id = m.company_id WHERE m.contact_id = ?"
            ' ORDER BY c.name COLLATE "C"',
            row[0],
        )
        return Contact(row[0], row[1], row[2], row[3], json.loads(row[4]), tuple(map(company, companies)))

    async def contact_by_user_id(self, user_id: str, arrived_ns: int | None = None) -> Contact | None:
        """The contact whose external ``user_id`` this is, with their companies.

        SECURITY: answered from memory only while this node listens for changes and none has been
        announced since it was read, checked by :meth:`_caught_up` first: a membership the admin API removes
        on any node is gone from here on the very next request. While the listener is down, the database is asked.
        ``arrived_ns`` is not needed: the barrier is begun after this call, so after the request arrived.
        """
        if await self._caught_up() and user_id in self._contacts:
            return self._contacts[user_id]
        seen = self._generation

        async def read(sql: Sql) -> Contact | None:
            row = await sql.row(
                "SELECT id, user_id, email, name, custom_attributes FROM contacts WHERE user_id = ?", user_id
            )
            return await self._contact(sql, row) if row else None

        contact = await self._read(read)
        if self._listener is not None and self._generation == seen:  # nothing announced since: current
            self._contacts[user_id] = contact
        return contact

    async def contacts(self) -> list[Contact]:
        """Every contact with their companies, by name (for previews and the dev login)."""

        async def read(sql: Sql) -> list[Contact]:
            rows = await sql.fetch(
                "SELECT id, user_id, email, name, custom_attributes FROM contacts"
                ' ORDER BY name COLLATE "C" NULLS FIRST, id'
            )
            return [await self._contact(sql, row) for row in rows]

        return await self._read(read)

    async def ticket_states(self) -> list[TicketState]:
        """All ticket states in workflow order."""
        order = STATE_ORDER.format(category="category")
        rows = await self._read(
            lambda sql: sql.fetch(
                f"SELECT id, category, internal_label, external_label FROM ticket_states ORDER BY {order}, id"  # noqa: S608
            )
        )
        return [TicketState(*row) for row in rows]

    async def list_tickets(self, visible: TicketFilter, query: TicketQuery) -> TicketPage:
        """One page of the tickets the filter lets the visitor see, and their total; searching, with snippets."""
        where, params = visible_clause(visible)
        extra, extra_params = query_clause(query)
        match = ts_match(query.q)
        if match is not None:
            keys = scope_keys(visible)
            return await self._read(
                partial(self._search, match, keys, f"{where}{extra}", [*params, *extra_params], query)
            )
        direction = "DESC" if query.descending else "ASC"
        order = f"{_SORT_COLUMNS[query.order].format(dir=direction)}, t.id {direction}"
        count, count_params = count_sql(visible, query)
        ids, ids_params = page_sql(visible, query, order)

        async def read(sql: Sql) -> TicketPage:
            total = await sql.value(count, *count_params)
            rows = await sql.fetch(
                f"SELECT {SUMMARY_COLUMNS} FROM ({ids}) AS page JOIN tickets t ON t.id = page.page_id"  # noqa: S608
                f" {SUMMARY_LOOKUPS} ORDER BY {order} LIMIT ? OFFSET ?",
                *ids_params,
                query.page_size,
                (query.page - 1) * query.page_size,
            )
            return TicketPage(tuple(map(summary, rows)), int(total), query.page, query.page_size)

        return await self._read(read)

    async def _search(
        self, match: str, keys: list[Any], where: str, params: list[Any], query: TicketQuery, sql: Sql
    ) -> TicketPage:
        """A page of the visible tickets matching ``match``, their total, and each one's snippet.

        The hits are found in tickets.scoped under the visitor's scope ``keys``. SECURITY: the full-text match is
        only ever checked against the visible set (``where``), never returned past it.
        """
        relevance = query.order == "relevance"
        exact = (query.q or "").strip().lstrip("#")
        offset = (query.page - 1) * query.page_size
        queries = [
            *(match, ts_any(query.q, "AB"), ts_any(query.q, "A"), ts_any(query.q, "B"), ts_any(query.q, "C")),
            *(match, keys, ts_any(query.q, ""), keys),
        ]
        hits, hits_params, source = _hits(where, params, query, exact)
        ctes = f"{_QUERIES}, {hits}"
        arguments = [*queries, *hits_params]
        if relevance:  # cut the page from the hits alone, then read only the page's tickets
            order = _relevance(query.descending)
            source = f"(SELECT * FROM {source} ORDER BY {order} LIMIT ? OFFSET ?) AS hits"  # noqa: S608
            limit = ""
        else:
            direction = "DESC" if query.descending else "ASC"
            order = f"{_SORT_COLUMNS[query.order].format(dir=direction)}, t.id {direction}"
            limit = " LIMIT ? OFFSET ?"
        snippet_text = (
            f"CASE cut.snippet_column WHEN {_TITLE} THEN t.title WHEN {_TICKET_ID} THEN t.ticket_id"
            f" WHEN {_DESCRIPTION} THEN t.description END"
        )
        # The snippet's column is found for the page's rows only (each test reads the ticket's tsvector).
        page = (
            f"WITH {ctes} SELECT {SUMMARY_COLUMNS}, t.id, t.conversation_id, (SELECT n FROM total),"  # noqa: S608
            " cut.snippet_column,"
            f" ts_headline('portal_search', portal_clean({snippet_text}), q.query, ?)"
            f" FROM {source} JOIN tickets t ON t.id = hits.id CROSS JOIN q"
            f" CROSS JOIN LATERAL (SELECT {_SNIPPET_COLUMN} AS snippet_column) AS cut"
            f" {SUMMARY_LOOKUPS} ORDER BY {order}{limit}"
        )
        rows = await sql.fetch(page, *arguments, HEADLINE_OPTIONS, query.page_size, offset)
        total = int(rows[0][11]) if rows else 0
        if not rows and offset:  # past the last page: the total still counts
            total = int(await sql.value(f"WITH {ctes} SELECT n FROM total", *arguments))  # noqa: S608
        replies = await self._replies(sql, match, [row[10] for row in rows if row[12] == _REPLIES])
        items = []
        for row in rows:
            item = summary(row)
            text: str | None = row[13]
            author: str | None = item.creator_name
            at: int | None = item.created_at
            if row[12] == _REPLIES:
                text, author, at = replies.get(row[10], ("", None, None))
            items.append(replace(item, snippet=excerpt(text or ""), snippet_author=author, snippet_at=at))
        return TicketPage(tuple(items), total, query.page, query.page_size)

    @staticmethod
    async def _replies(sql: Sql, match: str, conversations: list[int]) -> dict[int, tuple[str, str | None, int | None]]:
        """For each conversation, its best-matching public reply, highlighted, with that reply's author and time."""
        if not conversations:
            return {}
        # SECURITY: only public parts are candidates, so a note never lends its text, author or time to a snippet.
        rows = await sql.fetch(
            "SELECT conversation_id, author_name, created_at,"
            " ts_headline('portal_search', portal_clean(body), to_tsquery('portal_search', ?), ?)"
            " FROM conversation_parts WHERE conversation_id = ANY(?::bigint[]) AND is_public = 1"
            " ORDER BY conversation_id, created_at, id",
            match,
            HEADLINE_OPTIONS,
            conversations,
        )
        parts: dict[int, list[asyncpg.Record]] = {}
        for row in rows:
            parts.setdefault(row[0], []).append(row)
        best = {}
        for conversation, replies in parts.items():
            index, marked = best_reply(PART_SEPARATOR.join(reply[3] for reply in replies))
            best[conversation] = (marked, replies[index][1], replies[index][2])
        return best

    async def get_ticket(self, visible: TicketFilter, ticket_id: str) -> TicketDetail | None:
        """The ticket with that customer-facing id, if the filter lets the visitor see it."""
        where, params = visible_clause(visible)

        async def read(sql: Sql) -> TicketDetail | None:
            row = await sql.row(f"{DETAIL_SELECT} WHERE {where} AND t.ticket_id = ?", *params, ticket_id)
            if row is None:
                return None
            parts = await sql.fetch(PUBLIC_PARTS, row[10])
            participant = await sql.value(PARTICIPANT, row[10], visible.contact_id)
            return ticket_detail(row, parts, participant is not None)

        return await self._read(read)

    async def creators(self, visible: TicketFilter) -> list[tuple[int, str]]:
        """(contact id, name) of everyone who created a ticket the filter lets the visitor see, by name."""
        creators, params = counted_sql(visible, "creator_id")
        rows = await self._read(
            lambda sql: sql.fetch(
                "SELECT p.id, coalesce(p.name, p.email, p.user_id) AS shown FROM contacts p"  # noqa: S608
                f" WHERE p.id IN ({creators})"
                ' ORDER BY lower(coalesce(p.name, p.email, p.user_id)) COLLATE "C", p.id',
                *params,
            )
        )
        return [(int(row[0]), str(row[1])) for row in rows]

    async def visible_types(self, visible: TicketFilter) -> list[TicketType]:
        """The ticket types of the tickets the filter lets the visitor see (never a type they cannot see), by name."""
        types, params = counted_sql(visible, "type_id")
        rows = await self._read(
            lambda sql: sql.fetch(
                f'SELECT ty.id, ty.name FROM ticket_types ty WHERE ty.id IN ({types}) ORDER BY ty.name COLLATE "C"',  # noqa: S608
                *params,
            )
        )
        return [TicketType(*row) for row in rows]

    async def join(self, visible: TicketFilter, ticket_id: str, contact_id: int) -> bool:
        """Make the contact a participant of the ticket's conversation, if the filter lets them see it (idempotent)."""
        where, params = visible_clause(visible)

        async def write(sql: Sql) -> bool:
            conversation = await sql.value(
                f"SELECT t.conversation_id FROM tickets t WHERE {where} AND t.ticket_id = ?",  # noqa: S608
                *params,
                ticket_id,
            )
            if conversation is None:
                return False
            await add_participant(sql, int(conversation), contact_id)
            return True

        return await self.transaction(write)

    async def tickets_space(self, visible: TicketFilter, query: TicketQuery) -> TicketPage:
        """The visible tickets whose conversations the filter's contact takes part in, most recently updated first."""
        where, params = visible_clause(visible)
        participating = " AND t.conversation_id IN (SELECT conversation_id FROM participants WHERE contact_id = ?)"
        offset = (query.page - 1) * query.page_size

        async def read(sql: Sql) -> TicketPage:
            arguments = [*params, visible.contact_id]
            total = await sql.value(f"SELECT count(*) FROM tickets t WHERE {where}{participating}", *arguments)  # noqa: S608
            rows = await sql.fetch(
                f"SELECT {SUMMARY_COLUMNS} {SUMMARY_JOINS} WHERE {where}{participating}"
                " ORDER BY t.updated_at DESC, t.id DESC LIMIT ? OFFSET ?",
                *arguments,
                query.page_size,
                offset,
            )
            return TicketPage(tuple(map(summary, rows)), int(total), query.page, query.page_size)

        return await self._read(read)

    # --- the change feed (written by the triggers of schema.py's migration 6) ---------------------------------

    async def changes_after(self, after: int, limit: int) -> ChangeBatch:
        """Up to ``limit`` changes after ``after``, oldest first, with the newest id and the newest dropped."""

        async def read(sql: Sql) -> ChangeBatch:
            # One statement, one snapshot: the changes, the newest id and the horizon agree.
            rows = await sql.fetch(
                "SELECT f.last_id, f.dropped_through, c.id, c.kind, c.ticket_id, c.contact_id, c.scope FROM change_feed"
                " f LEFT JOIN LATERAL (SELECT * FROM changes WHERE id > ? ORDER BY id LIMIT ?) c ON true",
                after,
                limit,
            )
            changes = tuple(Change(*row[2:]) for row in rows if row[2] is not None)
            return ChangeBatch(changes, int(rows[0][0]), int(rows[0][1]))

        return await self._read(read)

    async def changed_ticket(self, ticket_id: str) -> ChangedTicket | None:
        """The ticket as every visitor's detail page shows it, and what visibility tests of it (no visibility)."""

        async def read(sql: Sql) -> ChangedTicket | None:
            row = await sql.row(CHANGED_SELECT, ticket_id)
            if row is None:
                return None
            return changed_ticket(row, await sql.fetch(PUBLIC_PARTS, row[10]))

        return await self._read(read)

    async def changes_pending(self) -> bool:
        """Whether a change notification arrived since the last call (True while the listener is down)."""
        news, self._feed_news = self._feed_news, self._listener is None
        return news

    # --- the Intercom connector (gateway/store/mirror.py's programs, run by postgres/mirror.py) ----------------

    async def remote_ids(self, kind: RemoteKind) -> set[str]:
        """The Intercom ids of every mirrored record of that kind."""
        return await self._read(lambda sql: mirror.run(sql, programs.remote_ids(kind)))

    async def remote_id(self, kind: RemoteKind, key: str) -> str | None:
        """Intercom's id of the record with this id of the store's."""
        return await self._read(lambda sql: mirror.run(sql, programs.remote_id(kind, key)))

    async def remote_conversation(self, ticket_id: str) -> str | None:
        """Intercom's id of the ticket's linked conversation."""
        return await self._read(lambda sql: mirror.run(sql, programs.remote_conversation(ticket_id)))

    async def sync_checkpoint(self, name: str) -> str | None:
        """The checkpoint saved under name, or None."""
        found = await self.transaction(lambda sql: sql.value("SELECT value FROM sync_checkpoints WHERE name = ?", name))
        return None if found is None else str(found)

    async def save_sync_checkpoint(self, name: str, value: str) -> None:
        """Save (replace)."""
        await self.transaction(
            lambda sql: sql.execute(
                "INSERT INTO sync_checkpoints (name, value) VALUES (?, ?)"
                " ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                name,
                value,
            )
        )

    async def acquire_lease(self, name: str, holder: str, ttl: float, now: float) -> bool:
        """Take or renew the lease for holder until now + ttl; False while another holder's lease has not expired."""
        # One statement: two nodes asking at once are ordered by the row lock, and only one gets a row back.
        taken = await self.transaction(
            lambda sql: sql.value(
                "INSERT INTO sync_leases (name, holder, expires_at) VALUES (?, ?, ?::double precision + ?)"
                " ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at"
                " WHERE sync_leases.holder = excluded.holder OR sync_leases.expires_at <= ? RETURNING 1",
                name,
                holder,
                now,
                ttl,
                now,
            )
        )
        return taken is not None

    async def release_lease(self, name: str, holder: str) -> None:
        """Give it up if holder holds it."""
        await self.transaction(
            lambda sql: sql.execute("DELETE FROM sync_leases WHERE name = ? AND holder = ?", name, holder)
        )

    # --- store copy (gateway/store/copy.py) ------------------------------------------------------------------

    async def tables(self) -> dict[str, Table]:
        """Every table of the schema, with its stored columns and primary key: not schema_migrations (each
        store's own), nor a tsvector column (search index data its triggers compute from the copied rows)."""
        rows = await self._read(
            lambda sql: sql.fetch(
                "SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod) = 'text',"
                " array_position(i.indkey::int2[], a.attnum) FROM pg_class c"
                " JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped"
                " LEFT JOIN pg_index i ON i.indrelid = c.oid AND i.indisprimary"
                " WHERE c.relnamespace = current_schema()::regnamespace AND c.relkind = 'r'"
                " AND c.relname <> 'schema_migrations' AND a.atttypid <> 'tsvector'::regtype"
                " ORDER BY c.relname, a.attnum"
            )
        )
        tables: dict[str, Table] = {}
        for name, columns in itertools.groupby(rows, key=lambda row: str(row[0])):
            listed = list(columns)
            key = sorted((row for row in listed if row[3] is not None), key=lambda row: int(row[3]))
            # Text keys in byte order (COLLATE "C"), as SQLite compares them, whatever the database's collation:
            # both sides' rows then hash in one order, and the batches' key comparisons skip no row.
            order = tuple(f'{row[1]} COLLATE "C"' if row[2] else str(row[1]) for row in key)
            tables[name] = Table(
                name, tuple(str(row[1]) for row in listed), tuple(str(row[1]) for row in key), order=order
            )
        return tables

    async def count_rows(self, table: Table) -> int:
        """How many rows the table holds."""
        return int(await self._read(lambda sql: sql.value(table.count)))

    async def read_rows(self, table: Table, after: Sequence[Any] | None, limit: int) -> list[tuple[Any, ...]]:
        """Up to ``limit`` rows whose key comes after ``after``, in key order."""
        rows = await self._read(lambda sql: sql.fetch(table.select(after is not None), *(after or ()), limit))
        return [tuple(row) for row in rows]

    async def write_rows(self, table: Table, rows: Sequence[tuple[Any, ...]]) -> None:
        """Insert the rows as they are through COPY, in one transaction (the search triggers index them)."""
        await self.transaction(
            lambda sql: sql.connection.copy_records_to_table(table.sql_name, records=rows, columns=table.columns)
        )

    async def write_feed(self, table: Table, rows: Sequence[tuple[Any, ...]], position: ChangeBatch) -> None:
        """Replace the feed by ``rows`` and put it at ``position`` (change_feed's last_id and dropped_through).

        Its numbering trigger, which gives every new change the next id, is off for this transaction only: the
        rows keep their ids. ALTER TABLE is transactional and locks the table to the commit, so no other writer
        ever meets it off; it takes the table's owner, the role that applied the migrations.
        """

        async def write(sql: Sql) -> None:
            await sql.execute("DELETE FROM changes")
            await sql.execute("ALTER TABLE changes DISABLE TRIGGER changes_numbered")
            await sql.connection.copy_records_to_table(table.sql_name, records=rows, columns=table.columns)
            await sql.execute("ALTER TABLE changes ENABLE TRIGGER changes_numbered")
            await sql.execute(
                "UPDATE change_feed SET last_id = ?, dropped_through = ?", position.latest, position.dropped_through
            )

        try:
            await self.transaction(write)
        except asyncpg.InsufficientPrivilegeError as exc:
            raise CopyRefused(f"the change feed cannot be written with its ids: {exc}") from exc

    async def rows_written(self) -> None:
        """Move each identity column's sequence past the largest copied id; gather the planner's statistics."""

        async def advance(sql: Sql) -> None:
            identities = await sql.fetch(
                "SELECT table_name, column_name FROM information_schema.columns"
                " WHERE table_schema = current_schema() AND is_identity = 'YES' ORDER BY 1"
            )
            for table, column in identities:
                await sql.execute(
                    f"SELECT setval(pg_get_serial_sequence('{table}', '{column}'), max({column})) FROM {table}"  # noqa: S608
                    f" HAVING max({column}) IS NOT NULL"
                )
            await sql.execute("ANALYZE")

        await self.transaction(advance)

"""The embedded store: SQLite in WAL mode, used from one worker thread so the event loop never waits on disk.

The one exception is the contact cache's check, made for verified requests: a read of SQLite's change
counter (``PRAGMA data_version``) from the loop's own connection, which never waits for a lock; requests
that had arrived before the last check share it (:meth:`SQLiteStore.contact_by_user_id`).

Every read of tickets takes a :class:`~gateway.store.models.TicketFilter` and goes
through :func:`visible_clause`; there is no way to list or fetch a ticket without one.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from cachetools import LRUCache

from gateway.errors import StoreUnavailable
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
    TicketSummary,
    TicketType,
)
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
from gateway.store.search import (
    MARK_START,
    MIN_PREFIX_CHARS,
    best_reply,
    clean,
    excerpt,
    fts_any,
    fts_query,
    search_terms,
    unmarked,
)
from gateway.store.sqlite import lines as imports
from gateway.store.sqlite import mirror, support
from gateway.store.sqlite.schema import migrate
from gateway.store.sqlite.writes import add_participant
from gateway.store.visibility import count_sql, counted_sql, fts_scope, page_sql, query_clause, visible_clause

T = TypeVar("T")
CONTACT_CACHE_SIZE = 10_000
log = logging.getLogger(__name__)

_SORT_COLUMNS = {
    "id": "CAST(t.ticket_id AS INTEGER) {dir}, t.ticket_id {dir}",
    "type": "ty.name COLLATE NOCASE {dir}",
    "state": STATE_ORDER.format(category="s.category") + " {dir}, s.external_label {dir}",
    "created": "t.created_at {dir}",
    "updated": "t.updated_at {dir}",
}
# The relevance tiers: a ticket is in the first if any of the words is in its title or ticket id, else in the
# second if one is in its description, else in the last (the words are in its public replies). Within a tier the
# most recently updated come first. (No bm25: its idf is a scan of each word's whole doclist per statement, and
# scoring every hit cost more than the 50 ms a search has at a million tickets; see bench/README.md.)
_TIERS = ("{title ticket_id}", "{description}")
# The columns a snippet is cut from, in the order it is chosen by: the first that holds a match, else the replies.
_TITLE, _DESCRIPTION, _TICKET_ID, _REPLIES = range(4)
_SNIPPET_COLUMNS = (_TITLE, _TICKET_ID, _DESCRIPTION)
# The deepest page end (in rows) a search best first looks for in the first tier alone (see _head): a first tier
# that falls short of its page has been ordered for nothing, which this bounds.
_HEAD_ROWS = 500
# The visible tickets a full-text match finds, FTS5 first, then each ticket by its id (CROSS JOIN keeps that order).
# SECURITY: every search reads its hits through this, so each one passes visible_clause() (``where``).
_MATCHED = (
    "FROM ticket_search CROSS JOIN tickets t ON t.id = ticket_search.rowid WHERE ticket_search MATCH ? AND {where}"
)

# ticket_search's vocabulary, one row per instance, on this connection alone (the temp schema: nothing is written to
# the file). Its scan starts at a bound and yields lazily, so the first indexed word at or after a bound is a seek
# (the 'row' kind would count each word's documents first: its whole doclist).
_WORDS = "CREATE VIRTUAL TABLE temp.ticket_words USING fts5vocab(main, ticket_search, 'instance')"
_NEXT_WORD = "SELECT term FROM temp.ticket_words WHERE term >= ? LIMIT 1"


def _relevance(descending: bool) -> str:
    """ORDER BY for relevance: the exact ticket id first, then by tier, then the most recently updated."""
    best, worst = ("DESC", "ASC") if descending else ("ASC", "DESC")
    return f"hits.exact {best}, hits.tier {worst}, hits.updated {best}, hits.id {best}"


SHARED_NAMES = {"leases": "sync_leases"}
"""This schema's tables that PostgreSQL's names otherwise, by the name ``store copy`` knows them by (renaming
one in a migration would rewrite every store for a name alone)."""


class SQLiteStore(Delegating):
    """The async store over one SQLite connection owned by one worker thread."""

    # The admin API, the importer's writes and the connector's: delegation.py, calling these modules.
    _support = support
    _imports = imports
    _mirror = mirror

    def __init__(self, path: Path, busy_timeout: float, executor: ThreadPoolExecutor, change_retention: int) -> None:
        self._path = path
        self._busy_timeout = busy_timeout
        self._change_retention = change_retention
        self._executor = executor
        self._connection = self._connect()
        self._file = self._identity()
        self._watch = self._watcher()
        self._watched = self._file
        self._contacts: LRUCache[str, Contact | None] = LRUCache(CONTACT_CACHE_SIZE)
        self._contacts_seen: tuple[tuple[int, int], int] | None = None
        self._checked_at = -1  # time.monotonic_ns() when the last check began (-1: none yet), and what it read
        self._checked: tuple[tuple[int, int], int] | None = None
        self._changes_seen: tuple[tuple[int, int], int] | None = None

    @classmethod
    async def open(cls, path: Path, *, busy_timeout: float = 5.0, change_retention: int = 10_000) -> SQLiteStore:
        """Open (creating and migrating) the database at ``path``; wait ``busy_timeout`` s for others' locks;
        keep the newest ``change_retention`` changes."""
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store")
        opened = partial(cls, path, busy_timeout, executor, change_retention)
        return await asyncio.get_running_loop().run_in_executor(executor, opened)

    def _connect(self) -> sqlite3.Connection:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        connection = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        connection.execute("PRAGMA journal_mode = WAL")
        connection.execute("PRAGMA synchronous = NORMAL")
        connection.execute("PRAGMA foreign_keys = ON")
        connection.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout * 1000)}")
        migrate(connection)
        connection.execute(_WORDS)
        # The triggers that prune the feed read the retention from the file: every opener sets it (the same
        # config everywhere); written only when it differs, so an open alone wakes no watcher.
        connection.execute("UPDATE change_feed SET retained = ? WHERE retained IS NOT ?", (self._change_retention,) * 2)
        return connection

    def _watcher(self) -> sqlite3.Connection:
        """A connection for the loop's thread that only reads the change counter: it never creates the
        file (``mode=rw``) and never waits for a lock (timeout 0)."""
        return sqlite3.connect(
            f"{self._path.resolve().as_uri()}?mode=rw",
            uri=True,
            timeout=0,
            isolation_level=None,
            check_same_thread=False,
        )

    def _generation(self) -> tuple[tuple[int, int], int] | None:
        """The database file and its change counter now, or None when they cannot be read without waiting.

        The counter moves whenever any other connection commits, in this process or another (the admin
        API through the worker's connection, another worker, ``portal-gateway import``).
        """
        file = self._identity()
        if file is None:
            return None
        try:
            if file != self._watched:  # another file took the path: watch that one
                self._watch.close()
                self._watch = self._watcher()
                self._watched = file
            version: int = self._watch.execute("PRAGMA data_version").fetchone()[0]
        except sqlite3.Error:
            return None
        return file, version

    def _identity(self) -> tuple[int, int] | None:
        """The (device, inode) of the database file now, or None when it is gone."""
        try:
            stat = self._path.stat()
        except FileNotFoundError:
            return None
        return stat.st_dev, stat.st_ino

    def _usable(self) -> None:
        """Raise StoreUnavailable while the file is gone; reconnect when another file took its place."""
        # SECURITY/availability: SQLite keeps serving a deleted file from its open descriptor, so
        # a lost or replaced volume would otherwise answer from a ghost copy and stay "ready".
        current = self._identity()
        if current is None:
            log.warning("store unavailable: %s is missing", self._path)
            raise StoreUnavailable("the store file is missing")
        if current != self._file:
            self._connection.close()
            self._connection = self._connect()
            self._file = current

    async def close(self) -> None:
        """Close the connections and stop the worker."""
        self._watch.close()
        await asyncio.get_running_loop().run_in_executor(self._executor, self._connection.close)
        self._executor.shutdown(wait=True)

    async def _run(self, function: Callable[[], T]) -> T:
        def run() -> T:
            self._usable()
            try:
                return function()
            except sqlite3.OperationalError as exc:  # locked, busy, disk I/O, cannot open
                log.warning("store unavailable: %s", exc)
                raise StoreUnavailable(str(exc)) from exc

        return await asyncio.get_running_loop().run_in_executor(self._executor, run)

    async def transaction(self, function: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``function`` on the connection inside one transaction: all of it is written, or none."""

        def run() -> T:
            self._connection.execute("BEGIN IMMEDIATE")
            try:
                result = function(self._connection)
                self._connection.execute("COMMIT")
            except BaseException:
                # A failed COMMIT (busy, disk full) must not leave the connection inside the transaction,
                # and one SQLite already rolled back itself has nothing left to roll back.
                if self._connection.in_transaction:
                    self._connection.execute("ROLLBACK")
                raise
            return result

        return await self._run(run)

    async def ping(self) -> None:
        """Raise StoreUnavailable unless the database can be read and written (another process's lock fails it)."""

        def ping() -> None:
            self._connection.execute("SELECT count(*) FROM sqlite_master").fetchone()
            self._connection.execute("BEGIN IMMEDIATE")
            self._connection.execute("ROLLBACK")

        await self._run(ping)

    def _contact(self, row: Sequence[Any]) -> Contact:
        companies = self._connection.execute(
            "SELECT c.id, c.company_id, c.name, c.plan, c.size, c.monthly_spend, c.custom_attributes"
            " FROM memberships m JOIN companies c ON c.id = m.company_id WHERE m.contact_id = ? ORDER BY c.name",
            (row[0],),
        ).fetchall()
        return Contact(row[0], row[1], row[2], row[3], json.loads(row[4]), tuple(map(company, companies)))

    def _generation_since(self, arrived_ns: int | None) -> tuple[tuple[int, int], int] | None:
        """:meth:`_generation` as read at or after ``arrived_ns`` (``time.monotonic_ns()``; None: now).

        A check that began after the request arrived serves it: nothing the request could have been sent
        in answer to was committed after that check began. So the requests a read of the loop brings in
        together share the first one's check (a ``stat`` and ``PRAGMA data_version``, two ``fcntl``).
        """
        if arrived_ns is not None and arrived_ns < self._checked_at:
            return self._checked
        began = time.monotonic_ns()  # before the stat and the counter: what they read is at least this new
        self._checked = self._generation()
        self._checked_at = began
        return self._checked

    async def contact_by_user_id(self, user_id: str, arrived_ns: int | None = None) -> Contact | None:
        """The contact whose external ``user_id`` this is, with their companies.

        SECURITY: answered from memory only while nothing at all had been committed to the database
        since it was read, as checked at or after ``arrived_ns`` (the instant the asking request had
        arrived by, ``time.monotonic_ns()``; None: this call); any commit by anyone empties the cache
        before the next answer, so a membership the admin API removes is gone from the very next request
        (which arrives after the removal's commit) in every worker. When the counter cannot be read at
        once (a lock, a missing file), the store is asked, as without a cache.
        """
        seen = self._generation_since(arrived_ns)
        if seen is not None and seen == self._contacts_seen and user_id in self._contacts:
            return self._contacts[user_id]

        def read() -> Contact | None:
            row = self._connection.execute(
                "SELECT id, user_id, email, name, custom_attributes FROM contacts WHERE user_id = ?", (user_id,)
            ).fetchone()
            return self._contact(row) if row else None

        contact = await self._run(read)
        if seen is not None and self._generation() == seen:  # nothing committed since: the answer is current
            if seen != self._contacts_seen:
                self._contacts.clear()
                self._contacts_seen = seen
            self._contacts[user_id] = contact
        return contact

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
                "SELECT id, category, internal_label, external_label FROM ticket_states"  # noqa: S608 (constants only)
                f" ORDER BY {STATE_ORDER.format(category='category')}, id"
            ).fetchall()
        )
        return [TicketState(*row) for row in rows]

    async def list_tickets(self, visible: TicketFilter, query: TicketQuery) -> TicketPage:
        """One page of the tickets the filter lets the visitor see, and their total.

        With search words in ``query.q``: only the tickets holding all of them (in the
        title, description, ticket id or a public reply), each with a snippet.
        """
        where, params = visible_clause(visible)
        extra, extra_params = query_clause(query)
        scope = fts_scope(visible)
        if query.searching:
            if scope is None:  # deny by default: a visitor with no scope key finds nothing
                return TicketPage((), 0, query.page, query.page_size)
            where, params = f"{where}{extra}", [*params, *extra_params]
            return await self._run(lambda: self._snapshot(lambda: self._search(scope, where, params, query)))
        direction = "DESC" if query.descending else "ASC"
        order = f"{_SORT_COLUMNS[query.order].format(dir=direction)}, t.id {direction}"
        count, count_params = count_sql(visible, query)
        ids, ids_params = page_sql(visible, query, order)

        def read() -> TicketPage:
            total = self._connection.execute(count, count_params).fetchone()[0]
            # The page is chosen from the tickets_by_scope_update index alone (the small type and state tables
            # give the sort keys); only its rows are then read and joined to companies and creators.
            rows = self._connection.execute(
                f"SELECT {SUMMARY_COLUMNS} FROM ({ids}) AS page JOIN tickets t ON t.id = page.page_id"  # noqa: S608
                f" {SUMMARY_LOOKUPS} ORDER BY {order} LIMIT ? OFFSET ?",
                [*ids_params, query.page_size, (query.page - 1) * query.page_size],
            ).fetchall()
            return TicketPage(tuple(map(summary, rows)), int(total), query.page, query.page_size)

        return await self._run(read)

    def _snapshot(self, function: Callable[[], T]) -> T:
        """``function``'s reads in one read transaction, so they all see the same commits."""
        self._connection.execute("BEGIN")
        try:
            return function()
        finally:
            if self._connection.in_transaction:  # not when SQLite already ended it over an error
                self._connection.execute("COMMIT")

    def _whole_words(self, terms: Sequence[str]) -> dict[str, str]:
        """Each term that exactly one indexed word starts with, mapped to that word: asked for as that word,
        it matches the same instances (so the same tickets and marks) without FTS5 gathering a prefix's doclists
        (about 10 ms for each use of a word in 286,000 tickets of a million, and a search uses it four times:
        the hits, the two tiers, the snippets).

        Only ASCII terms: unicode61 folds them by lower-casing alone, so the index's word is known exactly.
        """
        whole: dict[str, str] = {}
        for term in terms:
            if len(term) < MIN_PREFIX_CHARS or not term.isascii():
                continue
            prefix = term.lower()
            first = self._connection.execute(_NEXT_WORD, (prefix,)).fetchone()
            if first is None or not first[0].startswith(prefix):
                continue  # no word: the prefix finds nothing, cheaply
            # No token holds a control character, so the first word at or after word + "\x01" is the next word.
            after = self._connection.execute(_NEXT_WORD, (first[0] + "\x01",)).fetchone()
            # SECURITY: the word is quoted into the query like a visitor's term, so it too is letters and digits only.
            if (after is None or not after[0].startswith(prefix)) and first[0].isascii() and first[0].isalnum():
                whole[term] = first[0]
        return whole

    def _search(self, scope: str, where: str, params: list[Any], query: TicketQuery) -> TicketPage:
        """A page of the visible tickets matching the query's words in ``scope``, their total, and each one's snippet.

        ``scope`` is the visitor's scope keys: FTS5 intersects their doclists with the words' itself, so the
        cost is that of the visitor's matches, not every company's. Total and order come from one pass over them.
        """
        whole = self._whole_words(search_terms(query.q))
        match = f"{scope} AND {fts_query(query.q, whole)}"
        relevance = query.order == "relevance"
        exact = (query.q or "").strip().lstrip("#")
        if relevance and query.descending and query.page * query.page_size <= _HEAD_ROWS:
            head = self._head(scope, match, where, params, query, whole, exact)
            if head is not None:
                return head
        tiers, tier_params = "", []
        if relevance:  # cut the page from the hits alone, then read the page's tickets
            # Each tier's tickets in the visitor's scope, found by FTS5 alone (a column-filtered match), once.
            tiers = "".join(
                f" tier{n} (id) AS MATERIALIZED (SELECT rowid FROM ticket_search WHERE ticket_search MATCH ?),"  # noqa: S608 (placeholders only)
                for n in range(len(_TIERS))
            )
            tier_params = [f"{scope} AND {fts_any(query.q, columns, whole)}" for columns in _TIERS]
            tier = (
                "CASE"
                + "".join(f" WHEN ticket_search.rowid IN tier{n} THEN {n}" for n in range(len(_TIERS)))
                + f" ELSE {len(_TIERS)} END"
            )
            order = _relevance(query.descending)
            source = f"(SELECT * FROM hits ORDER BY {order} LIMIT ? OFFSET ?) AS hits"  # noqa: S608
            limit = ""
        else:
            tier = "0"
            direction = "DESC" if query.descending else "ASC"
            source = "hits"
            order = f"{_SORT_COLUMNS[query.order].format(dir=direction)}, t.id {direction}"
            limit = " LIMIT ? OFFSET ?"
        # SECURITY: the full-text match is only ever checked against the visible set, never returned past it:
        # each match's ticket (CROSS JOIN: FTS5 first, then the ticket by its id) must pass visible_clause().
        hits = (
            f"WITH{tiers} hits (id, exact, tier, updated) AS MATERIALIZED ("  # noqa: S608 (placeholders only)
            " SELECT ticket_search.rowid, ticket_search.rowid IS (SELECT id FROM tickets WHERE ticket_id = ?),"
            f" {tier}, t.updated_at {_MATCHED.format(where=where)})"
        )
        hits_params = [*tier_params, exact, match, *params]
        page = (
            f"{hits} SELECT {SUMMARY_COLUMNS}, t.id, t.conversation_id, (SELECT count(*) FROM hits)"  # noqa: S608
            f" FROM {source} CROSS JOIN tickets t ON t.id = hits.id {SUMMARY_LOOKUPS} ORDER BY {order}{limit}"
        )
        offset = (query.page - 1) * query.page_size
        rows = self._connection.execute(page, [*hits_params, query.page_size, offset]).fetchall()
        total = int(rows[0][11]) if rows else 0
        if not rows and offset:  # past the last page: the total still counts
            count = f"{hits} SELECT count(*) FROM hits"  # noqa: S608 (placeholders only)
            total = int(self._connection.execute(count, hits_params).fetchone()[0])
        items = self._with_snippets(match, [summary(row) for row in rows], {row[9]: row[10] for row in rows})
        return TicketPage(tuple(items), total, query.page, query.page_size)

    def _head(
        self,
        scope: str,
        match: str,
        where: str,
        params: list[Any],
        query: TicketQuery,
        whole: Mapping[str, str],
        exact: str,
    ) -> TicketPage | None:
        """The page best first when the first tier fills it, and the total; None when it does not.

        The exact ticket id is in the first tier (its ticket id holds every word), so the first tier's visible
        tickets, the exact one first and then the most recently updated, begin the whole order: the page is cut
        from them alone, never giving every hit a tier, and the total counts the hits without ordering them.
        """
        first = f"{scope} AND {fts_any(query.q, _TIERS[0], whole)} AND {fts_query(query.q, whole)}"
        # SECURITY: as in _search, every ticket shown or counted passes visible_clause().
        ids = (
            "SELECT t.id, t.ticket_id = ? AS exact, 0 AS tier, t.updated_at AS updated"
            f" {_MATCHED.format(where=where)} ORDER BY exact DESC, updated DESC, t.id DESC LIMIT ? OFFSET ?"
        )
        page = (
            f"SELECT {SUMMARY_COLUMNS}, t.id, t.conversation_id FROM ({ids}) AS hits"  # noqa: S608
            f" CROSS JOIN tickets t ON t.id = hits.id {SUMMARY_LOOKUPS} ORDER BY {_relevance(descending=True)}"
        )
        offset = (query.page - 1) * query.page_size
        rows = self._connection.execute(page, [exact, first, *params, query.page_size, offset]).fetchall()
        if len(rows) < query.page_size:
            return None
        count = f"SELECT count(*) {_MATCHED.format(where=where)}"
        total = int(self._connection.execute(count, [match, *params]).fetchone()[0])
        items = self._with_snippets(match, [summary(row) for row in rows], {row[9]: row[10] for row in rows})
        return TicketPage(tuple(items), total, query.page, query.page_size)

    def _with_snippets(
        self, match: str, items: list[TicketSummary], conversations: dict[int, int]
    ) -> list[TicketSummary]:
        """The page's summaries with the snippet of the best field each matched in, its author and time."""
        if not items:
            return items
        ids = list(conversations)
        # highlight() marks every match in the whole column with the index's own tokenizer; excerpt() then
        # cuts one snippet out of it (of one reply, for the replies column) between words. The replies, the
        # longest column, are highlighted only for a ticket that matched in no other.
        marked = [f"highlight(ticket_search, {column}, char(2), char(3))" for column in _SNIPPET_COLUMNS]
        replies = f"highlight(ticket_search, {_REPLIES}, char(2), char(3))"
        # The unary + keeps the rowid test out of FTS5's hands: one pass over the matches, instead of
        # re-running the query (and its prefix expansions) once for every ticket of the page.
        sql = (
            f"SELECT ticket_search.rowid, {', '.join(marked)},"  # noqa: S608
            f" CASE WHEN instr({' || '.join(marked)}, char(2)) THEN NULL ELSE {replies} END"
            " FROM ticket_search WHERE ticket_search MATCH ? AND ticket_search.rowid BETWEEN ? AND ?"
            f" AND +ticket_search.rowid IN ({','.join('?' * len(ids))})"
        )
        found = {row[0]: row[1:] for row in self._connection.execute(sql, [match, min(ids), max(ids), *ids])}
        result = []
        for item, ticket in zip(items, ids, strict=True):
            if ticket not in found:  # cannot happen within one connection; keep the row, without a snippet
                result.append(item)
                continue
            *fields, marked_replies = found[ticket]
            text = next((field for field in fields if MARK_START in (field or "")), None)
            author: str | None = item.creator_name
            at: int | None = item.created_at
            if text is None:
                text, author, at = self._reply(marked_replies or "", conversations[ticket])
            result.append(replace(item, snippet=excerpt(text), snippet_author=author, snippet_at=at))
        return result

    def _reply(self, marked_replies: str, conversation: int) -> tuple[str, str | None, int | None]:
        """The best-matching reply of a highlighted replies column, with that reply's author and time."""
        index, marked = best_reply(marked_replies)
        parts = self._connection.execute(
            "SELECT author_name, created_at, body FROM conversation_parts"
            " WHERE conversation_id = ? AND is_public = 1 ORDER BY created_at, id",
            (conversation,),
        ).fetchall()
        # SECURITY: only public parts are candidates, so a note never lends its author or time to a snippet.
        # The column joins them in this same order; the text check guards against the two ever disagreeing.
        if index < len(parts) and clean(parts[index][2]) == unmarked(marked):
            return marked, parts[index][0], parts[index][1]
        return marked, None, None

    async def get_ticket(self, visible: TicketFilter, ticket_id: str) -> TicketDetail | None:
        """The ticket with that customer-facing id, if the filter lets the visitor see it."""
        where, params = visible_clause(visible)

        def read() -> TicketDetail | None:
            row = self._connection.execute(
                f"{DETAIL_SELECT} WHERE {where} AND t.ticket_id = ?", [*params, ticket_id]
            ).fetchone()
            if row is None:
                return None
            parts = self._connection.execute(PUBLIC_PARTS, (row[10],)).fetchall()
            participant = self._connection.execute(PARTICIPANT, (row[10], visible.contact_id)).fetchone()
            return ticket_detail(row, parts, participant is not None)

        return await self._run(read)

    async def creators(self, visible: TicketFilter) -> list[tuple[int, str]]:
        """(contact id, name) of everyone who created a ticket the filter lets the visitor see, by name."""
        creators, params = counted_sql(visible, "creator_id")
        rows = await self._run(
            lambda: self._connection.execute(
                "SELECT p.id, coalesce(p.name, p.email, p.user_id) AS shown FROM contacts p"  # noqa: S608
                f" WHERE p.id IN ({creators}) ORDER BY shown COLLATE NOCASE, p.id",
                params,
            ).fetchall()
        )
        return [(int(row[0]), str(row[1])) for row in rows]

    async def visible_types(self, visible: TicketFilter) -> list[TicketType]:
        """The ticket types of the tickets the filter lets the visitor see (never a type they cannot see), by name."""
        types, params = counted_sql(visible, "type_id")
        rows = await self._run(
            lambda: self._connection.execute(
                f"SELECT ty.id, ty.name FROM ticket_types ty WHERE ty.id IN ({types}) ORDER BY ty.name",  # noqa: S608
                params,
            ).fetchall()
        )
        return [TicketType(*row) for row in rows]

    async def join(self, visible: TicketFilter, ticket_id: str, contact_id: int) -> bool:
        """Make the contact a participant of the ticket's conversation, if the filter lets them see it (idempotent)."""
        where, params = visible_clause(visible)

        def write(connection: sqlite3.Connection) -> bool:
            row = connection.execute(
                f"SELECT t.conversation_id FROM tickets t WHERE {where} AND t.ticket_id = ?",  # noqa: S608
                [*params, ticket_id],
            ).fetchone()
            if row is None:
                return False
            add_participant(connection, int(row[0]), contact_id)
            return True

        return await self.transaction(write)

    async def tickets_space(self, visible: TicketFilter, query: TicketQuery) -> TicketPage:
        """The visible tickets whose conversations the filter's contact takes part in, most recently updated first."""
        where, params = visible_clause(visible)
        participating = " AND t.conversation_id IN (SELECT conversation_id FROM participants WHERE contact_id = ?)"
        offset = (query.page - 1) * query.page_size

        def read() -> TicketPage:
            arguments = [*params, visible.contact_id]
            total = self._connection.execute(
                f"SELECT count(*) FROM tickets t WHERE {where}{participating}",  # noqa: S608 (placeholders only)
                arguments,
            ).fetchone()[0]
            rows = self._connection.execute(
                f"SELECT {SUMMARY_COLUMNS} {SUMMARY_JOINS} WHERE {where}{participating}"
                " ORDER BY t.updated_at DESC, t.id DESC LIMIT ? OFFSET ?",
                [*arguments, query.page_size, offset],
            ).fetchall()
            return TicketPage(tuple(map(summary, rows)), int(total), query.page, query.page_size)

        return await self._run(read)

    # --- the change feed (written by the triggers of schema.py's migration 4) -----------------------------

    async def changes_after(self, after: int, limit: int) -> ChangeBatch:
        """Up to ``limit`` changes after ``after``, oldest first, with the newest id and the newest dropped."""

        def read() -> ChangeBatch:
            # One read transaction, so the changes, the newest id and the horizon agree.
            rows = self._connection.execute(
                "SELECT id, kind, ticket_id, contact_id, scope FROM changes WHERE id > ? ORDER BY id LIMIT ?",
                (after, limit),
            ).fetchall()
            latest, dropped = self._connection.execute(
                "SELECT coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'changes'), 0), dropped_through"
                " FROM change_feed"
            ).fetchone()
            return ChangeBatch(tuple(Change(*row) for row in rows), int(latest), int(dropped))

        return await self._run(lambda: self._snapshot(read))

    async def changed_ticket(self, ticket_id: str) -> ChangedTicket | None:
        """The ticket as every visitor's detail page shows it, and what visibility tests of it (no visibility)."""

        def read() -> ChangedTicket | None:
            row = self._connection.execute(CHANGED_SELECT, (ticket_id,)).fetchone()
            if row is None:
                return None
            return changed_ticket(row, self._connection.execute(PUBLIC_PARTS, (row[10],)).fetchall())

        return await self._run(read)

    async def changes_pending(self) -> bool:
        """Whether the change counter moved since the last call (True when it cannot be read without waiting)."""
        seen = self._generation()
        moved = seen is None or seen != self._changes_seen
        self._changes_seen = seen
        return moved

    # --- the Intercom connector ------------------------------------------------------------------------------

    async def remote_ids(self, kind: RemoteKind) -> set[str]:
        """The Intercom ids of every mirrored record of that kind."""
        return await self._run(lambda: mirror.run(self._connection, programs.remote_ids(kind)))

    async def remote_id(self, kind: RemoteKind, key: str) -> str | None:
        """Intercom's id of the record with this id of the store's."""
        return await self._run(lambda: mirror.run(self._connection, programs.remote_id(kind, key)))

    async def remote_conversation(self, ticket_id: str) -> str | None:
        """Intercom's id of the ticket's linked conversation."""
        return await self._run(lambda: mirror.run(self._connection, programs.remote_conversation(ticket_id)))

    async def sync_checkpoint(self, name: str) -> str | None:
        """The checkpoint saved under ``name``, or None when there is none."""
        return await self._run(lambda: mirror.checkpoint(self._connection, name))

    async def save_sync_checkpoint(self, name: str, value: str) -> None:
        """Save (replace) the checkpoint under ``name``."""
        await self.transaction(partial(mirror.save_checkpoint, name=name, value=value))

    async def acquire_lease(self, name: str, holder: str, ttl: float, now: float) -> bool:
        """Take or renew the lease ``name`` for ``holder`` until ``now + ttl``; False while another holds it."""
        return await self.transaction(partial(mirror.acquire_lease, name=name, holder=holder, ttl=ttl, now=now))

    async def release_lease(self, name: str, holder: str) -> None:
        """Give the lease up if ``holder`` holds it."""
        await self.transaction(partial(mirror.release_lease, name=name, holder=holder))

    # --- store copy (gateway/store/copy.py) ------------------------------------------------------------------

    async def tables(self) -> dict[str, Table]:
        """Every table of the schema, with its columns and primary key; not SQLite's own nor the search index's."""

        def read() -> dict[str, Table]:
            # pragma_table_list types FTS5's own tables 'virtual' and 'shadow': the search index, rebuilt by the
            # triggers from the copied rows, is no data of its own.
            names = self._connection.execute(
                "SELECT name FROM pragma_table_list WHERE schema = 'main' AND type = 'table'"
                " AND name NOT LIKE 'sqlite_%' ORDER BY name"
            ).fetchall()
            tables: dict[str, Table] = {}
            for (name,) in names:
                columns = self._connection.execute(
                    "SELECT name, pk FROM pragma_table_info(?) ORDER BY cid", (name,)
                ).fetchall()
                key = tuple(column for column, pk in sorted(columns, key=lambda c: c[1]) if pk)
                shared = SHARED_NAMES.get(name, name)
                stored_as = name if shared != name else ""
                tables[shared] = Table(shared, tuple(column for column, _ in columns), key, stored_as=stored_as)
            return tables

        return await self._run(read)

    async def count_rows(self, table: Table) -> int:
        """How many rows the table holds."""
        return int(await self._run(lambda: self._connection.execute(table.count).fetchone()[0]))

    async def read_rows(self, table: Table, after: Sequence[Any] | None, limit: int) -> list[tuple[Any, ...]]:
        """Up to ``limit`` rows whose key comes after ``after``, in key order."""
        sql, params = table.select(after is not None), [*(after or ()), limit]
        return await self._run(lambda: [tuple(row) for row in self._connection.execute(sql, params)])

    async def write_rows(self, table: Table, rows: Sequence[tuple[Any, ...]]) -> None:
        """Insert the rows as they are, in one transaction (the search triggers index them)."""
        await self.transaction(lambda connection: connection.executemany(table.insert, rows))

    async def write_feed(self, table: Table, rows: Sequence[tuple[Any, ...]], position: ChangeBatch) -> None:
        """Replace the feed by ``rows`` and put it at ``position``: the feed's newest id is its AUTOINCREMENT
        counter (sqlite_sequence, which SQLite lets a writer set), the newest dropped is change_feed's."""

        def write(connection: sqlite3.Connection) -> None:
            connection.execute("DELETE FROM changes")
            # First: the pruning trigger drops every row at or below it, and the copy's own changes moved it.
            connection.execute("UPDATE change_feed SET dropped_through = ?", (position.dropped_through,))
            connection.executemany(table.insert, rows)
            connection.execute("DELETE FROM sqlite_sequence WHERE name = 'changes'")
            connection.execute("INSERT INTO sqlite_sequence (name, seq) VALUES ('changes', ?)", (position.latest,))

        await self.transaction(write)

    async def rows_written(self) -> None:
        """Nothing to do: SQLite's next ids follow the largest."""

"""``portal-gateway store copy``: every row of one store into another, empty one (SQLite to PostgreSQL or back),
verified by each table's row count and checksum read back from the destination.

The tables and their columns come from each store's own schema (:meth:`Copyable.tables`), never from a list
here: a migration's new column is copied without a word, and a table this module does not know refuses the
copy before it writes anything. What it knows, it treats in one of three ways:

- ``COPIED`` tables are written row for row, ids included, so references between tables hold as they were;
  each backend's own triggers rebuild its search index from the copied rows.
- ``REBUILT`` tables are what the destination's triggers fill from the copied tickets; they are compared
  with the source's, not written.
- ``FEED`` is the change feed. Its rows are copied with their ids and the destination's feed is put at the
  source's position (the newest id, and how far retention dropped), so a stream that reconnects to the
  destination with its ``Last-Event-ID`` is answered exactly as the source would have: the kept changes after
  it, or "missed" when retention dropped some; and the next change gets the next id, so ids stay monotonic
  across the move. The changes the copy's own inserts made the destination's triggers record (a "created" for
  every ticket, an "access" for every membership) are dropped: nothing changed, the rows were there already.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Protocol

from gateway.errors import CopyRefused
from gateway.store.models import ChangeBatch

if TYPE_CHECKING:
    from gateway.store.protocol import Store

BATCH = 1_000
"""Rows read, and written in one transaction, at once. Into PostgreSQL a batch costs more than in proportion to
its size (its triggers update the change feed's one row once per ticket, all in the batch's transaction):
20,000 tickets took 21-31 s in batches of 5,000, 10-12 s in 1,000 and 15 s in 500 (2 cores, under load)."""

COPIED = (
    "companies",
    "contacts",
    "memberships",
    "ticket_types",
    "ticket_states",
    "conversation_parts",
    "participants",
    "tickets",
    "sync_checkpoints",
    "sync_leases",
)
"""Copied row for row, in this order: every row's references are there before it. A conversation's parts come
before its ticket (nothing references a ticket), so each ticket is indexed for search once, with its replies, as
it arrives; parts after their tickets would index every ticket again for each batch of its parts."""
STATEMENT_TIMEOUT = 600.0
"""Seconds one statement of the copy may take: a batch runs the destination's triggers for each of its rows, far
longer than a request's statement, and no visitor waits on it."""
REBUILT = {"ticket_scope_counts": "tickets <> 0"}
"""Filled by the destination's triggers as the tickets arrive, and compared with the source's. A count that fell
to 0 keeps its row, so a store that had tickets move holds zero rows a recount has not: only the others compare."""
CHANGES, FEED_STATE = "changes", "change_feed"
"""The change feed: its rows, copied with their ids, and its position (each backend keeps it its own way)."""
KNOWN = frozenset({*COPIED, *REBUILT, CHANGES, FEED_STATE})


@dataclass(frozen=True)
class Table:
    """A table as one store holds it: its name in the copy, its columns and key, read in key order."""

    name: str
    """The copy's name for it: both backends' name (SQLite's ``leases`` is ``sync_leases`` here)."""
    columns: tuple[str, ...]
    """Its stored columns, in the schema's order (never a backend's own index data, such as a tsvector)."""
    key: tuple[str, ...]
    """Its primary key's columns."""
    stored_as: str = ""
    """The store's own name for it, when that is not ``name``."""
    order: tuple[str, ...] = ()
    """The key as SQL orders it, when that is not ``key`` (PostgreSQL's text in byte order, as SQLite's)."""
    where: str = ""
    """Only the rows this SQL condition holds for."""

    @property
    def sql_name(self) -> str:
        """The table's name in the store's SQL."""
        return self.stored_as or self.name

    def select(self, after: bool) -> str:
        """The SQL (``?`` placeholders: the key values ``after``, then the limit) of one batch in key order."""
        order = ", ".join(self.order or self.key)
        conditions = [f"({order}) > ({', '.join('?' * len(self.key))})"] if after else []
        conditions += [self.where] if self.where else []
        where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
        return f"SELECT {', '.join(self.columns)} FROM {self.sql_name}{where} ORDER BY {order} LIMIT ?"  # noqa: S608

    @property
    def count(self) -> str:
        """The SQL of its row count."""
        return f"SELECT count(*) FROM {self.sql_name}" + (f" WHERE {self.where}" if self.where else "")  # noqa: S608

    @property
    def insert(self) -> str:
        """The SQL of one row's insert, every column given (``?`` placeholders)."""
        return f"INSERT INTO {self.sql_name} ({', '.join(self.columns)}) VALUES ({', '.join('?' * len(self.columns))})"  # noqa: S608


class Copyable(Protocol):
    """What a backend's store offers the copy: its schema, its rows in key order, and rows written as they are."""

    async def tables(self) -> dict[str, Table]:
        """Every table holding the store's data, by the copy's name (not its migrations' bookkeeping)."""

    async def count_rows(self, table: Table) -> int:
        """How many rows the table holds."""

    async def read_rows(self, table: Table, after: Sequence[Any] | None, limit: int) -> list[tuple[Any, ...]]:
        """Up to ``limit`` rows (``table.columns``) whose key comes after ``after`` (None: from the first)."""

    async def write_rows(self, table: Table, rows: Sequence[tuple[Any, ...]]) -> None:
        """Insert the rows as they are, ids included, in one transaction."""

    async def write_feed(self, table: Table, rows: Sequence[tuple[Any, ...]], position: ChangeBatch) -> None:
        """Replace the change feed by these rows, ids as they are, and put it at ``position`` (its newest id and
        the newest dropped); one transaction."""

    async def rows_written(self) -> None:
        """Bring the store's own counters (next ids) past the copied rows."""


@dataclass(frozen=True)
class Summary:
    """A table's row count and the SHA-256 of its rows in key order."""

    rows: int
    checksum: str


@dataclass(frozen=True)
class Copied:
    """What arrived, as read back from the destination: each table's summary, and the feed's position."""

    tables: dict[str, Summary]
    feed: ChangeBatch
    """The destination's feed position (its newest id and newest dropped; no changes)."""


def _value(value: Any) -> Any:
    # Both backends give ints, floats, strings and None; a float that is whole is still a float in both.
    return repr(value) if isinstance(value, float) else value


async def _scan(
    store: Copyable, table: Table, each: Callable[[list[tuple[Any, ...]]], Awaitable[None]] | None = None
) -> Summary:
    """Read the whole table in key order, hashing each row; ``each`` gets every batch as it is read."""
    digest = hashlib.sha256()
    count = 0
    after: Sequence[Any] | None = None
    key = [table.columns.index(name) for name in table.key]
    while True:
        rows = await store.read_rows(table, after, BATCH)
        if not rows:
            return Summary(count, digest.hexdigest())
        for row in rows:
            digest.update(json.dumps([_value(value) for value in row]).encode() + b"\n")
        count += len(rows)
        after = [rows[-1][index] for index in key]
        if each is not None:
            await each(rows)


def _compared(source: Mapping[str, Table], destination: Mapping[str, Table]) -> list[str]:
    """Why the two schemas cannot be copied one into the other (nothing: they can)."""
    problems = [
        f"store copy does not know the table {name} (of the {side})"
        for side, tables in (("source", source), ("destination", destination))
        for name in sorted(tables.keys() - KNOWN)
    ]
    problems += [
        f"the {side} has no table {name}"
        for side, tables in (("source", source), ("destination", destination))
        for name in sorted(KNOWN - tables.keys())
    ]
    for name in sorted(KNOWN & source.keys() & destination.keys() - {FEED_STATE}):  # each backend keeps its position
        if set(source[name].columns) != set(destination[name].columns):
            only = sorted(set(source[name].columns) ^ set(destination[name].columns))
            problems.append(f"{name} has columns on one side only ({', '.join(only)}): migrate both to one version")
    return problems


async def copy_store(source: Store, destination: Store, progress: Callable[[int], object] | None = None) -> Copied:
    """Copy every table of ``source`` into the empty ``destination``; each table's count and checksum, as
    read back from the destination. CopyRefused when the destination is not empty or differs afterwards."""
    theirs, ours = await source.tables(), await destination.tables()
    problems = _compared(theirs, ours)
    if problems:
        raise CopyRefused("; ".join(problems))
    # One column order for both sides: the source's (each side reads and writes by name).
    plan = {name: replace(ours[name], columns=theirs[name].columns) for name in ours if name != FEED_STATE}
    for name, where in REBUILT.items():
        theirs[name], plan[name] = replace(theirs[name], where=where), replace(plan[name], where=where)
    written = (*COPIED, CHANGES)
    held = {name: await destination.count_rows(plan[name]) for name in written}
    if any(held.values()):
        named = ", ".join(f"{count} {name}" for name, count in held.items() if count)
        raise CopyRefused(f"the destination is not empty ({named}); copy into a new, empty store")

    copied: dict[str, Summary] = {}
    for name in COPIED:

        async def write(rows: list[tuple[Any, ...]], table: Table = plan[name]) -> None:
            await destination.write_rows(table, rows)
            if progress is not None:
                progress(len(rows))

        copied[name] = await _scan(source, theirs[name], write)
    changes: list[tuple[Any, ...]] = []

    async def keep(rows: list[tuple[Any, ...]]) -> None:
        changes.extend(rows)  # the feed is as long as retention keeps it: one transaction writes it whole

    copied[CHANGES] = await _scan(source, theirs[CHANGES], keep)
    position = await source.changes_after(0, 0)
    await destination.write_feed(plan[CHANGES], changes, position)
    if progress is not None:
        progress(len(changes))
    await destination.rows_written()
    for name in REBUILT:
        copied[name] = await _scan(source, theirs[name])

    summaries = {name: await _scan(destination, plan[name]) for name in copied}
    arrived = Copied(summaries, await destination.changes_after(0, 0))
    differing = [name for name in copied if copied[name] != arrived.tables[name]]
    if arrived.feed != position:
        differing.append(FEED_STATE)
    if differing:
        raise CopyRefused(f"the copy differs from the source in {', '.join(differing)}")
    return arrived


async def total_rows(store: Copyable) -> int:
    """How many rows a copy of ``store`` writes (for the progress bar)."""
    tables = await store.tables()
    return sum([await store.count_rows(tables[name]) for name in (*COPIED, CHANGES) if name in tables])

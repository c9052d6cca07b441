"""``portal-gateway store copy``: every row of one store into another, empty one (SQLite to PostgreSQL or back),
verified by each table's row count and checksum read back from the destination.

Rows keep their ids, so references between tables hold as they were; each backend's own triggers
rebuild its search index from the copied rows. The tables are those both schemas share.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

BATCH = 5_000


@dataclass(frozen=True)
class Table:
    """A table both schemas hold: its columns and the columns of its key (rows are read in key order)."""

    name: str
    columns: tuple[str, ...]
    key: tuple[str, ...] = ("id",)

    def select(self, after: bool) -> str:
        """The SQL (``?`` placeholders: the key values ``after``, then the limit) of one batch in key order."""
        keys = ", ".join(self.key)
        where = f" WHERE ({keys}) > ({', '.join('?' * len(self.key))})" if after else ""
        return f"SELECT {', '.join(self.columns)} FROM {self.name}{where} ORDER BY {keys} LIMIT ?"  # noqa: S608

    @property
    def insert(self) -> str:
        """The SQL of one row's insert, every column given (``?`` placeholders)."""
        return f"INSERT INTO {self.name} ({', '.join(self.columns)}) VALUES ({', '.join('?' * len(self.columns))})"  # noqa: S608


TABLES = (
    Table("companies", ("id", "company_id", "name", "plan", "size", "monthly_spend", "custom_attributes")),
    Table("contacts", ("id", "user_id", "email", "name", "custom_attributes")),
    Table("memberships", ("contact_id", "company_id"), ("contact_id", "company_id")),
    Table("ticket_types", ("id", "name")),
    Table("ticket_states", ("id", "category", "internal_label", "external_label")),
    Table(
        "tickets",
        (
            "id",
            "ticket_id",
            "type_id",
            "state_id",
            "category",
            "is_shared",
            "company_id",
            "creator_id",
            "title",
            "description",
            "created_at",
            "updated_at",
            "conversation_id",
        ),
    ),
    Table(
        "conversation_parts",
        ("id", "conversation_id", "author_contact_id", "author_name", "body", "is_public", "created_at"),
    ),
    Table("participants", ("conversation_id", "contact_id"), ("conversation_id", "contact_id")),
)
"""In the order they are written: every row's references are there before it."""


class Copyable(Protocol):
    """What a backend's store offers the copy: its rows in key order, and rows written as they are."""

    async def count_rows(self, table: Table) -> int:
        """How many rows the table holds."""

    async def read_rows(self, table: Table, after: Sequence[Any] | None, limit: int) -> list[tuple[Any, ...]]:
        """Up to ``limit`` rows (``table.columns``) whose key comes after ``after`` (None: from the first)."""

    async def write_rows(self, table: Table, rows: Sequence[tuple[Any, ...]]) -> None:
        """Insert the rows as they are, ids included, in one transaction."""

    async def rows_written(self) -> None:
        """Bring the store's own counters (next ids) past the copied rows."""


class CopyRefused(Exception):
    """The copy cannot start (the destination holds data) or did not arrive whole; ``str()`` says which."""


@dataclass(frozen=True)
class Summary:
    """A table's row count and the SHA-256 of its rows in key order."""

    rows: int
    checksum: str


def _value(value: Any) -> Any:
    # Both backends give ints, floats, strings and None; a float that is whole is still a float in both.
    return repr(value) if isinstance(value, float) else value


async def _scan(store: Copyable, table: Table, each: Callable[[list[tuple[Any, ...]]], Any] | None = None) -> Summary:
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


async def copy_store(
    source: Copyable, destination: Copyable, progress: Callable[[int], object] | None = None
) -> dict[str, Summary]:
    """Copy every table of ``source`` into the empty ``destination``; each table's count and checksum, as
    read back from the destination. CopyRefused when the destination is not empty or differs afterwards."""
    held = {table.name: await destination.count_rows(table) for table in TABLES}
    if any(held.values()):
        named = ", ".join(f"{count} {name}" for name, count in held.items() if count)
        raise CopyRefused(f"the destination is not empty ({named}); copy into a new, empty store")

    copied: dict[str, Summary] = {}
    for table in TABLES:

        async def write(rows: list[tuple[Any, ...]], table: Table = table) -> None:
            await destination.write_rows(table, rows)
            if progress is not None:
                progress(len(rows))

        copied[table.name] = await _scan(source, table, write)
    await destination.rows_written()
    arrived = {table.name: await _scan(destination, table) for table in TABLES}
    differing = [name for name in copied if copied[name] != arrived[name]]
    if differing:
        raise CopyRefused(f"the copy differs from the source in {', '.join(differing)}")
    return arrived


async def total_rows(store: Copyable) -> int:
    """How many rows a copy of ``store`` writes (for the progress bar)."""
    return sum([await store.count_rows(table) for table in TABLES])

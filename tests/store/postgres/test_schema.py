"""PostgreSQL migrations over a database that already holds tickets."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg

from gateway.store.postgres import PostgresStore
from gateway.store.postgres.schema import MIGRATIONS
from gateway.store.postgres.search import FIRST_TIER
from tests.pgserver import PostgresServer
from tests.store.test_store import BEFORE_THE_COUNTS, COUNTED

COUNTS_MIGRATION = 7
"""The PostgreSQL migration that made ticket_scope_counts."""


async def migrated_before(connection: asyncpg.Connection, version: int) -> None:
    """Apply (and record) the migrations before ``version``, as a gateway of that time did."""
    await connection.execute("CREATE TABLE schema_migrations (version integer PRIMARY KEY, applied_at timestamptz)")
    for number, script in enumerate(MIGRATIONS[: version - 1], start=1):
        await connection.execute(script)
        await connection.execute("INSERT INTO schema_migrations (version) VALUES ($1)", number)


@asynccontextmanager
async def opened_on_old_tickets(postgres: PostgresServer, version: int) -> AsyncIterator[asyncpg.Connection]:
    """A connection to a new database holding the test's tickets written by a gateway from before migration
    ``version``, then opened by this one."""
    dsn = postgres.database()
    connection = await asyncpg.connect(dsn)
    try:
        await migrated_before(connection, version)
        await connection.execute(BEFORE_THE_COUNTS)
        store = await PostgresStore.open(dsn)
        await store.close()
        yield connection
    finally:
        await connection.close()


async def test_a_database_from_before_the_scope_counts_has_them_filled_at_its_next_open(
    postgres: PostgresServer,
) -> None:
    async with opened_on_old_tickets(postgres, COUNTS_MIGRATION) as connection:
        counts = await connection.fetch(
            "SELECT scope, creator_id, type_id, tickets FROM ticket_scope_counts ORDER BY 1"
        )
    assert [tuple(row) for row in counts] == COUNTED


SCOPED_MIGRATION = 8
"""The PostgreSQL migration that made tickets.scoped."""
# Each ticket's title and ticket id behind its company (1), or minus its creator without one (-2).
SCOPED = [
    ("1", ["1/1", "1/a"]),
    ("2", ["1/2", "1/b"]),
    ("3", ["1/3", "1/c"]),
    ("4", ["-2/4", "-2/d"]),
    ("5", []),  # a Tracker ticket: no visitor may see it, so nothing leads a search to it
    ("6", []),  # unshared Back-office
]


async def _scoped(connection: asyncpg.Connection) -> list[tuple[str, list[str]]]:
    rows = await connection.fetch("SELECT ticket_id, tsvector_to_array(scoped) FROM tickets ORDER BY ticket_id")
    return [(row[0], list(row[1])) for row in rows]


async def test_a_database_from_before_the_scoped_search_has_it_filled_at_its_next_open(
    postgres: PostgresServer,
) -> None:
    async with opened_on_old_tickets(postgres, SCOPED_MIGRATION) as connection:
        assert await _scoped(connection) == SCOPED


async def test_every_write_keeps_each_tickets_lexemes_behind_its_scope_key(postgres: PostgresServer) -> None:
    dsn = postgres.database()
    store = await PostgresStore.open(dsn)
    await store.close()
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute(BEFORE_THE_COUNTS)
        assert await _scoped(connection) == SCOPED
        await connection.execute(
            "INSERT INTO conversation_parts (conversation_id, author_name, body, is_public, created_at)"
            " VALUES (1, 'x', 'public reply', 1, 0), (1, 'x', 'internal note', 0, 0)"
        )
        await connection.execute("UPDATE tickets SET title = 'renamed' WHERE ticket_id = '2'")
        await connection.execute("UPDATE tickets SET company_id = NULL WHERE ticket_id = '3'")
        await connection.execute("UPDATE tickets SET is_shared = 1 WHERE ticket_id = '6'")
        await connection.execute("UPDATE tickets SET category = 'Tracker' WHERE ticket_id = '4'")
        assert await _scoped(connection) == [
            ("1", ["1/1", "1/a", "1/public", "1/reply"]),  # never the note's words
            ("2", ["1/2", "1/renamed"]),
            ("3", ["-1/3", "-1/c"]),
            ("4", []),
            ("5", []),
            ("6", ["1/6", "1/f"]),
        ]
    finally:
        await connection.close()


async def test_a_migration_may_run_longer_than_the_statement_timeout(postgres: PostgresServer) -> None:
    # A million tickets take minutes to migrate; here migration 8 waits for a lock held longer than the
    # store's statement timeout (a request's bound, not a migration's), and the open still succeeds.
    dsn = postgres.database()
    connection = await asyncpg.connect(dsn)
    try:
        await migrated_before(connection, SCOPED_MIGRATION)
        holder = connection.transaction()
        await holder.start()
        await connection.execute("LOCK TABLE tickets IN SHARE MODE")
        opening = asyncio.create_task(PostgresStore.open(dsn, statement_timeout=0.2))
        await asyncio.sleep(1.0)  # five statement timeouts: the open is waiting for the lock by then
        await holder.rollback()
        store = await opening
        await store.close()
        assert await connection.fetchval("SELECT max(version) FROM schema_migrations") == len(MIGRATIONS)
    finally:
        await connection.close()


REMOVALS_MIGRATION = next(number for number, script in enumerate(MIGRATIONS, 1) if "'removed'" in script)
"""The PostgreSQL migration that let the feed record a removed ticket; found by its text, since its number moves
when branches merge."""


async def test_a_database_from_before_removals_keeps_its_feed_at_its_next_open(postgres: PostgresServer) -> None:
    dsn = postgres.database()
    connection = await asyncpg.connect(dsn)
    try:
        await migrated_before(connection, REMOVALS_MIGRATION)
        await connection.execute(BEFORE_THE_COUNTS)  # each ticket records its change
        kept = [tuple(row) for row in await connection.fetch("SELECT id, kind, ticket_id, contact_id FROM changes")]
        store = await PostgresStore.open(dsn)
        try:
            batch = await store.changes_after(0, 100)
            await connection.execute(
                "INSERT INTO changes (kind, ticket_id, scope, contact_id) VALUES ('removed', '2', 1, 1)"
            )
            newer = await store.changes_after(batch.latest, 100)
        finally:
            await store.close()
    finally:
        await connection.close()
    assert [(c.id, c.kind, c.ticket_id, c.contact_id, c.scope) for c in batch.changes] == [(*row, None) for row in kept]
    assert [(c.id, c.kind, c.ticket_id, c.scope) for c in newer.changes] == [(batch.latest + 1, "removed", "2", 1)]


FIRST_TIER_MIGRATION = next(number for number, script in enumerate(MIGRATIONS, 1) if "tickets_scoped_first" in script)
"""The PostgreSQL migration that indexed the first tier behind the scope keys; found by its text (numbers move)."""


# Lexemes behind scope keys, and the first-tier tickets each finds.
FIRST_TIER_FOUND = {
    "'1/a'": ["1"],  # its title
    "'1/2'": ["2"],  # its ticket id
    "'1/zebra'": [],  # a description is no first-tier match
    "'-2/4' | '-2/d'": ["4"],  # a company-less ticket behind minus its creator
    "'1/e' | '1/f'": [],  # Tracker and unshared Back-office tickets: nothing
}


async def test_a_database_from_before_the_first_tier_index_has_it_built_at_its_next_open(
    postgres: PostgresServer,
) -> None:
    async with opened_on_old_tickets(postgres, FIRST_TIER_MIGRATION) as connection:
        await connection.execute("UPDATE tickets SET description = 'zebra' WHERE ticket_id = '1'")
        await connection.execute("SET enable_seqscan = off")
        through_index = f"SELECT t.ticket_id FROM tickets t WHERE {FIRST_TIER} @@ $1::tsquery"  # noqa: S608
        plan = "\n".join(row[0] for row in await connection.fetch(f"EXPLAIN {through_index}", "'1/a'"))
        assert "tickets_scoped_first" in plan
        found = {
            query: sorted(row[0] for row in await connection.fetch(through_index, query)) for query in FIRST_TIER_FOUND
        }
    assert found == FIRST_TIER_FOUND

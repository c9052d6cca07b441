"""PostgreSQL migrations over a database that already holds tickets."""

from __future__ import annotations

import asyncpg

from gateway.store.postgres import PostgresStore
from gateway.store.postgres.schema import MIGRATIONS
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


async def test_a_database_from_before_the_scope_counts_has_them_filled_at_its_next_open(
    postgres: PostgresServer,
) -> None:
    dsn = postgres.database()
    connection = await asyncpg.connect(dsn)
    try:
        await migrated_before(connection, COUNTS_MIGRATION)
        await connection.execute(BEFORE_THE_COUNTS)
        store = await PostgresStore.open(dsn)
        await store.close()
        counts = await connection.fetch(
            "SELECT scope, creator_id, type_id, tickets FROM ticket_scope_counts ORDER BY 1"
        )
    finally:
        await connection.close()
    assert [tuple(row) for row in counts] == COUNTED


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

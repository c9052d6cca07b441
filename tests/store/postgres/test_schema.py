"""PostgreSQL migrations over a database that already holds tickets."""

from __future__ import annotations

import asyncpg

from gateway.store.postgres import PostgresStore
from gateway.store.postgres.schema import MIGRATIONS
from tests.pgserver import PostgresServer
from tests.store.test_store import BEFORE_THE_COUNTS, COUNTED

COUNTS_MIGRATION = 7
"""The PostgreSQL migration that made ticket_scope_counts."""


async def test_a_database_from_before_the_scope_counts_has_them_filled_at_its_next_open(
    postgres: PostgresServer,
) -> None:
    dsn = postgres.database()
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute("CREATE TABLE schema_migrations (version integer PRIMARY KEY, applied_at timestamptz)")
        for number, script in enumerate(MIGRATIONS[: COUNTS_MIGRATION - 1], start=1):
            await connection.execute(script)
            await connection.execute("INSERT INTO schema_migrations (version) VALUES ($1)", number)
        await connection.execute(BEFORE_THE_COUNTS)
        store = await PostgresStore.open(dsn)
        await store.close()
        counts = await connection.fetch(
            "SELECT scope, creator_id, type_id, tickets FROM ticket_scope_counts ORDER BY 1"
        )
    finally:
        await connection.close()
    assert [tuple(row) for row in counts] == COUNTED

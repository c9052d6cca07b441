"""The change feed under bulk writes: a statement of many rows (``store copy``'s COPY batches, a multi-row
update) records one change per row, in order, with ids taken at one update of the feed's counter row, not one
per row (each of those left a version of the row that every later update in the transaction scanned)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from functools import partial

import asyncpg
import pytest

from gateway.store.postgres import PostgresStore
from tests.pgserver import PostgresServer

TICKETS = 300
FEED_UPDATES = "SELECT pg_stat_get_xact_tuples_updated('change_feed'::regclass)"
"""Updates of change_feed's row this session has not yet reported to the statistics: it reports them only between
transactions, so two readings inside one transaction differ by that transaction's updates in between."""
CHANGES_AFTER = "SELECT id, kind, ticket_id, contact_id FROM changes WHERE id > $1 ORDER BY id"


@pytest.fixture
async def connection(postgres: PostgresServer) -> AsyncIterator[asyncpg.Connection]:
    """A connection to a new, migrated database holding a company, two contacts, a type and two states."""
    dsn = postgres.database()
    await (await PostgresStore.open(dsn)).close()
    connection = await asyncpg.connect(dsn)
    await connection.execute(
        "INSERT INTO companies (id, company_id, name) VALUES (1, 'acme', 'Acme');"
        " INSERT INTO contacts (id, user_id) VALUES (1, 'u-ann'), (2, 'u-kim');"
        " INSERT INTO ticket_types (id, name) VALUES (1, 'Bug');"
        " INSERT INTO ticket_states (id, category, internal_label, external_label)"
        " VALUES (1, 'submitted', 'New', 'New'), (2, 'resolved', 'Done', 'Done');"
    )
    yield connection
    await connection.close()


def ticket(number: int) -> tuple[object, ...]:
    """A ticket row (its id, ticket id and conversation all ``number``) as ``store copy`` writes it."""
    return (number, str(number), 1, 1, "Customer", 0, 1, 1, f"title {number}", 0, 0, number)


TICKET_COLUMNS = (
    "id",
    "ticket_id",
    "type_id",
    "state_id",
    "category",
    "is_shared",
    "company_id",
    "creator_id",
    "title",
    "created_at",
    "updated_at",
    "conversation_id",
)


async def tickets_copied(connection: asyncpg.Connection, numbers: Sequence[int]) -> int:
    """Copy in the tickets ``numbers``; the feed's newest id after."""
    await connection.copy_records_to_table("tickets", records=[ticket(n) for n in numbers], columns=TICKET_COLUMNS)
    return int(await connection.fetchval("SELECT last_id FROM change_feed"))


async def feed_updates(connection: asyncpg.Connection, write: Callable[[], Awaitable[object]]) -> int:
    """Run ``write`` in one transaction; how many times it updated change_feed's row."""
    async with connection.transaction():
        before = int(await connection.fetchval(FEED_UPDATES))
        await write()
        return int(await connection.fetchval(FEED_UPDATES)) - before


def statements(connection: asyncpg.Connection, *sql: str) -> Callable[[], Awaitable[object]]:
    """A write of these statements, one after the other."""
    return partial(connection.execute, "; ".join(sql))


async def test_a_copy_of_many_tickets_records_each_at_one_update_of_the_feed(connection: asyncpg.Connection) -> None:
    newest = await tickets_copied(connection, ())
    assert await feed_updates(connection, partial(tickets_copied, connection, range(1, TICKETS + 1))) == 1
    expected = [(newest + n, "created", str(n), None) for n in range(1, TICKETS + 1)]
    assert [tuple(row) for row in await connection.fetch(CHANGES_AFTER, newest)] == expected
    assert await connection.fetchval("SELECT last_id FROM change_feed") == newest + TICKETS


async def test_a_multi_row_update_records_each_tickets_state_before_its_other_fields(
    connection: asyncpg.Connection,
) -> None:
    newest = await tickets_copied(connection, (1, 2, 3))
    updates = await feed_updates(
        connection,
        statements(
            connection,
            "UPDATE tickets SET state_id = CASE WHEN id = 2 THEN 1 ELSE 2 END, title = CASE WHEN id = 3 THEN title"
            " ELSE 'renamed' END, updated_at = 9",
            "UPDATE tickets SET updated_at = 10",  # nothing a stream shows: no change
        ),
    )
    assert updates == 1
    changes = [tuple(row) for row in await connection.fetch(CHANGES_AFTER, newest)]
    assert changes == [
        (newest + 1, "state", "1", None),
        (newest + 2, "updated", "1", None),
        (newest + 3, "updated", "2", None),
        (newest + 4, "state", "3", None),
    ]


async def test_replies_notes_and_memberships_of_one_statement_record_at_one_update_each(
    connection: asyncpg.Connection,
) -> None:
    newest = await tickets_copied(connection, (1, 2))
    updates = await feed_updates(
        connection,
        statements(
            connection,
            "INSERT INTO conversation_parts (id, conversation_id, author_name, body, is_public, created_at) VALUES"
            " (1, 2, 'x', 'reply', 1, 0), (2, 1, 'x', 'note', 0, 0), (3, 1, 'x', 'reply', 1, 0),"
            " (4, 99, 'x', 'no ticket', 1, 0)",
            "UPDATE conversation_parts SET is_public = 1",  # the note made public
            "INSERT INTO memberships (contact_id, company_id) VALUES (2, 1), (1, 1)",
            "DELETE FROM memberships",
            "UPDATE contacts SET email = 'new@example.com'",
            "UPDATE companies SET name = 'Acme'",  # as it was: no change
            "UPDATE companies SET plan = 'pro'",
        ),
    )
    assert updates == 6
    changes = [tuple(row)[1:] for row in await connection.fetch(CHANGES_AFTER, newest)]
    assert changes == [
        ("reply", "2", None),
        ("reply", "1", None),
        ("reply", "1", None),  # the note, now public
        ("access", None, 1),
        ("access", None, 2),
        ("access", None, 1),
        ("access", None, 2),
        ("access", None, 1),
        ("access", None, 2),
        ("access", None, None),
    ]


async def test_a_statement_past_the_retention_keeps_the_newest_and_says_how_far_it_dropped(
    connection: asyncpg.Connection,
) -> None:
    await connection.execute("UPDATE change_feed SET retained = 100")
    await tickets_copied(connection, range(1, TICKETS + 1))
    feed = await connection.fetchrow("SELECT last_id, dropped_through FROM change_feed")
    assert feed is not None
    newest, dropped = feed
    assert dropped == newest - 100
    kept = await connection.fetch("SELECT id, ticket_id FROM changes ORDER BY id")
    assert [tuple(row) for row in kept] == [(dropped + n, str(TICKETS - 100 + n)) for n in range(1, 101)]

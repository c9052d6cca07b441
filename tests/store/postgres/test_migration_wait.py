"""A node started while another migrates the database (a million tickets take minutes): it waits, past the
statement timeout, saying whom for, and comes up once the migration is done, applying nothing again; past
``store.migration_wait`` it exits, naming the key. Real ``serve`` processes, a real PostgreSQL."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from gateway.store.postgres.schema import MIGRATION_LOCK, MIGRATIONS
from tests.conftest import CertFiles, RecordingUpstream
from tests.pgserver import PostgresServer
from tests.routes.adminapi import DEMO
from tests.run.conftest import Launch, client, launch, run_cli, write_config
from tests.store.postgres.test_schema import migrated_before

__all__ = ["client", "launch"]  # the fixtures

pytestmark = pytest.mark.slow

STATEMENT_TIMEOUT = 0.5
HOLDER = "a node migrating"
"""The application name of the test's connection that holds the migration lock, as a migrating node would."""
# The waiting gateway's backend, blocked on the advisory lock: for how many seconds (server clock), if it is.
WAITING = (
    "SELECT extract(epoch FROM clock_timestamp() - query_start) FROM pg_stat_activity"
    " WHERE wait_event_type = 'Lock' AND wait_event = 'advisory' AND datname = current_database()"
)


@pytest.fixture
def dsn(postgres: PostgresServer) -> str:
    """A new, empty database."""
    return postgres.database()


@pytest.fixture
async def holder(dsn: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection to ``dsn`` that holds the migration lock, as a node in the middle of migrating."""
    connection = await asyncpg.connect(dsn, server_settings={"application_name": HOLDER})
    await connection.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK)
    yield connection
    await connection.close()


def config(cert_files: CertFiles, tmp_path: Path, upstream: RecordingUpstream, dsn: str, **store: Any) -> str:
    """The demo's config on ``dsn`` with a short statement timeout, as a file."""
    store = {**DEMO["store"], "backend": "postgres", "dsn": dsn, "statement_timeout": STATEMENT_TIMEOUT, **store}
    return str(write_config(cert_files, tmp_path, upstream, **{**DEMO, "store": store}))


def log_messages(stderr: str) -> list[str]:
    """The messages of the JSON log records in a process's stderr, in order."""
    return [json.loads(line)["msg"] for line in stderr.splitlines() if line.startswith("{")]


async def test_a_node_started_during_a_migration_waits_past_the_statement_timeout_then_comes_up(
    launch: Launch,
    client: aiohttp.ClientSession,
    holder: asyncpg.Connection,
    dsn: str,
    cert_files: CertFiles,
    tmp_path: Path,
    upstream: RecordingUpstream,
) -> None:
    path = config(cert_files, tmp_path, upstream, dsn)
    starting = asyncio.ensure_future(launch(["serve", "-c", path], cwd=tmp_path))
    # Blocked on the lock for four statement timeouts (the server's own clock says so), and not gone.
    while (await holder.fetchval(WAITING) or 0) <= 4 * STATEMENT_TIMEOUT:
        if starting.done():  # it gave up (or came up through a lock it does not hold): its stderr says which
            await starting
            raise AssertionError("the node came up while another held the migration lock")
        await asyncio.sleep(0.05)
    await migrated_before(holder, len(MIGRATIONS) + 1)  # the other node's migration, every version
    await holder.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK)

    served = await starting
    async with client.get(served.url / "readyz") as ready:
        assert ready.status == 200, await ready.text()
    # Each version once, every one as the other node recorded it (without a time): none applied again here.
    applied = await holder.fetch("SELECT version, applied_at FROM schema_migrations ORDER BY version")
    assert [tuple(row) for row in applied] == [(number, None) for number in range(1, len(MIGRATIONS) + 1)]
    messages = log_messages(served.stderr)
    waiting = next(message for message in messages if message.startswith("another node is migrating the store"))
    assert f"server pid {holder.get_server_pid()}, {HOLDER}" in waiting
    assert "store.migration_wait" in waiting
    assert messages.index(waiting) < messages.index("listening")


async def test_a_node_waiting_past_migration_wait_exits_naming_the_key(
    holder: asyncpg.Connection, dsn: str, cert_files: CertFiles, tmp_path: Path, upstream: RecordingUpstream
) -> None:
    path = config(cert_files, tmp_path, upstream, dsn, migration_wait=1)
    code, _, stderr = await run_cli("serve", "-c", path, cwd=tmp_path)
    assert code == 1, stderr
    last = log_messages(stderr)[-1]
    assert last.startswith("cannot start: another node's migration of the store still runs after 1 s")
    assert f"server pid {holder.get_server_pid()}, {HOLDER}" in last
    assert last.endswith("raise store.migration_wait to wait longer")
    assert await holder.fetchval("SELECT to_regclass('tickets')") is None  # it migrated nothing

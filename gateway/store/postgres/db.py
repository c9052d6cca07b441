"""The PostgreSQL backend's connection side: the bounded pool, what counts as the database being away, and
the shared ``?`` SQL numbered for asyncpg."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from functools import lru_cache
from typing import Any

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from gateway.errors import StoreUnavailable

log = logging.getLogger(__name__)
Connection = asyncpg.Connection | PoolConnectionProxy
"""A connection of its own or one lent by the pool."""

# Everything that says "the database cannot answer now" rather than "this statement is wrong": a refused or
# lost connection, a server shutting down or starting, a statement past its timeout, a standby after a
# failover (read-only), no connection free within the timeout. Each becomes StoreUnavailable (503).
AWAY: tuple[type[BaseException], ...] = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.OperatorInterventionError,
    asyncpg.QueryCanceledError,
    asyncpg.ReadOnlySQLTransactionError,
    asyncpg.InsufficientResourcesError,
    asyncpg.InternalClientError,  # a connection being torn down by the server's shutdown: "another operation"
)


# Of those, the ones that say the connection itself is gone (the server restarted, a failover): every other
# pooled connection is then as dead, so all are replaced, and a read may be tried once more on a fresh one.
LOST: tuple[type[BaseException], ...] = (
    ConnectionError,
    asyncpg.ConnectionDoesNotExistError,
    asyncpg.AdminShutdownError,
    asyncpg.CannotConnectNowError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
)


@lru_cache(maxsize=512)
def numbered(sql: str) -> str:
    """``sql`` with its ``?`` placeholders numbered ``$1``, ``$2``... (the shared clauses are written with ``?``)."""
    count = iter(range(1, 10_000))
    return re.sub(r"\?", lambda _: f"${next(count)}", sql)


class Sql:
    """One connection, spoken to in ``?`` SQL: what the store's write functions take."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection

    async def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        """Every row."""
        return await self.connection.fetch(numbered(sql), *args)

    async def row(self, sql: str, *args: Any) -> asyncpg.Record | None:
        """The first row, or None."""
        return await self.connection.fetchrow(numbered(sql), *args)

    async def value(self, sql: str, *args: Any) -> Any:
        """The first column of the first row, or None."""
        return await self.connection.fetchval(numbered(sql), *args)

    async def execute(self, sql: str, *args: Any) -> str:
        """Run a statement; its status (``DELETE 1``)."""
        return await self.connection.execute(numbered(sql), *args)

    async def many(self, sql: str, args: Sequence[Sequence[Any]]) -> None:
        """Run a statement once for each set of arguments."""
        await self.connection.executemany(numbered(sql), args)


@asynccontextmanager
async def reachable(pool: asyncpg.Pool | None = None) -> AsyncIterator[None]:
    """Turn the database being away (``AWAY``) into StoreUnavailable, naming the cause only in the log;
    when the connection was lost, the pool's connections are all replaced on their next use."""
    try:
        yield
    except AWAY as exc:
        log.warning("store unavailable: %s: %s", type(exc).__name__, exc)
        if pool is not None and isinstance(exc, LOST):
            await pool.expire_connections()
        raise StoreUnavailable("the database cannot be reached") from exc


async def create_pool(dsn: str, *, size: int, statement_timeout: float) -> asyncpg.Pool:
    """A pool of at most ``size`` connections to ``dsn``; each statement and wait bounded by the timeout."""
    async with reachable():
        pool = await asyncpg.create_pool(
            dsn,
            min_size=1,
            max_size=size,
            timeout=statement_timeout,  # connecting
            command_timeout=statement_timeout,  # the client's own bound, should the server's not be met
            server_settings={
                "statement_timeout": str(int(statement_timeout * 1000)),
                "idle_in_transaction_session_timeout": str(int(statement_timeout * 4000)),
                "application_name": "portal-gateway",
            },
        )
    return pool

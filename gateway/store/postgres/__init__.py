"""The PostgreSQL backend of the store: several gateways on one database (asyncpg, loaded only when configured)."""

from gateway.store.postgres.store import PostgresStore

__all__ = ["PostgresStore"]

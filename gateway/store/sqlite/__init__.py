"""The SQLite backend of the store (the default)."""

from gateway.store.sqlite.store import SQLiteStore

__all__ = ["SQLiteStore"]

"""The portal's store: an async interface over the embedded SQLite database (the default backend)."""

from gateway.store.sqlite import SQLiteStore

__all__ = ["SQLiteStore"]

"""The store contract: every test here runs against each backend, opened the way the gateway opens it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.config import StoreBackend, StoreConfig
from gateway.store.protocol import Store, open_store
from tests.pgserver import PostgresServer

BACKENDS: tuple[StoreBackend, ...] = ("sqlite", "postgres")
"""Every backend ``open_store`` knows; a new one adds itself here and must pass the whole contract."""


@pytest.fixture(params=BACKENDS)
def store_config(request: pytest.FixtureRequest, tmp_path: Path) -> StoreConfig:
    """A fresh, empty store of each backend (for postgres, a new database on the session's server)."""
    if request.param == "postgres":
        server: PostgresServer = request.getfixturevalue("postgres")
        return StoreConfig(backend="postgres", dsn=server.database())
    return StoreConfig(backend=request.param, path=tmp_path / "portal.db")


@pytest.fixture
async def store(store_config: StoreConfig) -> AsyncIterator[Store]:
    """The store, through ``open_store`` as the app and the CLI open it; closed afterwards."""
    opened = await open_store(store_config)
    yield opened
    await opened.close()

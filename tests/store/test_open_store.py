"""``store.backend`` is read: ``open_store`` opens the backend it names; postgres needs its DSN, a secret."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import asyncpg
import pytest
import yaml

from gateway.config import StoreConfig, load_config
from gateway.errors import ConfigError, StoreUnavailable
from gateway.store.postgres.db import Sql
from gateway.store.postgres.schema import MIGRATIONS
from gateway.store.postgres.store import PostgresStore
from gateway.store.protocol import open_store
from tests.conftest import CertFiles, config_dict
from tests.pgserver import PostgresServer


def load_with_store(tmp_path: Path, cert_files: CertFiles, store: dict[str, object]) -> StoreConfig:
    raw = config_dict(cert_files, tmp_path, "http://127.0.0.1:9") | {"store": store}
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return load_config(path, environ={}).store


def test_postgres_needs_a_dsn(tmp_path: Path, cert_files: CertFiles) -> None:
    with pytest.raises(ConfigError) as caught:
        load_with_store(tmp_path, cert_files, {"backend": "postgres"})
    assert str(caught.value) == "store: backend postgres needs dsn (env:NAME or file:PATH)"


def test_a_dsn_that_is_not_a_url_is_a_config_error_that_shows_no_password(
    tmp_path: Path, cert_files: CertFiles
) -> None:
    (tmp_path / "dsn").write_text("host=db.internal user=portal password=hunter2-password dbname=portal\n")
    with pytest.raises(ConfigError) as caught:
        load_with_store(tmp_path, cert_files, {"backend": "postgres", "dsn": f"file:{tmp_path / 'dsn'}"})
    assert str(caught.value) == "store: dsn must be a postgresql:// URL (a libpq key=value string is not read)"


def test_the_dsn_is_a_secret_read_from_the_environment_or_a_file(tmp_path: Path, cert_files: CertFiles) -> None:
    dsn = "postgresql://portal:hunter2-password@db.internal:5432/portal?target_session_attrs=read-write"
    (tmp_path / "dsn").write_text(dsn + "\n", encoding="utf-8")
    config = load_with_store(tmp_path, cert_files, {"backend": "postgres", "dsn": f"file:{tmp_path / 'dsn'}"})
    assert config.dsn is not None
    assert config.dsn.get_secret_value() == dsn
    assert "hunter2" not in repr(config)  # never printed with the config
    with pytest.raises(ConfigError) as caught:
        load_with_store(tmp_path, cert_files, {"backend": "postgres", "dsn": "env:PORTAL_DB_DSN"})
    assert str(caught.value) == "store.dsn: environment variable PORTAL_DB_DSN is not set"


def test_an_unknown_backend_names_the_ones_there_are(tmp_path: Path, cert_files: CertFiles) -> None:
    with pytest.raises(ConfigError) as caught:
        load_with_store(tmp_path, cert_files, {"backend": "mysql"})
    assert str(caught.value).startswith("store.backend: ")
    assert "'sqlite'" in str(caught.value)


async def test_open_store_opens_the_configured_sqlite_file(tmp_path: Path, cert_files: CertFiles) -> None:
    config = load_with_store(tmp_path, cert_files, {"backend": "sqlite", "path": str(tmp_path / "db" / "p.db")})
    store = await open_store(config)
    try:
        await store.ping()
        assert await store.contacts() == []
    finally:
        await store.close()
    assert (tmp_path / "db" / "p.db").is_file()


async def test_open_store_opens_postgres_and_nodes_starting_at_once_migrate_it_once(postgres: PostgresServer) -> None:
    """Eight gateways starting together on an empty database: each opens it, the schema is made once."""
    config = StoreConfig(backend="postgres", dsn=postgres.database())
    stores = await asyncio.gather(*(open_store(config) for _ in range(8)))
    try:
        for store in stores:
            await store.ping()
        assert await stores[0].contacts() == []
        connection = await asyncpg.connect(config.dsn.get_secret_value() if config.dsn else "")
        try:
            versions = [row[0] for row in await connection.fetch("SELECT version FROM schema_migrations ORDER BY 1")]
        finally:
            await connection.close()
        assert versions == list(range(1, len(MIGRATIONS) + 1))
    finally:
        await asyncio.gather(*(store.close() for store in stores))


async def test_a_database_that_cannot_be_reached_is_unavailable_not_a_crash(postgres: PostgresServer) -> None:
    config = StoreConfig(
        backend="postgres", dsn=f"postgresql://portal@127.0.0.1:{_closed_port()}/x", statement_timeout=1
    )
    with pytest.raises(StoreUnavailable):
        await open_store(config)


async def test_several_hosts_with_target_session_attrs_find_the_one_that_answers(postgres: PostgresServer) -> None:
    """A DSN naming a host that is down before the primary (as after a failover): the gateway opens the primary."""
    database = postgres.database().rsplit("/", 1)[1]
    hosts = f"127.0.0.1:{_closed_port()},127.0.0.1:{postgres.port}"
    config = StoreConfig(
        backend="postgres", dsn=f"postgresql://portal@{hosts}/{database}?target_session_attrs=read-write"
    )
    store = await open_store(config)
    try:
        await store.ping()  # answers, and takes writes: not a standby
        assert await store.acquire_lease("sync", "node-a", 30, 0.0)
    finally:
        await store.close()


async def test_no_connection_free_within_the_statement_timeout_is_unavailable(postgres: PostgresServer) -> None:
    """Every pooled connection busy past ``statement_timeout``: the next request gets its 503, it does not queue."""
    store = await PostgresStore.open(postgres.database(), pool_size=1, statement_timeout=1)
    held, release = asyncio.Event(), asyncio.Event()

    async def hold(sql: Sql) -> None:
        held.set()
        await release.wait()

    holder = asyncio.create_task(store.transaction(hold))
    await held.wait()
    try:
        with pytest.raises(StoreUnavailable):
            await store.contacts()
    finally:
        release.set()
        await holder
        await store.close()


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])

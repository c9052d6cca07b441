"""``store.backend`` is read: ``open_store`` opens the backend it names, and a backend not there yet is refused."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from gateway.config import StoreConfig, load_config
from gateway.errors import ConfigError
from gateway.store.protocol import open_store
from tests.conftest import CertFiles, config_dict


def load_with_store(tmp_path: Path, cert_files: CertFiles, store: dict[str, object]) -> StoreConfig:
    raw = config_dict(cert_files, tmp_path, "http://127.0.0.1:9") | {"store": store}
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return load_config(path, environ={}).store


def test_postgres_is_refused_until_its_backend_exists(tmp_path: Path, cert_files: CertFiles) -> None:
    with pytest.raises(ConfigError) as caught:
        load_with_store(tmp_path, cert_files, {"backend": "postgres", "path": str(tmp_path / "x.db")})
    assert (
        str(caught.value) == "store.backend: the postgres backend is not available yet; the one backend today is sqlite"
    )


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

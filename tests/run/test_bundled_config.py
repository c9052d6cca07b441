"""The bundled config bootstraps dev secrets and a dev certificate authority on first run, as a real OS process."""

from __future__ import annotations

import signal
import ssl
import stat
from pathlib import Path

import aiohttp
import pytest
from yarl import URL

from tests.conftest import (
    DOMAIN,
)
from tests.run.conftest import (
    CLI_PREFIX,
    Launch,
    base_env,
)

pytestmark = pytest.mark.slow


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under ``folder``: its bytes and modification time."""
    return {
        str(path.relative_to(folder)): (path.read_bytes(), path.stat().st_mtime_ns)
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


async def _healthz(port: int, ca: Path, host: str, server_hostname: str | None = None) -> int:
    context = ssl.create_default_context(cafile=str(ca))
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        url = URL.build(scheme="https", host=host, port=port, path="/healthz")
        async with session.get(url, ssl=context, server_hostname=server_hostname) as response:
            assert (await response.json()) == {"status": "ok"}
            return int(response.status)


async def test_bundled_config_bootstraps_dev_secrets_and_certificates(launch: Launch, tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    audit = tmp_path / "logs" / "audit.jsonl"
    env = base_env(
        PORTAL_GATEWAY__LISTEN__HTTPS="127.0.0.1:0",
        PORTAL_GATEWAY__LISTEN__HTTP="127.0.0.1:0",
        PORTAL_GATEWAY__AUDIT__PATH=str(audit),
    )

    first = await launch(["serve"], cwd=run, env=env)
    secrets, certs = run / "dev-secrets", run / "certs"
    assert _mode(secrets) == 0o700
    assert sorted(path.name for path in secrets.iterdir()) == ["MESSENGER_API_SECRET", "PORTAL_ADMIN_TOKEN"]
    for path in secrets.iterdir():
        assert _mode(path) == 0o600, path
        assert len(path.read_text(encoding="utf-8").strip()) >= 32, path
    for name in ("dev-ca.pem", "dev-cert.pem", "dev-key.pem"):
        assert (certs / name).is_file(), name
    assert _mode(certs / "dev-key.pem") == 0o600
    ca = certs / "dev-ca.pem"
    ca_lines = [line for line in first.lines if line.startswith(CLI_PREFIX) and "dev CA" in line]
    assert ca_lines, first.stderr
    assert "certs/dev-ca.pem" in ca_lines[0], ca_lines
    assert any("generated dev secrets" in line for line in first.lines), first.stderr

    assert await _healthz(first.https_port, ca, "localhost") == 200
    assert await _healthz(first.https_port, ca, "127.0.0.1", server_hostname=DOMAIN) == 200
    with pytest.raises(aiohttp.ClientConnectorCertificateError):
        await _healthz(first.https_port, ca, "127.0.0.1", server_hostname="other.example.com")

    before = {**_snapshot(secrets), **_snapshot(certs)}
    first.proc.send_signal(signal.SIGTERM)
    assert await first.wait_exit() == 0, first.stderr

    second = await launch(["serve"], cwd=run, env=env)
    assert {**_snapshot(secrets), **_snapshot(certs)} == before
    assert not any("generated" in line for line in second.lines), second.stderr
    assert await _healthz(second.https_port, ca, "localhost") == 200

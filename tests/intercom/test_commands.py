"""``portal-gateway sync`` and the lines ``check`` adds for the connector, as real subprocesses."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

from gateway.config import StoreConfig
from gateway.store.protocol import open_store
from tests.conftest import CertFiles
from tests.intercom.conftest import RunningFake
from tests.intercom.fake import ADMIN_ID, CLIENT_SECRET, TOKEN
from tests.intercom.mirror import actual, expected
from tests.intercom.test_sync import populate
from tests.test_cli import cli_env, write_config


def connector(intercom: RunningFake, tmp_path: Path, **overrides: Any) -> dict[str, Any]:
    token = tmp_path / "intercom-token"
    token.write_text(str(overrides.pop("token", TOKEN)))
    return {
        "enabled": True,
        "api_url": str(intercom.url).rstrip("/"),
        "access_token": f"file:{token}",
        "admin_id": ADMIN_ID,
        **overrides,
    }


async def gateway_cli(tmp_path: Path, *args: str) -> tuple[int, str, str]:
    """``python -m gateway *args`` while the fake keeps serving on this loop: exit code, stdout, stderr."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", *args, cwd=tmp_path, env=cli_env(),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 60)
    return process.returncode or 0, out.decode(), err.decode()


async def test_sync_mirrors_the_workspace_with_json_log_lines_off_a_terminal(
    intercom: RunningFake, cert_files: CertFiles, tmp_path: Path
) -> None:
    populate(intercom.fake)
    config = write_config(cert_files, tmp_path, intercom=connector(intercom, tmp_path))
    code, _, err = await gateway_cli(tmp_path, "sync", "-c", str(config))
    assert code == 0, err
    assert "portal-gateway: synced 2 ticket_states, 13 companies, 2 contacts, 3 tickets; 0 skipped" in err
    assert '"msg": "intercom sync: 3 tickets written"' in err  # stderr is no terminal: JSON lines
    store = await open_store(StoreConfig(path=tmp_path / "portal.db"))
    try:
        assert await actual(store) == expected(intercom.fake)
    finally:
        await store.close()
    assert TOKEN not in err


async def test_sync_with_a_refused_token_says_so_and_fails(
    intercom: RunningFake, cert_files: CertFiles, tmp_path: Path
) -> None:
    config = write_config(cert_files, tmp_path, intercom=connector(intercom, tmp_path, token="revoked-token"))
    code, _, err = await gateway_cli(tmp_path, "sync", "-c", str(config))
    assert code == 1
    assert "Intercom refused the access token (401); check intercom.access_token" in err
    assert "revoked-token" not in err


async def test_sync_without_the_connector_is_a_config_error(cert_files: CertFiles, tmp_path: Path) -> None:
    code, _, err = await gateway_cli(tmp_path, "sync", "-c", str(write_config(cert_files, tmp_path)))
    assert code == 2
    assert "intercom.enabled is false" in err


async def test_check_says_whether_the_token_works_and_the_secret_is_set(
    intercom: RunningFake, cert_files: CertFiles, tmp_path: Path
) -> None:
    config = write_config(cert_files, tmp_path, intercom=connector(intercom, tmp_path))
    _, out, _ = await gateway_cli(tmp_path, "check", "-c", str(config))
    assert "PASS  Intercom access token: works: Fake Admin of Fake workspace" in out
    assert "FAIL  Intercom webhook secret: not set" in out
    secret = tmp_path / "client-secret"
    secret.write_text(CLIENT_SECRET)
    overrides = connector(intercom, tmp_path, token="wrong", webhook_secret=f"file:{secret}")
    config = write_config(cert_files, tmp_path, intercom=overrides)
    code, out, _ = await gateway_cli(tmp_path, "check", "-c", str(config))
    assert code == 1
    assert "FAIL  Intercom access token: GET /me: Intercom refused the access token (401)" in out
    assert "PASS  Intercom webhook secret: set" in out

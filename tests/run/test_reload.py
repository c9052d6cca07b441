"""The gateway as a real OS process on SIGHUP: it reopens the audit log (one chain across the rotation), keeps its
counters, serves a renewed certificate and an edited config, and keeps the running one when the new one is bad."""

from __future__ import annotations

import asyncio
import hashlib
import json
import signal
import ssl
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import trustme
from yarl import URL

from tests.conftest import (
    DOMAIN,
    CertFiles,
    RecordingUpstream,
    audit_records,
)
from tests.run.conftest import (
    GatewayProcess,
    Launch,
    proxied_count,
    run_cli,
    served_certificate,
    status_for_host,
    wait_for_audit,
    write_config,
)

pytestmark = pytest.mark.slow


async def _request_id(client: aiohttp.ClientSession, url: URL) -> str:
    async with client.get(url) as response:
        assert response.status == 200
        await response.read()
        return response.headers["X-Request-Id"]


async def test_sighup_reopens_the_audit_log(
    served: GatewayProcess, client: aiohttp.ClientSession, tmp_path: Path
) -> None:
    audit = tmp_path / "audit.jsonl"
    rotated = tmp_path / "audit.jsonl.1"
    first = await _request_id(client, served.url / "before-rotation")
    await wait_for_audit(audit, {first})

    audit.rename(rotated)
    served.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 5
    while not audit.exists():  # the writer thread reopens after the signal reaches the loop
        assert time.monotonic() < deadline, f"SIGHUP did not recreate {audit}; stderr:\n{served.stderr}"
        assert served.proc.returncode is None, f"SIGHUP ended the gateway; stderr:\n{served.stderr}"
        await asyncio.sleep(0.02)

    second = await _request_id(client, served.url / "after-rotation")
    new_records = await wait_for_audit(audit, {second})
    old_records = audit_records(rotated)
    assert [(r["request_id"], r["path"]) for r in new_records] == [(second, "/after-rotation")]
    assert [(r["request_id"], r["path"]) for r in old_records] == [(first, "/before-rotation")]
    assert served.proc.returncode is None
    # One chain, carried from the old file into the new one: its first record there names the old one's last.
    assert new_records[0]["chain"]["prev"] == hashlib.sha256(rotated.read_bytes().rstrip(b"\n")).hexdigest()
    code, output, errors = await run_cli("audit", "verify", str(rotated), str(audit), cwd=tmp_path)
    assert (code, output.splitlines()[0]) == (0, "ok: 2 lines, 1 chains, every line in place"), output + errors


async def test_sighup_keeps_the_counters(served: GatewayProcess, client: aiohttp.ClientSession) -> None:
    """A reload builds a new app; Prometheus must not see the gateway's counters go back to zero."""

    async def proxied() -> float:
        async with client.get(served.url / "metrics") as response:
            return proxied_count(await response.text())

    for number in range(3):
        await _request_id(client, served.url / f"before-{number}")
    assert await proxied() == 3
    served.proc.send_signal(signal.SIGHUP)
    await _wait_for_log(served, "reloaded")
    await _request_id(client, served.url / "after")
    assert await proxied() == 4


async def _wait_for_log(served: GatewayProcess, message: str, seconds: float = 10.0) -> dict[str, Any]:
    """The first JSON log record whose message starts with ``message``, waiting for it to be written."""
    deadline = time.monotonic() + seconds
    while True:
        for line in served.lines:
            if line.startswith("{") and (record := json.loads(line))["msg"].startswith(message):
                return dict(record)
        assert time.monotonic() < deadline, f"no {message!r} log line; stderr:\n{served.stderr}"
        assert served.proc.returncode is None, f"the gateway exited; stderr:\n{served.stderr}"
        await asyncio.sleep(0.05)


async def test_sighup_reloads_the_certificate_and_the_configuration(
    launch: Launch,
    own_certificate: CertFiles,
    ca: trustme.CA,
    client_ssl: ssl.SSLContext,
    tmp_path: Path,
    upstream: RecordingUpstream,
    client: aiohttp.ClientSession,
) -> None:
    """Class 7, lifecycle: SIGHUP serves a renewed certificate and an edited config without a restart."""
    config = write_config(own_certificate, tmp_path, upstream)
    served = await launch(["serve", "-c", str(config)], cwd=tmp_path)
    before = await asyncio.to_thread(served_certificate, served.https_port, client_ssl)
    assert await status_for_host(client, served, "reloaded.example") == 421

    renewed = ca.issue_cert("localhost", "127.0.0.1", DOMAIN)
    renewed.cert_chain_pems[0].write_to_path(str(own_certificate.cert))
    renewed.private_key_pem.write_to_path(str(own_certificate.key))
    write_config(own_certificate, tmp_path, upstream, listen={"allowed_hosts": ["127.0.0.1", "reloaded.example"]})
    served.proc.send_signal(signal.SIGHUP)
    await _wait_for_log(served, "reloaded")

    after = await asyncio.to_thread(served_certificate, served.https_port, client_ssl)
    assert after != before
    assert after == ssl.PEM_cert_to_DER_cert(renewed.cert_chain_pems[0].bytes().decode())
    assert await status_for_host(client, served, "reloaded.example") == 200
    assert served.proc.returncode is None


@pytest.mark.parametrize("breakage", ["bad-key", "bad-yaml", "bad-certificate", "listen-change"])
async def test_a_bad_configuration_on_sighup_keeps_the_running_one_and_says_why(
    launch: Launch,
    own_certificate: CertFiles,
    client_ssl: ssl.SSLContext,
    tmp_path: Path,
    upstream: RecordingUpstream,
    client: aiohttp.ClientSession,
    breakage: str,
) -> None:
    """Class 7, lifecycle: a reload that cannot be served is refused; the old config and certificate go on."""
    config = write_config(own_certificate, tmp_path, upstream)
    served = await launch(["serve", "-c", str(config)], cwd=tmp_path)
    before = await asyncio.to_thread(served_certificate, served.https_port, client_ssl)
    reason = {
        "bad-key": "upstream.read_timeout",
        "bad-yaml": "not valid YAML",
        "bad-certificate": "certificate",
        "listen-change": "listen",
    }[breakage]
    if breakage == "bad-key":
        write_config(own_certificate, tmp_path, upstream, upstream={"read_timeout": -1})
    elif breakage == "bad-yaml":
        config.write_text("listen: [unclosed\n", encoding="utf-8")
    elif breakage == "bad-certificate":
        own_certificate.cert.write_text("-----BEGIN CERTIFICATE-----\nnot one\n-----END CERTIFICATE-----\n")
    else:
        write_config(own_certificate, tmp_path, upstream, listen={"http": None})
    served.proc.send_signal(signal.SIGHUP)
    record = await _wait_for_log(served, "reload refused")
    assert record["level"] == "error"
    assert reason in record["msg"], record

    assert await status_for_host(client, served, DOMAIN) == 200
    assert await asyncio.to_thread(served_certificate, served.https_port, client_ssl) == before
    assert served.proc.returncode is None

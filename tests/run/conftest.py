"""The gateway as a real OS process: ``python -m gateway serve`` launched with its stderr read, a config on
disk, and the helpers this folder's process tests share (the ``audit`` command, the served certificate, waits).

Everything in-process tests cannot see is checked by them: memory (test_memory), SIGTERM (test_signals),
SIGHUP (test_reload), the ``audit`` command on what ``serve`` wrote (test_audit_command), stderr
(test_logs), the bundled config's first run (test_bundled_config) and worker processes (test_workers).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import socket
import ssl
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import psutil  # no types-psutil in the test extras
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from yarl import URL

from tests.conftest import (
    DOMAIN,
    CertFiles,
    Leaks,
    RecordingUpstream,
    audit_records,
    config_dict,
    deep_merge,
)

REPO = Path(__file__).resolve().parents[2]
STARTUP_TIMEOUT = 20.0
EXIT_TIMEOUT = 5.0
MiB = 1024 * 1024
CLI_PREFIX = "portal-gateway:"
PYTHON_M_GATEWAY = (sys.executable, "-m", "gateway")


@dataclass
class GatewayProcess:
    """One ``python -m gateway serve`` process and everything it wrote to stderr."""

    proc: asyncio.subprocess.Process
    lines: list[str] = field(default_factory=list)
    listening: dict[str, Any] | None = None
    drain: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def https_port(self) -> int:
        assert self.listening is not None
        return int(self.listening["https"])

    @property
    def http_port(self) -> int:
        assert self.listening is not None
        return int(self.listening["http"])

    @property
    def url(self) -> URL:
        return URL.build(scheme="https", host="127.0.0.1", port=self.https_port)

    @property
    def stderr(self) -> str:
        return "\n".join(self.lines)

    async def wait_exit(self, seconds: float = EXIT_TIMEOUT) -> int:
        """The exit code, failing the test when the process outlives ``seconds``."""
        try:
            code = await asyncio.wait_for(self.proc.wait(), seconds)
        except TimeoutError:
            raise AssertionError(f"gateway still running {seconds} s later; stderr:\n{self.stderr}") from None
        if self.drain is not None:
            await self.drain
        return code


Launch = Callable[..., Awaitable[GatewayProcess]]


async def _drain_stderr(gateway: GatewayProcess, started: asyncio.Event) -> None:
    """Keep reading stderr so the pipe never fills; note the ``listening`` line when it comes."""
    stream = gateway.proc.stderr
    assert stream is not None
    async for raw in stream:
        line = raw.decode("utf-8", errors="replace").rstrip("\n")
        gateway.lines.append(line)
        if gateway.listening is None and line.startswith("{"):
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if isinstance(record, dict) and record.get("msg") == "listening":
                    gateway.listening = record
                    started.set()
    started.set()  # EOF: the process is gone; the waiter reports why


def base_env(*, source_tree: bool = True, **overrides: str) -> dict[str, str]:
    """The test's environment without secrets or gateway overrides of its own, plus ``overrides``;
    the source tree on PYTHONPATH, or (``source_tree=False``) no PYTHONPATH at all."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("PORTAL_GATEWAY__")
        and name not in ("MESSENGER_API_SECRET", "PORTAL_ADMIN_TOKEN", "PYTHONPATH")
    }
    if source_tree:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    env.update(overrides)
    return env


@pytest.fixture
async def launch(leaks: Leaks) -> AsyncIterator[Launch]:
    """Start gateway processes and wait for them to listen; every one is killed after the test,
    and its stderr checked for planted values."""
    started: list[GatewayProcess] = []

    async def run(
        args: list[str], cwd: Path, env: Mapping[str, str] | None = None, program: Sequence[str] = PYTHON_M_GATEWAY
    ) -> GatewayProcess:
        proc = await asyncio.create_subprocess_exec(
            *program,
            *args,
            cwd=cwd,
            env=dict(env) if env is not None else base_env(),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        gateway = GatewayProcess(proc)
        started.append(gateway)
        ready = asyncio.Event()
        gateway.drain = asyncio.create_task(_drain_stderr(gateway, ready))
        try:
            await asyncio.wait_for(ready.wait(), STARTUP_TIMEOUT)
        except TimeoutError:
            raise AssertionError(f"no 'listening' line within {STARTUP_TIMEOUT} s; stderr:\n{gateway.stderr}") from None
        if gateway.listening is None:
            raise AssertionError(f"gateway exited before listening ({proc.returncode}); stderr:\n{gateway.stderr}")
        return gateway

    yield run
    for gateway in started:
        if gateway.proc.returncode is None:
            # Workers first: orphaned by a killed parent, they would hold its stderr open, and this wait, forever.
            with contextlib.suppress(psutil.NoSuchProcess):
                for worker in psutil.Process(gateway.pid).children():
                    with contextlib.suppress(psutil.NoSuchProcess):
                        worker.kill()
            gateway.proc.kill()
        await gateway.proc.wait()
        if gateway.drain is not None:
            await gateway.drain
        leaks.check(f"stderr of gateway process {gateway.pid}", gateway.stderr)


def write_config(cert_files: CertFiles, tmp_path: Path, recorder: RecordingUpstream, **overrides: Any) -> Path:
    """The test config, with ``overrides`` merged in, as a YAML file in ``tmp_path``."""
    path = tmp_path / "config.yaml"
    raw = deep_merge(config_dict(cert_files, tmp_path, str(recorder.url)), overrides)
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


@pytest.fixture
async def served(launch: Launch, cert_files: CertFiles, tmp_path: Path, upstream: RecordingUpstream) -> GatewayProcess:
    """``serve -c config.yaml`` in ``tmp_path``, proxying to the recording upstream."""
    return await launch(["serve", "-c", str(write_config(cert_files, tmp_path, upstream))], cwd=tmp_path)


@pytest.fixture
async def client(client_ssl: ssl.SSLContext) -> AsyncIterator[aiohttp.ClientSession]:
    """A client that trusts the test CA and keeps no cookies."""
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(ssl=client_ssl),
        cookie_jar=aiohttp.DummyCookieJar(),
        timeout=aiohttp.ClientTimeout(total=60),
    ) as session:
        yield session


async def wait_for_audit(path: Path, request_ids: set[str], seconds: float = 5.0) -> list[dict[str, Any]]:
    """The file's records once every one of ``request_ids`` is there (the writer is a thread)."""
    deadline = time.monotonic() + seconds
    while True:
        records = audit_records(path)
        if request_ids <= {record["request_id"] for record in records}:
            return records
        if time.monotonic() > deadline:
            raise AssertionError(f"audit records {request_ids} not in {path} after {seconds} s: {records}")
        await asyncio.sleep(0.02)


async def connection_refused(port: int) -> bool:
    """Whether a new TCP connection to 127.0.0.1:``port`` is refused."""
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except ConnectionRefusedError:
        return True
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return False


def served_certificate(port: int, context: ssl.SSLContext) -> bytes:
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname=DOMAIN) as tls,
    ):
        certificate = tls.getpeercert(binary_form=True)
        assert certificate is not None
        return certificate


async def status_for_host(client: aiohttp.ClientSession, served: GatewayProcess, host: str) -> int:
    async with client.get(served.url / "articles", headers={"Host": host}) as response:
        await response.read()
        return response.status


@pytest.fixture
def own_certificate(cert_files: CertFiles, tmp_path: Path) -> CertFiles:
    """A copy of the test certificate in ``tmp_path``, free to be replaced by the test."""
    files = CertFiles(cert=tmp_path / "cert.pem", key=tmp_path / "key.pem", ca=cert_files.ca)
    shutil.copy(cert_files.cert, files.cert)
    shutil.copy(cert_files.key, files.key)
    return files


async def run_cli(
    *args: str, cwd: Path, env: Mapping[str, str] | None = None, program: Sequence[str] = PYTHON_M_GATEWAY
) -> tuple[int, str, str]:
    """``python -m gateway ARGS`` (or ``program ARGS``): exit code, stdout, stderr."""
    proc = await asyncio.create_subprocess_exec(
        *program,
        *args,
        cwd=cwd,
        env=dict(env) if env is not None else base_env(),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return proc.returncode, stdout.decode(), stderr.decode()


def serving(pid: int, port: int) -> int:
    """How many established connections the process ``pid`` holds on local ``port``."""
    return sum(
        1
        for connection in psutil.Process(pid).net_connections("tcp")
        if connection.laddr and connection.laddr.port == port and connection.status == psutil.CONN_ESTABLISHED
    )


def proxied_count(exposition: str) -> float:
    """``gateway_requests_total`` of the catch-all proxy route, every status together."""
    return sum(
        sample.value
        for family in text_string_to_metric_families(exposition)
        if family.name == "gateway_requests"
        for sample in family.samples
        if sample.name == "gateway_requests_total" and sample.labels["route"] == "proxy"
    )

"""The gateway as a real OS process: ``python -m gateway serve`` with signals, pipes and files.

Everything in-process tests cannot see is checked here: memory stays bounded
while large bodies stream both ways, SIGTERM drains in-flight requests and
exits 0, SIGHUP reopens the audit log, stderr carries only JSON log lines,
the ``audit`` command reads what ``serve`` wrote, and the bundled config
bootstraps dev secrets and a dev certificate authority on first run.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import http.client
import json
import os
import shutil
import signal
import socket
import ssl
import stat
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import psutil  # no types-psutil in the test extras
import pytest
import trustme
import yaml
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families
from yarl import URL

from tests.conftest import (
    DEVICE_COOKIE,
    DOMAIN,
    SESSION_COOKIE,
    CertFiles,
    Leaks,
    RecordingUpstream,
    audit_records,
    config_dict,
    deep_merge,
)

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
STARTUP_TIMEOUT = 20.0
EXIT_TIMEOUT = 5.0
MiB = 1024 * 1024
STREAM_MIB = 200  # 200 MiB = 209.7 MB each way
RSS_BUDGET = 64 * MiB
RSS_SAMPLE_SECONDS = 0.05
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


# --- streaming, bounded memory -------------------------------------------------------------


class PeakRSS:
    """The peak resident set size of a process, sampled in the background every 50 ms."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.baseline = self.rss()
        self.peak = self.baseline
        self.samples = 0
        self._task: asyncio.Task[None] | None = None

    async def _sample(self) -> None:
        while True:
            self.peak = max(self.peak, self.rss())
            self.samples += 1
            await asyncio.sleep(RSS_SAMPLE_SECONDS)

    async def __aenter__(self) -> PeakRSS:
        self._task = asyncio.create_task(self._sample())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self.peak = max(self.peak, self.rss())

    def rss(self) -> int:
        return int(self.process.memory_info().rss)

    @property
    def growth(self) -> int:
        return self.peak - self.baseline

    def report(self, direction: str, size: int, seconds: float) -> str:
        return (
            f"{direction}: {size / 1e6:.1f} MB in {seconds:.2f} s; gateway RSS before {self.baseline / MiB:.1f} MiB, "
            f"peak {self.peak / MiB:.1f} MiB, growth {self.growth / MiB:.1f} MiB ({self.samples} samples)"
        )


async def _chunks(count: int) -> AsyncIterator[bytes]:
    """``count`` MiB, made one chunk at a time, never held whole."""
    for index in range(count):
        yield bytes([index % 251]) * MiB


async def _download(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
    response.content_length = STREAM_MIB * MiB
    await response.prepare(request)
    async for chunk in _chunks(STREAM_MIB):
        await response.write(chunk)
    await response.write_eof()
    return response


async def test_large_bodies_stream_both_ways_in_bounded_memory(
    served: GatewayProcess, upstream: RecordingUpstream, client: aiohttp.ClientSession
) -> None:
    upstream.on("/download", _download)
    # Warm up first (TLS, the upstream pool, lazy imports), so the baseline is the gateway at work, not cold.
    async with client.post(served.url / "warmup", data=b"x" * MiB) as warm:
        assert warm.status == 200
        await warm.read()
    total = STREAM_MIB * MiB

    started = time.monotonic()
    async with (
        PeakRSS(served.pid) as upload,
        client.post(served.url / "upload", data=_chunks(STREAM_MIB)) as response,
    ):
        assert response.status == 200
        assert (await response.json())["received"] == total
    upload_seconds = time.monotonic() - started
    assert upstream.last.path == "/upload"
    assert upstream.last.body_size == total
    print(upload.report("upload", total, upload_seconds))

    started = time.monotonic()
    received = 0
    async with PeakRSS(served.pid) as download, client.get(served.url / "download") as response:
        assert response.status == 200
        async for chunk in response.content.iter_chunked(MiB):
            received += len(chunk)
    download_seconds = time.monotonic() - started
    print(download.report("download", received, download_seconds))

    assert received == total
    assert upload.growth < RSS_BUDGET, upload.report("upload", total, upload_seconds)
    assert download.growth < RSS_BUDGET, download.report("download", received, download_seconds)


# --- idle keep-alive connections -----------------------------------------------------------

IDLE_CONNECTIONS = 400
# What an idle kept-alive TLS connection may add to the gateway's RSS. Opened one after another, as here, they
# measure about 47 KiB each on uvloop, CPython's ssl on OpenSSL 3.0 and aiohttp 3.14 (OpenSSL's SSL object and
# memory BIOs alone are some 18 KiB; uvloop's 256 KiB read buffer per connection leaves the heap sparse). The
# bound has room for noise, not for another buffer or a kept body per connection (asyncio's loop costs 290 KiB).
IDLE_BUDGET = 56 * 1024
IDLE_COOKIES = f"{SESSION_COOKIE}=s3ss10n; _ga=GA1.2.3.4; {DEVICE_COOKIE}=d3v1c3; tracking=abc123"


def _open_idle(port: int, context: ssl.SSLContext, count: int) -> list[http.client.HTTPSConnection]:
    """``count`` TLS connections that have each made one proxied request, read the whole answer, and stay open."""
    held = []
    for _ in range(count):
        connection = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=30)
        connection.request("GET", "/articles/idle", headers={"Cookie": IDLE_COOKIES})
        response = connection.getresponse()
        response.read()
        assert response.status == 200, response.status
        held.append(connection)
    return held


async def test_idle_keep_alive_tls_connections_cost_a_bounded_amount_of_memory_each(
    launch: Launch, cert_files: CertFiles, tmp_path: Path, upstream: RecordingUpstream, client_ssl: ssl.SSLContext
) -> None:
    # Kept-alive connections are closed after requests.header_timeout of quiet: long enough to count them all.
    config = write_config(cert_files, tmp_path, upstream, requests={"header_timeout": 120})
    served = await launch(["serve", "-c", str(config)], cwd=tmp_path)
    process = psutil.Process(served.pid)
    # Warm up first (TLS, the upstream pool, the allocators' first arenas), so the baseline is the gateway at work.
    for connection in await asyncio.to_thread(_open_idle, served.https_port, client_ssl, 50):
        connection.close()
    before = int(process.memory_info().rss)
    held = await asyncio.to_thread(_open_idle, served.https_port, client_ssl, IDLE_CONNECTIONS)
    try:
        after = int(process.memory_info().rss)
        assert serving(served.pid, served.https_port) == IDLE_CONNECTIONS, "connections closed before they were counted"
    finally:
        for connection in held:
            connection.close()
    each = (after - before) / IDLE_CONNECTIONS
    print(f"{IDLE_CONNECTIONS} idle TLS connections: +{(after - before) / MiB:.1f} MiB, {each / 1024:.1f} KiB each")
    assert each <= IDLE_BUDGET, f"{each / 1024:.1f} KiB per idle connection, budget {IDLE_BUDGET / 1024:.0f} KiB"


# --- signals ---------------------------------------------------------------------------------

SLOW_BODY = b"slow answer " * 20_000


async def _slow(request: web.Request) -> web.StreamResponse:
    await asyncio.sleep(1.0)
    return web.Response(body=SLOW_BODY, content_type="application/octet-stream")


async def test_sigterm_drains_in_flight_request_refuses_new_ones_and_exits_0(
    served: GatewayProcess, upstream: RecordingUpstream, client: aiohttp.ClientSession
) -> None:
    upstream.on("/slow", _slow)

    async def fetch() -> tuple[int, bytes]:
        async with client.get(served.url / "slow") as response:
            return response.status, await response.read()

    in_flight = asyncio.create_task(fetch())
    deadline = time.monotonic() + 5
    while not any(recorded.path == "/slow" for recorded in upstream.requests):
        assert time.monotonic() < deadline, "the request never reached upstream"
        assert not in_flight.done(), in_flight
        await asyncio.sleep(0.01)

    served.proc.send_signal(signal.SIGTERM)
    refused_at = None
    deadline = time.monotonic() + 0.8  # well inside the upstream's 1 s sleep
    while time.monotonic() < deadline:
        if await connection_refused(served.https_port):
            refused_at = time.monotonic()
            break
        await asyncio.sleep(0.02)
    assert refused_at is not None, "new HTTPS connections still accepted after SIGTERM"
    assert not in_flight.done(), "the in-flight request ended before the listener closed: nothing was drained"
    assert await connection_refused(served.http_port), "the HTTP redirect listener still accepts after SIGTERM"

    status, body = await asyncio.wait_for(in_flight, 5)
    assert status == 200
    assert body == SLOW_BODY
    assert await served.wait_exit() == 0, served.stderr
    assert await connection_refused(served.https_port)
    messages = [json.loads(line)["msg"] for line in served.lines if line.startswith("{")]
    assert "stopped" in messages, served.stderr


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
            return _proxied_count(await response.text())

    for number in range(3):
        await _request_id(client, served.url / f"before-{number}")
    assert await proxied() == 3
    served.proc.send_signal(signal.SIGHUP)
    await _wait_for_log(served, "reloaded")
    await _request_id(client, served.url / "after")
    assert await proxied() == 4


async def test_sigterm_exits_within_the_grace_when_a_request_outlives_it(
    launch: Launch, cert_files: CertFiles, tmp_path: Path, upstream: RecordingUpstream, client: aiohttp.ClientSession
) -> None:
    """Class 7, lifecycle: a request longer than ``listen.shutdown_grace`` does not hold the process past it."""

    async def hangs(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(30)
        return web.Response(text="too late")

    upstream.on("/hangs", hangs)
    config = write_config(cert_files, tmp_path, upstream, listen={"shutdown_grace": 1}, upstream={"read_timeout": 60})
    served = await launch(["serve", "-c", str(config)], cwd=tmp_path)
    in_flight = asyncio.create_task(client.get(served.url / "hangs", headers={"Host": DOMAIN}))
    deadline = time.monotonic() + 5
    while not any(recorded.path == "/hangs" for recorded in upstream.requests):
        assert time.monotonic() < deadline, "the request never reached upstream"
        await asyncio.sleep(0.01)
    stopped_at = time.monotonic()
    served.proc.send_signal(signal.SIGTERM)
    assert await served.wait_exit(1 + EXIT_TIMEOUT) == 0, served.stderr
    assert time.monotonic() - stopped_at < 1 + EXIT_TIMEOUT
    with contextlib.suppress(aiohttp.ClientError):
        (await in_flight).close()


def _served_certificate(port: int, context: ssl.SSLContext) -> bytes:
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname=DOMAIN) as tls,
    ):
        certificate = tls.getpeercert(binary_form=True)
        assert certificate is not None
        return certificate


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


async def _wait_for_logs(served: GatewayProcess, message: str, count: int, seconds: float = 10.0) -> None:
    """Until ``count`` JSON log records' messages start with ``message`` (one from each worker, say)."""
    deadline = time.monotonic() + seconds
    while sum(json.loads(line)["msg"].startswith(message) for line in served.lines if line.startswith("{")) < count:
        assert time.monotonic() < deadline, f"not {count} {message!r} log lines; stderr:\n{served.stderr}"
        assert served.proc.returncode is None, f"the gateway exited; stderr:\n{served.stderr}"
        await asyncio.sleep(0.05)


async def _status_for_host(client: aiohttp.ClientSession, served: GatewayProcess, host: str) -> int:
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
    before = await asyncio.to_thread(_served_certificate, served.https_port, client_ssl)
    assert await _status_for_host(client, served, "reloaded.example") == 421

    renewed = ca.issue_cert("localhost", "127.0.0.1", DOMAIN)
    renewed.cert_chain_pems[0].write_to_path(str(own_certificate.cert))
    renewed.private_key_pem.write_to_path(str(own_certificate.key))
    write_config(own_certificate, tmp_path, upstream, listen={"allowed_hosts": ["127.0.0.1", "reloaded.example"]})
    served.proc.send_signal(signal.SIGHUP)
    await _wait_for_log(served, "reloaded")

    after = await asyncio.to_thread(_served_certificate, served.https_port, client_ssl)
    assert after != before
    assert after == ssl.PEM_cert_to_DER_cert(renewed.cert_chain_pems[0].bytes().decode())
    assert await _status_for_host(client, served, "reloaded.example") == 200
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
    before = await asyncio.to_thread(_served_certificate, served.https_port, client_ssl)
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

    assert await _status_for_host(client, served, DOMAIN) == 200
    assert await asyncio.to_thread(_served_certificate, served.https_port, client_ssl) == before
    assert served.proc.returncode is None


# --- the audit command -------------------------------------------------------------------------

SESSION_VALUE = "sess-VALUE-5f1e"
TRACKING_VALUE = "track-VALUE-9c2d"
DROPPED_SET_COOKIE = "upstream-tracker"


async def _sets_cookies(request: web.Request) -> web.StreamResponse:
    response = web.Response(text="cookies set")
    response.headers.add("Set-Cookie", f"{DEVICE_COOKIE}=device-VALUE-77; Path=/")
    response.headers.add("Set-Cookie", f"{DROPPED_SET_COOKIE}=tracker-VALUE-88; Path=/")
    return response


async def _not_found(request: web.Request) -> web.StreamResponse:
    return web.Response(status=404, text="no such article")


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


def report_table(output: str, title: str) -> dict[str, list[int]]:
    """The rows of one table of the ``audit`` report: name -> its counts, left to right."""
    blocks = output.split("\n\n")
    table = next((block for block in blocks if block.startswith(title + " ")), None)
    assert table is not None, f"no {title!r} table in:\n{output}"
    rows: dict[str, list[int]] = {}
    for line in table.splitlines()[1:]:
        name, *counts = line.split()
        rows[name] = [int(count) for count in counts]
    return rows


async def test_audit_command_summarises_what_serve_wrote(
    served: GatewayProcess, upstream: RecordingUpstream, client: aiohttp.ClientSession, tmp_path: Path
) -> None:
    upstream.on("/sets-cookies", _sets_cookies)
    upstream.on("/missing", _not_found)
    both = {"Cookie": f"{SESSION_COOKIE}={SESSION_VALUE}; tracking={TRACKING_VALUE}"}
    session_only = {"Cookie": f"{SESSION_COOKIE}={SESSION_VALUE}"}
    ids: set[str] = set()
    for path, headers, expected in (
        ("/articles/1", both, 200),
        ("/articles/2", both, 200),
        ("/missing", both, 404),
        ("/sets-cookies", session_only, 200),
    ):
        async with client.get(served.url / path.lstrip("/"), headers=headers) as response:
            assert response.status == expected
            await response.read()
            ids.add(response.headers["X-Request-Id"])
            if path == "/sets-cookies":
                passed = [value.partition("=")[0] for value in response.headers.getall("Set-Cookie", ())]
                assert passed == [DEVICE_COOKIE]
    audit = tmp_path / "audit.jsonl"
    await wait_for_audit(audit, ids)

    text = audit.read_text(encoding="utf-8")
    for value in (SESSION_VALUE, TRACKING_VALUE, "device-VALUE-77", "tracker-VALUE-88"):
        assert value not in text, f"cookie value {value} written to the audit log"

    code, output, errors = await run_cli("audit", str(audit), cwd=tmp_path)
    assert code == 0, errors
    lines = output.splitlines()
    assert "requests: 4" in lines, output
    assert "statuses: 200: 3, 404: 1" in lines, output
    cookies = report_table(output, "cookie")
    # columns: received, forwarded, stripped
    assert cookies == {SESSION_COOKIE: [4, 4, 0], "tracking": [3, 0, 3]}, output
    set_cookies = report_table(output, "upstream Set-Cookie")
    # columns: passed, dropped
    assert set_cookies == {DEVICE_COOKIE: [1, 0], DROPPED_SET_COOKIE: [0, 1]}, output
    for value in (SESSION_VALUE, TRACKING_VALUE):
        assert value not in output


async def test_audit_command_on_a_missing_file_fails_clearly(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "audit.jsonl"
    code, output, errors = await run_cli("audit", str(missing), cwd=tmp_path)
    assert code == 1
    assert output == ""
    assert errors.startswith(CLI_PREFIX), errors
    assert str(missing) in errors
    assert "No such file or directory" in errors
    assert "Traceback" not in errors


# --- logs ---------------------------------------------------------------------------------------


async def _cut_short(request: web.Request) -> web.StreamResponse:
    """Promise 1 MiB, send a little, then drop the connection: the gateway logs an upstream error."""
    response = web.StreamResponse()
    response.content_length = MiB
    await response.prepare(request)
    await response.write(b"partial")
    assert request.transport is not None
    request.transport.close()
    return response


async def test_stderr_is_json_lines_after_start_up(
    served: GatewayProcess, upstream: RecordingUpstream, client: aiohttp.ClientSession
) -> None:
    upstream.on("/cut", _cut_short)
    async with client.get(served.url / "fine") as response:
        assert response.status == 200
        await response.read()
    with contextlib.suppress(aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError):
        async with client.get(served.url / "cut") as response:
            await response.read()
    async with client.get(served.url / "healthz") as response:
        assert response.status == 200
    served.proc.send_signal(signal.SIGTERM)
    assert await served.wait_exit() == 0, served.stderr

    assert served.lines, "nothing on stderr"
    first_json = next((i for i, line in enumerate(served.lines) if not line.startswith(CLI_PREFIX)), len(served.lines))
    records = []
    for line in served.lines[first_json:]:
        try:
            record = json.loads(line)
        except ValueError:
            raise AssertionError(f"stderr line is not JSON: {line!r}\nstderr:\n{served.stderr}") from None
        assert isinstance(record, dict), line
        assert {"ts", "level", "msg"} <= record.keys(), line
        datetime.fromisoformat(record["ts"])
        assert record["level"] in {"debug", "info", "warning", "error", "critical"}, line
        records.append(record)
    messages = [record["msg"] for record in records]
    assert messages[0] == "listening", messages
    assert messages[-1] == "stopped", messages
    assert any(record["level"] == "warning" and "upstream" in record["msg"] for record in records), messages


# --- the bundled config ------------------------------------------------------------------------


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


# --- several worker processes ---------------------------------------------------------------------

WORKERS = 2
SPREAD_CONNECTIONS = 40  # the kernel hashes each to a worker: all on one of two has odds of 2 in 2**40
Held = TypeVar("Held")
SCRAPES = 8  # each on a new connection: all on one worker has odds of 2 in 2**8
HOLD_SECONDS = 0.5


@pytest.fixture
async def workers(launch: Launch, cert_files: CertFiles, tmp_path: Path, upstream: RecordingUpstream) -> GatewayProcess:
    """``serve -c config.yaml --workers 2``; the parent says ``listening`` once both workers listen."""
    config = write_config(cert_files, tmp_path, upstream)
    return await launch(["serve", "-c", str(config), "--workers", str(WORKERS)], cwd=tmp_path)


def worker_pids(gateway: GatewayProcess) -> list[int]:
    """The worker processes of a ``--workers`` parent."""
    return [child.pid for child in psutil.Process(gateway.pid).children()]


def serving(pid: int, port: int) -> int:
    """How many established connections the process ``pid`` holds on local ``port``."""
    return sum(
        1
        for connection in psutil.Process(pid).net_connections("tcp")
        if connection.laddr and connection.laddr.port == port and connection.status == psutil.CONN_ESTABLISHED
    )


async def _hold(request: web.Request) -> web.StreamResponse:
    await asyncio.sleep(HOLD_SECONDS)
    return web.Response(text="held")


async def _held_on_every_worker(
    workers: GatewayProcess, upstream: RecordingUpstream, fetch: Callable[[], Coroutine[Any, Any, Held]]
) -> tuple[list[asyncio.Task[Held]], dict[int, int]]:
    """``SPREAD_CONNECTIONS`` requests held by upstream at once, each on a connection of its own; once upstream
    holds them all, the connections each worker serves (every worker must have some)."""
    upstream.on("/hold", _hold)
    in_flight = [asyncio.create_task(fetch()) for _ in range(SPREAD_CONNECTIONS)]
    deadline = time.monotonic() + 5
    while sum(recorded.path == "/hold" for recorded in upstream.requests) < SPREAD_CONNECTIONS:
        assert time.monotonic() < deadline, "the requests never all reached upstream"
        await asyncio.sleep(0.01)
    per_worker = {pid: serving(pid, workers.https_port) for pid in worker_pids(workers)}
    assert all(per_worker.values()), f"a worker took no connection: {per_worker}"
    return in_flight, per_worker


async def test_workers_each_take_connections_and_sigterm_drains_every_one(
    workers: GatewayProcess, upstream: RecordingUpstream, client_ssl: ssl.SSLContext
) -> None:
    pids = worker_pids(workers)
    assert len(pids) == WORKERS, workers.stderr
    assert workers.listening is not None
    assert workers.listening["workers"] == WORKERS

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=client_ssl, limit=0)) as session:

        async def fetch() -> tuple[int, str]:
            async with session.get(workers.url / "hold") as response:
                return response.status, await response.text()

        in_flight, per_worker = await _held_on_every_worker(workers, upstream, fetch)
        assert sum(per_worker.values()) == SPREAD_CONNECTIONS, per_worker

        workers.proc.send_signal(signal.SIGTERM)  # to the parent only: it relays to every worker
        deadline = time.monotonic() + HOLD_SECONDS * 0.8
        while not await connection_refused(workers.https_port):
            assert time.monotonic() < deadline, "new connections still accepted after SIGTERM"
            await asyncio.sleep(0.02)
        assert not any(task.done() for task in in_flight), "requests ended before the listeners closed"
        assert await asyncio.gather(*in_flight) == [(200, "held")] * SPREAD_CONNECTIONS

    assert await workers.wait_exit() == 0, workers.stderr
    assert not any(psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE for pid in pids)
    messages = [json.loads(line)["msg"] for line in workers.lines if line.startswith("{")]
    assert messages.count("stopped") == WORKERS + 1, workers.stderr  # each worker, then the parent
    assert messages[-1] == "stopped"


async def test_workers_append_whole_lines_to_one_audit_file_and_reopen_it_on_sighup(
    workers: GatewayProcess, client_ssl: ssl.SSLContext, tmp_path: Path
) -> None:
    # Long paths make long lines and batches of hundreds of KiB: two processes append to one file, and every
    # line must still come out whole, each record exactly once.
    long = "p" * 4000
    audit, rotated = tmp_path / "audit.jsonl", tmp_path / "audit.jsonl.1"

    async def burst(session: aiohttp.ClientSession, label: str, count: int) -> set[str]:
        async def one(number: int) -> str:
            async with session.get(workers.url / f"{label}-{number}-{long}") as response:
                assert response.status == 200
                await response.read()
                return response.headers["X-Request-Id"]

        return set(await asyncio.gather(*(one(number) for number in range(count))))

    connector = aiohttp.TCPConnector(ssl=client_ssl, limit=SPREAD_CONNECTIONS, force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:
        first = await burst(session, "before", 300)
        await wait_for_audit(audit, first)
        audit.rename(rotated)
        workers.proc.send_signal(signal.SIGHUP)
        # Each worker says "reloaded" after its reload queued the reopen: every record it writes after that
        # goes to the new file, whenever its writer thread gets to the reopen (the file may not be there yet).
        await _wait_for_logs(workers, "reloaded", WORKERS)
        second = await burst(session, "after", 300)
    workers.proc.send_signal(signal.SIGTERM)
    assert await workers.wait_exit() == 0, workers.stderr

    for path, ids in ((rotated, first), (audit, second)):
        lines = path.read_text(encoding="utf-8").splitlines()
        records = [json.loads(line) for line in lines]  # a torn or interleaved line fails here
        assert sorted(record["request_id"] for record in records) == sorted(ids), path
        assert all(record["path"].endswith(long) for record in records)
    # One chain per worker, each carried across the reload and the rotation, interleaved in the one file.
    code, output, errors = await run_cli("audit", "verify", str(rotated), str(audit), cwd=tmp_path)
    assert (code, output.splitlines()[0]) == (0, "ok: 600 lines, 2 chains, every line in place"), output + errors
    pids = {int(line.split()[1].split("-")[0]) for line in output.splitlines()[1:]}
    assert len(pids) == WORKERS


async def test_a_worker_that_dies_stops_the_others_and_the_parent_exits_1(workers: GatewayProcess) -> None:
    first, second = worker_pids(workers)
    os.kill(first, signal.SIGKILL)
    assert await workers.wait_exit() == 1, workers.stderr
    assert not psutil.pid_exists(second) or psutil.Process(second).status() == psutil.STATUS_ZOMBIE
    errors = [json.loads(line) for line in workers.lines if line.startswith("{") and '"level": "error"' in line]
    assert any("exited with -9" in record["msg"] for record in errors), workers.stderr


def _running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


async def test_workers_drain_and_exit_when_their_parent_is_killed(workers: GatewayProcess) -> None:
    """A parent killed outright (SIGKILL, the OOM killer) relays nothing; its workers must not go on serving
    the old configuration on a port the next gateway would share with them."""
    pids = worker_pids(workers)
    workers.proc.kill()  # not awaited: asyncio's wait() on 3.11 also waits for stderr, which workers hold open
    deadline = time.monotonic() + 10
    try:
        while any(_running(pid) for pid in pids):
            assert time.monotonic() < deadline, f"workers outlived their parent; stderr:\n{workers.stderr}"
            await asyncio.sleep(0.05)
    finally:  # the fixture cannot find orphans through their parent: they would hold its stderr open
        for pid in filter(_running, pids):
            os.kill(pid, signal.SIGKILL)
    assert await connection_refused(workers.https_port)
    await asyncio.sleep(0.2)  # the last lines of stderr, read by the fixture's task
    messages = [json.loads(line)["msg"] for line in workers.lines if line.startswith("{")]
    assert messages.count("stopped") == WORKERS, workers.stderr  # each drained; the parent never got to say it


async def test_sighup_to_the_parent_makes_every_worker_reload(
    launch: Launch,
    own_certificate: CertFiles,
    ca: trustme.CA,
    client_ssl: ssl.SSLContext,
    tmp_path: Path,
    upstream: RecordingUpstream,
) -> None:
    """Each worker does a single gateway's reload (configuration, certificate, audit log): on the ports the
    parent reserved, though the file still says port 0; a change of address is refused by each."""
    config = write_config(own_certificate, tmp_path, upstream)
    served = await launch(["serve", "-c", str(config), "--workers", str(WORKERS)], cwd=tmp_path)
    renewed = ca.issue_cert("localhost", "127.0.0.1", DOMAIN)
    renewed.cert_chain_pems[0].write_to_path(str(own_certificate.cert))
    renewed.private_key_pem.write_to_path(str(own_certificate.key))
    write_config(own_certificate, tmp_path, upstream, listen={"allowed_hosts": ["127.0.0.1", "reloaded.example"]})
    served.proc.send_signal(signal.SIGHUP)

    def messages() -> list[str]:
        return [json.loads(line)["msg"] for line in served.lines if line.startswith("{")]

    deadline = time.monotonic() + 10
    while messages().count("reloaded") < WORKERS:
        assert time.monotonic() < deadline, f"not every worker reloaded; stderr:\n{served.stderr}"
        assert not any(message.startswith("reload") and message != "reloaded" for message in messages()), served.stderr
        await asyncio.sleep(0.05)

    # New connections, spread by the kernel over both workers, all meet the new certificate and config.
    expected = ssl.PEM_cert_to_DER_cert(renewed.cert_chain_pems[0].bytes().decode())
    for _ in range(SPREAD_CONNECTIONS // 4):
        assert await asyncio.to_thread(_served_certificate, served.https_port, client_ssl) == expected
    connector = aiohttp.TCPConnector(ssl=client_ssl, force_close=True)
    async with aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar()) as client:
        statuses = [await _status_for_host(client, served, "reloaded.example") for _ in range(SPREAD_CONNECTIONS // 4)]
    assert statuses == [200] * len(statuses)

    write_config(own_certificate, tmp_path, upstream, listen={"http": None})
    served.proc.send_signal(signal.SIGHUP)
    await _wait_for_logs(served, "reload refused", WORKERS)
    served.proc.send_signal(signal.SIGTERM)
    assert await served.wait_exit() == 0, served.stderr


def _proxied_count(exposition: str) -> float:
    """``gateway_requests_total`` of the catch-all proxy route, every status together."""
    return sum(
        sample.value
        for family in text_string_to_metric_families(exposition)
        if family.name == "gateway_requests"
        for sample in family.samples
        if sample.name == "gateway_requests_total" and sample.labels["route"] == "proxy"
    )


async def test_workers_metrics_sum_every_worker_whichever_answers_and_survive_a_reload(
    workers: GatewayProcess, upstream: RecordingUpstream, client_ssl: ssl.SSLContext
) -> None:
    """A scrape reaches one worker (the kernel picks); it must still count the requests all of them served,
    and a SIGHUP reload must not set the counters back to zero."""
    connector = aiohttp.TCPConnector(ssl=client_ssl, limit=0, force_close=True)  # a new connection each
    async with aiohttp.ClientSession(connector=connector) as session:

        async def get(path: str) -> str:
            async with session.get(workers.url / path) as response:
                assert response.status == 200, path
                return await response.text()

        in_flight, per_worker = await _held_on_every_worker(workers, upstream, partial(get, "hold"))
        await asyncio.gather(*in_flight)

        scrapes = [_proxied_count(await get("metrics")) for _ in range(SCRAPES)]
        assert scrapes == [SPREAD_CONNECTIONS] * SCRAPES, per_worker

        workers.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while sum('"msg": "reloaded"' in line for line in workers.lines) < WORKERS:
            assert time.monotonic() < deadline, f"the workers did not both reload; stderr:\n{workers.stderr}"
            await asyncio.sleep(0.05)
        await get("after-reload")
        scrapes = [_proxied_count(await get("metrics")) for _ in range(SCRAPES)]
        assert scrapes == [SPREAD_CONNECTIONS + 1] * SCRAPES
    workers.proc.send_signal(signal.SIGTERM)
    assert await workers.wait_exit() == 0, workers.stderr

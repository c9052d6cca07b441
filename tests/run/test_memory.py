"""The gateway as a real OS process keeps its memory bounded: large bodies stream both ways, idle keep-alive TLS
connections cost a bounded amount each."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import ssl
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import psutil  # no types-psutil in the test extras
import pytest
from aiohttp import web

from tests.conftest import (
    DEVICE_COOKIE,
    SESSION_COOKIE,
    CertFiles,
    RecordingUpstream,
)
from tests.run.conftest import (
    GatewayProcess,
    Launch,
    MiB,
    serving,
    write_config,
)

pytestmark = pytest.mark.slow
STREAM_MIB = 200  # 200 MiB = 209.7 MB each way
RSS_BUDGET = 64 * MiB
RSS_SAMPLE_SECONDS = 0.05


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

"""The gateway as a real OS process on SIGTERM: it drains in-flight requests, refuses new ones and exits 0, within
the grace when a request outlives it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import time
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from tests.conftest import (
    DOMAIN,
    CertFiles,
    RecordingUpstream,
)
from tests.run.conftest import (
    EXIT_TIMEOUT,
    GatewayProcess,
    Launch,
    connection_refused,
    write_config,
)

pytestmark = pytest.mark.slow


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

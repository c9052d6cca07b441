"""The gateway as a real OS process: stderr carries only JSON log lines after start-up."""

from __future__ import annotations

import contextlib
import json
import signal
from datetime import datetime

import aiohttp
import pytest
from aiohttp import web

from tests.conftest import (
    RecordingUpstream,
)
from tests.run.conftest import (
    CLI_PREFIX,
    GatewayProcess,
    MiB,
)

pytestmark = pytest.mark.slow


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

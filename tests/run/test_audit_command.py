"""The ``audit`` command reads what ``serve`` wrote, as a real OS process."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from tests.conftest import (
    DEVICE_COOKIE,
    SESSION_COOKIE,
    RecordingUpstream,
)
from tests.run.conftest import (
    CLI_PREFIX,
    GatewayProcess,
    run_cli,
    wait_for_audit,
)

pytestmark = pytest.mark.slow


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

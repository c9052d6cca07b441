"""``portal-gateway audit`` answering questions: the pure filters on an injected clock, then the command on a log
written by a real running gateway ("which cookies crossed for user u-ann this week, and which were stripped")."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jwt
import pytest

from gateway.cli import main
from gateway.ops.auditreport import Filter, parse_status, parse_when, render, summarise, summary_json
from tests.conftest import SECRET, SESSION_COOKIE, Gateway, StartGateway

NOW = datetime(2026, 5, 8, 12, 0, tzinfo=UTC).timestamp()
ACCESS = {"portal": {"access": {"rules": [{"attribute": "person.email", "op": "contains", "value": "example.com"}]}}}


def rec(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "ts": "2026-05-07T10:00:00.000+00:00",
        "path": "/tickets",
        "status": 200,
        "cookies": {"received": [], "forwarded": [], "stripped": []},
        "identity": {"user_id": "u-1"},
        "access": {"decision": "allow"},
    }
    return {**base, **fields}


@pytest.mark.parametrize(
    ("text", "end", "expected"),
    [
        ("7d", False, datetime(2026, 5, 1, 12, 0, tzinfo=UTC)),
        ("12h", False, datetime(2026, 5, 8, 0, 0, tzinfo=UTC)),
        ("30m", False, datetime(2026, 5, 8, 11, 30, tzinfo=UTC)),
        ("2026-05-01", False, datetime(2026, 5, 1, tzinfo=UTC)),
        ("2026-05-01", True, datetime(2026, 5, 2, tzinfo=UTC)),  # --until a date: the whole day
        ("2026-05-01T10:15", True, datetime(2026, 5, 1, 10, 15, tzinfo=UTC)),
        ("2026-05-01T10:15:00+02:00", False, datetime(2026, 5, 1, 8, 15, tzinfo=UTC)),
        ("2026-05-01T10:15Z", False, datetime(2026, 5, 1, 10, 15, tzinfo=UTC)),
    ],
)
def test_when_is_iso_or_relative_to_the_injected_clock(text: str, end: bool, expected: datetime) -> None:
    assert parse_when(text, NOW, end=end) == expected


@pytest.mark.parametrize("text", ["last week", "7", "2026-13-01", "-7d", ""])
def test_unreadable_times_are_refused_saying_what_is_accepted(text: str) -> None:
    with pytest.raises(ValueError, match="ISO date"):
        parse_when(text, NOW)


def test_status_is_one_code_or_a_class() -> None:
    assert parse_status("403") == (403, 403)
    assert parse_status("4xx") == (400, 499)
    assert parse_status("5XX") == (500, 599)
    for bad in ("40", "4x", "600", "abc"):
        with pytest.raises(ValueError, match="403"):
            parse_status(bad)


@pytest.mark.parametrize(
    ("where", "record", "picked"),
    [
        (Filter(), rec(), True),
        (Filter(user="u-1"), rec(), True),
        (Filter(user="u-2"), rec(), False),
        (Filter(user="u-1"), rec(identity={"user_id": None, "result": "rejected"}), False),
        (Filter(since=datetime(2026, 5, 7, 10, tzinfo=UTC)), rec(), True),  # since: inclusive
        (Filter(until=datetime(2026, 5, 7, 10, tzinfo=UTC)), rec(), False),  # until: exclusive
        (Filter(since=datetime(2026, 5, 1, tzinfo=UTC)), rec(ts="garbage"), False),
        (Filter(cookie="_ga"), rec(cookies={"received": ["_ga"], "stripped": ["_ga"]}), True),
        (Filter(cookie="sid"), rec(cookies={"upstream_dropped": ["sid"]}), True),
        (Filter(cookie="_ga"), rec(), False),
        (Filter(decision="deny"), rec(), False),
        (Filter(decision="allow"), rec(access={"decision": None}), False),
        (Filter(status=(400, 499)), rec(status=403), True),
        (Filter(status=(403, 403)), rec(status=404), False),
        (Filter(path="/tickets"), rec(path="/tickets/T-1"), True),
        (Filter(path="/tickets/"), rec(path="/tickets"), True),
        (Filter(path="/tickets"), rec(path="/ticketsx"), False),
        (Filter(user="u-1", status=(200, 200), path="/api"), rec(), False),  # every condition must hold
    ],
)
def test_filter_picks_records_where_every_condition_holds(where: Filter, record: dict[str, Any], picked: bool) -> None:
    assert where.matches(record) is picked


def test_summary_of_the_picked_records_says_what_it_picked_and_reads_as_json() -> None:
    lines = [
        json.dumps(rec(cookies={"received": ["sid", "_ga"], "forwarded": ["sid"], "stripped": ["_ga"]})),
        json.dumps(rec(identity={"user_id": "u-2"}, cookies={"received": ["_ga"], "stripped": ["_ga"]})),
        json.dumps(rec(ts="2026-04-01T00:00:00.000+00:00", cookies={"received": ["old"]})),
        "not json",
    ]
    where = Filter(user="u-1", since=parse_when("7d", NOW))
    summary = summarise(lines, where)
    assert (summary.requests, summary.unreadable) == (1, 1)
    assert render(summary).splitlines()[:2] == ["records of user u-1, since 2026-05-01T12:00:00+00:00", "requests: 1"]
    report = summary_json(summary)
    assert report["cookies"] == {
        "_ga": {"received": 1, "forwarded": 0, "stripped": 1},
        "sid": {"received": 1, "forwarded": 1, "stripped": 0},
    }
    assert report["filter"] == "user u-1, since 2026-05-01T12:00:00+00:00"
    assert report["statuses"] == {"200": 1}


# --- the command on a real gateway's log -------------------------------------------------------------------------


def bearer(user_id: str, email: str) -> dict[str, str]:
    now = int(time.time())
    token = jwt.encode({"user_id": user_id, "email": email, "iat": now, "exp": now + 600}, SECRET, algorithm="HS256")
    return {"Authorization": f"Bearer {token}"}


async def traffic(gateway: Gateway) -> Path:
    """Ann reads articles with the session cookie and two trackers, opens the portal API; Zed is refused it."""
    ann, zed = bearer("u-ann", "ann@example.com"), bearer("u-zed", "zed@elsewhere.test")
    crossing = {"Cookie": f"{SESSION_COOKIE}=s1; _ga=1; tracking=2"}
    ids = []
    for path, headers, status in (
        ("articles/1", {**ann, **crossing}, 200),
        ("articles/2", {**ann, "Cookie": f"{SESSION_COOKIE}=s1; _ga=1"}, 200),
        ("api/v1/me", ann, 200),
        ("api/v1/me", zed, 403),
        ("articles/3", {**zed, **crossing}, 200),
        ("api/v1/tickets/T-404", ann, 404),
    ):
        async with gateway.client.get(gateway.url / path, headers=headers) as response:
            assert response.status == status, path
            ids.append(response.headers["X-Request-Id"])
    for request_id in ids:
        await gateway.audit_for(request_id)
    return gateway.config.audit.path


async def audit_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    capsys.readouterr()
    code = await asyncio.to_thread(main, ["audit", *args])
    return code, capsys.readouterr().out


async def test_which_cookies_crossed_for_a_user_this_week_and_which_were_stripped(
    start_gateway: StartGateway, capsys: pytest.CaptureFixture[str]
) -> None:
    path = str(await traffic(await start_gateway(**ACCESS)))
    code, out = await audit_cli(capsys, path, "--user", "u-ann", "--since", "7d", "--json")
    assert code == 0
    report = json.loads(out)
    assert report["requests"] == 4
    assert report["cookies"] == {
        SESSION_COOKIE: {"received": 2, "forwarded": 2, "stripped": 0},
        "_ga": {"received": 2, "forwarded": 0, "stripped": 2},
        "tracking": {"received": 1, "forwarded": 0, "stripped": 1},
    }
    code, out = await audit_cli(capsys, path, "--user", "u-ann", "--since", "7d")
    assert out.splitlines()[0].startswith("records of user u-ann, since ")
    tracking = next(line for line in out.splitlines() if line.startswith("tracking "))
    assert tracking.split()[1:] == ["1", "0", "1"]  # received, forwarded, stripped


@pytest.mark.parametrize(
    ("args", "requests"),
    [
        ((), 6),
        (("--decision", "deny"), 1),
        (("--decision", "allow"), 2),
        (("--status", "403"), 1),
        (("--status", "4xx"), 2),
        (("--path", "/api/v1"), 3),
        (("--path", "/articles"), 3),
        (("--cookie", "tracking"), 2),
        (("--cookie", "tracking", "--user", "u-zed"), 1),
        (("--until", "2000-01-01"), 0),
        (("--since", "2000-01-01", "--until", "1d"), 0),
    ],
)
async def test_each_filter_on_a_real_log(
    start_gateway: StartGateway, capsys: pytest.CaptureFixture[str], args: tuple[str, ...], requests: int
) -> None:
    path = str(await traffic(await start_gateway(**ACCESS)))
    code, out = await audit_cli(capsys, path, "--json", *args)
    assert code == 0
    assert json.loads(out)["requests"] == requests


async def test_bad_filters_exit_2_and_files_are_read_in_order(
    start_gateway: StartGateway, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await asyncio.to_thread(main, ["audit", "--since", "last week", str(tmp_path)]) == 2
    assert "'last week' is neither an ISO date" in capsys.readouterr().err
    current = await traffic(await start_gateway(**ACCESS))
    rotated = tmp_path / "rotated.jsonl"
    rotated.write_bytes(current.read_bytes())
    code, out = await audit_cli(capsys, str(rotated), str(current), "--json")
    assert (code, json.loads(out)["requests"]) == (0, 12)


async def test_admin_writes_are_counted_made_or_refused(
    start_gateway: StartGateway, capsys: pytest.CaptureFixture[str]
) -> None:
    token = "admin-token-for-the-report-0123"
    gateway = await start_gateway(admin={"token": token}, store={"seed_demo": True})
    headers = {"Authorization": f"Bearer {token}"}
    ids = []
    for method, path, body, status in (
        ("DELETE", "/admin/api/companies/acme", None, 409),  # acme has tickets: refused, nothing deleted
        ("POST", "/admin/api/companies", {"company_id": "brief", "name": "Brief"}, 201),
        ("DELETE", "/admin/api/companies/brief", None, 200),
    ):
        async with gateway.client.request(method, gateway.url / path.lstrip("/"), json=body, headers=headers) as answer:
            assert answer.status == status, await answer.text()
            ids.append(answer.headers["X-Request-Id"])
    for request_id in ids:
        await gateway.audit_for(request_id)
    path = str(gateway.config.audit.path)
    code, out = await audit_cli(capsys, path, "--json")
    assert code == 0
    report = json.loads(out)
    assert report["admin_results"] == {"made": 2, "refused": 1}
    assert report["admin_changes"] == {"delete company (refused)": 1, "create company": 1, "delete company": 1}
    code, out = await audit_cli(capsys, path)
    assert "  changes made: 2, refused: 1" in out.splitlines()

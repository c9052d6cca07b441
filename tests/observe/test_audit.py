"""The audit writer and the summary the ``audit`` command prints."""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import json
import os
import time
import typing
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.cli import main
from gateway.observe.audit import (
    LINGER,
    AccessResult,
    AdminChange,
    AuditEntry,
    AuditLog,
    CompanyPolicyResult,
    CookieNames,
    IdentityResult,
    RequestIds,
    StreamResult,
    UpstreamResult,
    WebhookResult,
    encode_entry,
    new_request_id,
    timestamp,
)
from gateway.observe.auditchain import verify
from gateway.ops.auditreport import render, summarise
from gateway.policy.companyupdates import Removal
from gateway.policy.identity import sign_token
from tests.conftest import CANARY, SECRET, SESSION_COOKIE, Gateway, StartGateway

DESIGN_FIELDS = {
    "ts",
    "request_id",
    "client_ip",
    "method",
    "host",
    "path",
    "status",
    "duration_ms",
    "cookies",
    "identity",
    "access",
    "upstream",
}


def test_reopen_after_rotation_writes_to_a_new_file(tmp_path: Path) -> None:
    path = tmp_path / "logs" / "audit.jsonl"
    log = AuditLog(path)
    log.write(AuditEntry("before", "127.0.0.1", "GET", "h", "/a"), 0)
    rotated = path.with_suffix(".jsonl.1")
    path.rename(rotated)  # logrotate moves the file; the writer's open file goes with it
    log.write(AuditEntry("moved", "127.0.0.1", "GET", "h", "/b"), 0)
    log.reopen()  # what SIGHUP does
    log.write(AuditEntry("after", "127.0.0.1", "GET", "h", "/c"), 0)
    log.close()
    assert [json.loads(line)["request_id"] for line in rotated.read_text().splitlines()] == ["before", "moved"]
    assert [json.loads(line)["request_id"] for line in path.read_text().splitlines()] == ["after"]


def test_record_holds_every_field_of_the_entry() -> None:
    entry = AuditEntry("id", "127.0.0.1", "GET", "h", "/a", status=200, duration_ms=1.5)
    entry.cookies.received, entry.cookies.stripped = ("a", "b"), ("b",)
    entry.identity = IdentityResult(method="jwt", user_id="u1", result="verified")
    entry.access = AccessResult(decision="allow", rule="all")
    record = entry.to_record(0)
    assert record == {"ts": "1970-01-01T00:00:00.000+00:00", **dataclasses.asdict(entry)}
    assert list(record) == ["ts", *(field.name for field in dataclasses.fields(AuditEntry))]


def test_record_holds_the_company_policy_and_the_admin_change_like_asdict() -> None:
    entry = AuditEntry("id", "127.0.0.1", "POST", "h", "/messenger/web/ping", status=200)
    removed = [Removal("company.name", "not_member"), Removal("companies", "not_member")]
    entry.company_policy = CompanyPolicyResult("strip", user_id="u1", verified=True, removed=removed)
    entry.admin_change = AdminChange("update", "company", "acme", ["name", "plan"])
    record = entry.to_record(0)
    assert record == {"ts": "1970-01-01T00:00:00.000+00:00", **dataclasses.asdict(entry)}
    assert record["company_policy"]["removed"] == [
        {"field": "company.name", "reason": "not_member"},
        {"field": "companies", "reason": "not_member"},
    ]
    assert record["admin_change"] == {
        "action": "update",
        "resource": "company",
        "id": "acme",
        "fields": ["name", "plan"],
        "result": "refused",  # until the store commits it
    }
    record["admin_change"]["fields"].append("x")  # a copy, as asdict makes: the entry is not changed through it
    assert entry.admin_change.fields == ["name", "plan"]


# Any text at all, lone surrogates included (a token's claims may hold one), and records of every shape the
# gateway writes: the optional parts present or not, durations as the middleware rounds them.
_text = st.text(st.characters(codec=None), max_size=12)
_names = st.lists(_text, max_size=3).map(tuple)
_removals = st.lists(st.builds(Removal, _text, _text))
_entries = st.builds(
    AuditEntry,
    request_id=_text,
    client_ip=_text,
    method=_text,
    host=_text,
    path=_text,
    status=st.none() | st.integers(100, 599),
    duration_ms=st.none() | st.floats(0, 1e9).map(lambda ms: round(ms, 3)),
    aborted=st.booleans(),
    cookies=st.builds(CookieNames, _names, _names, _names, _names, _names),
    identity=st.builds(IdentityResult, st.none() | _text, st.none() | _text, _text, st.none() | _text),
    access=st.builds(AccessResult, st.none() | _text, st.none() | _text),
    upstream=st.builds(UpstreamResult, st.none() | _text, st.none() | st.integers(100, 599), st.none() | _text),
    company_policy=st.none() | st.builds(CompanyPolicyResult, _text, st.none() | _text, st.booleans(), _removals),
    admin_change=st.none()
    | st.builds(AdminChange, _text, _text, _text, st.lists(_text), st.sampled_from(["made", "refused"])),
    webhook=st.none() | st.builds(WebhookResult, st.sampled_from(["accepted", "busy"]), st.none() | _text),
    stream=st.none() | st.builds(StreamResult, _text, _text, st.booleans(), st.integers(0, 10**6), _text),
)


@given(_entries, st.floats(0, 4e9))
def test_an_entry_encodes_to_the_same_json_as_the_standard_librarys_record(entry: AuditEntry, ts: float) -> None:
    """orjson's bytes, written straight from the entry's dataclasses, are json.dumps's of ``to_record`` (UTF-8,
    compact, the same keys in the same order) whenever it can write them, and the same JSON value (what the
    encoder before it, escaped to ASCII, wrote) always: a lone surrogate costs no record."""
    record = entry.to_record(ts)
    encoded = encode_entry(entry, ts)
    before = json.dumps(record, separators=(",", ":"))
    assert json.loads(encoded) == json.loads(before)
    try:
        utf8 = json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode()
    except UnicodeEncodeError:  # a lone surrogate has no UTF-8: the escaped ASCII, as before
        assert encoded == before.encode()
    else:
        assert encoded == utf8


def test_request_ids_are_128_bits_in_hex_and_never_repeat_across_batches() -> None:
    ids = RequestIds()
    drawn = [ids() for _ in range(RequestIds.BATCH * 3 + 1)]
    assert all(len(request_id) == 32 and int(request_id, 16) >= 0 for request_id in drawn)
    assert len(set(drawn)) == len(drawn)


def test_a_forked_worker_never_hands_out_the_parents_request_ids() -> None:
    """The batch drawn before a fork stays the parent's: the child draws its own (the workers fork)."""
    new_request_id()  # a batch drawn in the parent, most of it still unused
    reader, writer = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover (the child's coverage is not collected)
        os.close(reader)
        os.write(writer, "".join(new_request_id() for _ in range(8)).encode())
        os._exit(0)
    os.close(writer)
    with os.fdopen(reader, "rb") as pipe:
        theirs = pipe.read().decode()
    os.waitpid(child, 0)
    ours = "".join(new_request_id() for _ in range(8))
    assert len(theirs) == len(ours) == 8 * 32
    assert {theirs[at : at + 32] for at in range(0, len(theirs), 32)}.isdisjoint(
        {ours[at : at + 32] for at in range(0, len(ours), 32)}
    )


@given(st.floats(0, 4e9) | st.integers(0, 4_000_000_000).map(lambda second: second - 5e-7))
def test_timestamps_read_as_datetimes_isoformat(ts: float) -> None:
    """The once-a-second prefix never shows another second than datetime would, at the edge of one either."""
    assert timestamp(ts) == datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")


def test_a_record_with_a_lone_surrogate_is_written_and_chained(tmp_path: Path) -> None:
    """What orjson refuses still reaches the file as one chained line (the standard library's escapes)."""
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path)
    entry = AuditEntry("lone", "127.0.0.1", "GET", "h", "/a")
    # A token whose claims say "u\\ud800": JSON can spell a lone surrogate, and PyJWT decodes it as one.
    entry.identity = IdentityResult(method="jwt", user_id="u\ud800", result="verified")
    log.write(entry, 0)
    log.write(AuditEntry("next", "127.0.0.1", "GET", "h", "/b"), 0)
    log.close()
    lines = path.read_bytes().splitlines()
    assert lines[0].isascii()
    assert b'"user_id":"u\\ud800"' in lines[0]
    assert [json.loads(line)["request_id"] for line in lines] == ["lone", "next"]
    assert verify([(path.name, lines)]).ok


def test_the_audit_records_the_policys_own_removals() -> None:
    """One type for a removed field: the company-update policy's ``Removal`` is what the audit entry holds."""
    assert typing.get_type_hints(CompanyPolicyResult)["removed"] == list[Removal]


async def test_records_written_on_a_loop_reach_the_file_together_after_the_linger(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path)
    ids = [f"r{number}" for number in range(100)]
    for request_id in ids:
        log.write(AuditEntry(request_id, "127.0.0.1", "GET", "h", "/a"), 0)
    assert path.read_text() == ""  # held in the batch: nothing was handed to the writer yet
    await asyncio.sleep(LINGER)
    deadline = time.monotonic() + 5
    while len(path.read_text().splitlines()) < len(ids):
        assert time.monotonic() < deadline, path.read_text()
        await asyncio.sleep(0.01)
    log.close()
    assert [json.loads(line)["request_id"] for line in path.read_text().splitlines()] == ids


async def test_every_request_writes_one_record_with_the_design_fields(gateway: Gateway) -> None:
    ids = []
    for path in ("healthz", "x", "nothing-here"):
        async with gateway.client.get(gateway.url / path) as response:
            ids.append(response.headers["X-Request-Id"])
    records = [await gateway.audit_for(request_id) for request_id in ids]
    for record in records:
        assert record.keys() >= DESIGN_FIELDS
        assert set(record["cookies"]) >= {"received", "forwarded", "stripped"}
        assert set(record["identity"]) >= {"method", "user_id", "result", "reason"}
        assert set(record["access"]) >= {"decision", "rule"}
        assert set(record["upstream"]) >= {"url", "status"}
    assert [r["path"] for r in records] == ["/healthz", "/x", "/nothing-here"]
    assert len(gateway.audit_records()) == 3


async def test_a_kept_alive_connection_holds_no_audit_entry_of_its_last_request(gateway: Gateway) -> None:
    # aiohttp keeps a kept-alive connection's last request until the next one arrives: the entry, written,
    # must not stay with it (some 1.5 KB per idle connection).
    async with gateway.client.get(gateway.url / "articles/1", headers={"Cookie": "_ga=1; tracking=2"}) as response:
        assert response.status == 200
        await response.read()
        request_id = response.headers["X-Request-Id"]
    assert (await gateway.audit_for(request_id))["cookies"]["stripped"] == ["_ga", "tracking"]
    server = gateway.running.runners[0].server
    assert server is not None
    assert len(server.connections) == 1  # still open, waiting for its next request
    gc.collect()
    assert not [entry for entry in gc.get_objects() if isinstance(entry, AuditEntry) and entry.request_id == request_id]


def test_summary_counts_cookies_statuses_and_set_cookies() -> None:
    lines = [
        json.dumps(
            {
                "status": 200,
                "cookies": {
                    "received": ["intercom-session-ws", "tracking"],
                    "forwarded": ["intercom-session-ws"],
                    "stripped": ["tracking"],
                    "upstream_set": ["intercom-session-ws"],
                    "upstream_dropped": ["ad"],
                },
                "upstream": {"error": None},
            }
        ),
        json.dumps(
            {
                "status": 502,
                "cookies": {"received": ["tracking"], "stripped": ["tracking"]},
                "upstream": {"error": "unreachable"},
            }
        ),
        json.dumps(
            {
                "status": 200,
                "company_policy": {
                    "action": "strip",
                    "removed": [{"field": "user_data.companies", "reason": "not signed in the JWT"}],
                },
            }
        ),
        json.dumps({"status": 201, "admin_change": {"action": "add", "resource": "membership", "id": "u-1/acme"}}),
        json.dumps({"status": 404, "admin_change": {"action": "remove", "resource": "membership", "id": "u-1/x"}}),
        "not json",
        "",
    ]
    summary = summarise(lines)
    assert (summary.requests, summary.unreadable) == (5, 1)
    assert summary.statuses == {200: 2, 201: 1, 404: 1, 502: 1}
    assert summary.cookies["tracking"] == {"received": 2, "stripped": 2}
    assert summary.cookies["intercom-session-ws"] == {"received": 1, "forwarded": 1}
    assert summary.set_cookies == {"intercom-session-ws": {"passed": 1}, "ad": {"dropped": 1}}
    text = render(summary)
    assert "requests: 5" in text
    assert "unreadable lines: 1" in text
    assert "502: 1" in text
    tracking = next(line for line in text.splitlines() if line.startswith("tracking"))
    assert tracking.split()[1:] == ["2", "0", "2"]
    assert "unreachable: 1" in text
    assert "messenger company updates:\n  strip: 1\n    removed user_data.companies (not signed in the JWT): 1" in text
    assert "admin changes:" in text
    assert "  add membership: 1" in text
    assert "  remove membership (refused): 1" in text
    assert "  changes made: 1, refused: 1" in text


async def test_every_request_records_the_cookie_names_it_received(
    start_gateway: StartGateway, capsys: pytest.CaptureFixture[str]
) -> None:
    """Not only proxied requests: pages, the API, the home page, a 404 and a health check name their cookies."""
    access = {"rules": [{"attribute": "person.email", "op": "ends_with", "value": "@example.com"}]}
    gateway = await start_gateway(portal={"access": access})
    token = sign_token(SECRET, user_id="u-visitor", now=time.time(), ttl=600, email="visitor@example.com")
    cookie = f"portal-jwt={token}; {SESSION_COOKIE}={CANARY}; _ga={CANARY}"
    answered = {}
    for path in ("tickets", "api/v1/me", "", "tickets/999999", "healthz", "articles/1"):
        async with gateway.client.get(gateway.url / path, headers={"Cookie": cookie}) as response:
            answered[response.headers["X-Request-Id"]] = ("/" + path, response.status)
    assert [status for _, status in answered.values()] == [200, 200, 200, 404, 200, 200]
    records = {request_id: await gateway.audit_for(request_id) for request_id in answered}
    for request_id, record in records.items():
        assert record["cookies"]["received"] == ["portal-jwt", SESSION_COOKIE, "_ga"], answered[request_id]
    # What went upstream stays the proxy's to say, for the one proxied request only.
    assert [(r["path"], r["cookies"]["forwarded"], r["cookies"]["stripped"]) for r in records.values()][-2:] == [
        ("/healthz", [], []),
        ("/articles/1", [SESSION_COOKIE], ["portal-jwt", "_ga"]),
    ]

    assert main(["audit", str(gateway.config.audit.path)]) == 0
    report = capsys.readouterr().out
    counts = {line.split()[0]: line.split()[1:] for line in report.splitlines() if line.startswith(("portal", "_ga"))}
    # columns: received, forwarded, stripped
    assert counts == {"portal-jwt": ["6", "0", "1"], "_ga": ["6", "0", "1"]}, report

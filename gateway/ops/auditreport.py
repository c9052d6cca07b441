"""Summarise an audit log: what crossed the edge, by cookie name, status and decision, for the records a
:class:`Filter` picks (a user, a time span, a cookie, a decision, a status, a path); and what ``audit verify``
found of its hash chains. Pure: the clock is passed in."""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from gateway.observe.auditchain import Verification
from gateway.policy.identity import parse_ttl

_COOKIE_COLUMNS = ("received", "forwarded", "stripped")
_SET_COOKIE_COLUMNS = {"upstream_set": "passed", "upstream_dropped": "dropped"}


_RELATIVE = re.compile(r"[0-9]+[smhd]")
_STATUS = re.compile(r"([1-5])([0-9]{2}|xx)")


def parse_when(text: str, now: float, *, end: bool = False) -> datetime:
    """A point in time: ISO (``2026-05-01``, ``2026-05-01T10:00``, with or without offset; UTC when none), or
    relative to ``now`` (``7d``, ``12h``, ``30m``, ``45s`` ago). A date alone is its midnight, or with ``end``
    the next one, so that ``--until 2026-05-01`` takes in the whole day."""
    text = text.strip()
    if _RELATIVE.fullmatch(text):
        return datetime.fromtimestamp(now, UTC) - timedelta(seconds=parse_ttl(text))
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"{text!r} is neither an ISO date or time (2026-05-01, 2026-05-01T10:00Z) nor 7d/12h/30m"
        ) from None
    when = when if when.tzinfo is not None else when.replace(tzinfo=UTC)
    date_only = len(text) == len("2026-05-01")
    return when + timedelta(days=1) if end and date_only else when


def parse_status(text: str) -> tuple[int, int]:
    """The statuses ``403`` or ``4xx`` stand for, as an inclusive range."""
    match = _STATUS.fullmatch(text.strip().lower())
    if match is None:
        raise ValueError(f"{text!r} is not a status like 403 or a class like 4xx")
    if match[2] == "xx":
        return int(match[1]) * 100, int(match[1]) * 100 + 99
    return int(text), int(text)


def _segment_prefix(path: str, prefix: str) -> bool:
    prefix = prefix.rstrip("/")
    return not prefix or path == prefix or path.startswith(prefix + "/")


@dataclass(frozen=True)
class Filter:
    """Which records count: every condition given must hold (none given: every record)."""

    user: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    """Exclusive."""
    cookie: str | None = None
    """Received, forwarded, stripped, or set by upstream (passed or dropped)."""
    decision: str | None = None
    status: tuple[int, int] | None = None
    path: str | None = None
    """A prefix by whole segments: ``/tickets`` takes ``/tickets/T-1``, not ``/ticketsx``."""

    def matches(self, record: dict[str, Any]) -> bool:
        """Whether ``record`` is one of those picked."""
        if self.user is not None and (record.get("identity") or {}).get("user_id") != self.user:
            return False
        if self.since is not None or self.until is not None:
            try:
                when = datetime.fromisoformat(str(record.get("ts")))
            except ValueError:
                return False
            if (self.since is not None and when < self.since) or (self.until is not None and when >= self.until):
                return False
        if self.cookie is not None:
            cookies = record.get("cookies") or {}
            if not any(
                self.cookie in (cookies.get(column) or ()) for column in (*_COOKIE_COLUMNS, *_SET_COOKIE_COLUMNS)
            ):
                return False
        if self.decision is not None and (record.get("access") or {}).get("decision") != self.decision:
            return False
        if self.status is not None and not self.status[0] <= int(record.get("status") or 0) <= self.status[1]:
            return False
        return self.path is None or _segment_prefix(str(record.get("path")), self.path)

    def describe(self) -> str:
        """The conditions, as the report's first line says them; empty when there are none."""
        parts = [f"user {self.user}"] if self.user is not None else []
        parts += [
            f"{name} {when.isoformat(timespec='seconds')}"
            for name, when in (("since", self.since), ("until", self.until))
            if when
        ]
        parts += [f"cookie {self.cookie}"] if self.cookie is not None else []
        parts += [f"decision {self.decision}"] if self.decision is not None else []
        if self.status is not None:
            low, high = self.status
            parts.append(f"status {low}" if low == high else f"status {low // 100}xx")
        parts += [f"path {self.path}"] if self.path is not None else []
        return ", ".join(parts)


@dataclass
class Summary:
    """Counts over an audit log."""

    requests: int = 0
    unreadable: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    cookies: dict[str, Counter[str]] = field(default_factory=dict)
    set_cookies: dict[str, Counter[str]] = field(default_factory=dict)
    identity: Counter[str] = field(default_factory=Counter)
    access: Counter[str] = field(default_factory=Counter)
    upstream_errors: Counter[str] = field(default_factory=Counter)
    company_policy: Counter[str] = field(default_factory=Counter)
    admin_changes: Counter[str] = field(default_factory=Counter)
    admin_results: Counter[str] = field(default_factory=Counter)
    aborted: int = 0
    where: Filter = field(default_factory=Filter)

    def add(self, record: dict[str, Any]) -> None:
        """Count one audit record."""
        self.requests += 1
        self.statuses[int(record.get("status") or 0)] += 1
        self.aborted += bool(record.get("aborted"))
        cookies = record.get("cookies") or {}
        for column in _COOKIE_COLUMNS:
            for name in cookies.get(column) or ():
                self.cookies.setdefault(name, Counter())[column] += 1
        for field_name, column in _SET_COOKIE_COLUMNS.items():
            for name in cookies.get(field_name) or ():
                self.set_cookies.setdefault(name, Counter())[column] += 1
        identity = record.get("identity") or {}
        if identity.get("result") not in (None, "none"):
            self.identity[f"{identity['result']}" + (f" ({identity['reason']})" if identity.get("reason") else "")] += 1
        access = record.get("access") or {}
        if access.get("decision"):
            self.access[f"{access['decision']}" + (f" by {access['rule']}" if access.get("rule") else "")] += 1
        error = (record.get("upstream") or {}).get("error")
        if error:
            self.upstream_errors[error] += 1
        policy = record.get("company_policy") or {}
        if policy.get("action"):
            self.company_policy[policy["action"]] += 1
            for removed in policy.get("removed") or ():
                self.company_policy[f"  removed {removed['field']} ({removed['reason']})"] += 1
        change = record.get("admin_change") or {}
        if change.get("action"):
            # Records written before the gateway said "result" have only their status to go by.
            result = change.get("result") or ("refused" if int(record.get("status") or 0) >= 400 else "made")
            self.admin_results[result] += 1
            refused = " (refused)" if result == "refused" else ""
            self.admin_changes[f"{change['action']} {change['resource']}{refused}"] += 1


def summarise(lines: Iterable[str], where: Filter | None = None) -> Summary:
    """Count every readable record ``where`` picks; lines that are not audit records are counted apart."""
    summary = Summary(where=where or Filter())
    for line in lines:
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            summary.unreadable += 1
            continue
        if isinstance(record, dict):
            if summary.where.matches(record):
                summary.add(record)
        else:
            summary.unreadable += 1
    return summary


def _table(title: str, columns: tuple[str, ...], rows: dict[str, Counter[str]]) -> list[str]:
    width = max([len(title), *map(len, rows)])
    lines = [f"{title:<{width}}  " + "  ".join(f"{column:>10}" for column in columns)]
    for name in sorted(rows):
        lines.append(f"{name:<{width}}  " + "  ".join(f"{rows[name][column]:>10}" for column in columns))
    return lines


def render(summary: Summary) -> str:
    """The summary as a plain-text report."""
    picked = summary.where.describe()
    lines = [*([f"records of {picked}"] if picked else []), f"requests: {summary.requests}"]
    if summary.unreadable:
        lines.append(f"unreadable lines: {summary.unreadable}")
    lines.append(
        "statuses: " + (", ".join(f"{status}: {n}" for status, n in sorted(summary.statuses.items())) or "none")
    )
    if summary.aborted:
        lines.append(f"aborted: {summary.aborted}")
    lines += ["", *(_table("cookie", _COOKIE_COLUMNS, summary.cookies) if summary.cookies else ["cookies: none seen"])]
    lines += [
        "",
        *(
            _table("upstream Set-Cookie", tuple(_SET_COOKIE_COLUMNS.values()), summary.set_cookies)
            if summary.set_cookies
            else ["upstream Set-Cookie: none"]
        ),
    ]
    for title, counts in (
        ("identity", summary.identity),
        ("access", summary.access),
        ("upstream errors", summary.upstream_errors),
        ("messenger company updates", summary.company_policy),
        ("admin changes", summary.admin_changes),
    ):
        if counts:
            lines += ["", f"{title}:", *(f"  {key}: {n}" for key, n in counts.most_common())]
    if summary.admin_results:
        made, refused = summary.admin_results["made"], summary.admin_results["refused"]
        lines.append(f"  changes made: {made}, refused: {refused}")
    return "\n".join(lines)


def summary_json(summary: Summary) -> dict[str, Any]:
    """What ``audit --json`` prints: the report's counts, by name."""
    return {
        "filter": summary.where.describe(),
        "requests": summary.requests,
        "unreadable": summary.unreadable,
        "aborted": summary.aborted,
        "statuses": {str(status): count for status, count in sorted(summary.statuses.items())},
        "cookies": {
            name: {column: counts[column] for column in _COOKIE_COLUMNS}
            for name, counts in sorted(summary.cookies.items())
        },
        "upstream_set_cookies": {
            name: {column: counts[column] for column in _SET_COOKIE_COLUMNS.values()}
            for name, counts in sorted(summary.set_cookies.items())
        },
        "identity": dict(summary.identity),
        "access": dict(summary.access),
        "upstream_errors": dict(summary.upstream_errors),
        "company_policy": dict(summary.company_policy),
        "admin_changes": dict(summary.admin_changes),
        "admin_results": {result: summary.admin_results[result] for result in ("made", "refused")},
    }


def verification_json(result: Verification) -> dict[str, Any]:
    """What ``audit verify --json`` prints."""
    failure = result.failure
    return {
        "ok": result.ok,
        "lines": result.lines,
        "unfinished": None if result.unfinished is None else str(result.unfinished),
        "failure": None
        if failure is None
        else {
            "file": failure.where.file,
            "line": failure.where.line,
            "message": failure.message,
            "suspects": [str(where) for where in failure.suspects],
        },
        "chains": [
            {
                "id": chain.id,
                "records": chain.records,
                "first_seq": chain.first_seq,
                "first": str(chain.first),
                "seq": chain.seq,
                "head": str(chain.head),
                "sha256": chain.hash,
                "continued": chain.continued,
            }
            for chain in result.chains.values()
        ],
    }


def render_verification(result: Verification) -> str:
    """What ``audit verify`` prints: the verdict, then each chain's extent and head (to keep elsewhere)."""
    if result.failure is None:
        lines = [f"ok: {result.lines} lines, {len(result.chains)} chains, every line in place"]
        if result.unfinished is not None:
            lines.append(f"  {result.unfinished}: still being written (no newline yet), not checked")
    else:
        lines = [f"FAILED at {result.failure}"]
        if len(result.failure.suspects) > 1:
            lines.append("  lines to look at: " + ", ".join(map(str, result.failure.suspects)))
        lines.append(f"  checked {result.lines} lines before stopping")
    for chain in result.chains.values():
        continued = " (continues from an earlier file)" if chain.continued else ""
        lines.append(
            f"chain {chain.id}: seq {chain.first_seq}-{chain.seq}, {chain.first} to {chain.head}, "
            f"head sha256 {chain.hash}{continued}"
        )
    return "\n".join(lines)

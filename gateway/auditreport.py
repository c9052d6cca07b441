"""Summarise an audit log: what crossed the edge, by cookie name, status and decision; and what ``audit verify``
found of its hash chains."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from gateway.auditchain import Verification

_COOKIE_COLUMNS = ("received", "forwarded", "stripped")
_SET_COOKIE_COLUMNS = {"upstream_set": "passed", "upstream_dropped": "dropped"}


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
    aborted: int = 0

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
            refused = " (refused)" if int(record.get("status") or 0) >= 400 else ""
            self.admin_changes[f"{change['action']} {change['resource']}{refused}"] += 1


def summarise(lines: Iterable[str]) -> Summary:
    """Count every readable record; lines that are not audit records are counted apart."""
    summary = Summary()
    for line in lines:
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            summary.unreadable += 1
            continue
        if isinstance(record, dict):
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
    lines = [f"requests: {summary.requests}"]
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
    return "\n".join(lines)


def verification_json(result: Verification) -> dict[str, Any]:
    """What ``audit verify --json`` prints."""
    failure = result.failure
    return {
        "ok": result.ok,
        "lines": result.lines,
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

"""The audit log: one JSON line per request, written off the event loop.

Each request gets an :class:`AuditEntry` that the pipeline stages fill in
(cookie names, identity, access, upstream); the pipeline (gateway/edge/pipeline.py) stamps the
request id, status and duration and hands it to :class:`AuditLog`. The entry
is encoded at once by orjson straight from its dataclasses (a microsecond, on the loop: the GIL would
make the loop wait for it on a thread anyway) and collected for at most ``LINGER``
seconds; the writer thread then appends the whole batch with one ``write(2)``
on an ``O_APPEND`` descriptor. So the loop never waits on the disk, the writer
wakes a few times a second instead of once a request, and several worker
processes appending to one file never interleave within a line. SIGHUP
reopens the file (logrotate).

Each line is linked into the process's hash chain as it is encoded
(``gateway/observe/auditchain.py``): one chain per process, carried from app to app
across reloads and from file to file across rotations.

SECURITY: an entry holds names, decisions and reasons only. No field takes a
cookie value, a token, a header value or a query string.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import queue
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import orjson
from aiohttp import web

from gateway.config import AuditConfig
from gateway.observe.auditchain import Chain
from gateway.observe.metrics import METRICS
from gateway.policy.companyupdates import Removal
from gateway.policy.cookies import cookie_names

log = logging.getLogger(__name__)

REQUEST_ID_HEADER = "X-Request-Id"
LINGER = 0.05  # seconds a record may wait for others before the batch goes to the writer
MAX_BATCH = 512  # records; a fuller batch goes at once
_escaped = json.JSONEncoder(separators=(",", ":")).encode


class Timestamps:
    """Unix times as ISO 8601 UTC to the millisecond, what ``datetime.isoformat(timespec="milliseconds")`` writes.

    The date and time of day are formatted once a second rather than once a record (they cost more than the
    rest of the record together); the fraction is rounded to the microsecond as ``datetime.fromtimestamp``
    rounds it, so the two never differ, even a microsecond before the next second.
    """

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def __call__(self, ts: float) -> str:
        """``ts`` (Unix seconds, not before 1970) as ``2026-12-07T05:46:59.123+00:00``."""
        fraction, whole = math.modf(ts)
        micros = round(fraction * 1e6)
        if micros >= 1_000_000:
            whole, micros = whole + 1, micros - 1_000_000
        second = int(whole)
        if second != self._second:
            self._prefix = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
            self._second = second
        return f"{self._prefix}.{micros // 1000:03d}+00:00"


timestamp = Timestamps()


@dataclass
class CookieNames:
    """Cookie names seen on one request; never values."""

    received: tuple[str, ...] = ()
    forwarded: tuple[str, ...] = ()
    stripped: tuple[str, ...] = ()
    upstream_set: tuple[str, ...] = ()
    upstream_dropped: tuple[str, ...] = ()


@dataclass
class HeaderNames:
    """The names (never values) of the client's request headers that the positive model kept from upstream."""

    dropped: tuple[str, ...] = ()


@dataclass
class IdentityResult:
    """How the visitor was identified, or why not."""

    method: str | None = None
    user_id: str | None = None
    result: str = "none"
    reason: str | None = None


@dataclass
class AccessResult:
    """The access decision and the rule that made it."""

    decision: str | None = None
    rule: str | None = None


@dataclass
class UpstreamResult:
    """Where the request went upstream (URL without query) and what came back."""

    url: str | None = None
    status: int | None = None
    error: str | None = None


@dataclass
class CompanyPolicyResult:
    """What the prevent-company-update policy did to a Messenger call: field names and reasons, never values."""

    action: str
    """pass, strip, reject, or invalid (a body that is not a Messenger call)."""
    user_id: str | None = None
    """The user the call is about: the one in ``user_data``, else the verified sender."""
    verified: bool = False
    removed: list[Removal] = field(default_factory=list)
    """The policy's own removals (gateway/policy/companyupdates.py): a field's path and why, never its value."""
    reason: str | None = None

    def to_record(self) -> dict[str, Any]:
        """What ``dataclasses.asdict`` would give, for :meth:`AuditEntry.to_record`."""
        return {
            "action": self.action,
            "user_id": self.user_id,
            "verified": self.verified,
            "removed": [dict(vars(removed)) for removed in self.removed],
            "reason": self.reason,
        }


@dataclass
class AdminChange:
    """One write asked of the admin API: what it would change, the names of the fields, and whether it was made.

    ``result`` is "refused" until the store commits the write: a 409 delete, a 404 or a failed transaction
    never reads as a change made.
    """

    action: str
    resource: str
    id: str
    fields: list[str] = field(default_factory=list)
    result: Literal["made", "refused"] = "refused"

    def to_record(self) -> dict[str, Any]:
        """What ``dataclasses.asdict`` would give, for :meth:`AuditEntry.to_record`."""
        return {
            "action": self.action,
            "resource": self.resource,
            "id": self.id,
            "fields": list(self.fields),
            "result": self.result,
        }


@dataclass
class WebhookResult:
    """What became of an Intercom webhook delivery: its topic and ids, never its body or signature."""

    result: Literal["accepted", "unsigned", "bad_signature", "oversized", "replayed", "malformed", "off", "busy"]
    topic: str | None = None
    notification_id: str | None = None
    item: str | None = None
    """The item's type and Intercom id, as ``ticket/123``."""

    def to_record(self) -> dict[str, Any]:
        """What ``dataclasses.asdict`` would give, for :meth:`AuditEntry.to_record`."""
        return {"result": self.result, "topic": self.topic, "notification_id": self.notification_id, "item": self.item}


@dataclass
class StreamResult:
    """One event stream, recorded once when it ends: not a record per event."""

    opened: str
    """When it opened (ISO 8601); the record's ``ts`` is when it ended."""
    scope: str
    resumed: bool = False
    """Whether the page resumed an earlier stream (``Last-Event-ID``)."""
    events: int = 0
    """Events sent (heartbeats not counted)."""
    ended: str = "client_gone"
    """Why it ended: client_gone, slow (its page stopped reading), expired (the token), revoked (access), shutdown,
    or error."""


@dataclass
class AuditEntry:
    """The audit record of one request, filled in as it crosses the pipeline."""

    request_id: str
    client_ip: str
    method: str
    host: str
    path: str
    status: int | None = None
    duration_ms: float | None = None
    aborted: bool = False
    cookies: CookieNames = field(default_factory=CookieNames)
    headers: HeaderNames = field(default_factory=HeaderNames)
    identity: IdentityResult = field(default_factory=IdentityResult)
    access: AccessResult = field(default_factory=AccessResult)
    upstream: UpstreamResult = field(default_factory=UpstreamResult)
    company_policy: CompanyPolicyResult | None = None
    admin_change: AdminChange | None = None
    webhook: WebhookResult | None = None
    stream: StreamResult | None = None

    def to_record(self, ts: float) -> dict[str, Any]:
        """The JSON object written to the log."""
        # Spelled out rather than dataclasses.asdict(), which costs more than the rest of the record together.
        return {
            "ts": timestamp(ts),
            "request_id": self.request_id,
            "client_ip": self.client_ip,
            "method": self.method,
            "host": self.host,
            "path": self.path,
            "status": self.status,
            "duration_ms": self.duration_ms,
            "aborted": self.aborted,
            "cookies": dict(vars(self.cookies)),
            "headers": dict(vars(self.headers)),
            "identity": dict(vars(self.identity)),
            "access": dict(vars(self.access)),
            "upstream": dict(vars(self.upstream)),
            "company_policy": None if self.company_policy is None else self.company_policy.to_record(),
            "admin_change": None if self.admin_change is None else self.admin_change.to_record(),
            "webhook": None if self.webhook is None else self.webhook.to_record(),
            "stream": None if self.stream is None else dict(vars(self.stream)),
        }


def encode_entry(entry: AuditEntry, ts: float) -> bytes:
    """``entry.to_record(ts)`` as compact UTF-8 JSON: the bytes of ``json.dumps(record, ensure_ascii=False,
    separators=(",", ":"))``.

    orjson writes an entry's dataclasses as the objects :meth:`AuditEntry.to_record` spells out, field by field
    in the same order, without that dict being built (which cost more than the encoding); only ``ts`` goes in
    front. What orjson refuses to write (a lone surrogate, which a token's claims may carry; an integer past
    64 bits) the standard library writes instead, escaped to ASCII: the same JSON value, and no record lost.
    """
    try:
        body = orjson.dumps(entry)
    except orjson.JSONEncodeError:
        return _escaped(entry.to_record(ts)).encode()
    return b'{"ts":"' + timestamp(ts).encode() + b'",' + body[1:]


class RequestIds:
    """Request ids: 128 random bits each (a uuid4 has 122), in hex, drawn from the kernel a batch at a time.

    One ``getrandom(2)`` per ``BATCH`` requests instead of one each (``secrets.token_hex`` reads
    ``os.urandom`` too). A forked worker starts a batch of its own, so that no two processes hand out the same
    ids. Called from the event loop's thread only.
    """

    BATCH = 256

    def __init__(self) -> None:
        self._pool = ""
        self._next = 0
        os.register_at_fork(after_in_child=self.reset)

    def reset(self) -> None:
        """Forget the ids drawn so far (the parent's, after a fork): the next call draws a new batch."""
        self._pool, self._next = "", 0

    def __call__(self) -> str:
        """A new request id, 32 hex digits."""
        start = self._next
        if start >= len(self._pool):
            self._pool, start = os.urandom(16 * self.BATCH).hex(), 0
        self._next = start + 32
        return self._pool[start : start + 32]


new_request_id = RequestIds()


class AuditLog:
    """Appends records to a JSON-lines file in batches, from a writer thread; ``reopen`` for logrotate.

    A record reaches the file within ``LINGER`` seconds of :meth:`write`, and at once when no event loop
    runs (tools, tests); :meth:`close` writes everything first. Each line is chained (and MACed with ``key``).
    """

    _REOPEN = object()
    _STOP = object()

    def __init__(self, path: Path, key: bytes | None = None) -> None:
        self.path = path
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._batch: list[bytes] = []
        self._timer: asyncio.TimerHandle | None = None
        self._users = 0
        self._fd = self._open()
        self.chain = Chain.continuing(path, key)
        self._thread = threading.Thread(target=self._run, name="audit-writer", daemon=True)
        self._thread.start()

    def _open(self) -> int:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        return os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o666)

    def write(self, entry: AuditEntry, ts: float) -> None:
        """Encode ``entry``'s record at ``ts``, link it into the chain and add it to the batch; never blocks."""
        try:
            line = self.chain.link(encode_entry(entry, ts))
        except (TypeError, ValueError):
            log.exception("audit record could not be encoded")
            return
        self._batch.append(line)
        if len(self._batch) >= MAX_BATCH:
            self.flush()
        elif self._timer is None:
            try:
                self._timer = asyncio.get_running_loop().call_later(LINGER, self.flush)
            except RuntimeError:  # no event loop (tools, tests): straight to the writer
                self.flush()

    def flush(self) -> None:
        """Hand the batch to the writer thread now."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._batch:
            self._queue.put(b"".join(self._batch))
            self._batch = []

    def reopen(self) -> None:
        """Close and reopen the file after the records already written; the chain goes on in the new file."""
        self.flush()
        self._queue.put(self._REOPEN)
        self.chain.reopened = True

    def attach(self) -> None:
        """One more app writes here (a reload hands the log on to the new app)."""
        self._users += 1

    def detach(self) -> None:
        """An app is done with the log; the last one closes it."""
        self._users -= 1
        if self._users <= 0:
            self.close()

    def close(self) -> None:
        """Write every record, then stop the writer."""
        self.flush()
        self._queue.put(self._STOP)
        self._thread.join()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is self._STOP:
                os.close(self._fd)
                return
            if item is self._REOPEN:
                try:
                    fd = self._open()
                except OSError:  # keep appending to the old (rotated) file rather than lose records
                    log.exception("audit log could not be reopened; still writing to the old file")
                    continue
                os.close(self._fd)
                self._fd = fd
                continue
            if isinstance(item, bytes):
                self._append(item)

    def _append(self, data: bytes) -> None:
        """One write(2) for the whole batch: appends of whole lines never interleave with another process's."""
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self._fd, view) :]
        except OSError:
            log.exception("audit batch of %d bytes could not be written", len(view))


AUDIT_LOG = web.AppKey("audit_log", AuditLog)
AUDIT_ENTRY = web.RequestKey("audit_entry", AuditEntry)
REQUEST_ID = web.RequestKey("request_id", str)


def audit_log_context(
    config: AuditConfig, previous: AuditLog | None = None
) -> Callable[[web.Application], AsyncIterator[None]]:
    """A cleanup context giving the app its audit writer, closed with the last app that uses it.

    ``previous`` is the log of the app this one replaces (a reload): writing the same file, it is carried on,
    so that a process keeps one writer and one unbroken chain.
    """

    async def context(app: web.Application) -> AsyncIterator[None]:
        if previous is not None and previous.path == config.path:
            audit_log = previous
        else:
            key = config.chain_key.get_secret_value().encode() if config.chain_key is not None else None
            audit_log = AuditLog(config.path, key)
        audit_log.attach()
        app[AUDIT_LOG] = audit_log
        yield
        audit_log.detach()

    return context


def route_name(request: web.Request) -> str:
    """A bounded label for metrics: the route's name or pattern, never the raw path."""
    route = request.match_info.route
    if route.name:
        return route.name
    resource = route.resource
    return resource.canonical if resource is not None else "unmatched"


def open_entry(request: web.Request) -> AuditEntry:
    """Give the request an id and an audit entry, which the stages fill in and :func:`close_entry` writes."""
    entry = AuditEntry(
        request_id=new_request_id(),
        client_ip=request.remote or "",
        method=request.method,
        host=request.host,
        path=request.path,
        # Every request, whatever answers it: the names the client sent (what went upstream, the proxy adds).
        cookies=CookieNames(received=cookie_names(request.headers.getall("Cookie", ()))),
    )
    request[AUDIT_ENTRY] = entry
    request[REQUEST_ID] = entry.request_id  # for the response header, which may be prepared after this returns
    return entry


def close_entry(request: web.Request, entry: AuditEntry, status: int, started: float) -> None:
    """Stamp the status the client got and the time since ``started`` (``perf_counter``); write and count it."""
    entry.status = status
    entry.duration_ms = round((time.perf_counter() - started) * 1000, 3)
    request.app[AUDIT_LOG].write(entry, time.time())
    request.app[METRICS].observe_request(route_name(request), status, entry.duration_ms / 1000, entry.cookies)
    # Written: the entry is done with. aiohttp keeps a kept-alive connection's last request until the
    # next one arrives, and an entry (cookie names, identity, reasons) is some 1.5 KB of that.
    del request[AUDIT_ENTRY]

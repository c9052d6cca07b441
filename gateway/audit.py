"""The audit log: one JSON line per request, written off the event loop.

Each request gets an :class:`AuditEntry` that the pipeline stages fill in
(cookie names, identity, access, upstream); the audit middleware stamps the
request id, status and duration and hands it to :class:`AuditLog`, whose
writer thread appends it to the file. SIGHUP reopens the file (logrotate).

SECURITY: an entry holds names, decisions and reasons only. No field takes a
cookie value, a token, a header value or a query string.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from aiohttp import web
from aiohttp.typedefs import Handler

from gateway.metrics import METRICS

log = logging.getLogger(__name__)

REQUEST_ID_HEADER = "X-Request-Id"


@dataclass
class CookieNames:
    """Cookie names seen on one request; never values."""

    received: tuple[str, ...] = ()
    forwarded: tuple[str, ...] = ()
    stripped: tuple[str, ...] = ()
    upstream_set: tuple[str, ...] = ()
    upstream_dropped: tuple[str, ...] = ()


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
class RemovedField:
    """A field the company-update policy kept from upstream, and why."""

    field: str
    reason: str


@dataclass
class CompanyPolicyResult:
    """What the prevent-company-update policy did to a Messenger call: field names and reasons, never values."""

    action: str
    """pass, strip, reject, or invalid (a body that is not a Messenger call)."""
    user_id: str | None = None
    """The user the call is about: the one in ``user_data``, else the verified sender."""
    verified: bool = False
    removed: list[RemovedField] = field(default_factory=list)
    reason: str | None = None


@dataclass
class AdminChange:
    """One write through the admin API: what changed, and the names of the fields it set."""

    action: str
    resource: str
    id: str
    fields: list[str] = field(default_factory=list)


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
    identity: IdentityResult = field(default_factory=IdentityResult)
    access: AccessResult = field(default_factory=AccessResult)
    upstream: UpstreamResult = field(default_factory=UpstreamResult)
    company_policy: CompanyPolicyResult | None = None
    admin_change: AdminChange | None = None

    def to_record(self, ts: float) -> dict[str, Any]:
        """The JSON object written to the log."""
        return {"ts": datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds"), **asdict(self)}


class AuditLog:
    """Appends records to a JSON-lines file from a writer thread; ``reopen`` for logrotate."""

    _REOPEN = object()
    _STOP = object()

    def __init__(self, path: Path) -> None:
        self.path = path
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._file = self._open()
        self._thread = threading.Thread(target=self._run, name="audit-writer", daemon=True)
        self._thread.start()

    def _open(self) -> TextIO:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        return self.path.open("a", encoding="utf-8")

    def write(self, record: dict[str, Any]) -> None:
        """Queue one record; never blocks the caller."""
        self._queue.put(record)

    def reopen(self) -> None:
        """Close and reopen the file after the records already queued."""
        self._queue.put(self._REOPEN)

    def close(self) -> None:
        """Write what is queued, then stop the writer."""
        self._queue.put(self._STOP)
        self._thread.join()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is self._STOP:
                self._file.close()
                return
            if item is self._REOPEN:
                self._file.close()
                self._file = self._open()
                continue
            try:
                self._file.write(json.dumps(item, separators=(",", ":")) + "\n")
                if self._queue.empty():
                    self._file.flush()
            except (OSError, TypeError, ValueError):
                log.exception("audit record could not be written")


AUDIT_LOG = web.AppKey("audit_log", AuditLog)
AUDIT_ENTRY = web.RequestKey("audit_entry", AuditEntry)


def audit_log_context(path: Path) -> Callable[[web.Application], AsyncIterator[None]]:
    """A cleanup context owning the app's audit writer: opened at start, flushed and closed at stop."""

    async def context(app: web.Application) -> AsyncIterator[None]:
        app[AUDIT_LOG] = AuditLog(path)
        yield
        app[AUDIT_LOG].close()

    return context


def route_name(request: web.Request) -> str:
    """A bounded label for metrics: the route's name or pattern, never the raw path."""
    route = request.match_info.route
    if route.name:
        return route.name
    resource = route.resource
    return resource.canonical if resource is not None else "unmatched"


@web.middleware
async def audit_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Give the request an id and an audit entry; write the entry when the request ends.

    Outermost, so that it records the status the client really got, after
    the error middleware has turned exceptions into pages.
    """
    started = time.perf_counter()
    entry = AuditEntry(
        request_id=uuid.uuid4().hex,
        client_ip=request.remote or "",
        method=request.method,
        host=request.host,
        path=request.path,
    )
    request[AUDIT_ENTRY] = entry
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    except BaseException:
        entry.aborted = True
        raise
    finally:
        entry.status = status
        entry.duration_ms = round((time.perf_counter() - started) * 1000, 3)
        request.app[AUDIT_LOG].write(entry.to_record(time.time()))
        request.app[METRICS].observe_request(route_name(request), status, entry.duration_ms / 1000, entry.cookies)

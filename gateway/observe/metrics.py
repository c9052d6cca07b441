"""Prometheus metrics, one registry per app so that test apps never share counters.

A request's counts go into plain dicts in the process (a dict add each, no
lock); they are folded into prometheus_client's counters and histograms when
the registry is collected, that is at scrape time. With ``listen.workers``
every worker's prometheus_client values live in files of its own in one folder
(prometheus_client's multiprocess mode), and a scrape, whichever worker answers
it, reports the sum over all of them: the worker that answers first asks each
sibling to fold, over a datagram socket in that folder, and waits for their
answers, so the sum holds every request answered before the scrape.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
from bisect import bisect_left
from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path
from typing import Protocol

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, values
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector

log = logging.getLogger(__name__)

OTHER = "<other>"
MAX_COOKIE_LABELS = 64
SHARED_FOLDER = "PROMETHEUS_MULTIPROC_DIR"  # prometheus_client's own name for the folder
SIBLING_TIMEOUT = 1.0  # seconds a scrape waits for the other workers to fold; a stuck one is left out
_FOLD, _FOLDED = b"F", b"D"  # a fold request and its answer, each followed by the scrape's nonce


def count_in_shared_folder(folder: Path) -> None:
    """From now on, this process's metrics count into ``folder``, which its sibling workers share.

    Called in each worker before its app exists: prometheus_client picks the value class when it is
    imported (the parent imported it before the number of workers was known), so it is set again here.
    """
    os.environ[SHARED_FOLDER] = str(folder)
    pid = os.getpid()  # a worker never forks again: its files' name, without a getpid(2) on every count
    values.ValueClass = values.MultiProcessValue(lambda: pid)  # type: ignore[no-untyped-call]


class _CookieCounts(Protocol):
    stripped: tuple[str, ...]
    upstream_dropped: tuple[str, ...]


class _Fold:
    """Registered first, so that any collection of the registry (a scrape, a test's look-up) folds first."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def describe(self) -> Iterable[Metric]:
        """No metric of its own (and so the registry does not collect it to find out)."""
        return ()

    def collect(self) -> Iterable[Metric]:
        """Fold the in-process counts; no metric of its own."""
        self.metrics.fold()
        return ()


class Metrics:
    """The gateway's counters and histograms: counted in-process, folded into prometheus_client when scraped."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(_Fold(self))
        self.requests = Counter(
            "gateway_requests", "Requests answered, by route and status.", ["route", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "gateway_request_duration_seconds", "Time to answer a request, by route.", ["route"], registry=self.registry
        )
        self.cookies_stripped = Counter(
            "gateway_cookies_stripped",
            "Request cookies not forwarded upstream, by name.",
            ["name"],
            registry=self.registry,
        )
        self.set_cookies_dropped = Counter(
            "gateway_upstream_set_cookies_dropped",
            "Upstream Set-Cookies not passed on, by name.",
            ["name"],
            registry=self.registry,
        )
        self.headers_dropped = Counter(
            "gateway_request_headers_dropped",
            "Client request headers not forwarded upstream, by reason (underscore, not_allowed).",
            ["reason"],
            registry=self.registry,
        )
        self.upstream_errors = Counter(
            "gateway_upstream_errors", "Upstream failures, by kind.", ["kind"], registry=self.registry
        )
        self.identity_results = Counter(
            "gateway_identity_results",
            "Identity verification outcomes, by method, result and reason.",
            ["method", "result", "reason"],
            registry=self.registry,
        )
        self.company_policy = Counter(
            "gateway_messenger_company_policy",
            "Messenger calls by what the prevent-company-update policy did (pass, strip, reject, invalid).",
            ["action"],
            registry=self.registry,
        )
        self.intercom_synced = Counter(
            "gateway_intercom_synced", "Items written from Intercom, by kind.", ["kind"], registry=self.registry
        )
        self.intercom_calls = Counter(
            "gateway_intercom_calls",
            "Intercom REST API calls, by status (or error, timeout).",
            ["status"],
            registry=self.registry,
        )
        self.intercom_syncs = Counter(
            "gateway_intercom_syncs",
            "Intercom syncs, by outcome (ok, unauthorized, failed).",
            ["outcome"],
            registry=self.registry,
        )
        self.intercom_last_sync = Gauge(
            "gateway_intercom_last_sync_timestamp_seconds",
            "When the last Intercom sync succeeded (Unix time).",
            registry=self.registry,
            multiprocess_mode="max",
        )
        self.intercom_lag = Gauge(
            "gateway_intercom_sync_lag_seconds",
            "How far the store trails Intercom: the last sync's end less the newest ticket update it read.",
            registry=self.registry,
            multiprocess_mode="mostrecent",
        )
        self._cookie_labels: set[str] = set()
        # Every label of the gateway takes its values from a bounded set (routes, statuses, reasons, capped
        # cookie names), so these stay small.
        self._counts: dict[tuple[Counter, tuple[str, ...]], float] = {}
        self._bounds = self.latency._upper_bounds  # the buckets' upper bounds, +Inf last
        self._latencies: dict[str, tuple[list[int], list[float]]] = {}
        self._siblings: Siblings | None = None
        self._users = 0

    def count(self, metric: Counter, *labels: str, amount: float = 1.0) -> None:
        """Add ``amount`` to ``metric`` under ``labels``: a dict add now, prometheus_client's write at the fold."""
        key = (metric, labels)
        self._counts[key] = self._counts.get(key, 0.0) + amount

    def fold(self) -> None:
        """Hand the counts made since the last fold to prometheus_client (its files, with workers)."""
        counts, self._counts = self._counts, {}
        latencies, self._latencies = self._latencies, {}
        for (metric, labels), amount in counts.items():
            metric.labels(*labels).inc(amount)
        for route, (buckets, total) in latencies.items():
            histogram = self.latency.labels(route)
            # What ``observe()`` does once a value, once a bucket: prometheus_client has no public way to add
            # many observations at once (tests/observe/test_metrics.py holds these attributes to it).
            for index, observed in enumerate(buckets):
                if observed:
                    histogram._buckets[index].inc(observed)
            histogram._sum.inc(total[0])

    def _cookie_label(self, name: str) -> str:
        # SECURITY: cookie names come from clients; a bounded label set keeps
        # a flood of invented names from growing the registry without end.
        if name in self._cookie_labels:
            return name
        if len(self._cookie_labels) < MAX_COOKIE_LABELS:
            self._cookie_labels.add(name)
            return name
        return OTHER

    async def exposition(self) -> bytes:
        """The text a scrape gets: this app's registry, or every worker's counts summed with workers."""
        folder = os.environ.get(SHARED_FOLDER)
        if folder is None:
            return generate_latest(self.registry)
        self.fold()
        if self._siblings is not None:
            await self._siblings.fold_all()
        shared = CollectorRegistry()
        MultiProcessCollector(shared, path=folder)  # type: ignore[no-untyped-call]
        return generate_latest(shared)

    def observe_request(self, route: str, status: int, seconds: float, cookies: _CookieCounts) -> None:
        """Count one finished request."""
        self.count(self.requests, route, str(status))
        latency = self._latencies.get(route)
        if latency is None:
            latency = self._latencies[route] = ([0] * len(self._bounds), [0.0])
        latency[0][bisect_left(self._bounds, seconds)] += 1  # the first bucket whose bound is >= seconds
        latency[1][0] += seconds
        for name in cookies.stripped:
            self.count(self.cookies_stripped, self._cookie_label(name))
        for name in cookies.upstream_dropped:
            self.count(self.set_cookies_dropped, self._cookie_label(name))

    def attach(self) -> None:
        """One more app counts here (a reload hands the metrics on); the first, with workers, joins the others."""
        self._users += 1
        folder = os.environ.get(SHARED_FOLDER)
        if self._siblings is None and folder is not None:
            self._siblings = Siblings(Path(folder), self.fold)

    def detach(self) -> None:
        """An app is done with the metrics; after the last, the counts are folded and the exchange closed."""
        self._users -= 1
        if self._users <= 0:
            self.fold()  # a worker's files outlive it: they must hold all it counted
            if self._siblings is not None:
                self._siblings.close()
                self._siblings = None


class Siblings:
    """A worker's end of the fold exchange: a datagram socket in the shared folder, named for its pid.

    A fold request (``F`` and a nonce) from a sibling's scrape is answered (``D`` and the nonce) once this
    worker's counts are in its files; :meth:`fold_all` sends one to every other worker and waits for them.
    """

    def __init__(self, folder: Path, fold: Callable[[], None]) -> None:
        self.folder = folder
        self._fold = fold
        self.path = folder / f"fold-{os.getpid()}.sock"
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.setblocking(False)
        self.path.unlink(missing_ok=True)  # a pid come round again
        self._sock.bind(str(self.path))
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self._sock, self._readable)
        self._waiting: dict[bytes, tuple[set[str], asyncio.Future[None]]] = {}

    def _readable(self) -> None:
        while True:
            try:
                data, sender = self._sock.recvfrom(64)
            except BlockingIOError:
                return
            kind, nonce = data[:1], data[1:]
            if kind == _FOLD:
                self._fold()
                self._send(_FOLDED + nonce, sender)
            elif kind == _FOLDED and nonce in self._waiting:
                pending, done = self._waiting[nonce]
                pending.discard(sender)
                if not pending and not done.done():
                    done.set_result(None)

    def _send(self, data: bytes, to: str) -> bool:
        try:
            self._sock.sendto(data, to)
        except OSError:  # a worker that has exited (its socket file stays), or one too busy to take it
            return False
        return True

    async def fold_all(self) -> None:
        """Ask every other worker to fold, and wait (at most ``SIBLING_TIMEOUT``) until they all have."""
        nonce = secrets.token_bytes(8)
        own = str(self.path)
        asked = {str(path) for path in self.folder.glob("fold-*.sock") if str(path) != own}
        pending = {path for path in asked if self._send(_FOLD + nonce, path)}
        if not pending:
            return
        done: asyncio.Future[None] = self._loop.create_future()
        self._waiting[nonce] = (pending, done)
        try:
            async with asyncio.timeout(SIBLING_TIMEOUT):
                await done
        except TimeoutError:
            log.warning("metrics: %d worker(s) did not fold in time; their latest counts are left out", len(pending))
        finally:
            del self._waiting[nonce]

    def close(self) -> None:
        """Stop answering; the socket file goes with it."""
        self._loop.remove_reader(self._sock)
        self._sock.close()
        self.path.unlink(missing_ok=True)


async def metrics_context(app: web.Application) -> AsyncIterator[None]:
    """Cleanup context: the app counts into its metrics (carried across reloads) until it stops."""
    metrics = app[METRICS]
    metrics.attach()
    yield
    metrics.detach()


METRICS = web.AppKey("metrics", Metrics)

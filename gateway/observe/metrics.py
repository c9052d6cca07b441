"""Prometheus metrics, one registry per app so that test apps never share counters.

With ``listen.workers`` every worker counts into files of its own in one
folder (prometheus_client's multiprocess mode), and a scrape, whichever worker
answers it, reports the sum over all of them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol, TypeVar

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, values
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.multiprocess import MultiProcessCollector

OTHER = "<other>"
MAX_COOKIE_LABELS = 64
_Metric = TypeVar("_Metric", bound=MetricWrapperBase)
SHARED_FOLDER = "PROMETHEUS_MULTIPROC_DIR"  # prometheus_client's own name for the folder


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


class Metrics:
    """The gateway's counters and histograms."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
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
        self._children: dict[tuple[MetricWrapperBase, tuple[str, ...]], MetricWrapperBase] = {}

    def child(self, metric: _Metric, *values: str) -> _Metric:
        """``metric.labels(*values)``, found once and then kept: labels() costs more than the increment it serves.

        Every label of the gateway takes its values from a bounded set (routes, statuses, reasons, capped
        cookie names), so this stays small.
        """
        key = (metric, values)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*values)
        return found  # type: ignore[return-value]

    def _cookie_label(self, name: str) -> str:
        # SECURITY: cookie names come from clients; a bounded label set keeps
        # a flood of invented names from growing the registry without end.
        if name in self._cookie_labels:
            return name
        if len(self._cookie_labels) < MAX_COOKIE_LABELS:
            self._cookie_labels.add(name)
            return name
        return OTHER

    def exposition(self) -> bytes:
        """The text a scrape gets: this app's registry, or every worker's counts summed with workers."""
        folder = os.environ.get(SHARED_FOLDER)
        if folder is None:
            return generate_latest(self.registry)
        shared = CollectorRegistry()
        MultiProcessCollector(shared, path=folder)  # type: ignore[no-untyped-call]
        return generate_latest(shared)

    def observe_request(self, route: str, status: int, seconds: float, cookies: _CookieCounts) -> None:
        """Count one finished request."""
        self.child(self.requests, route, str(status)).inc()
        self.child(self.latency, route).observe(seconds)
        for name in cookies.stripped:
            self.child(self.cookies_stripped, self._cookie_label(name)).inc()
        for name in cookies.upstream_dropped:
            self.child(self.set_cookies_dropped, self._cookie_label(name)).inc()


METRICS = web.AppKey("metrics", Metrics)

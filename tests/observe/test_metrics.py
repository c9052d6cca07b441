"""The metrics: counted in-process, folded into prometheus_client when the registry is collected."""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Histogram, generate_latest, values
from prometheus_client.parser import text_string_to_metric_families

from gateway.observe.audit import CookieNames
from gateway.observe.metrics import SHARED_FOLDER, Metrics


def _samples(metrics: Metrics, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {
        tuple(sorted(sample.labels.items())): sample.value
        for family in metrics.registry.collect()
        for sample in family.samples
        if sample.name == name
    }


def test_a_count_waits_in_the_process_until_a_collection_folds_it() -> None:
    """No prometheus_client write per count: the counter itself is untouched until the registry is collected."""
    metrics = Metrics()
    for _ in range(3):
        metrics.observe_request("proxy", 200, 0.004, CookieNames(stripped=("_ga", "tracking")))
    metrics.count(metrics.upstream_errors, "timeout", amount=2)
    assert [sample.value for family in metrics.requests.collect() for sample in family.samples] == []
    assert metrics.registry.get_sample_value("gateway_requests_total", {"route": "proxy", "status": "200"}) == 3
    assert _samples(metrics, "gateway_cookies_stripped_total") == {(("name", "_ga"),): 3, (("name", "tracking"),): 3}
    assert metrics.registry.get_sample_value("gateway_upstream_errors_total", {"kind": "timeout"}) == 2
    metrics.observe_request("proxy", 200, 0.004, CookieNames())
    # Folded counts stay; a second fold adds only what came since.
    assert metrics.registry.get_sample_value("gateway_requests_total", {"route": "proxy", "status": "200"}) == 4


@given(st.lists(st.tuples(st.sampled_from(["proxy", "portal"]), st.floats(0, 30, allow_nan=False)), max_size=40))
def test_folded_latencies_read_as_prometheus_clients_own_observations(observed: list[tuple[str, float]]) -> None:
    """Bucket by bucket and in the sum, what the fold adds is what ``Histogram.observe`` would have (it reaches
    into the histogram's buckets, which this holds to the installed prometheus_client)."""
    metrics = Metrics()
    reference = CollectorRegistry()
    histogram = Histogram(
        "gateway_request_duration_seconds", "Time to answer a request, by route.", ["route"], registry=reference
    )
    for route, seconds in observed:
        metrics.observe_request(route, 200, seconds, CookieNames())
        histogram.labels(route).observe(seconds)
    # The same exposition lines, but for the time each series was created.
    ours = [line for line in generate_latest(metrics.registry).splitlines() if b"duration_seconds" in line]
    theirs = generate_latest(reference).splitlines()
    assert [line for line in ours if b"_created" not in line] == [line for line in theirs if b"_created" not in line]


async def test_a_workers_scrape_passes_over_a_worker_that_has_gone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """With workers (tests/run/test_workers.py sums real ones): an exited worker's socket file stays in the
    folder; a scrape is not held up by it, and reports this worker's own counts from its files."""
    monkeypatch.setenv(SHARED_FOLDER, str(tmp_path))
    monkeypatch.setattr(values, "ValueClass", values.MultiProcessValue())  # type: ignore[no-untyped-call]
    gone = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    gone.bind(str(tmp_path / "fold-1.sock"))
    gone.close()
    metrics = Metrics()
    metrics.attach()
    metrics.observe_request("proxy", 200, 0.004, CookieNames())
    with caplog.at_level(logging.WARNING):
        text = (await metrics.exposition()).decode()
    assert caplog.records == []
    requests = [
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "gateway_requests_total"
    ]
    assert requests == [1]
    metrics.detach()
    assert not (tmp_path / f"fold-{os.getpid()}.sock").exists()

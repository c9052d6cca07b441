"""Ops endpoints: liveness, readiness, metrics."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import CANARY, SESSION_COOKIE, Gateway, RecordingUpstream, StartGateway
from tests.proxy.test_proxy import free_port


def samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """The samples of one metric family, keyed by their sorted labels."""
    return {
        tuple(sorted(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    }


async def test_healthz_answers_without_upstream(start_gateway: StartGateway) -> None:
    gateway = await start_gateway(upstream={"url": f"http://127.0.0.1:{free_port()}"})
    async with gateway.client.get(gateway.url / "healthz") as response:
        assert (response.status, await response.json()) == (200, {"status": "ok"})


async def readyz(gateway: Gateway) -> tuple[int, dict[str, Any]]:
    async with gateway.client.get(gateway.url / "readyz") as response:
        return response.status, await response.json()


async def test_readyz_follows_the_upstream(start_gateway: StartGateway, gateway: Gateway) -> None:
    assert await readyz(gateway) == (
        200,
        {"status": "ok", "checks": {"store": {"status": "ok"}, "upstream": {"status": "ok"}}},
    )


async def test_readyz_says_why_in_demo_mode_nothing_answers_at_the_upstream(start_gateway: StartGateway) -> None:
    """Demo mode: dev login on, and nothing at upstream.url; the body names each dependency, never the address."""
    port = free_port()
    down = await start_gateway(upstream={"url": f"http://127.0.0.1:{port}"}, identity={"dev_login": True})
    status, body = await readyz(down)
    assert (status, body) == (
        503,
        {
            "status": "unavailable",
            "checks": {
                "store": {"status": "ok"},
                "upstream": {"status": "unreachable", "reason": "connection refused: nothing listens there"},
            },
        },
    )
    assert str(port) not in json.dumps(body)


async def test_readyz_says_an_upstream_closed_the_connection(start_gateway: StartGateway) -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.close()

    server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    async with server:
        port = server.sockets[0].getsockname()[1]
        gateway = await start_gateway(upstream={"url": f"http://127.0.0.1:{port}"})
        status, body = await readyz(gateway)
    assert status == 503
    assert body["checks"]["upstream"] == {"status": "unreachable", "reason": "closed the connection without answering"}


async def test_readyz_says_the_store_is_unavailable(start_gateway: StartGateway) -> None:
    gateway = await start_gateway(store={"busy_timeout": 0.2})  # gives up on the lock well before the probe would
    locker = sqlite3.connect(gateway.config.store.path, isolation_level=None)
    try:
        locker.execute("BEGIN IMMEDIATE")
        status, body = await readyz(gateway)
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    assert status == 503
    assert body["checks"] == {
        "store": {"status": "unavailable", "reason": "locked by another process, missing or failing"},
        "upstream": {"status": "ok"},
    }


async def test_metrics_count_requests_cookies_and_upstream_errors(start_gateway: StartGateway) -> None:
    gateway = await start_gateway()
    for _ in range(3):
        async with gateway.client.get(gateway.url / "x", headers={"Cookie": f"{SESSION_COOKIE}=a; junk={CANARY}"}):
            pass
    down = await start_gateway(upstream={"url": f"http://127.0.0.1:{free_port()}"})
    async with down.client.get(down.url / "x"):
        pass

    async with gateway.client.get(gateway.url / "metrics") as response:
        assert response.status == 200
        text = await response.text()
    assert samples(text, "gateway_requests_total")[(("route", "proxy"), ("status", "200"))] == 3
    assert samples(text, "gateway_cookies_stripped_total") == {(("name", "junk"),): 3}
    assert samples(text, "gateway_request_duration_seconds_count")[(("route", "proxy"),)] == 3
    assert CANARY not in text

    async with down.client.get(down.url / "metrics") as response:
        text = await response.text()
    assert samples(text, "gateway_upstream_errors_total") == {(("kind", "unreachable"),): 1}
    assert samples(text, "gateway_requests_total")[(("route", "proxy"), ("status", "502"))] == 1


async def test_cookie_name_labels_are_bounded(gateway: Gateway) -> None:
    cookie = "; ".join(f"name{i}=v" for i in range(200))
    async with gateway.client.get(gateway.url / "x", headers={"Cookie": cookie}):
        pass
    async with gateway.client.get(gateway.url / "metrics") as response:
        stripped = samples(await response.text(), "gateway_cookies_stripped_total")
    assert len(stripped) == 65
    assert stripped[(("name", "<other>"),)] == 136


async def test_metrics_are_hidden_from_peers_outside_metrics_allow(
    start_gateway: StartGateway, upstream: RecordingUpstream
) -> None:
    gateway = await start_gateway(listen={"metrics_allow": ["10.0.0.0/8"]})
    async with gateway.client.get(gateway.url / "metrics", headers={"X-Forwarded-For": "10.1.1.1"}) as response:
        assert response.status == 404
        assert "gateway_requests" not in await response.text()
    assert upstream.requests == []

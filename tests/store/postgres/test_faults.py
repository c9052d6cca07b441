"""The database down, killed or restarted under a gateway on the PostgreSQL store: the portal, the API and
the admin API answer 503 and ``/readyz`` says not ready while it is away; the proxied help center keeps
flowing; once it is back, every answer is served again, and no write is lost or applied twice."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator

import pytest

from gateway.edge.guard import STORE
from tests.conftest import Gateway, StartGateway
from tests.pgserver import PostgresServer, start_server
from tests.routes.adminapi import DEMO, PARTS, T1001, call, portal

VISITOR = "u-ann"


@pytest.fixture(scope="module")
def own_server() -> Iterator[PostgresServer]:
    """A server of these tests' own, since they stop and kill it."""
    server = start_server()
    yield server
    server.remove()


async def on_postgres(start_gateway: StartGateway, server: PostgresServer) -> Gateway:
    store = {**DEMO["store"], "backend": "postgres", "dsn": server.database(), "statement_timeout": 2}
    return await start_gateway(**{**DEMO, "store": store})


async def statuses(gateway: Gateway) -> dict[str, int]:
    """The status of a portal page, a portal API call, an admin call, readiness and a proxied page."""
    answers = {
        "portal": await portal(gateway, "/tickets", VISITOR),
        "api": await portal(gateway, "/api/v1/me", VISITOR),
        "admin": await call(gateway, "GET", "/admin/api/companies/acme"),
        "readyz": await call(gateway, "GET", "/readyz", headers={}),
        "help center": await call(gateway, "GET", "/articles/en/42-getting-started", headers={}),
    }
    for name, answer in answers.items():
        if answer.status == 503 and name != "readyz":  # the page names no database, driver or address
            for secret in ("postgres", "asyncpg", "127.0.0.1", str(gateway.config.store.dsn)):
                assert secret not in answer.body.decode(errors="replace").lower(), (name, secret)
    return {name: answer.status for name, answer in answers.items()}


UP = {"portal": 200, "api": 200, "admin": 200, "readyz": 200, "help center": 200}
DOWN = {"portal": 503, "api": 503, "admin": 503, "readyz": 503, "help center": 200}


async def test_the_database_down_answers_503_but_the_help_center_flows_and_all_recovers(
    start_gateway: StartGateway, own_server: PostgresServer
) -> None:
    gateway = await on_postgres(start_gateway, own_server)
    assert await statuses(gateway) == UP
    own_server.stop()
    try:
        assert await statuses(gateway) == DOWN
        assert await statuses(gateway) == DOWN
    finally:
        own_server.start()
    assert await statuses(gateway) == UP


async def test_killed_and_restarted_under_load_no_write_is_lost_or_doubled(
    start_gateway: StartGateway, own_server: PostgresServer
) -> None:
    """Writers and readers keep going while the server is killed (SIGKILL) and started again: each answer is
    a success or a 503 (those in flight at the kill and those sent while it is down); every acknowledged reply
    is stored once, every refused one at most once; everything asked once the server is back succeeds."""
    gateway = await on_postgres(start_gateway, own_server)
    phase = "up"
    answers: list[tuple[str, str, int]] = []  # (phase when sent, reply body or "" for a read, status)
    stop = asyncio.Event()
    arrived = asyncio.Condition()

    async def record(sent: str, body: str, status: int) -> None:
        answers.append((sent, body, status))
        async with arrived:
            arrived.notify_all()

    async def writer(name: str) -> None:
        for n in range(1_000_000):
            if stop.is_set():
                return
            sent, body = phase, f"load {name} {n}"
            answer = await call(gateway, "POST", PARTS, {"body": body, "public": n % 2 == 0, "author_name": name})
            await record(sent, body, answer.status)

    async def reader() -> None:
        while not stop.is_set():
            sent = phase
            await record(sent, "", (await portal(gateway, "/api/v1/tickets?q=load", VISITOR)).status)

    async def answered(count: int) -> None:
        """Until ``count`` more answers have come, whatever they are."""
        target = len(answers) + count
        async with arrived:
            await arrived.wait_for(lambda: len(answers) >= target)

    workers = [asyncio.create_task(writer(f"w{i}")) for i in range(3)] + [asyncio.create_task(reader())]
    try:
        await answered(30)
        phase = "down"
        own_server.kill()
        await answered(10)  # seen while it is down
        own_server.start()
        phase = "back"
        await answered(60)
    finally:
        stop.set()
        await asyncio.gather(*workers)

    assert {status for _, _, status in answers} <= {200, 201, 503}
    assert 503 in {status for sent, _, status in answers if sent == "down"}
    assert {status for sent, _, status in answers if sent == "back"} <= {200, 201}
    stored = Counter(part.body for part in (await gateway.running.app[STORE].support_ticket("1001")).parts)
    for _, body, status in answers:
        if body:
            assert stored[body] == (1 if status < 300 else stored[body]), (body, status)
            assert stored[body] <= 1, body
    assert (await call(gateway, "GET", T1001)).status == 200

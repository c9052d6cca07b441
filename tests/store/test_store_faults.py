"""A store that is locked or missing (advisory class 7, lifecycle): a 503 page and ``/readyz`` false,
then recovery without a restart."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from gateway.policy.identity import sign_token
from tests.conftest import DOMAIN, SECRET, Gateway, StartGateway

ACCESS = {"rules": [{"attribute": "person.email_domain", "op": "equals", "value": "acme.example.com"}]}
STORE = {"store": {"seed_demo": True, "busy_timeout": 0.2}, "portal": {"access": ACCESS}}


def _headers() -> dict[str, str]:
    token = sign_token(SECRET, user_id="u-ann", now=time.time(), ttl=600, email="ann@acme.example.com")
    return {"Host": DOMAIN, "Authorization": f"Bearer {token}", "Accept": "text/html"}


async def _status(gateway: Gateway, path: str, method: str = "GET") -> int:
    async with gateway.client.request(method, gateway.url / path.lstrip("/"), headers=_headers()) as response:
        body = await response.text()
        if response.status == 503 and path != "/readyz":
            assert response.headers["X-Request-Id"] in body
            assert str(gateway.config.store.path) not in body
            assert "sqlite" not in body.lower()
        return response.status


async def _first_ticket(gateway: Gateway) -> str:
    async with gateway.client.get(gateway.url / "api" / "v1" / "tickets", headers=_headers()) as response:
        assert response.status == 200
        return str((await response.json())["tickets"][0]["ticket_id"])


async def test_a_locked_store_answers_503_until_the_lock_is_released(start_gateway: StartGateway) -> None:
    """Class 7, store write-locked by another process (an import, a backup): writes get a 503 page and
    ``/readyz`` is false (reads go on, WAL); once the lock is gone, both recover in the same process."""
    gateway = await start_gateway(**STORE)
    join = f"/api/v1/tickets/{await _first_ticket(gateway)}/join"
    locker = sqlite3.connect(gateway.config.store.path, isolation_level=None)
    try:
        locker.execute("BEGIN IMMEDIATE")
        assert await _status(gateway, join, "POST") == 503
        assert await _status(gateway, "/readyz") == 503
        assert await _status(gateway, "/tickets") == 200
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    assert await _status(gateway, join, "POST") == 200
    assert await _status(gateway, "/readyz") == 200


async def test_a_missing_store_answers_503_until_it_is_back(start_gateway: StartGateway, tmp_path: Path) -> None:
    """Class 7, store file gone (a lost volume, a bad restore): 503 pages and not ready, then served again."""
    gateway = await start_gateway(**STORE)
    paths = ("/tickets", "/api/v1/me", "/readyz")
    assert [await _status(gateway, path) for path in paths] == [200, 200, 200]
    path = gateway.config.store.path
    moved = {file: tmp_path / f"away-{file.name}" for file in path.parent.glob(path.name + "*")}
    for file, away in moved.items():
        file.rename(away)
    assert [await _status(gateway, path) for path in paths] == [503, 503, 503]
    for file, away in moved.items():
        away.rename(file)
    assert [await _status(gateway, path) for path in paths] == [200, 200, 200]

"""Several worker processes (``--workers``): each takes connections, they append whole lines to one audit file,
drain on SIGTERM, reload on SIGHUP and sum their metrics; a worker or a parent that dies stops the rest."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import ssl
import time
from collections.abc import Callable, Coroutine
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import psutil  # no types-psutil in the test extras
import pytest
import trustme
from aiohttp import web

from tests.conftest import (
    DOMAIN,
    CertFiles,
    RecordingUpstream,
)
from tests.run.conftest import (
    GatewayProcess,
    Launch,
    connection_refused,
    proxied_count,
    run_cli,
    served_certificate,
    serving,
    status_for_host,
    wait_for_audit,
    write_config,
)

pytestmark = pytest.mark.slow


async def _wait_for_logs(served: GatewayProcess, message: str, count: int, seconds: float = 10.0) -> None:
    """Until ``count`` JSON log records' messages start with ``message`` (one from each worker, say)."""
    deadline = time.monotonic() + seconds
    while sum(json.loads(line)["msg"].startswith(message) for line in served.lines if line.startswith("{")) < count:
        assert time.monotonic() < deadline, f"not {count} {message!r} log lines; stderr:\n{served.stderr}"
        assert served.proc.returncode is None, f"the gateway exited; stderr:\n{served.stderr}"
        await asyncio.sleep(0.05)


WORKERS = 2
SPREAD_CONNECTIONS = 40  # the kernel hashes each to a worker: all on one of two has odds of 2 in 2**40
Held = TypeVar("Held")
SCRAPES = 8  # each on a new connection: all on one worker has odds of 2 in 2**8
HOLD_SECONDS = 0.5


@pytest.fixture
async def workers(launch: Launch, cert_files: CertFiles, tmp_path: Path, upstream: RecordingUpstream) -> GatewayProcess:
    """``serve -c config.yaml --workers 2``; the parent says ``listening`` once both workers listen."""
    config = write_config(cert_files, tmp_path, upstream)
    return await launch(["serve", "-c", str(config), "--workers", str(WORKERS)], cwd=tmp_path)


def worker_pids(gateway: GatewayProcess) -> list[int]:
    """The worker processes of a ``--workers`` parent."""
    return [child.pid for child in psutil.Process(gateway.pid).children()]


async def _hold(request: web.Request) -> web.StreamResponse:
    await asyncio.sleep(HOLD_SECONDS)
    return web.Response(text="held")


async def _held_on_every_worker(
    workers: GatewayProcess, upstream: RecordingUpstream, fetch: Callable[[], Coroutine[Any, Any, Held]]
) -> tuple[list[asyncio.Task[Held]], dict[int, int]]:
    """``SPREAD_CONNECTIONS`` requests held by upstream at once, each on a connection of its own; once upstream
    holds them all, the connections each worker serves (every worker must have some)."""
    upstream.on("/hold", _hold)
    in_flight = [asyncio.create_task(fetch()) for _ in range(SPREAD_CONNECTIONS)]
    deadline = time.monotonic() + 5
    while sum(recorded.path == "/hold" for recorded in upstream.requests) < SPREAD_CONNECTIONS:
        assert time.monotonic() < deadline, "the requests never all reached upstream"
        await asyncio.sleep(0.01)
    per_worker = {pid: serving(pid, workers.https_port) for pid in worker_pids(workers)}
    assert all(per_worker.values()), f"a worker took no connection: {per_worker}"
    return in_flight, per_worker


async def test_workers_each_take_connections_and_sigterm_drains_every_one(
    workers: GatewayProcess, upstream: RecordingUpstream, client_ssl: ssl.SSLContext
) -> None:
    pids = worker_pids(workers)
    assert len(pids) == WORKERS, workers.stderr
    assert workers.listening is not None
    assert workers.listening["workers"] == WORKERS

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=client_ssl, limit=0)) as session:

        async def fetch() -> tuple[int, str]:
            async with session.get(workers.url / "hold") as response:
                return response.status, await response.text()

        in_flight, per_worker = await _held_on_every_worker(workers, upstream, fetch)
        assert sum(per_worker.values()) == SPREAD_CONNECTIONS, per_worker

        workers.proc.send_signal(signal.SIGTERM)  # to the parent only: it relays to every worker
        deadline = time.monotonic() + HOLD_SECONDS * 0.8
        while not await connection_refused(workers.https_port):
            assert time.monotonic() < deadline, "new connections still accepted after SIGTERM"
            await asyncio.sleep(0.02)
        assert not any(task.done() for task in in_flight), "requests ended before the listeners closed"
        assert await asyncio.gather(*in_flight) == [(200, "held")] * SPREAD_CONNECTIONS

    assert await workers.wait_exit() == 0, workers.stderr
    assert not any(psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE for pid in pids)
    messages = [json.loads(line)["msg"] for line in workers.lines if line.startswith("{")]
    assert messages.count("stopped") == WORKERS + 1, workers.stderr  # each worker, then the parent
    assert messages[-1] == "stopped"


async def test_workers_append_whole_lines_to_one_audit_file_and_reopen_it_on_sighup(
    workers: GatewayProcess, client_ssl: ssl.SSLContext, tmp_path: Path
) -> None:
    # Long paths make long lines and batches of hundreds of KiB: two processes append to one file, and every
    # line must still come out whole, each record exactly once.
    long = "p" * 4000
    audit, rotated = tmp_path / "audit.jsonl", tmp_path / "audit.jsonl.1"

    async def burst(session: aiohttp.ClientSession, label: str, count: int) -> set[str]:
        async def one(number: int) -> str:
            async with session.get(workers.url / f"{label}-{number}-{long}") as response:
                assert response.status == 200
                await response.read()
                return response.headers["X-Request-Id"]

        return set(await asyncio.gather(*(one(number) for number in range(count))))

    connector = aiohttp.TCPConnector(ssl=client_ssl, limit=SPREAD_CONNECTIONS, force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:
        first = await burst(session, "before", 300)
        await wait_for_audit(audit, first)
        audit.rename(rotated)
        workers.proc.send_signal(signal.SIGHUP)
        # Each worker says "reloaded" after its reload queued the reopen: every record it writes after that
        # goes to the new file, whenever its writer thread gets to the reopen (the file may not be there yet).
        await _wait_for_logs(workers, "reloaded", WORKERS)
        second = await burst(session, "after", 300)
    workers.proc.send_signal(signal.SIGTERM)
    assert await workers.wait_exit() == 0, workers.stderr

    for path, ids in ((rotated, first), (audit, second)):
        lines = path.read_text(encoding="utf-8").splitlines()
        records = [json.loads(line) for line in lines]  # a torn or interleaved line fails here
        assert sorted(record["request_id"] for record in records) == sorted(ids), path
        assert all(record["path"].endswith(long) for record in records)
    # One chain per worker, each carried across the reload and the rotation, interleaved in the one file.
    code, output, errors = await run_cli("audit", "verify", str(rotated), str(audit), cwd=tmp_path)
    assert (code, output.splitlines()[0]) == (0, "ok: 600 lines, 2 chains, every line in place"), output + errors
    pids = {int(line.split()[1].split("-")[0]) for line in output.splitlines()[1:]}
    assert len(pids) == WORKERS


async def test_a_worker_that_dies_stops_the_others_and_the_parent_exits_1(workers: GatewayProcess) -> None:
    first, second = worker_pids(workers)
    os.kill(first, signal.SIGKILL)
    assert await workers.wait_exit() == 1, workers.stderr
    assert not psutil.pid_exists(second) or psutil.Process(second).status() == psutil.STATUS_ZOMBIE
    errors = [json.loads(line) for line in workers.lines if line.startswith("{") and '"level": "error"' in line]
    assert any("exited with -9" in record["msg"] for record in errors), workers.stderr


def _running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


async def test_workers_drain_and_exit_when_their_parent_is_killed(workers: GatewayProcess) -> None:
    """A parent killed outright (SIGKILL, the OOM killer) relays nothing; its workers must not go on serving
    the old configuration on a port the next gateway would share with them."""
    pids = worker_pids(workers)
    workers.proc.kill()  # not awaited: asyncio's wait() on 3.11 also waits for stderr, which workers hold open
    deadline = time.monotonic() + 10
    try:
        while any(_running(pid) for pid in pids):
            assert time.monotonic() < deadline, f"workers outlived their parent; stderr:\n{workers.stderr}"
            await asyncio.sleep(0.05)
    finally:  # the fixture cannot find orphans through their parent: they would hold its stderr open
        for pid in filter(_running, pids):
            os.kill(pid, signal.SIGKILL)
    assert await connection_refused(workers.https_port)
    await asyncio.sleep(0.2)  # the last lines of stderr, read by the fixture's task
    messages = [json.loads(line)["msg"] for line in workers.lines if line.startswith("{")]
    assert messages.count("stopped") == WORKERS, workers.stderr  # each drained; the parent never got to say it


async def test_sighup_to_the_parent_makes_every_worker_reload(
    launch: Launch,
    own_certificate: CertFiles,
    ca: trustme.CA,
    client_ssl: ssl.SSLContext,
    tmp_path: Path,
    upstream: RecordingUpstream,
) -> None:
    """Each worker does a single gateway's reload (configuration, certificate, audit log): on the ports the
    parent reserved, though the file still says port 0; a change of address is refused by each."""
    config = write_config(own_certificate, tmp_path, upstream)
    served = await launch(["serve", "-c", str(config), "--workers", str(WORKERS)], cwd=tmp_path)
    renewed = ca.issue_cert("localhost", "127.0.0.1", DOMAIN)
    renewed.cert_chain_pems[0].write_to_path(str(own_certificate.cert))
    renewed.private_key_pem.write_to_path(str(own_certificate.key))
    write_config(own_certificate, tmp_path, upstream, listen={"allowed_hosts": ["127.0.0.1", "reloaded.example"]})
    served.proc.send_signal(signal.SIGHUP)

    def messages() -> list[str]:
        return [json.loads(line)["msg"] for line in served.lines if line.startswith("{")]

    deadline = time.monotonic() + 10
    while messages().count("reloaded") < WORKERS:
        assert time.monotonic() < deadline, f"not every worker reloaded; stderr:\n{served.stderr}"
        assert not any(message.startswith("reload") and message != "reloaded" for message in messages()), served.stderr
        await asyncio.sleep(0.05)

    # New connections, spread by the kernel over both workers, all meet the new certificate and config.
    expected = ssl.PEM_cert_to_DER_cert(renewed.cert_chain_pems[0].bytes().decode())
    for _ in range(SPREAD_CONNECTIONS // 4):
        assert await asyncio.to_thread(served_certificate, served.https_port, client_ssl) == expected
    connector = aiohttp.TCPConnector(ssl=client_ssl, force_close=True)
    async with aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar()) as client:
        statuses = [await status_for_host(client, served, "reloaded.example") for _ in range(SPREAD_CONNECTIONS // 4)]
    assert statuses == [200] * len(statuses)

    write_config(own_certificate, tmp_path, upstream, listen={"http": None})
    served.proc.send_signal(signal.SIGHUP)
    await _wait_for_logs(served, "reload refused", WORKERS)
    served.proc.send_signal(signal.SIGTERM)
    assert await served.wait_exit() == 0, served.stderr


async def test_workers_metrics_sum_every_worker_whichever_answers_and_survive_a_reload(
    workers: GatewayProcess, upstream: RecordingUpstream, client_ssl: ssl.SSLContext
) -> None:
    """A scrape reaches one worker (the kernel picks); it must still count the requests all of them served,
    and a SIGHUP reload must not set the counters back to zero."""
    connector = aiohttp.TCPConnector(ssl=client_ssl, limit=0, force_close=True)  # a new connection each
    async with aiohttp.ClientSession(connector=connector) as session:

        async def get(path: str) -> str:
            async with session.get(workers.url / path) as response:
                assert response.status == 200, path
                return await response.text()

        in_flight, per_worker = await _held_on_every_worker(workers, upstream, partial(get, "hold"))
        await asyncio.gather(*in_flight)

        scrapes = [proxied_count(await get("metrics")) for _ in range(SCRAPES)]
        assert scrapes == [SPREAD_CONNECTIONS] * SCRAPES, per_worker

        workers.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while sum('"msg": "reloaded"' in line for line in workers.lines) < WORKERS:
            assert time.monotonic() < deadline, f"the workers did not both reload; stderr:\n{workers.stderr}"
            await asyncio.sleep(0.05)
        await get("after-reload")
        scrapes = [proxied_count(await get("metrics")) for _ in range(SCRAPES)]
        assert scrapes == [SPREAD_CONNECTIONS + 1] * SCRAPES
    workers.proc.send_signal(signal.SIGTERM)
    assert await workers.wait_exit() == 0, workers.stderr

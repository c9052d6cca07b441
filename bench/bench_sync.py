"""The Intercom connector's initial sync against the rate limit, and webhook-to-visible latency (issue 15).

    .venv/bin/python -m bench.bench_sync [--tickets 10000] [--contacts 2000] [--rate 1000] [--webhooks 100]
    .venv/bin/python -m bench.bench_sync --tickets 2000 --contacts 400 --rate 6000    # the scaled run

The fake Intercom API (``tests/intercom/fake.py``) runs in a process of its own
on 127.0.0.1, so the sync and the API do not share an interpreter, with
``--tickets`` tickets of 5 parts each (comment, note, quick reply, comment,
note), ``--contacts`` contacts over ``--companies`` companies, and a window
rate limit of ``--rate`` calls a minute, counted in epoch-aligned windows of
``--window`` seconds (Intercom spreads its limit over 10 s windows). Its
answers are not held to the OpenAPI description here (the tests do that): the
checker would cost more CPU than the sync itself.

1. The sync: the real :class:`gateway.intercom.sync.Syncer` and
   :class:`~gateway.intercom.client.IntercomClient` into a fresh SQLite store.
   Printed: the calls made (the client's count and the fake's, with any 429),
   the time the client spent waiting for a window, the wall time, and the
   ideal the limit allows (calls / rate) with the ratio. Target: <= 1.2x.
2. Webhooks: the real gateway (``gateway.run.server.start``, TLS with a
   trustme certificate) on that store, the connector on. ``--webhooks`` times,
   one every ``--interval`` seconds: a ticket's title changes on the fake, a
   signed ``ticket.updated`` delivery is POSTed to ``/intercom/webhooks`` over
   loopback TLS, and the clock runs until the new title is in the store (read
   through a separate SQLite connection every 2 ms). Printed: p50, p99, max.
   Target: p99 <= 2 s.

Every loop is bounded; the fake's process is stopped by its own pid at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import multiprocessing
import multiprocessing.connection
import sqlite3
import ssl
import statistics
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import aiohttp
import trustme
from aiohttp import web
from yarl import URL

from bench.bench_portal import loopback_config
from gateway.intercom.client import JSON, IntercomClient
from gateway.intercom.sync import Syncer
from gateway.run.server import start
from gateway.run.tls import server_context
from gateway.store.sqlite import SQLiteStore
from tests.intercom.fake import ADMIN_ID, CLIENT_SECRET, TOKEN, FakeIntercom, RateLimit
from tests.intercom.openapi import IntercomSpec

PARTS = (("comment", "user"), ("note", "admin"), ("quick_reply", "admin"), ("comment", "user"), ("note", "admin"))
VISIBLE_TIMEOUT = 30.0  # seconds one webhook may take to show before it counts as lost


class _Unchecked(IntercomSpec):
    """No schema checks: the benchmark measures the sync, not the fake's checker."""

    def __init__(self) -> None:  # the description is not even loaded
        pass

    def request_schema_ref(self, method: str, path: str) -> str | None:
        return None

    def response_schema_ref(self, method: str, path: str, status: int) -> str:
        return ""

    def errors(self, ref: str, instance: object) -> list[str]:
        return []


def build(tickets: int, contacts: int, companies: int, limit: int, window: float) -> FakeIntercom:
    """The fake workspace: companies, contacts one company each, tickets round-robin over the contacts."""
    fake = FakeIntercom(validator=_Unchecked(), rate=RateLimit(limit=limit, window=window))
    company_ids = [fake.add_company(f"co-{n}", f"Company {n}") for n in range(companies)]
    contact_ids = [
        fake.add_contact(f"u-{n}", f"User {n}", f"u{n}@example.com", (company_ids[n % companies],))
        for n in range(contacts)
    ]
    states = [fake.add_state("submitted", "New", "Submitted"), fake.add_state("resolved", "Closed", "Resolved")]
    types = [fake.add_type("Bug report"), fake.add_type("Question")]
    for n in range(tickets):
        contact = contact_ids[n % contacts]
        ticket = fake.add_ticket(
            contact, f"Ticket {n}", type_id=types[n % 2], state_id=states[n % 2], description=f"Ticket {n} says"
        )
        for index, (part_type, author) in enumerate(PARTS):
            who = ("user", contact, f"User {n % contacts}") if author == "user" else ("admin", ADMIN_ID, "Sam")
            fake.add_part(ticket, part_type, f"<p>Part {index} of ticket {n}: the export fails again.</p>", who)
    return fake


def serve_fake(args: argparse.Namespace, pipe: multiprocessing.connection.Connection) -> None:
    """The fake's process: build it, serve the API and a control app, send both ports, serve until stopped."""
    limit = max(1, round(args.rate * args.window / 60))
    fake = build(args.tickets, args.contacts, args.companies, limit, args.window)
    ticket_ids = list(fake.tickets)

    async def touch(request: web.Request) -> web.Response:
        """Change one ticket's title as a teammate would; its Intercom id, number and new title."""
        ticket = ticket_ids[int(request.match_info["index"]) % len(ticket_ids)]
        title = f"Changed {time.time_ns()}"
        fake.update_ticket(ticket, title=title)
        return web.json_response({"id": ticket, "number": fake.tickets[ticket]["ticket_id"], "title": title})

    async def stats(request: web.Request) -> web.Response:
        statuses: dict[str, int] = {}
        for _method, _path, status in fake.calls:
            statuses[str(status)] = statuses.get(str(status), 0) + 1
        return web.json_response({"calls": len(fake.calls), "statuses": statuses, "crossed": fake.limit_crossed})

    async def run() -> None:
        control = web.Application()
        control.add_routes([web.post("/touch/{index}", touch), web.get("/stats", stats)])
        runners = [web.AppRunner(fake.app(), access_log=None), web.AppRunner(control, access_log=None)]
        ports = []
        for runner in runners:
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            ports.append(runner.addresses[0][1])
        pipe.send((ports, limit))
        await asyncio.sleep(args.deadline)  # bounded: the parent stops it long before
        for runner in runners:
            await runner.cleanup()

    asyncio.run(run())


class CountedSleep:
    """The client's sleep, adding up the time it waited for a window."""

    def __init__(self) -> None:
        self.waited = 0.0

    async def __call__(self, seconds: float) -> None:
        self.waited += seconds
        await asyncio.sleep(seconds)


class TimedClient(IntercomClient):
    """The client, adding up the wall time the sync spent waiting on calls (window waits included)."""

    in_calls = 0.0

    async def call(
        self, method: str, path: str, *, params: Mapping[str, str] | None = None, body: JSON | None = None
    ) -> JSON:
        started = time.perf_counter()
        try:
            return await super().call(method, path, params=params, body=body)
        finally:
            self.in_calls += time.perf_counter() - started


class Quiet:
    """No progress output: the figures are printed at the end."""

    def advance(self, kind: str, count: int) -> None:
        """Nothing."""


async def sync(api: URL, control: URL, db: Path, rate: float) -> None:
    """The initial sync into a fresh store, its calls and its time against the ideal."""
    store = await SQLiteStore.open(db)
    slept = CountedSleep()
    try:
        async with aiohttp.ClientSession() as session:
            client = TimedClient(session, api, TOKEN, sleep=slept)
            started = time.perf_counter()
            report = await Syncer(client, store, progress=Quiet()).run(full=True)
            wall = time.perf_counter() - started
            async with session.get(control / "stats") as answer:
                stats = await answer.json()
    finally:
        await store.close()
    assert report is not None
    ideal = client.calls / rate * 60
    print(f"sync: written {report.written}, skipped {report.skipped}")
    print(f"API calls: {client.calls} by the client; the fake answered {stats['statuses']}; 429s {stats['crossed']}")
    print(
        f"waited for a window: {slept.waited:.2f} s; in API calls (the fake's process building pages, "
        f"and the wait): {client.in_calls:.2f} s; the rest (JSON decoding, lines, SQLite writes): "
        f"{wall - client.in_calls:.2f} s"
    )
    print(
        f"wall {wall:.2f} s, ideal {ideal:.2f} s ({client.calls} calls / {rate:g} a minute), ratio {wall / ideal:.2f}x"
    )
    print(f"{'met' if wall / ideal <= 1.2 else 'MISSED'}  initial sync <= 1.2x the ideal ({wall / ideal:.2f}x)")


def notification(item_id: str) -> bytes:
    """A ``ticket.updated`` notification_event naming the ticket."""
    body = {
        "type": "notification_event",
        "app_id": "fakews",
        "id": f"notif_{time.time_ns()}",
        "topic": "ticket.updated",
        "created_at": int(time.time()),
        "delivery_attempts": 1,
        "data": {"type": "notification_event_data", "item": {"type": "ticket", "id": item_id}},
    }
    return json.dumps(body).encode()


async def visible(db: sqlite3.Connection, number: str, title: str, since: float) -> float:
    """Seconds from ``since`` until the ticket's title in the store is ``title`` (inf past the timeout)."""
    while time.perf_counter() - since < VISIBLE_TIMEOUT:
        row = db.execute("SELECT title FROM tickets WHERE ticket_id = ?", (number,)).fetchone()
        if row is not None and row[0] == title:
            return time.perf_counter() - since
        await asyncio.sleep(0.002)
    return float("inf")


async def one_webhook(
    session: aiohttp.ClientSession, base: URL, control: URL, db: sqlite3.Connection, index: int
) -> float:
    """Change a ticket on the fake, deliver its signed notification, time until the store shows it."""
    async with session.post(control / "touch" / str(index)) as answer:
        changed: dict[str, Any] = await answer.json()
    body = notification(changed["id"])
    signature = hmac.new(CLIENT_SECRET.encode(), body, hashlib.sha1).hexdigest()
    headers = {"X-Hub-Signature": f"sha1={signature}", "Content-Type": "application/json", "Host": "localhost"}
    started = time.perf_counter()
    async with session.post(base / "intercom" / "webhooks", data=body, headers=headers) as answer:
        if answer.status != 200:
            raise RuntimeError(f"the delivery was answered {answer.status}")
    return await visible(db, changed["number"], changed["title"], started)


async def webhooks(api: URL, control: URL, db: Path, count: int, interval: float) -> None:
    """The real gateway on the synced store; ``count`` deliveries, one every ``interval`` s; p50 and p99."""
    folder = db.parent
    ca = trustme.CA()
    config = loopback_config(
        folder,
        ca,
        "bench-secret-0123456789abcdef0123456789",
        store={"path": str(db)},
        intercom={
            "enabled": True,
            "api_url": str(api).rstrip("/"),
            "access_token": TOKEN,
            "admin_id": ADMIN_ID,
            "webhook_secret": CLIENT_SECRET,
            "sync_interval": 3600,  # no background sync during the measurement
        },
    )
    running = await start(config, server_context(config.tls.cert, config.tls.key))
    client = ssl.create_default_context()
    ca.configure_trust(client)
    base = URL(f"https://127.0.0.1:{running.https_port}")
    reader = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=client)) as session:
            tasks = []
            for index in range(count):
                tasks.append(asyncio.create_task(one_webhook(session, base, control, reader, index * 7919)))
                await asyncio.sleep(interval)
            samples = await asyncio.gather(*tasks)
    finally:
        reader.close()
        await running.stop()
    lost = sum(1 for sample in samples if sample == float("inf"))
    ordered = sorted(samples)
    p50, p99 = statistics.median(ordered), ordered[max(0, -(-len(ordered) * 99 // 100) - 1)]
    print(
        f"webhook to visible: {count} deliveries, one every {interval:g} s: "
        f"p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms, max {ordered[-1] * 1000:.1f} ms, lost {lost}"
    )
    print(f"{'met' if p99 <= 2.0 else 'MISSED'}  webhook to visible p99 <= 2 s ({p99:.3f} s)")


async def main(args: argparse.Namespace, ports: list[int], limit: int) -> None:
    api, control = URL(f"http://127.0.0.1:{ports[0]}/"), URL(f"http://127.0.0.1:{ports[1]}")
    print(
        f"fake: {args.tickets:,} tickets x 5 parts, {args.contacts:,} contacts, {args.companies:,} companies; "
        f"limit {limit} calls per {args.window:g} s window ({args.rate:g} a minute)"
    )
    db = Path(tempfile.mkdtemp(prefix="bench-sync-")) / "portal.db"
    await sync(api, control, db, args.rate)
    if args.webhooks:
        await webhooks(api, control, db, args.webhooks, args.interval)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tickets", type=int, default=10_000)
    parser.add_argument("--contacts", type=int, default=2_000)
    parser.add_argument("--companies", type=int, default=None, help="default: contacts / 5")
    parser.add_argument("--rate", type=float, default=1_000, help="API calls a minute")
    parser.add_argument("--window", type=float, default=10.0, help="seconds in one rate-limit window")
    parser.add_argument("--webhooks", type=int, default=100, help="deliveries to time (0: none)")
    parser.add_argument("--interval", type=float, default=0.2, help="seconds between deliveries")
    parser.add_argument("--deadline", type=float, default=3600.0, help="the fake stops by itself after this")
    arguments = parser.parse_args()
    arguments.companies = arguments.companies or max(1, arguments.contacts // 5)
    parent, child = multiprocessing.get_context("fork").Pipe()
    process = multiprocessing.get_context("fork").Process(target=serve_fake, args=(arguments, child), daemon=True)
    process.start()
    try:
        if not parent.poll(arguments.deadline):
            raise SystemExit("the fake did not start")
        fake_ports, window_limit = parent.recv()
        asyncio.run(main(arguments, fake_ports, window_limit))
    finally:
        process.terminate()  # the fake's own pid only
        process.join(10)

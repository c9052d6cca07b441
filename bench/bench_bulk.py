"""Bulk writes into PostgreSQL, where every row also records a change in the feed: ``store copy`` from SQLite
and ``portal-gateway import`` (each line its own transaction, and ``--strict``: all in one).

    .venv/bin/python -m bench.bench_bulk [--tickets 100000] [--import-tickets 20000]

Builds a SQLite store of ``--tickets`` tickets (one public reply each) with ``bench_portal.fill`` and copies it
into a new database of a throwaway PostgreSQL server (``store copy``'s own code, verified); then imports
``--import-tickets`` tickets (the same shape, as JSON lines) into new databases through ``import_lines``, as
``portal-gateway import`` does. Prints each one's seconds and rows per second.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

from bench.bench_portal import fill
from gateway.config import StoreConfig
from gateway.store.copy import copy_store
from gateway.store.importer import import_lines
from gateway.store.protocol import Store, open_store
from gateway.store.sqlite import SQLiteStore
from tests.pgserver import PostgresServer, start_server

COMPANIES = 1_000


def lines(tickets: int) -> Iterator[str]:
    """An import file's lines: ``COMPANIES`` companies, a contact in each, a state, tickets with a reply each."""
    for number in range(COMPANIES):
        yield json.dumps({"kind": "company", "company_id": f"c{number}", "name": f"Company {number}"})
        yield json.dumps({"kind": "contact", "user_id": f"u{number}", "companies": [f"c{number}"]})
    state = {"kind": "ticket_state", "category": "submitted", "internal_label": "new", "external_label": "New"}
    yield json.dumps(state)
    for number in range(tickets):
        owner = number % COMPANIES
        reply = {"author_name": "Support", "body": f"Looking into {number}.", "public": True, "created_at": 2}
        ticket = {"kind": "ticket", "ticket_id": str(100_000 + number), "type": "Bug", "state": "new"}
        ticket |= {"category": "Customer", "company": f"c{owner}", "creator": f"u{owner}"}
        ticket |= {"title": f"Problem {number}", "created_at": 1, "updated_at": 2, "parts": [reply]}
        yield json.dumps(ticket)


async def timed(what: str, rows: int, work: Callable[[], Awaitable[object]]) -> None:
    """Run ``work`` once; print its seconds and ``rows`` per second."""
    started = time.perf_counter()
    await work()
    seconds = time.perf_counter() - started
    print(f"{what}: {seconds:.1f} s, {rows / seconds:,.0f} tickets/s", flush=True)


async def on_postgres(server: PostgresServer, work: Callable[[Store], Awaitable[object]]) -> None:
    """``work`` on a store opened on a new database of ``server``."""
    store = await open_store(StoreConfig(backend="postgres", dsn=server.database()))
    try:
        await work(store)
    finally:
        await store.close()


async def main(tickets: int, imported: int) -> None:
    """Build, copy and import; print the figures."""
    server = start_server()
    try:
        with tempfile.TemporaryDirectory() as folder:
            sqlite = await SQLiteStore.open(Path(folder) / "portal.db")
            await sqlite.transaction(lambda connection: fill(connection, tickets, COMPANIES, tickets // 10))

            async def copy(destination: Store) -> None:
                await copy_store(sqlite, destination)

            try:
                await timed(f"store copy, {tickets:,} tickets", tickets, lambda: on_postgres(server, copy))
            finally:
                await sqlite.close()
        text = list(lines(imported))
        for strict in (False, True):

            async def load(store: Store, strict: bool = strict) -> None:
                report = await import_lines(store, text, strict=strict)
                assert not report.errors, report.errors[:3]

            how = "--strict (one transaction)" if strict else "(a transaction per line)"
            await timed(f"import {how}, {imported:,} tickets", imported, lambda: on_postgres(server, load))
    finally:
        server.remove()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tickets", type=int, default=100_000, help="tickets copied from SQLite")
    parser.add_argument("--import-tickets", type=int, default=20_000, help="tickets imported as JSON lines")
    args = parser.parse_args()
    asyncio.run(main(args.tickets, args.import_tickets))

"""The ticket list and a search through the gateway over TLS, on each store backend, at each size.

    .venv/bin/python -m bench.bench_store [--sizes 100000 1000000] [--requests 200] [--keep DIR]
                                          [--backends sqlite postgres]

For each size: builds a SQLite store of that many tickets over size/100 companies (one company holds a
tenth of them, and the visitor is in it) with ``bench_portal.fill``, copies it into a throwaway
PostgreSQL server (``store copy``'s own code, counts and checksums verified), then starts the real
gateway on each store in turn and times sequential requests on one kept-alive TLS connection.
With ``--keep DIR`` the stores (the SQLite files and the PostgreSQL cluster, one database per size) stay
in DIR and later runs reuse them: a million tickets take a while to build and copy.
Targets (issue 16) at 1,000,000 tickets: list p50 <= 15 ms, search p50 <= 50 ms on both; p95 reported.
"""

from __future__ import annotations

import argparse
import asyncio
import ssl
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import trustme

from bench.bench_portal import SECRET, fill, percentiles, timed
from gateway.config import GatewayConfig, StoreConfig
from gateway.policy.identity import sign_token
from gateway.run.server import start
from gateway.run.tls import server_context
from gateway.store.copy import copy_store
from gateway.store.protocol import open_store
from gateway.store.sqlite import SQLiteStore
from tests.pgserver import PostgresServer, start_server


async def build(folder: Path, tickets: int, server: PostgresServer) -> dict[str, dict[str, Any]]:
    """The SQLite store and its PostgreSQL copy (built unless ``folder`` has them); the ``store`` section of each."""
    sqlite = StoreConfig(path=folder / f"portal-{tickets}.db")
    dsn = server.dsn(f"tickets_{tickets}")
    stores = {"sqlite": {"path": str(sqlite.path)}, "postgres": {"backend": "postgres", "dsn": dsn}}
    built = folder / f"portal-{tickets}.built"  # written once the copy is verified: a run cut short rebuilds
    if built.exists():
        print(f"{tickets:,} tickets: reusing the stores in {folder}")
        return stores
    sqlite.path.unlink(missing_ok=True)
    server.database(f"tickets_{tickets}", replace=True)
    started = time.perf_counter()
    store = await SQLiteStore.open(sqlite.path)
    companies = max(10, tickets // 100)
    await store.transaction(lambda connection: fill(connection, tickets, companies, tickets // 10))
    await store.close()
    print(f"sqlite: {tickets:,} tickets over {companies:,} companies built in {time.perf_counter() - started:.0f} s")
    started = time.perf_counter()
    source, destination = await open_store(sqlite), await open_store(StoreConfig(backend="postgres", dsn=dsn))
    try:
        await copy_store(source, destination)
    finally:
        await source.close()
        await destination.close()
    print(f"postgres: copied and verified in {time.perf_counter() - started:.0f} s")
    built.touch()
    return stores


async def measure(folder: Path, ca: trustme.CA, store: dict[str, Any], count: int) -> list[list[float]]:
    """Start the gateway on ``store``; the samples of the list and of a search."""
    config = GatewayConfig.model_validate(
        {
            "workspace_id": "bench",
            "domain": "localhost",
            "listen": {"https": "127.0.0.1:0"},
            "tls": {"cert": str(folder / "cert.pem"), "key": str(folder / "key.pem")},
            "upstream": {"url": "http://127.0.0.1:9"},
            "identity": {"jwt": {"secrets": [SECRET]}},
            "messenger": {"upstream": "http://127.0.0.1:9"},
            "portal": {"access": {"rules": [{"attribute": "person.user_id", "op": "exists"}]}},
            "store": store,
            "audit": {"path": str(folder / "audit.jsonl")},
        }
    )
    running = await start(config, server_context(config.tls.cert, config.tls.key))
    client = ssl.create_default_context()
    ca.configure_trust(client)
    headers = {"Authorization": f"Bearer {sign_token(SECRET, user_id='u0', now=time.time(), ttl=3600)}"}
    base = f"https://127.0.0.1:{running.https_port}"
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=client, limit=1)) as session:
            return [
                await timed(session, f"{base}/tickets", headers, count),
                await timed(session, f"{base}/tickets?q=invoice", headers, count),
            ]
    finally:
        await running.stop()


async def main(sizes: list[int], count: int, keep: Path | None, backends: list[str]) -> None:
    """Build (or reuse), measure and print one table: each size on each backend."""
    folder = Path(tempfile.mkdtemp(prefix="bench-store-")) if keep is None else keep
    folder.mkdir(mode=0o755, parents=True, exist_ok=True)  # the postgres user reaches its cluster inside
    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1", "localhost")
    leaf.cert_chain_pems[0].write_to_path(str(folder / "cert.pem"))
    leaf.private_key_pem.write_to_path(str(folder / "key.pem"))
    server = start_server(None if keep is None else folder / "postgres")
    rows = []
    try:
        for size in sizes:
            stores = await build(folder, size, server)
            for backend in backends:
                listing, searching = await measure(folder, ca, stores[backend], count)
                rows.append((size, backend, *percentiles(listing), *percentiles(searching)))
    finally:
        if keep is None:
            server.remove()
        else:
            server.stop()
    print(f"{'tickets':>10} {'backend':<9}{'list p50':>9}{'p95':>7}{'search p50':>11}{'p95':>7}   (ms)")
    for size, backend, list50, list95, search50, search95 in rows:
        print(f"{size:>10,} {backend:<9}{list50:>9.1f}{list95:>7.1f}{search50:>11.1f}{search95:>7.1f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--keep", type=Path, metavar="DIR", help="build the stores in DIR once and reuse them")
    parser.add_argument(
        "--backends", nargs="+", choices=["sqlite", "postgres"], default=["sqlite", "postgres"], help="which to measure"
    )
    args = parser.parse_args()
    asyncio.run(main(args.sizes, args.requests, args.keep, args.backends))

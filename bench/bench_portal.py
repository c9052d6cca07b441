"""Latency of the rendered ticket list and of a search, through the gateway over TLS, on a large store.

    .venv/bin/python bench/bench_portal.py [--tickets 100000] [--companies 1000] [--requests 200]

Builds a store of 100,000 tickets over 1,000 companies (one company holds
20,000), starts the real gateway on loopback with a trustme certificate, and
times sequential requests on one kept-alive TLS connection. Beside each
figure: ``/healthz`` through the same gateway and connection, measured in the
same run, as the reference (the ratio is what to compare between machines).
Targets on a 2-core machine: list p50 <= 15 ms, search p50 <= 50 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sqlite3
import ssl
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import trustme

from gateway.config import GatewayConfig
from gateway.policy.identity import sign_token
from gateway.run.server import start
from gateway.run.tls import server_context
from gateway.store.sqlite import SQLiteStore, writes

SECRET = "bench-secret-0123456789abcdef0123456789"
WORDS = [
    "export",
    "invoice",
    "login",
    "webhook",
    "mobile",
    "search",
    "roles",
    "limits",
    "billing",
    "sync",
    "report",
    "timeout",
    "error",
    "slow",
]


def fill(connection: sqlite3.Connection, tickets: int, companies: int, big_share: int) -> None:
    """Companies, one contact per company (ours in the big one), states, types, tickets with replies."""
    rng = random.Random(1)
    company_ids = [writes.upsert_company(connection, f"c{i}", f"Company {i}") for i in range(companies)]
    contacts = [writes.upsert_contact(connection, f"u{i}", f"u{i}@example.com", f"User {i}") for i in range(companies)]
    for contact, company in zip(contacts, company_ids, strict=True):
        writes.set_memberships(connection, contact, [company])
    states = [
        writes.upsert_ticket_state(connection, category, label, label.capitalize())
        for category, label in (("submitted", "new"), ("in_progress", "working"), ("resolved", "done"))
    ]
    types = [writes.ticket_type_id(connection, name) for name in ("Bug", "Question", "Feature")]
    now = int(time.time())
    for number in range(tickets):
        owner = 0 if number < big_share else rng.randrange(1, companies)
        words = rng.sample(WORDS, 4)
        conversation = writes.add_ticket(
            connection,
            ticket_id=str(100_000 + number),
            type_id=rng.choice(types),
            state_id=rng.choice(states),
            category="Customer",
            is_shared=False,
            company_id=company_ids[owner],
            creator_id=contacts[owner],
            title=f"{words[0].capitalize()} {words[1]} problem",
            description=f"When we {words[2]} the {words[3]} it fails.",
            created_at=now - rng.randrange(86_400 * 365),
            updated_at=now - rng.randrange(86_400 * 30),
        )
        writes.add_part(connection, conversation, None, "Support", f"Looking into the {words[3]} issue.", True, now)


def percentiles(samples: list[float]) -> tuple[float, float]:
    """p50 and p95 in milliseconds."""
    ordered = sorted(samples)
    return statistics.median(ordered) * 1000, ordered[int(len(ordered) * 0.95) - 1] * 1000


def loopback_config(folder: Path, ca: trustme.CA, secret: str, **sections: Any) -> GatewayConfig:
    """A gateway on 127.0.0.1 (any port) with a certificate of ``ca`` written to ``folder``, nothing upstream,
    its audit log in ``folder``, and ``sections`` over these."""
    leaf = ca.issue_cert("127.0.0.1", "localhost")
    leaf.cert_chain_pems[0].write_to_path(str(folder / "cert.pem"))
    leaf.private_key_pem.write_to_path(str(folder / "key.pem"))
    return GatewayConfig.model_validate(
        {
            "workspace_id": "bench",
            "domain": "localhost",
            "listen": {"https": "127.0.0.1:0"},
            "tls": {"cert": str(folder / "cert.pem"), "key": str(folder / "key.pem")},
            "upstream": {"url": "http://127.0.0.1:9"},
            "identity": {"jwt": {"secrets": [secret]}},
            "messenger": {"upstream": "http://127.0.0.1:9"},
            "audit": {"path": str(folder / "audit.jsonl")},
            **sections,
        }
    )


async def timed(session: aiohttp.ClientSession, url: str, headers: dict[str, str], count: int) -> list[float]:
    """Wall time of ``count`` sequential GETs (after two warm-ups), each body read whole."""
    samples = []
    for index in range(count + 2):
        started = time.perf_counter()
        async with session.get(url, headers=headers) as response:
            await response.read()
            if response.status != 200:
                raise RuntimeError(f"{url}: HTTP {response.status}")
        if index >= 2:
            samples.append(time.perf_counter() - started)
    return samples


async def main(tickets: int, companies: int, count: int) -> None:
    """Build the store, start the gateway, measure, print."""
    folder = Path(tempfile.mkdtemp(prefix="bench-portal-"))
    store = await SQLiteStore.open(folder / "portal.db")
    started = time.perf_counter()
    await store.transaction(lambda connection: fill(connection, tickets, companies, min(20_000, tickets // 5)))
    await store.close()
    print(f"store: {tickets:,} tickets over {companies:,} companies, built in {time.perf_counter() - started:.1f} s")

    ca = trustme.CA()
    config = loopback_config(
        folder,
        ca,
        SECRET,
        portal={"access": {"rules": [{"attribute": "person.user_id", "op": "exists"}]}},
        store={"path": str(folder / "portal.db")},
    )
    running = await start(config, server_context(config.tls.cert, config.tls.key))
    client = ssl.create_default_context()
    ca.configure_trust(client)
    token = sign_token(SECRET, user_id="u0", now=time.time(), ttl=3600)
    headers = {"Authorization": f"Bearer {token}"}
    base = f"https://127.0.0.1:{running.https_port}"
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=client, limit=1)) as session:
            reference = await timed(session, f"{base}/healthz", {}, count)
            listing = await timed(session, f"{base}/tickets", headers, count)
            searching = await timed(session, f"{base}/tickets?q=invoice", headers, count)
    finally:
        await running.stop()
    ref50, ref95 = percentiles(reference)
    print(f"{'request':<34}{'p50 ms':>8}{'p95 ms':>8}{'p50/healthz':>13}")
    print(f"{'GET /healthz (reference)':<34}{ref50:>8.2f}{ref95:>8.2f}{1:>13.1f}")
    for name, samples in (("GET /tickets (20,000 visible)", listing), ("GET /tickets?q=invoice", searching)):
        p50, p95 = percentiles(samples)
        print(f"{name:<34}{p50:>8.2f}{p95:>8.2f}{p50 / ref50:>13.1f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tickets", type=int, default=100_000)
    parser.add_argument("--companies", type=int, default=1_000)
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args()
    asyncio.run(main(args.tickets, args.companies, args.requests))

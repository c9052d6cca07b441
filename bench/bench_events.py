"""5,000 idle live-page streams on one gateway process: memory per stream, fan-out time, CPU per event.

    .venv/bin/python -m bench.bench_events [--streams 5000] [--changes 5]

Starts ``portal-gateway serve --workers 1`` (a process of its own, so the
client's work is not counted; the client runs on uvloop too) on a store of the demo data plus 1,000 Acme
visitors, each holding five streams (``portal.events.per_visitor`` is 8). It
measures the gateway process's RSS idle, with ``--streams`` kept-alive TLS
connections after one ``/healthz`` each (then closed), and with as many
``GET /tickets/events`` streams open and idle: per stream is the difference
of the last two, so what a stream holds beyond its connection. Then
``--changes`` times one state change of an Acme ticket through the admin
API: the time from just before the admin call until each stream has the
event (p50, p99, max over every stream), and the gateway's CPU time (user +
system) per delivered event. Targets (issue 17): ≤ 20 KB per idle stream
beyond the connection, p99 ≤ 1 s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import ssl
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
import trustme
import uvloop

from bench.edge import (
    HOST,
    REPO,
    SECRET,
    Processes,
    free_port,
    gateway_config,
    platform_line,
    raise_file_limit,
    wait_ready,
    write_certificate,
)
from bench.load import rss_with_idle_connections
from gateway.policy.identity import sign_token
from gateway.store.demo import demo_lines
from gateway.store.lines import ContactLine
from gateway.store.sqlite import SQLiteStore

ADMIN_TOKEN = "bench-admin-token-0123456789abcdef"
VISITORS = 1_000
TICKET = "1001"  # an Acme Customer ticket of the demo
STATES = ("Investigating", "Needs customer", "Fixed", "New")  # each change moves the state: every one records


async def build_store(path: Path) -> None:
    """The demo data and ``VISITORS`` Acme members, written through the store itself."""
    store = await SQLiteStore.open(path)
    try:
        await store.seed(demo_lines(int(time.time())))
        lines = [
            (
                number,
                ContactLine(
                    kind="contact", user_id=f"b-{number}", email=f"b{number}@acme.example.com", companies=["acme"]
                ),
            )
            for number in range(VISITORS)
        ]
        refused = await store.import_lines(lines, mode="all")
        if refused:
            raise RuntimeError(f"the bench's contacts were refused: {refused[:3]}")
    finally:
        await store.close()


def config(folder: Path, port: int, streams: int) -> Path:
    """The bench's gateway: the rendered portal for every example.com address, room for every stream, the admin API;
    nothing listens upstream."""
    return gateway_config(
        folder,
        port,
        free_port(),
        portal={
            "access": {"rules": [{"attribute": "person.email", "op": "contains", "value": "example.com"}]},
            "events": {"max_streams": streams + 100},
        },
        admin={"token": "env:BENCH_ADMIN_TOKEN"},
    )


class Stream:
    """One open event stream, read by a task that notes when each ticket event arrives."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.arrivals: list[float] = []
        self.event = asyncio.Event()

    async def read(self) -> None:
        # What arrives, as it arrives, not line by line: the client shares the two cores with the gateway, and
        # 5,000 streams' six lines an event each were a good part of the time measured. The tail keeps an event
        # line cut between two reads.
        tail = b""
        while data := await self.reader.read(65_536):
            seen = tail + data
            for _ in range(seen.count(b"event: ticket")):
                self.arrivals.append(time.perf_counter())
                self.event.set()
            tail = seen[-len(b"event: ticke") :]


async def open_stream(port: int, context: ssl.SSLContext, token: str) -> Stream:
    reader, writer = await asyncio.open_connection(HOST, port, ssl=context, server_hostname="localhost")
    writer.write(
        f"GET /tickets/events HTTP/1.1\r\nHost: localhost\r\nCookie: portal-jwt={token}\r\n"
        "Accept: text/event-stream\r\n\r\n".encode()
    )
    head = await reader.readuntil(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(f"stream refused: {head[:200]!r}")
    while not (await reader.readline()).startswith(b": live"):
        pass
    return Stream(reader, writer)


async def change(port: int, context: ssl.SSLContext, state: str) -> None:
    """One state change through the admin API, on a connection of its own."""
    reader, writer = await asyncio.open_connection(HOST, port, ssl=context, server_hostname="localhost")
    body = json.dumps({"state": state}).encode()
    writer.write(
        f"PATCH /admin/api/tickets/{TICKET} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
        + body
    )
    head = await reader.readuntil(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(f"admin change refused: {head[:300]!r}")
    await reader.read()
    writer.close()


async def measure(port: int, pid: int, context: ssl.SSLContext, streams: int, changes: int) -> dict[str, Any]:
    gateway = psutil.Process(pid)
    tokens = [
        sign_token(SECRET, user_id=f"b-{n}", email=f"b{n}@acme.example.com", now=time.time(), ttl=4 * 3600)
        for n in range(VISITORS)
    ]
    gate = asyncio.Semaphore(100)

    async def one(number: int) -> Stream:
        async with gate:
            return await open_stream(port, context, tokens[number % VISITORS])

    opened = await asyncio.gather(*(one(number) for number in range(streams)))
    readers = [asyncio.create_task(stream.read()) for stream in opened]
    await asyncio.sleep(2.0)  # settle: handshake buffers freed, audit written
    rss_streams = gateway.memory_info().rss
    latencies: list[float] = []
    cpu_per_event: list[float] = []
    slowest: list[float] = []  # each change's last stream: a round the collector ran in stands out
    for round_ in range(changes):
        for stream in opened:
            stream.event.clear()
        before = gateway.cpu_times()
        started = time.perf_counter()
        await change(port, context, STATES[round_ % len(STATES)])
        await asyncio.gather(*(stream.event.wait() for stream in opened))
        after = gateway.cpu_times()
        arrived = [stream.arrivals[-1] - started for stream in opened]
        latencies.extend(arrived)
        slowest.append(max(arrived))
        cpu_per_event.append((after.user + after.system - before.user - before.system) / streams)
        await asyncio.sleep(1.0)
    for stream in opened:
        stream.writer.close()
    for task in readers:
        task.cancel()
    await asyncio.gather(*readers, return_exceptions=True)
    latencies.sort()
    return {
        "rss_streams": rss_streams,
        "p50": statistics.median(latencies),
        "p99": latencies[int(len(latencies) * 0.99) - 1],
        "max": latencies[-1],
        "cpu_per_event": statistics.mean(cpu_per_event),
        "slowest": slowest,
    }


def _load() -> str:
    return " ".join(f"{figure:.2f}" for figure in os.getloadavg())


def main(argv: list[str] | None = None) -> None:
    """Run the measurement once and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=5_000)
    parser.add_argument("--changes", type=int, default=5)
    args = parser.parse_args(argv)
    load = _load()  # before the bench adds its own: what the other users of the cores were doing
    raise_file_limit()
    folder = Path(tempfile.mkdtemp(prefix="bench-events-"))
    ca = trustme.CA()
    write_certificate(folder, ca)
    context = ssl.create_default_context()
    ca.configure_trust(context)
    asyncio.run(build_store(folder / "portal.db"))
    port = free_port()
    env = {**os.environ, "BENCH_JWT_SECRET": SECRET, "BENCH_ADMIN_TOKEN": ADMIN_TOKEN, "PYTHONPATH": str(REPO)}
    processes = Processes(folder)
    try:
        command = [
            sys.executable,
            "-m",
            "gateway",
            "serve",
            "-c",
            str(config(folder, port, args.streams)),
            "--workers",
            "1",
        ]
        process = processes.start("gateway", command, env)
        wait_ready(f"https://{HOST}:{port}/healthz", process, folder / "gateway.log", {"Host": "localhost"})
        rss_idle = psutil.Process(process.pid).memory_info().rss
        healthz = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n"
        rss_connections = rss_with_idle_connections(
            HOST, port, tls=True, request=healthz, count=args.streams, pids=[process.pid]
        )
        figures = uvloop.run(measure(port, process.pid, context, args.streams, args.changes))
    finally:
        processes.stop_all()
    per_connection = (rss_connections - rss_idle) / args.streams
    per_stream = (figures["rss_streams"] - rss_connections) / args.streams
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} cores, {platform_line()}")
    print(f"load average (1, 5, 15 min) before the run {load}, after it {_load()}: the cores are shared")
    print(f"{args.streams:,} streams on one worker, {args.changes} changes, each reaching every stream")
    rows = [
        ("gateway RSS idle", f"{rss_idle / 1e6:.1f} MB"),
        (f"+ {args.streams:,} idle kept-alive connections", f"{rss_connections / 1e6:.1f} MB"),
        ("  each", f"{per_connection / 1e3:.1f} KB"),
        (f"+ {args.streams:,} idle streams instead", f"{figures['rss_streams'] / 1e6:.1f} MB"),
        ("  each, beyond its connection", f"{per_stream / 1e3:.1f} KB"),
        ("one change to every stream, p50", f"{figures['p50']:.3f} s"),
        ("one change to every stream, p99", f"{figures['p99']:.3f} s"),
        ("one change to every stream, max", f"{figures['max']:.3f} s"),
        ("gateway CPU per delivered event", f"{figures['cpu_per_event'] * 1e6:.1f} µs"),
    ]
    for label, value in rows:
        print(f"{label:<48} {value:>12}")
    print("each change's slowest stream, s:", " ".join(f"{seconds:.2f}" for seconds in figures["slowest"]))


if __name__ == "__main__":
    main()

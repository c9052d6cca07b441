"""5,000 idle live-page streams on one gateway process: memory per stream, fan-out time, CPU per event.

    .venv/bin/python -m bench.bench_events [--streams 5000] [--changes 5] [--fresh-connections] [--memory]

Starts ``portal-gateway serve --workers 1`` (a process of its own, so the
client's work is not counted; the client runs on uvloop too) on a store of
the demo data plus 1,000 Acme visitors, each holding five streams
(``portal.events.per_visitor`` is 8). It measures the gateway process's RSS
idle, with ``--streams`` kept-alive TLS connections after one ``/healthz``
each, and once a ``GET /tickets/events`` stream is open and idle on each of
those same connections: per stream is the difference of the last two, what
a stream holds beyond its connection. Then ``--changes`` times one state
change of an Acme ticket through the admin API: the time from just before
the admin call until each stream has the event (p50, p99, max over every
stream), and the gateway's CPU time (user + system) per delivered event.
Targets (issue 17): ≤ 20 KB per idle stream beyond the connection, p99 ≤ 1 s.

``--fresh-connections`` closes the idle connections first and opens the
streams on new ones, the method of the rounds before five: its difference
also holds what glibc keeps resident of the closed connections' freed heap
(bench/README.md, round five). ``--memory`` starts the gateway through
:func:`probed_gateway`, which reports at each step what its memory is made
of (``/proc/self/smaps_rollup``, glibc's ``mallinfo2()``, pymalloc's
arenas, RSS again after ``malloc_trim(0)``); with ``PYTHONTRACEMALLOC=N``
set, also tracemalloc's bytes per stream by call site.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import json
import os
import re
import ssl
import statistics
import sys
import tempfile
import threading
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

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
from bench.load import open_idle
from gateway import cli
from gateway.policy.identity import sign_token
from gateway.store.demo import demo_lines
from gateway.store.lines import ContactLine
from gateway.store.sqlite import SQLiteStore

ADMIN_TOKEN = "bench-admin-token-0123456789abcdef"
VISITORS = 1_000
TICKET = "1001"  # an Acme Customer ticket of the demo
STATES = ("Investigating", "Needs customer", "Fixed", "New")  # each change moves the state: every one records
HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n"
Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]
Probe = Callable[[str], Awaitable[dict[str, Any]]]
T = TypeVar("T")


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
        # The idle connections measured wait for the last of 5,000 handshakes and then for their stream: longer
        # than the 10 s a kept-alive connection is given by default.
        requests={"header_timeout": 600},
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


async def open_stream(connection: Connection, token: str) -> Stream:
    """The visitor's event stream on ``connection`` (a new one, or one kept alive after a request), once live."""
    reader, writer = connection
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


async def gathered(count: int, make: Callable[[int], Awaitable[T]]) -> list[T]:
    """``make(0)`` to ``make(count - 1)``, a hundred at a time (the listener's backlog, the handshakes' CPU)."""
    gate = asyncio.Semaphore(100)

    async def one(number: int) -> T:
        async with gate:
            return await make(number)

    return await asyncio.gather(*(one(number) for number in range(count)))


async def idle_phases(port: int, context: ssl.SSLContext, streams: int, fresh: bool, probe: Probe) -> list[Stream]:
    """``streams`` kept-alive connections after one ``/healthz`` each, measured; then as many open event streams,
    on the same connections or (``fresh``), once those closed, on new ones."""
    tokens = [
        sign_token(SECRET, user_id=f"b-{n}", email=f"b{n}@acme.example.com", now=time.time(), ttl=4 * 3600)
        for n in range(VISITORS)
    ]
    connections = await gathered(streams, lambda _: open_idle(HOST, port, context, HEALTHZ))
    await asyncio.sleep(1.0)  # settle: handshake buffers freed, audit written
    await probe("connections")
    if fresh:
        for _, writer in connections:
            writer.close()
        await asyncio.gather(*(writer.wait_closed() for _, writer in connections), return_exceptions=True)
        await asyncio.sleep(1.0)
        await probe("closed")

        async def new(_: int) -> Connection:
            return await asyncio.open_connection(HOST, port, ssl=context, server_hostname="localhost")

        connections = await gathered(streams, new)
    opened = await gathered(streams, lambda number: open_stream(connections[number], tokens[number % VISITORS]))
    await asyncio.sleep(2.0)
    await probe("streams")
    return opened


async def measure(port: int, pid: int, context: ssl.SSLContext, opened: list[Stream], changes: int) -> dict[str, Any]:
    """``changes`` state changes, each timed until every stream of ``opened`` has its event."""
    gateway = psutil.Process(pid)
    streams = len(opened)
    readers = [asyncio.create_task(stream.read()) for stream in opened]
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
        "p50": statistics.median(latencies),
        "p99": latencies[int(len(latencies) * 0.99) - 1],
        "max": latencies[-1],
        "cpu_per_event": statistics.mean(cpu_per_event),
        "slowest": slowest,
    }


class Mallinfo2(ctypes.Structure):
    """glibc's ``struct mallinfo2`` (every arena summed)."""

    _fields_ = [
        (name, ctypes.c_size_t)
        for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks")
    ] + [("keepcost", ctypes.c_size_t)]


_ROLLUP = re.compile(r"^(Rss|Anonymous|Private_Dirty):\s+([0-9]+) kB$", re.MULTILINE)
_PYMALLOC = re.compile(
    r"^# (arenas allocated current|bytes in allocated blocks|bytes in available blocks)\s+=\s+([0-9,]+)$", re.MULTILINE
)


def _memory(libc: ctypes.CDLL) -> dict[str, int]:
    """The process's memory now, in bytes: resident, anonymous; glibc's heap (in use, free, mmapped); pymalloc's."""
    figures = {
        name.lower(): int(kb) * 1024 for name, kb in _ROLLUP.findall(Path("/proc/self/smaps_rollup").read_text())
    }
    info = libc.mallinfo2()
    figures |= {"malloc_used": info.uordblks, "malloc_free": info.fordblks, "malloc_mmapped": info.hblkhd}
    # pymalloc tells only through _debugmallocstats(), on the C stderr: lent a file for the call.
    with tempfile.TemporaryFile("w+") as out:
        saved = os.dup(2)
        os.dup2(out.fileno(), 2)
        try:
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        out.seek(0)
        stats = {name: int(value.replace(",", "")) for name, value in _PYMALLOC.findall(out.read())}
    if stats:  # none while tracemalloc hooks the allocator: pymalloc's are then not told
        figures["pymalloc_arenas"] = stats["arenas allocated current"] << 20  # 1 MiB each
        figures["pymalloc_used"] = stats["bytes in allocated blocks"]
        figures["pymalloc_free"] = stats["bytes in available blocks"]
    return figures


def _probe(folder: Path) -> None:
    """Answer each label written to ``probe.fifo`` with a JSON object on ``answer.fifo``: the memory now, and the
    resident size again after ``malloc_trim(0)`` (what glibc held free in its arenas, given back); with tracemalloc
    tracing, a snapshot as ``<label>.trace``."""
    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = Mallinfo2
    while True:
        with (folder / "probe.fifo").open() as requests:
            for line in requests:
                label = line.strip()
                record: dict[str, Any] = {"label": label, **_memory(libc)}
                if tracemalloc.is_tracing():
                    tracemalloc.take_snapshot().dump(str(folder / f"{label}.trace"))
                libc.malloc_trim(0)
                record["rss_trimmed"] = _memory(libc)["rss"]
                with (folder / "answer.fifo").open("w") as answer:
                    answer.write(json.dumps(record))


def probed_gateway() -> None:
    """``python -c 'from bench.bench_events import probed_gateway; probed_gateway()' FOLDER serve ...``: the gateway,
    with a thread answering the bench's memory probes (``--memory``): the bench's, never the product's."""
    folder = Path(sys.argv[1])
    threading.Thread(target=_probe, args=(folder,), name="memory probe", daemon=True).start()
    sys.exit(cli.main(sys.argv[2:]))


class Probes:
    """The bench's side: the gateway's resident size at each step, and with ``--memory`` what it is made of."""

    def __init__(self, folder: Path, pid: int, memory: bool) -> None:
        self.folder, self.pid, self.memory = folder, pid, memory
        self.records: dict[str, dict[str, Any]] = {}

    async def __call__(self, label: str) -> dict[str, Any]:
        """Measure now, as ``label``."""
        if not self.memory:
            record = {"rss": psutil.Process(self.pid).memory_info().rss}
        else:
            record = await asyncio.to_thread(self._ask, label)
        self.records[label] = record
        return record

    def _ask(self, label: str) -> dict[str, Any]:
        with (self.folder / "probe.fifo").open("w") as fifo:
            fifo.write(label + "\n")
        with (self.folder / "answer.fifo").open() as answer:
            record: dict[str, Any] = json.loads(answer.read())
            return record

    def report(self, streams: int) -> None:
        """Each figure at each step, and per stream beyond its connection; tracemalloc's call sites if traced."""
        labels = list(self.records)
        print(f"{'':<16}" + "".join(f"{label:>14}" for label in labels) + f"{'per stream':>14}")
        first, last = self.records["connections"], self.records["streams"]
        for key in first:
            if key == "label":
                continue
            values = "".join(f"{self.records[label][key] / 1e6:>11.1f} MB" for label in labels)
            print(f"{key:<16}{values}{(last[key] - first[key]) / streams / 1e3:>11.2f} KB")
        if (self.folder / "streams.trace").exists():
            before = tracemalloc.Snapshot.load(str(self.folder / "connections.trace"))
            after = tracemalloc.Snapshot.load(str(self.folder / "streams.trace"))
            differences = after.compare_to(before, "lineno")
            total = sum(difference.size_diff for difference in differences)
            print(f"tracemalloc: {total / streams:.0f} B per stream beyond its connection; by call site:")
            for difference in differences[:30]:
                size, count = difference.size_diff / streams, difference.count_diff / streams
                print(f"{size:>8.0f} B {count:>6.2f}  {difference.traceback}")


def _load() -> str:
    return " ".join(f"{figure:.2f}" for figure in os.getloadavg())


def main(argv: list[str] | None = None) -> None:
    """Run the measurement once and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=5_000)
    parser.add_argument("--changes", type=int, default=5)
    parser.add_argument(
        "--fresh-connections", action="store_true", help="close the idle connections, open the streams on new ones"
    )
    parser.add_argument("--memory", action="store_true", help="what the gateway's memory is made of, at each step")
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
    serve = ["serve", "-c", str(config(folder, port, args.streams)), "--workers", "1"]
    if args.memory:
        os.mkfifo(folder / "probe.fifo")
        os.mkfifo(folder / "answer.fifo")
        probed = "from bench.bench_events import probed_gateway; probed_gateway()"
        command = [sys.executable, "-c", probed, str(folder), *serve]
    else:
        command = [sys.executable, "-m", "gateway", *serve]
    processes = Processes(folder)
    try:
        process = processes.start("gateway", command, env)
        wait_ready(f"https://{HOST}:{port}/healthz", process, folder / "gateway.log", {"Host": "localhost"})
        probes = Probes(folder, process.pid, args.memory)

        async def run() -> dict[str, Any]:
            await probes("idle")
            opened = await idle_phases(port, context, args.streams, args.fresh_connections, probes)
            return await measure(port, process.pid, context, opened, args.changes)

        figures = uvloop.run(run())
    finally:
        processes.stop_all()
    rss = {label: record["rss"] for label, record in probes.records.items()}
    per_connection = (rss["connections"] - rss["idle"]) / args.streams
    per_stream = (rss["streams"] - rss["connections"]) / args.streams
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} cores, {platform_line()}")
    print(f"load average (1, 5, 15 min) before the run {load}, after it {_load()}: the cores are shared")
    print(f"{args.streams:,} streams on one worker, {args.changes} changes, each reaching every stream")
    where = "instead (those closed, new ones)" if args.fresh_connections else "on the same connections"
    rows = [
        ("gateway RSS idle", f"{rss['idle'] / 1e6:.1f} MB"),
        (f"+ {args.streams:,} idle kept-alive connections", f"{rss['connections'] / 1e6:.1f} MB"),
        ("  each", f"{per_connection / 1e3:.1f} KB"),
        (f"+ {args.streams:,} idle streams {where}", f"{rss['streams'] / 1e6:.1f} MB"),
        ("  each, beyond its connection", f"{per_stream / 1e3:.1f} KB"),
        ("one change to every stream, p50", f"{figures['p50']:.3f} s"),
        ("one change to every stream, p99", f"{figures['p99']:.3f} s"),
        ("one change to every stream, max", f"{figures['max']:.3f} s"),
        ("gateway CPU per delivered event", f"{figures['cpu_per_event'] * 1e6:.1f} µs"),
    ]
    for label, value in rows:
        print(f"{label:<56} {value:>12}")
    print("each change's slowest stream, s:", " ".join(f"{seconds:.2f}" for seconds in figures["slowest"]))
    if args.memory:
        probes.report(args.streams)


if __name__ == "__main__":
    main()

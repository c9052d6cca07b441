"""The load and the measurements: wrk runs, resident memory, and thousands of idle keep-alive connections."""

from __future__ import annotations

import asyncio
import contextlib
import re
import ssl
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import psutil

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}
_LATENCY = re.compile(r"^\s*(50|99)(?:\.0+)?%\s+([0-9.]+)(us|ms|s)\s*$", re.MULTILINE)
_RATE = re.compile(r"^Requests/sec:\s+([0-9.]+)", re.MULTILINE)
_NON_2XX = re.compile(r"Non-2xx or 3xx responses:\s+([0-9]+)")
_ERRORS = re.compile(r"Socket errors:\s+connect ([0-9]+), read ([0-9]+), write ([0-9]+), timeout ([0-9]+)")


@dataclass(frozen=True)
class WrkResult:
    """What one wrk run measured."""

    rate: float
    p50_ms: float
    p99_ms: float
    failures: int

    @classmethod
    def parse(cls, output: str) -> WrkResult:
        """Read req/s, p50, p99 and failed requests (non-2xx/3xx and socket errors) from wrk --latency output."""
        rate = _RATE.search(output)
        latencies = {percent: float(value) * _UNITS[unit] for percent, value, unit in _LATENCY.findall(output)}
        if rate is None or set(latencies) != {"50", "99"}:
            raise RuntimeError(f"unexpected wrk output:\n{output}")
        non_2xx = _NON_2XX.search(output)
        errors = _ERRORS.search(output)
        failures = (int(non_2xx[1]) if non_2xx else 0) + (sum(map(int, errors.groups())) if errors else 0)
        return cls(float(rate[1]), latencies["50"], latencies["99"], failures)


def wrk(url: str, headers: dict[str, str], *, seconds: float, connections: int) -> WrkResult:
    """One wrk run: one thread, ``connections`` kept-alive connections, the same request over and over."""
    command = ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--latency", "--timeout", "10s"]
    for name, value in headers.items():
        command += ["-H", f"{name}: {value}"]
    done = subprocess.run([*command, url], capture_output=True, text=True, check=True, timeout=seconds + 60)
    return WrkResult.parse(done.stdout)


def _members(pids: list[int]) -> Iterator[psutil.Process]:
    """Each process given and each of their descendants."""
    for pid in pids:
        process = psutil.Process(pid)
        yield from (process, *process.children(recursive=True))


def tree_rss(pids: list[int]) -> list[int]:
    """The resident set size of each process given and each of their descendants, in bytes."""
    sizes = []
    for member in _members(pids):
        with contextlib.suppress(psutil.NoSuchProcess):
            sizes.append(int(member.memory_info().rss))
    return sizes


def tree_cpu(pids: list[int]) -> float:
    """The CPU seconds (user and system) the processes given and their descendants have used so far."""
    total = 0.0
    for member in _members(pids):
        with contextlib.suppress(psutil.NoSuchProcess):
            times = member.cpu_times()
            total += times.user + times.system
    return total


class PeakRSS:
    """The highest total RSS of some process trees, sampled every 100 ms on a thread while the block runs."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while True:
            self.peak = max(self.peak, sum(tree_rss(self.pids)))
            if self._stop.wait(0.1):
                return

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


async def open_idle(
    host: str, port: int, context: ssl.SSLContext | None, request: bytes
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection that has made one request and read its whole answer, so the server keeps it alive, idle."""
    reader, writer = await asyncio.open_connection(host, port, ssl=context, limit=1 << 20)
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    lengths = [line for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")]
    if not head.startswith(b"HTTP/1.1 2") or len(lengths) != 1:
        raise RuntimeError(f"unexpected answer on an idle connection: {head[:200]!r}")
    await reader.readexactly(int(lengths[0].split(b":")[1]))
    return reader, writer


async def _hold_idle(
    host: str, port: int, context: ssl.SSLContext | None, request: bytes, count: int, pids: list[int]
) -> int:
    gate = asyncio.Semaphore(100)

    async def one() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        async with gate:
            return await open_idle(host, port, context, request)

    connections = await asyncio.gather(*(one() for _ in range(count)))
    await asyncio.sleep(1.0)  # let the servers settle (freed handshake buffers, finished audit writes)
    total = sum(tree_rss(pids))
    for _, writer in connections:
        writer.close()
    await asyncio.gather(*(writer.wait_closed() for _, writer in connections), return_exceptions=True)
    return total


def rss_with_idle_connections(host: str, port: int, *, tls: bool, request: bytes, count: int, pids: list[int]) -> int:
    """Total RSS of the process trees while ``count`` kept-alive connections, each after one request, sit idle."""
    context = None
    if tls:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # throwaway certificate; the target is our own loopback server
    return asyncio.run(_hold_idle(host, port, context, request, count, pids))

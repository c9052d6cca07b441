"""Several processes on the same listeners (``listen.workers``): reserve the ports, fork, relay signals, wait.

::

    parent (serves nothing)          worker 1 .. N (a whole gateway each: loop, upstream pool,
      reserves the ports               store connection, audit writer, metrics), bound to the
      forks N workers ──────────────▶  same addresses with SO_REUSEPORT; the kernel spreads
      SIGTERM/SIGINT ──── relayed ──▶  new connections across them, each drains on SIGTERM
      SIGHUP ──────────── relayed ──▶  each reloads (configuration, certificate, new app; the old
                                       one drains) and reopens the audit log (appends are whole lines)

The parent binds (never listens on) each address first, so that a port of 0
becomes one real port that every worker then joins. Workers start with the
stop signals blocked and unblock them once their own handlers are in place,
so a SIGTERM that comes during start-up still drains instead of killing. A
worker that dies on its own stops the others and the parent exits 1:
restarting is left to the supervisor (systemd, Kubernetes), which sees it.
A parent that is killed outright takes its workers with it: each asked the
kernel for a SIGTERM when its parent dies, and drains on it.

On SIGHUP every worker reads the configuration itself, as a single gateway
does; a file that still names the addresses the parent reserved is served on
the ports it really bound (a port of 0 stays the port the workers share).
The addresses and the number of workers change only with a restart.

Each worker folds its metrics into files of its own in a private folder the
parent makes and removes (``gateway/observe/metrics.py``), so a scrape reports the sum
of all workers whichever one answers it (having asked the others to fold first).
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import os
import signal
import socket
import ssl
import sys
import tempfile
from multiprocessing.connection import Connection, wait
from pathlib import Path
from types import FrameType

from gateway.config import Address, GatewayConfig, ListenConfig
from gateway.observe.metrics import count_in_shared_folder
from gateway.run import server

log = logging.getLogger(__name__)

_SIGNALS = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP}
EXIT_FAILED = 1
_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def reserve(address: Address) -> socket.socket:
    """A socket bound to ``address`` with SO_REUSEPORT but not listening: it holds the port, takes no connections."""
    family, kind, proto, _, sockaddr = socket.getaddrinfo(
        address.host, address.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(sockaddr)
    except OSError:
        sock.close()
        raise
    return sock


def _bound(address: Address, sock: socket.socket) -> Address:
    return Address(host=address.host, port=int(sock.getsockname()[1]))


def _on_bound(reload: server.Reload, configured: ListenConfig, bound: ListenConfig) -> server.Reload:
    """``reload``, with the addresses the parent reserved replaced by the ports really bound while the
    file still names them; other addresses are left for :meth:`server.Running.reload` to refuse."""

    def reload_bound() -> GatewayConfig:
        config = reload()
        listen = config.listen
        if (listen.https, listen.http) != (configured.https, configured.http):
            return config
        ports = {"https": bound.https, "http": bound.http}
        return config.model_copy(update={"listen": listen.model_copy(update=ports)})

    return reload_bound


def _stop_with(parent: int) -> None:
    """Have the kernel send this worker SIGTERM when the parent dies (Linux); exit now if it already has.

    A parent killed outright (SIGKILL, the OOM killer) relays nothing: without this its workers would go
    on serving the old configuration, sharing the port with whatever the supervisor starts next.
    """
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except AttributeError:  # not Linux: the supervisor has to stop the workers itself
        log.warning("workers cannot follow their parent on this system: stop them with it")
        return
    if prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        log.warning("workers cannot follow their parent: prctl: %s", os.strerror(ctypes.get_errno()))
    if os.getppid() != parent:  # it died before the request above: no signal is coming
        sys.exit(EXIT_FAILED)


def _worker(
    config: GatewayConfig,
    context: ssl.SSLContext,
    reload: server.Reload,
    number: int,
    parent: Connection,
    metrics: Path,
    parent_pid: int,
) -> None:
    """One worker: serve like a single gateway; tell the parent when listening; stop when it dies."""
    for signum in _SIGNALS:  # the parent's relaying handlers came along with the fork
        signal.signal(signum, signal.SIG_DFL)
    _stop_with(parent_pid)  # delivered, like every stop signal, once the loop's handlers are in place
    count_in_shared_folder(metrics)

    def ready(running: server.Running) -> None:
        log.info("worker listening", extra={"worker": number, "pid": os.getpid()})
        parent.send(os.getpid())
        parent.close()
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNALS)  # the loop's handlers are in place: deliver

    try:
        server.run(config, context, reload, ready)
    except OSError as exc:
        log.error("worker %d cannot listen: %s", number, exc)
        sys.exit(EXIT_FAILED)


class Supervisor:
    """The parent: starts the workers, relays signals to them, and waits for them all."""

    def __init__(self, config: GatewayConfig, context: ssl.SSLContext, reload: server.Reload) -> None:
        self.config = config
        self.context = context
        self.reload = reload
        self.processes: list[multiprocessing.process.BaseProcess] = []
        self.stopping = False
        self.failed = False

    def _relay(self, signum: int, frame: FrameType | None = None) -> None:
        if signum != signal.SIGHUP:
            self.stopping = True
        for process in self.processes:
            if process.pid is not None and process.exitcode is None:
                try:
                    os.kill(process.pid, signum)
                except ProcessLookupError:
                    continue

    def run(self) -> int:
        """Reserve the ports, fork the workers, serve until they have all exited; the exit code."""
        listen = self.config.listen
        https = reserve(listen.https)
        http = reserve(listen.http) if listen.http is not None else None
        try:
            ports = {"https": _bound(listen.https, https)}
            if listen.http is not None and http is not None:
                ports["http"] = _bound(listen.http, http)
            config = self.config.model_copy(update={"listen": listen.model_copy(update=ports)})
            # The workers' metrics, summed by whichever answers a scrape; private (cookie names), gone at exit.
            with tempfile.TemporaryDirectory(prefix="portal-gateway-metrics-") as metrics:
                return self._supervise(config, Path(metrics))
        finally:
            https.close()
            if http is not None:
                http.close()

    def _supervise(self, config: GatewayConfig, metrics: Path) -> int:
        fork = multiprocessing.get_context("fork")
        reload = _on_bound(self.reload, self.config.listen, config.listen)
        announcements: list[Connection] = []
        signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)  # until the handlers below exist; workers inherit it
        try:
            for signum in _SIGNALS:
                signal.signal(signum, self._relay)
            for number in range(1, config.listen.workers + 1):
                reader, writer = fork.Pipe(duplex=False)
                process = fork.Process(
                    target=_worker,
                    args=(config, self.context, reload, number, writer, metrics, os.getpid()),
                    name=f"gateway-worker-{number}",
                )
                process.start()
                writer.close()
                announcements.append(reader)
                self.processes.append(process)
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNALS)
        self._wait(config, announcements)
        log.info("stopped")
        failed = self.failed or any(process.exitcode != 0 for process in self.processes)
        return EXIT_FAILED if failed else 0

    def _wait(self, config: GatewayConfig, announcements: list[Connection]) -> None:
        """Until every worker has exited: log ``listening`` once all listen, stop them all if one dies."""
        running = {process.sentinel: process for process in self.processes}
        listening = 0
        while running:
            for ready in wait([*announcements, *running]):
                if isinstance(ready, int):
                    process = running.pop(ready)
                    process.join()
                    if not self.stopping:
                        log.error("worker %s exited with %s; stopping the others", process.name, process.exitcode)
                        self.failed = True
                        self._relay(signal.SIGTERM)
                elif isinstance(ready, Connection):
                    announcements.remove(ready)
                    with ready:
                        try:
                            ready.recv()
                        except EOFError:  # died before listening; its sentinel says so
                            continue
                    listening += 1
                    if listening == len(self.processes):
                        self._announce(config)

    def _announce(self, config: GatewayConfig) -> None:
        http = config.listen.http
        ports = {"https": config.listen.https.port, "http": http.port if http is not None else None}
        log.info("listening", extra={**ports, "workers": len(self.processes)})


def run(config: GatewayConfig, context: ssl.SSLContext, reload: server.Reload) -> int:
    """Serve with ``listen.workers`` processes; the exit code (0 after a clean stop).

    ``reload`` is what each worker serves on SIGHUP (see :func:`server.serve`)."""
    return Supervisor(config, context, reload).run()

"""Run the gateway: the HTTPS app, the HTTP redirect, signals and a graceful stop."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field

import uvloop
from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from gateway.app import HEAD_DEADLINE, create_app
from gateway.config import Address, GatewayConfig, RequestsConfig
from gateway.edge.secure import server_header
from gateway.errors import ConfigError
from gateway.observe.audit import AUDIT_LOG, AuditLog
from gateway.observe.metrics import METRICS, Metrics
from gateway.run.protocol import ProtocolFactory, connection_factory
from routes.redirect import create_redirect_app

log = logging.getLogger(__name__)


class _Switch:
    """A listener's protocol factory that a reload points at a new app: new connections go there."""

    def __init__(self, factory: ProtocolFactory) -> None:
        self.factory = factory

    def __call__(self) -> RequestHandler:
        return self.factory()


def _factory(runner: web.AppRunner, limits: RequestsConfig | None) -> ProtocolFactory:
    """The protocol factory of a set-up runner, under its app's head deadline when it has one."""
    assert runner.server is not None  # set up first
    factory = connection_factory(runner.server, limits)
    return runner.app[HEAD_DEADLINE].wrap(factory) if HEAD_DEADLINE in runner.app else factory


async def _set_up(runner: web.AppRunner) -> web.AppRunner:
    try:
        await runner.setup()
    except BaseException:
        await runner.cleanup()  # the contexts entered before the one that failed (sessions, the audit log)
        raise
    return runner


async def _https_runner(
    config: GatewayConfig, metrics: Metrics | None = None, audit_log: AuditLog | None = None
) -> web.AppRunner:
    """The HTTPS app's runner, set up (its cleanup contexts entered) but not listening."""
    app = create_app(config, metrics, audit_log)
    return await _set_up(web.AppRunner(app, shutdown_timeout=config.listen.shutdown_grace))


async def _redirect_runner(config: GatewayConfig, https_port: int) -> web.AppRunner:
    """The HTTP redirect app's runner, set up but not listening: to the public HTTPS port, else ``https_port``."""
    app = create_redirect_app(config.domain, config.listen.public_https_port or https_port)
    app.on_response_prepare.append(server_header)
    return await _set_up(web.AppRunner(app))


@dataclass
class Running:
    """The started listeners, with the ports they really bound (the config may say 0)."""

    config: GatewayConfig
    context: ssl.SSLContext
    runners: list[web.AppRunner]
    https_port: int = 0
    http_port: int | None = None
    listeners: list[asyncio.Server] = field(default_factory=list)
    switches: list[_Switch] = field(default_factory=list)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def app(self) -> web.Application:
        """The HTTPS application serving new connections."""
        return self.runners[0].app

    async def reload(self, config: GatewayConfig) -> None:
        """Serve ``config`` and its certificate from now on: new connections reach a new app while
        in-flight requests finish on the old one. Raises, changing nothing, when the new app cannot start."""
        async with self._lock:
            if (config.listen.https, config.listen.http) != (self.config.listen.https, self.config.listen.http):
                raise ConfigError(("listen", "the listening addresses change only with a restart"))
            if config.listen.workers != self.config.listen.workers:
                raise ConfigError(("listen.workers", "the number of worker processes changes only with a restart"))
            # First, before the new app creates today's audit file: whatever the old app still answers
            # (kept-alive connections, requests racing the switch) is written there too, never to the rotated one.
            self.app[AUDIT_LOG].reopen()
            runners = [await _https_runner(config, self.app[METRICS], self.app[AUDIT_LOG])]
            try:
                if config.listen.http is not None:
                    runners.append(await _redirect_runner(config, self.https_port))
                self.context.load_cert_chain(config.tls.cert, config.tls.key)
            except BaseException:
                for runner in runners:
                    await runner.cleanup()
                raise
            old, self.runners, self.config = self.runners, runners, config
            for switch, runner in zip(self.switches, runners, strict=True):
                switch.factory = _factory(runner, config.requests if runner is runners[0] else None)
            for runner in reversed(old):
                await runner.cleanup()

    async def stop(self) -> None:
        """Stop accepting, let in-flight requests finish within the grace, then clean up."""
        async with self._lock:
            for listener in self.listeners:
                listener.close()
            for runner in reversed(self.runners):
                await runner.cleanup()

    async def listen(self, runner: web.AppRunner, address: Address, context: ssl.SSLContext | None) -> int:
        """Accept connections on ``address`` for ``runner``'s app (and its successors); the bound port."""
        switch = _Switch(_factory(runner, self.config.requests if runner is self.runners[0] else None))
        listener = await asyncio.get_running_loop().create_server(
            switch,
            address.host,
            address.port,
            ssl=context,
            # SECURITY: slowloris before the first byte of HTTP: a handshake gets the head's deadline.
            ssl_handshake_timeout=self.config.requests.header_timeout if context is not None else None,
            # Worker processes (listen.workers) share the address. SECURITY: Linux lets only processes of the
            # same user join a SO_REUSEPORT group, so no other account can bind our port and take a share of
            # the connections; with one worker the option stays off altogether.
            reuse_port=self.config.listen.workers > 1,
        )
        self.switches.append(switch)
        self.listeners.append(listener)
        return int(listener.sockets[0].getsockname()[1])


async def start(config: GatewayConfig, context: ssl.SSLContext, metrics: Metrics | None = None) -> Running:
    """Start the HTTPS listener and, when configured, the HTTP redirect listener.

    With ``listen.workers`` above 1 each worker process binds the same addresses with SO_REUSEPORT.
    """
    running = Running(config=config, context=context, runners=[await _https_runner(config, metrics)])
    try:
        running.https_port = await running.listen(running.runners[0], config.listen.https, context)
        if config.listen.http is not None:
            running.runners.append(await _redirect_runner(config, running.https_port))
            running.http_port = await running.listen(running.runners[1], config.listen.http, None)
    except BaseException:
        await running.stop()
        raise
    return running


Reload = Callable[[], GatewayConfig]

YOUNG_COLLECTION = 10_000
"""Container objects allocated (net of those freed) between two young collections of the cyclic collector."""


def settle_collector() -> tuple[int, int, int]:
    """Once the gateway serves: freeze what start-up built; collect the young generation every ``YOUNG_COLLECTION``
    allocations, not CPython's 700. Returns the thresholds it replaced, for ``serve`` to put back."""
    # What start built (config, compiled rules, templates, routes) lives as long as the process: the
    # collector need not walk it again on every full collection.
    gc.freeze()
    # Each young collection moves what is in flight at that moment (a request's objects; a change's fan-out to
    # thousands of event streams, their reads pending) one generation up, and enough of those start a full
    # collection, which walks every live object: with 5,000 idle streams, 0.3-0.5 s on every change or two
    # (bench/bench_events.py). On the proxied path CPython's 700 ran one every 20 or so requests of 50 in
    # flight, about 4 % of a request's CPU, for garbage a request no longer leaves (tests/proxy/test_proxy.py).
    # Nearly all of a server's objects die young without a cycle, freed at once whatever the threshold; 14
    # times fewer young collections promote far fewer of them, so full collections become rare. The cost:
    # cyclic garbage waits up to 10,000 allocations longer to be found (a few MB at most).
    before = gc.get_threshold()
    gc.set_threshold(YOUNG_COLLECTION, *before[1:])
    return before


def _refreeze() -> None:
    """After a reload the old app is garbage: let the collector see it once, then freeze what is left."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()


async def _reload(running: Running, reload: Reload) -> None:
    """SIGHUP: read the configuration again and serve it; a bad one keeps the running one, saying why."""
    try:
        await running.reload(reload())
    except ConfigError as exc:
        running.app[AUDIT_LOG].reopen()  # logrotate's SIGHUP still gets a fresh audit file
        log.error("reload refused, still serving the previous configuration: %s", exc)
    except Exception:
        running.app[AUDIT_LOG].reopen()
        log.exception("reload failed, still serving the previous configuration")
    else:
        log.info("reloaded")
    finally:
        # Running.reload returns once the old app has drained and been cleaned up (or a new one was discarded).
        _refreeze()


def announce(running: Running) -> None:
    """Log the ports really bound: the line that tells a supervisor (or a test) the gateway is up."""
    log.info("listening", extra={"https": running.https_port, "http": running.http_port})


async def serve(
    config: GatewayConfig,
    context: ssl.SSLContext,
    reload: Reload,
    ready: Callable[[Running], None] = announce,
    metrics: Metrics | None = None,
) -> None:
    """Serve until SIGTERM or SIGINT, then stop accepting and let in-flight requests finish.

    SIGHUP serves what ``reload`` returns (configuration and certificate) and reopens the audit log.
    ``ready`` is called once every signal handler is in place and the listeners accept. ``metrics``: a
    worker's, which count with its siblings' (gateway/run/workers.py); else the app's own.
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    # Handlers first: a SIGTERM that arrives while (or right after) the listeners start still drains.
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    running = await start(config, context, metrics)
    thresholds = settle_collector()
    reloads: set[asyncio.Task[None]] = set()

    def on_hangup() -> None:
        task = asyncio.create_task(_reload(running, reload))
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    try:
        loop.add_signal_handler(signal.SIGHUP, on_hangup)
        ready(running)
        await stop.wait()
        log.info("stopping: no new connections; in-flight requests get %.0f s", running.config.listen.shutdown_grace)
    finally:
        await running.stop()
        gc.set_threshold(*thresholds)
    log.info("stopped")


def run(
    config: GatewayConfig,
    context: ssl.SSLContext,
    reload: Reload,
    ready: Callable[[Running], None] = announce,
    metrics: Metrics | None = None,
) -> None:
    """Run :func:`serve` on uvloop."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(serve(config, context, reload, ready, metrics))

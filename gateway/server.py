"""Run the gateway: the HTTPS app, the HTTP redirect, signals and a graceful stop."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import ssl
from collections.abc import Callable
from dataclasses import dataclass

import uvloop
from aiohttp import web

from gateway.app import create_app
from gateway.audit import AUDIT_LOG
from gateway.config import GatewayConfig
from routes.redirect import create_redirect_app

log = logging.getLogger(__name__)
MAX_LINE = 32 * 1024


@dataclass
class Running:
    """The started listeners, with the ports they really bound (the config may say 0)."""

    app: web.Application
    runners: list[web.AppRunner]
    https_port: int
    http_port: int | None

    async def stop(self) -> None:
        """Stop accepting, let in-flight requests finish within the grace, then clean up."""
        for runner in reversed(self.runners):
            await runner.cleanup()


def _bound_port(runner: web.AppRunner) -> int:
    return int(runner.addresses[0][1])


async def start(config: GatewayConfig, context: ssl.SSLContext) -> Running:
    """Start the HTTPS listener and, when configured, the HTTP redirect listener.

    With ``listen.workers`` above 1 each worker process binds the same addresses with SO_REUSEPORT.
    """
    grace = config.listen.shutdown_grace
    # SECURITY: Linux lets only processes of the same user join a SO_REUSEPORT group, so no other account can
    # bind our port and take a share of the connections; with one worker the option stays off altogether.
    reuse_port = config.listen.workers > 1
    # A 10 KB search, percent-encoded, must reach the handler (aiohttp's default request line is 8190 bytes).
    runner = web.AppRunner(create_app(config), shutdown_timeout=grace, access_log=None, max_line_size=MAX_LINE)
    await runner.setup()
    running = Running(app=runner.app, runners=[runner], https_port=0, http_port=None)
    try:
        https = config.listen.https
        await web.TCPSite(runner, https.host, https.port, ssl_context=context, reuse_port=reuse_port).start()
        running.https_port = _bound_port(runner)
        if config.listen.http is not None:
            redirect = web.AppRunner(create_redirect_app(config.domain, running.https_port), access_log=None)
            await redirect.setup()
            running.runners.append(redirect)
            await web.TCPSite(redirect, config.listen.http.host, config.listen.http.port, reuse_port=reuse_port).start()
            running.http_port = _bound_port(redirect)
    except BaseException:
        await running.stop()
        raise
    return running


def announce(running: Running) -> None:
    """Log the ports really bound: the line that tells a supervisor (or a test) the gateway is up."""
    log.info("listening", extra={"https": running.https_port, "http": running.http_port})


async def serve(config: GatewayConfig, context: ssl.SSLContext, ready: Callable[[Running], None] = announce) -> None:
    """Serve until SIGTERM or SIGINT, then stop accepting and let in-flight requests finish.

    SIGHUP reopens the audit log, for logrotate. ``ready`` is called once every signal handler is in place
    and the listeners accept.
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    # Handlers first: a SIGTERM that arrives while (or right after) the listeners start still drains.
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    running = await start(config, context)
    # What start built (config, compiled rules, templates, routes) lives as long as the process: the
    # collector need not walk it again on every full collection.
    gc.freeze()
    try:
        loop.add_signal_handler(signal.SIGHUP, running.app[AUDIT_LOG].reopen)
        ready(running)
        await stop.wait()
        log.info("stopping: no new connections; in-flight requests get %.0f s", config.listen.shutdown_grace)
    finally:
        await running.stop()
    log.info("stopped")


def run(config: GatewayConfig, context: ssl.SSLContext, ready: Callable[[Running], None] = announce) -> None:
    """Run :func:`serve` on uvloop."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(serve(config, context, ready))

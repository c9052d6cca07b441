"""Run the gateway: the HTTPS app, the HTTP redirect, signals and a graceful stop."""

from __future__ import annotations

import asyncio
import logging
import signal
import ssl

import uvloop
from aiohttp import web

from gateway.app import create_app
from gateway.audit import AUDIT_LOG
from gateway.config import GatewayConfig
from routes.redirect import create_redirect_app

log = logging.getLogger(__name__)


def _bound_port(runner: web.AppRunner) -> int:
    """The port the runner actually listens on (the config may say 0)."""
    address = runner.addresses[0]
    return int(address[1])


async def serve(config: GatewayConfig, context: ssl.SSLContext) -> None:
    """Serve until SIGTERM or SIGINT, then stop accepting and let in-flight requests finish.

    SIGHUP reopens the audit log, for logrotate.
    """
    grace = config.listen.shutdown_grace
    runner = web.AppRunner(create_app(config), shutdown_timeout=grace, access_log=None)
    await runner.setup()
    runners = [runner]
    try:
        await web.TCPSite(runner, config.listen.https.host, config.listen.https.port, ssl_context=context).start()
        https_port = _bound_port(runner)
        addresses = {"https": f"{config.listen.https.host}:{https_port}"}
        if config.listen.http is not None:
            redirect = web.AppRunner(
                create_redirect_app(config.domain, https_port), shutdown_timeout=grace, access_log=None
            )
            await redirect.setup()
            runners.insert(0, redirect)
            await web.TCPSite(redirect, config.listen.http.host, config.listen.http.port).start()
            addresses["http"] = f"{config.listen.http.host}:{_bound_port(redirect)}"
        log.info("listening", extra=addresses)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, stop.set)
        loop.add_signal_handler(signal.SIGHUP, runner.app[AUDIT_LOG].reopen)
        await stop.wait()
        log.info("stopping: no new connections; in-flight requests get %.0f s", grace)
    finally:
        for each in runners:
            await each.cleanup()
    log.info("stopped")


def run(config: GatewayConfig, context: ssl.SSLContext) -> None:
    """Run :func:`serve` on uvloop."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(serve(config, context))

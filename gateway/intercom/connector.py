"""The connector in the running gateway: its client and syncer in a cleanup context, the background sync,
and the lines ``check`` adds for it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
from aiohttp import web

from gateway.config import CONFIG, GatewayConfig, IntercomConfig
from gateway.edge.guard import STORE
from gateway.errors import IntercomError, IntercomUnauthorized
from gateway.intercom.client import IntercomClient
from gateway.intercom.sync import Progress, Syncer
from gateway.intercom.webhooks import Inbox
from gateway.observe.metrics import METRICS, Metrics
from gateway.ops.checks import Check
from gateway.run.periodic import periodic
from gateway.store.protocol import Store

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Connector:
    """What the routes and the background sync use of the connector."""

    client: IntercomClient
    syncer: Syncer
    inbox: Inbox
    admin_id: str
    webhook_secret: bytes | None


INTERCOM = web.AppKey("intercom", Connector)


def _token(config: IntercomConfig) -> str:
    if config.access_token is None:  # the config refuses an enabled connector without one
        raise IntercomUnauthorized("intercom.access_token is not set")
    return config.access_token.get_secret_value()


@contextlib.asynccontextmanager
async def connected(
    config: IntercomConfig, store: Store, metrics: Metrics | None = None, progress: Progress | None = None
) -> AsyncIterator[Connector]:
    """The connector on a session of its own, closed when the block ends."""
    async with aiohttp.ClientSession() as session:
        client = IntercomClient(session, config.base_url, _token(config), metrics)
        syncer = Syncer(client, store, metrics, progress=progress)
        secret = config.webhook_secret.get_secret_value().encode() if config.webhook_secret else None
        yield Connector(client, syncer, Inbox(syncer), config.admin_id or "", secret)


async def background_sync(syncer: Syncer) -> None:
    """One background run; a refused token is logged as what to fix, and the portal keeps serving the store."""
    try:
        await syncer.run()
    except IntercomUnauthorized as exc:
        log.error("intercom sync stopped: %s", exc)


async def intercom_context(app: web.Application) -> AsyncIterator[None]:
    """Cleanup context: with the connector on, its client, and a sync every ``intercom.sync_interval``."""
    config = app[CONFIG].intercom
    if not config.enabled:
        yield
        return
    async with connected(config, app[STORE], app[METRICS]) as connector:
        app[INTERCOM] = connector
        worker = asyncio.create_task(connector.inbox.work(), name="Intercom webhooks")
        try:
            async with periodic(lambda: background_sync(connector.syncer), config.sync_interval, name="Intercom sync"):
                yield
        finally:
            worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await worker


async def connector_checks(config: GatewayConfig, store: Store) -> list[Check]:
    """The lines ``check`` adds with the connector on: the token works (``GET /me``), the webhook secret is set."""
    intercom = config.intercom
    if not intercom.enabled:
        return []
    checks = []
    async with connected(intercom, store) as connector:
        try:
            me = await connector.client.get("/me")
        except IntercomError as exc:
            checks.append(Check("Intercom access token", False, f"{exc}; set intercom.access_token to a working token"))
        else:
            app = (me.get("app") or {}).get("name") or "the workspace"
            checks.append(Check("Intercom access token", True, f"works: {me.get('name') or 'an admin'} of {app}"))
    if intercom.webhook_secret is None:
        detail = "not set: webhook deliveries are refused; set intercom.webhook_secret to the app's client secret"
        checks.append(Check("Intercom webhook secret", False, detail))
    else:
        checks.append(Check("Intercom webhook secret", True, "set: deliveries are checked against it"))
    return checks

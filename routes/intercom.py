"""``/intercom/webhooks``: Intercom's deliveries, taken only when signed with the app's client secret.

HEAD answers 200 (Intercom checks the endpoint so when the webhook is set up).
A POST's body is taken up to ``MAX_BODY`` and its ``X-Hub-Signature`` checked
before anything is parsed; an unsigned (401), badly signed (401), oversized (413),
malformed (400) or replayed (409) delivery is refused, and every delivery is
audited by topic and ids, never by its body. The answer comes at once: the item
is read again from the API by the connector's worker (gateway/intercom/webhooks.py).
"""

from __future__ import annotations

import time

from aiohttp import web

from gateway.errors import BadRequest, Unauthorized
from gateway.intercom.connector import INTERCOM
from gateway.intercom.webhooks import MAX_BODY, Malformed, parse, signature_ok
from gateway.namespace import INTERCOM_WEBHOOKS_PATH
from gateway.observe.audit import AUDIT_ENTRY, WebhookResult


def _audit(request: web.Request, result: WebhookResult) -> None:
    request[AUDIT_ENTRY].webhook = result


async def _body(request: web.Request) -> bytes:
    """The raw body (read by the body stage under ``requests.max_body_size``), refused past ``MAX_BODY``."""
    body = await request.read()
    if len(body) > MAX_BODY:
        raise web.HTTPRequestEntityTooLarge(max_size=MAX_BODY, actual_size=len(body))
    return body


async def head(request: web.Request) -> web.Response:
    """Intercom's check of the endpoint when the webhook is registered."""
    if INTERCOM not in request.app:
        raise web.HTTPNotFound
    return web.Response()


async def deliver(request: web.Request) -> web.Response:
    """Take one signed delivery: queued for the worker, answered at once."""
    if INTERCOM not in request.app:
        _audit(request, WebhookResult("off"))
        raise web.HTTPNotFound
    connector = request.app[INTERCOM]
    try:
        body = await _body(request)
    except web.HTTPRequestEntityTooLarge:
        _audit(request, WebhookResult("oversized"))
        raise
    header = request.headers.get("X-Hub-Signature")
    # SECURITY: nothing of the body is parsed before its signature holds; with no secret set, nothing does.
    if connector.webhook_secret is None or not signature_ok(connector.webhook_secret, body, header):
        _audit(request, WebhookResult("unsigned" if header is None else "bad_signature"))
        raise Unauthorized("the delivery is not signed with the app's client secret")
    try:
        notification = parse(body)
    except Malformed as exc:
        _audit(request, WebhookResult("malformed"))
        raise BadRequest(f"not an Intercom notification: {exc}") from None
    item = f"{notification.kind}/{notification.item_id}" if notification.kind and notification.item_id else None
    result = connector.inbox.take(notification, time.time())
    _audit(request, WebhookResult(result, notification.topic, notification.id, item))
    if result == "replayed":
        raise web.HTTPConflict(text="this notification was delivered before")
    if result == "busy":
        raise web.HTTPServiceUnavailable(headers={"Retry-After": "60"})
    return web.json_response({"status": "accepted"})


def add_routes(app: web.Application) -> None:
    """Register the webhook endpoint."""
    app.router.add_route("HEAD", INTERCOM_WEBHOOKS_PATH, head)
    app.router.add_post(INTERCOM_WEBHOOKS_PATH, deliver)

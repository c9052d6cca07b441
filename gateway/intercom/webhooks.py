"""Intercom's webhook deliveries: the signature checked first, each notification taken once, the item re-read.

Intercom signs each delivery with the app's client secret: ``X-Hub-Signature:
sha1=<hex HMAC-SHA1 of the raw body>``. The signature is checked, in constant
time, on the raw bytes before anything is parsed; a delivery that passes is
de-duplicated by its notification id (a replay of a delivery already taken, or
one older than the replay window the memory covers, is refused) and queued, and
the handler answers at once. A worker then reads the item again from the API
(``GET /tickets/{id}`` and so on): the store never trusts a payload it did not
read from Intercom itself, so a forged or stale body could at worst cause a read.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
from dataclasses import dataclass
from typing import Literal

from cachetools import TTLCache

from gateway.errors import IntercomError
from gateway.intercom.sync import Syncer

log = logging.getLogger(__name__)
MAX_BODY = 256 * 1024  # Intercom's notifications carry one item; anything larger is not one of theirs
REPLAY_WINDOW = 3600.0  # seconds a notification id is remembered, and the oldest delivery taken
QUEUE_SIZE = 10_000
Topic = Literal["ticket", "contact", "company"]


def signature_ok(secret: bytes, body: bytes, header: str | None) -> bool:
    """Whether ``header`` is ``sha1=`` and the HMAC-SHA1 of ``body`` under ``secret``."""
    if not header or not header.startswith("sha1="):
        return False
    expected = hmac.new(secret, body, hashlib.sha1).hexdigest()
    # SECURITY: constant time, so the signature cannot be guessed a byte at a time from answer times.
    return hmac.compare_digest(expected.encode(), header.removeprefix("sha1=").strip().lower().encode())


@dataclass(frozen=True)
class Notification:
    """What a delivery names: its id, its topic, and the item to read again (kind and Intercom id)."""

    id: str
    topic: str
    created_at: int
    kind: Topic | None
    item_id: str | None


class Malformed(ValueError):
    """A signed body that is not one of Intercom's notifications."""


def parse(body: bytes) -> Notification:
    """The notification in a (signed) body; Malformed says what is missing."""
    try:
        data = json.loads(body)
    except ValueError:
        raise Malformed("not JSON") from None
    if not isinstance(data, dict) or data.get("type") != "notification_event":
        raise Malformed("not a notification_event")
    notification_id, topic = data.get("id"), data.get("topic")
    if not isinstance(notification_id, str) or not isinstance(topic, str):
        raise Malformed("no id or topic")
    item = (data.get("data") or {}).get("item") or {}
    kind = topic.split(".")[0]
    item_id = item.get("id") if isinstance(item, dict) else None
    return Notification(
        id=notification_id,
        topic=topic,
        created_at=int(data.get("created_at") or 0),
        kind=kind if kind in ("ticket", "contact", "company") else None,  # type: ignore[arg-type]
        item_id=str(item_id) if item_id is not None else None,
    )


class Inbox:
    """Deliveries taken once each and queued; :meth:`work` re-reads their items through the syncer."""

    def __init__(self, syncer: Syncer) -> None:
        self.syncer = syncer
        self._queue: asyncio.Queue[Notification] = asyncio.Queue(QUEUE_SIZE)
        self._seen: TTLCache[str, bool] = TTLCache(maxsize=QUEUE_SIZE * 10, ttl=REPLAY_WINDOW)
        self.done = 0
        """Notifications whose item was read again (the benchmark waits on it)."""

    def take(self, notification: Notification, now: float) -> Literal["accepted", "replayed", "busy"]:
        """Queue the notification unless it was taken before, or is older than the window that would say so."""
        # SECURITY: a replayed delivery (a signed body captured and sent again) is refused, not read again.
        if notification.id in self._seen or notification.created_at < now - REPLAY_WINDOW:
            return "replayed"
        try:
            self._queue.put_nowait(notification)
        except asyncio.QueueFull:
            return "busy"  # answered 503: Intercom delivers it again later
        self._seen[notification.id] = True
        return "accepted"

    async def work(self) -> None:
        """Read each queued item again from the API, for ever (cancelled when the app stops)."""
        while True:
            notification = await self._queue.get()
            try:
                await self.syncer.refresh(notification.kind, notification.item_id)
            except IntercomError as exc:
                log.warning("intercom webhook %s: %s was not read again: %s", notification.id, notification.topic, exc)
            finally:
                self.done += 1
                self._queue.task_done()

    async def drained(self) -> None:
        """Return once every queued item was read again (tests and the benchmark)."""
        await self._queue.join()

"""The connector's property: whatever changes Intercom sees, however its deliveries come, the store ends as Intercom.

Hypothesis interleaves changes on the fake (tickets raised, replies, notes and
other parts added, fields changed, tickets and companies deleted, contacts
attached and detached, time passing past the overlap window), webhook
deliveries of those changes (duplicated, reordered, some never delivered) and
syncs. At every step no visitor is shown a note; at the end, after a sync (a
full one when a deletion's delivery was lost: only a full sync can learn of it),
the store holds exactly what the fake holds.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp.test_utils import TestServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.config import StoreConfig
from gateway.intercom.client import IntercomClient
from gateway.intercom.sync import Syncer
from gateway.intercom.webhooks import Inbox, parse, signature_ok
from gateway.store.protocol import Store, open_store
from tests.intercom.conftest import no_wait
from tests.intercom.fake import CLIENT_SECRET, TOKEN, FakeIntercom
from tests.intercom.mirror import actual, expected

SUPPORT = ("admin", "991", "Sam")
PART_TYPES = ("comment", "quick_reply", "note", "assignment")

Op = tuple[Any, ...]
ops = st.one_of(
    st.tuples(st.just("raise"), st.integers(0, 2), st.sampled_from(["Customer", "Back-office", "Tracker"])),
    st.tuples(st.just("part"), st.integers(0, 20), st.sampled_from(PART_TYPES)),
    st.tuples(st.just("edit"), st.integers(0, 20), st.booleans()),
    st.tuples(st.just("delete_ticket"), st.integers(0, 20)),
    st.tuples(st.just("attach"), st.integers(0, 2), st.integers(0, 2)),
    st.tuples(st.just("detach"), st.integers(0, 2), st.integers(0, 2)),
    st.tuples(st.just("delete_company"), st.integers(0, 2)),
    st.tuples(st.just("later"), st.integers(1, 2000)),
    st.tuples(st.just("deliver"), st.integers(0, 20), st.booleans()),
    st.tuples(st.just("lose"), st.integers(0, 20)),
    st.tuples(st.just("sync"), st.booleans()),
)


@dataclass
class World:
    """The fake, the store and the connector's parts, with the deliveries not yet sent."""

    fake: FakeIntercom
    store: Store
    syncer: Syncer
    inbox: Inbox
    pending: list[bytes] = field(default_factory=list)
    deletion_lost: bool = False
    notes: list[str] = field(default_factory=list)

    def notify(self, topic: str, kind: str, item_id: str) -> None:
        body = {
            "type": "notification_event",
            "id": f"notif_{self.fake.new_id()}",
            "topic": topic,
            "created_at": int(time.time()),
            "data": {"type": "notification_event_data", "item": {"type": kind, "id": item_id}},
        }
        self.pending.append(json.dumps(body).encode())

    async def apply(self, op: Op) -> None:
        fake, tickets = self.fake, sorted(self.fake.tickets, key=int)
        contacts, companies = sorted(fake.contacts, key=int), sorted(fake.companies, key=int)
        match op:
            case ("raise", who, category):
                state, kind = next(iter(fake.ticket_states)), next(iter(fake.ticket_types))
                key = fake.add_ticket(contacts[who], f"Ticket {len(tickets)}", type_id=kind, state_id=state,
                                      category=category)  # fmt: skip
                self.notify("ticket.created", "ticket", key)
            case ("part", n, part_type) if tickets:
                key = tickets[n % len(tickets)]
                author = ("user", fake.tickets[key]["contacts"][0], "Someone") if part_type == "comment" else SUPPORT
                fake.add_part(key, part_type, f"<p>{part_type} {fake.clock}</p>", author)
                self.notify(f"ticket.{'note' if part_type == 'note' else 'admin'}.created", "ticket", key)
            case ("edit", n, shared) if tickets:
                key = tickets[n % len(tickets)]
                fake.update_ticket(key, title=f"Edited {fake.clock}", is_shared=shared)
                self.notify("ticket.updated", "ticket", key)
            case ("delete_ticket", n) if tickets:
                key = tickets[n % len(tickets)]
                fake.delete_ticket(key)
                self.notify("ticket.deleted", "ticket", key)
            case ("attach", who, which) if companies:
                company = companies[which % len(companies)]
                if company not in fake.links[contacts[who]]:
                    fake.links[contacts[who]].append(company)
                    fake.contacts[contacts[who]]["updated_at"] = fake.tick()
                self.notify("contact.user.updated", "contact", contacts[who])
            case ("detach", who, which) if fake.links[contacts[who]]:
                linked = fake.links[contacts[who]]
                linked.remove(linked[which % len(linked)])
                fake.contacts[contacts[who]]["updated_at"] = fake.tick()
                self.notify("contact.user.updated", "contact", contacts[who])
            case ("delete_company", which) if companies:
                fake.delete_company(companies[which % len(companies)])
                self.notify("company.deleted", "company", companies[which % len(companies)])
            case ("later", seconds):
                fake.clock += seconds
            case ("deliver", n, twice) if self.pending:
                body = self.pending[n % len(self.pending)]  # any of them: deliveries come in any order
                if not twice:
                    self.pending.remove(body)
                await self.deliver(body)
            case ("lose", n) if self.pending:
                body = self.pending.pop(n % len(self.pending))
                self.deletion_lost |= b'"ticket.deleted"' in body
            case ("sync", full):
                await self.syncer.run(full=full)
                self.deletion_lost &= not full
            case _:
                pass

    async def deliver(self, body: bytes) -> None:
        """What the webhook endpoint does with a signed body: check, parse, take once; then the worker."""
        signature = self.fake.signed(body)["X-Hub-Signature"]
        assert signature_ok(CLIENT_SECRET.encode(), body, signature)
        self.inbox.take(parse(body), time.time())
        await self.inbox.drained()

    async def finish(self) -> None:
        """Deliver nothing more (what is pending is lost); a sync, full when only a full one can learn of a
        ticket's deletion."""
        lost = self.deletion_lost or any(b'"ticket.deleted"' in body for body in self.pending)
        await self.syncer.run(full=lost)


def seed(fake: FakeIntercom) -> None:
    acme, globex, _ = (fake.add_company(key, key.title()) for key in ("acme", "globex", "initech"))
    for name, companies in (("ann", (acme,)), ("bob", (acme, globex)), ("cat", ())):
        fake.add_contact(f"u-{name}", name.title(), f"{name}@example.com", companies)
    fake.add_state("submitted", "New", "Submitted")
    fake.add_type("Bug report")


async def scenario(steps: list[Op], folder: Path) -> None:
    fake = FakeIntercom()
    seed(fake)
    server = TestServer(fake.app(), host="127.0.0.1")
    await server.start_server()
    store = await open_store(StoreConfig(path=folder / "portal.db"))
    worker: asyncio.Task[None] | None = None
    try:
        async with aiohttp.ClientSession() as session:
            client = IntercomClient(session, server.make_url("/"), TOKEN, sleep=no_wait)
            syncer = Syncer(client, store)
            world = World(fake, store, syncer, Inbox(syncer))
            worker = asyncio.create_task(world.inbox.work())
            await syncer.run()
            for step in steps:
                await world.apply(step)
                await actual(store)  # asserts, at every step, that no visitor is shown a note
            await world.finish()
            assert await actual(store) == expected(fake)
    finally:
        if worker is not None:
            worker.cancel()
        await store.close()
        await server.close()
    assert fake.invalid == []


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(ops, max_size=14))
def test_the_store_ends_as_intercom_whatever_the_deliveries(steps: list[Op]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        asyncio.run(scenario(steps, Path(folder)))

"""The stream's promise as a property: for any sequence of writes and any visitor, a stream resumed from before
the writes carries exactly the changes of the tickets that visitor may see, in order, and never a note.

Real store, real gateway, real stream: hypothesis picks a visitor and writes (state, title, category, sharing,
public replies, internal notes) on tickets of every kind of visibility, which go through the admin API, and
tickets like them that the Intercom sync mirrors and then forgets (deleted upstream). The stream then resumes
(``Last-Event-ID``) from before them: every event is decided by the visibility of now, so the oracle is the
final state of each ticket, read through the admin API, and DESIGN.md's rules; for a forgotten ticket, which has
no now, the state it had when it was forgotten. A sentinel ticket of the visitor's own marks where each run's
writes end.
"""

from __future__ import annotations

import asyncio
import itertools
import ssl
import threading
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import example as always
from hypothesis import strategies as st

from gateway.edge.guard import STORE
from gateway.run.server import start
from gateway.run.tls import server_context
from gateway.store.demo import PEOPLE, STATES
from tests.conftest import CANARY, Gateway, MakeConfig, deep_merge
from tests.routes.adminapi import DEMO, TICKETS, ok
from tests.routes.eventstream import Event, EventStream, open_stream
from tests.store.contract.test_mirror import ticket

# Tickets of each kind of visibility: Acme's Customer, shared and unshared Back-office and Tracker tickets,
# Globex's Customer ticket, and one of no company that Kim raised.
POOL = ("1001", "1009", "1021", "1069", "1003", "1012")
VISITORS = ("u-ann", "u-ben", "u-cho", "u-kim")
COMPANIES = {user_id: set(companies) for user_id, _, _, companies in PEOPLE}
NOTE = f"note {CANARY}"
_titles = itertools.count()
T = TypeVar("T")

write = st.one_of(
    st.tuples(st.just("state"), st.sampled_from([state.internal_label for state in STATES])),
    st.tuples(st.just("title"), st.none()),
    st.tuples(st.just("category"), st.sampled_from(["Customer", "Back-office", "Tracker"])),
    st.tuples(st.just("is_shared"), st.booleans()),
    st.tuples(st.just("reply"), st.none()),
    st.tuples(st.just("note"), st.none()),
    st.tuples(st.just("forget"), st.none()),
)


def sees(user_id: str, ticket: dict[str, Any]) -> bool:
    """DESIGN.md's rule, visibility off: shared tickets of the visitor's companies, or their own company-less ones."""
    shared = ticket["category"] == "Customer" or (ticket["category"] == "Back-office" and ticket["is_shared"])
    mine = ticket["company_id"] in COMPANIES[user_id] or (ticket["company_id"] is None and ticket["creator"] == user_id)
    return shared and mine


async def apply(gateway: Gateway, ticket_id: str, what: str, value: Any, before: dict[str, Any]) -> str | None:
    """Make the write; the kind of change it records, or None when it changes nothing a page shows."""
    path = f"{TICKETS}/{ticket_id}"
    if what in ("reply", "note"):
        body = f"reply {next(_titles)}" if what == "reply" else NOTE
        await ok(gateway, "POST", f"{path}/parts", {"body": body, "public": what == "reply"}, status=201)
        return "reply" if what == "reply" else None
    if what == "title":
        value = f"title {next(_titles)}"
    after = await ok(gateway, "PATCH", path, {what: value})
    if what == "state":
        return "state" if after["state"]["internal_label"] != before["state"]["internal_label"] else None
    return "updated" if after[what] != before[what] else None


async def forgotten(gateway: Gateway, like: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """A ticket like ``like`` (its creator, type, state, category and sharing) comes from Intercom, which then
    deletes it: its id, and the ticket as the admin API showed it just before the sync forgot it."""
    number = next(_titles)
    fields = {name: like[name] for name in ("category", "is_shared", "created_at", "updated_at")}
    state, kind = like["state"]["internal_label"], like["ticket_type"]
    line = ticket(f"gone-{number}", f"G{number}", like["creator"], type=kind, state=state, **fields)
    store = gateway.running.app[STORE]
    await store.mirror([line])
    shown = await ok(gateway, "GET", f"{TICKETS}/{line.ticket_id}")
    assert await store.forget("ticket", f"gone-{number}") is True  # the sync's own call for a deleted ticket
    return line.ticket_id, shown


async def until_sentinel(stream: EventStream, sentinel: str, at_least: int = 0) -> tuple[list[Event], Event]:
    """The events before the sentinel's (its first with an id of at least ``at_least``), and the sentinel's."""
    seen: list[Event] = []
    while (event := await stream.next()) is not None:
        if event.data.get("ticket") == sentinel and int(event.id or 0) >= at_least:
            return seen, event
        seen.append(event)
    raise AssertionError(f"the stream ended before the sentinel; it sent {seen}")


@dataclass
class Background:
    """The gateway on an event loop of its own (hypothesis runs the test's examples synchronously)."""

    gateway: Gateway
    loop: asyncio.AbstractEventLoop
    sentinels: dict[str, str]

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=60)


@pytest.fixture
def background(make_config: MakeConfig, client_ssl: ssl.SSLContext) -> Iterator[Background]:
    """A gateway on the demo store, and a sentinel ticket raised by each visitor."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="events-property", daemon=True)
    thread.start()
    config = make_config(**deep_merge(DEMO, {"portal": {"events": {"heartbeat": 0.5}}}))

    async def started() -> Gateway:
        running = await start(config, server_context(config.tls.cert, config.tls.key))
        client = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=client_ssl), cookie_jar=aiohttp.DummyCookieJar()
        )
        return Gateway(running, config, client)

    here = Background(asyncio.run_coroutine_threadsafe(started(), loop).result(timeout=60), loop, {})
    for user_id in VISITORS:
        body = {"ticket_type": "Bug report", "state": "New", "creator": user_id, "title": "sentinel"}
        here.sentinels[user_id] = here.run(ok(here.gateway, "POST", TICKETS, body, status=201))["ticket_id"]
    yield here
    here.run(here.gateway.client.close())
    here.run(here.gateway.running.stop())
    loop.call_soon_threadsafe(loop.stop)
    thread.join(timeout=10)
    loop.close()


async def example(here: Background, visitor: str, writes: list[tuple[str, tuple[str, Any]]]) -> None:
    """Resume a stream from before ``writes``: it carries exactly the visible changes they made."""
    gateway, sentinel = here.gateway, here.sentinels[visitor]

    async def bump() -> None:
        await ok(gateway, "PATCH", f"{TICKETS}/{sentinel}", {"title": f"sentinel {next(_titles)}"})

    async with open_stream(gateway, visitor) as stream:
        await bump()
        # The bump's own event: a stream opened before the hub's next pump starts before the sentinel was raised.
        bumped = (await gateway.running.app[STORE].changes_after(0, 0)).latest
        _, start_event = await until_sentinel(stream, sentinel, bumped)
    recorded: list[tuple[str, str]] = []
    gone: dict[str, dict[str, Any]] = {}  # the forgotten tickets, as they were
    for ticket_id, (what, value) in writes:
        before = await ok(gateway, "GET", f"{TICKETS}/{ticket_id}")
        if what == "forget":  # its "created" change finds no ticket when the stream reads it: no event
            removed, gone[removed] = await forgotten(gateway, before)
            recorded.append(("removed", removed))
        elif kind := await apply(gateway, ticket_id, what, value, before):
            recorded.append((kind, ticket_id))
    await bump()
    final = {ticket_id: await ok(gateway, "GET", f"{TICKETS}/{ticket_id}") for ticket_id in POOL} | gone
    async with open_stream(gateway, visitor, last_event_id=start_event.id) as resumed:
        events, _ = await until_sentinel(resumed, sentinel)
    assert [(event.data["kind"], event.data["ticket"]) for event in events] == [
        (kind, ticket_id) for kind, ticket_id in recorded if sees(visitor, final[ticket_id])
    ]
    # SECURITY: a removed ticket's event says which ticket, nothing more.
    assert all(event.data.keys() == {"kind", "ticket"} for event in events if event.data["kind"] == "removed")
    # SECURITY: whatever was written, no event ever carries a note's text.
    assert all(NOTE not in str(event.data) for event in events)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    visitor=st.sampled_from(VISITORS),
    writes=st.lists(st.tuples(st.sampled_from(POOL), write), min_size=1, max_size=6),
)
# Always: Ann sees an Acme ticket's removal, never a Globex ticket's; a Tracker ticket's records nothing.
@always(visitor="u-ann", writes=[(ticket_id, ("forget", None)) for ticket_id in ("1003", "1001", "1069")])
def test_a_resumed_stream_carries_exactly_the_visible_changes(
    background: Background, visitor: str, writes: list[tuple[str, tuple[str, Any]]]
) -> None:
    background.run(example(background, visitor, writes))

"""``GET /tickets/events`` through the real gateway: what a visitor's stream carries, resuming, its end, its limits,
its one audit record. The writes go through the admin API, as support makes them."""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

from gateway.policy.identity import sign_token
from gateway.store.demo import demo_lines
from gateway.store.models import Change, ChangedTicket, TicketDetail, TicketFilter
from gateway.store.sqlite import SQLiteStore
from routes.events import Fanout
from tests.conftest import CANARY, DOMAIN, SECRET, Gateway, StartGateway, deep_merge, raw_exchange
from tests.routes.adminapi import DEMO, TICKETS, call, customer_ticket_of, demo_tickets, ok, portal_token
from tests.routes.eventstream import EVENTS, EventStream, open_stream

ACME_TICKET, GLOBEX_TICKET = customer_ticket_of("acme"), customer_ticket_of("globex")  # Ann's own; Cho's company's
BENS_ACME_TICKET = next(line.ticket_id for line in demo_tickets() if line.company == "acme" and line.creator == "u-ben")
NOTE = f"internal only {CANARY}"


async def live(start_gateway: StartGateway, **overrides: Any) -> Gateway:
    """A gateway on the demo store; a short heartbeat, so that a stream notices at once that its page left."""
    return await start_gateway(**deep_merge(deep_merge(DEMO, {"portal": {"events": {"heartbeat": 0.1}}}), overrides))


async def set_state(gateway: Gateway, ticket_id: str, state: str) -> None:
    await ok(gateway, "PATCH", f"{TICKETS}/{ticket_id}", {"state": state})


async def reply(gateway: Gateway, ticket_id: str, body: str, *, public: bool = True) -> None:
    await ok(gateway, "POST", f"{TICKETS}/{ticket_id}/parts", {"body": body, "public": public}, status=201)


async def test_a_stream_carries_the_visible_changes_only_and_never_a_note(start_gateway: StartGateway) -> None:
    gateway = await live(start_gateway)
    async with open_stream(gateway, "u-ann") as stream:  # Ann: Acme only
        await set_state(gateway, GLOBEX_TICKET, "Fixed")  # not hers
        await reply(gateway, ACME_TICKET, NOTE, public=False)  # hers, but a note
        await set_state(gateway, ACME_TICKET, "Fixed")
        await reply(gateway, ACME_TICKET, "We shipped the fix")
        state, added = await stream.next(), await stream.next()
    assert state is not None
    assert added is not None
    assert (state.event, state.data["ticket"], state.data["kind"]) == ("ticket", ACME_TICKET, "state")
    assert (state.data["state"], state.data["category"]) == ("Resolved", "resolved")  # the customer's label
    assert (added.data["ticket"], added.data["kind"]) == (ACME_TICKET, "reply")
    assert added.data["parts"][-1]["body"] == "We shipped the fix"
    assert added.data["parts"][-1]["by_support"] is True
    assert all(NOTE not in part["body"] for part in added.data["parts"])
    assert int(state.id or 0) < int(added.id or 0)


async def test_last_event_id_resumes_after_the_last_event_without_a_gap(start_gateway: StartGateway) -> None:
    gateway = await live(start_gateway)
    async with open_stream(gateway, "u-ann") as stream:
        await set_state(gateway, ACME_TICKET, "Investigating")
        first = await stream.next()
    assert first is not None
    assert first.id is not None
    # While the page is away (a network blip, a worker restarting), two more changes.
    await set_state(gateway, ACME_TICKET, "Needs customer")
    await reply(gateway, ACME_TICKET, "Can you send a screenshot?")
    async with open_stream(gateway, "u-ann", last_event_id=first.id) as resumed:
        missed = [await resumed.next(), await resumed.next()]
    assert [(event.data["kind"], event.data["ticket"]) for event in missed if event] == [
        ("state", ACME_TICKET),
        ("reply", ACME_TICKET),
    ]


async def test_a_page_further_behind_than_retention_is_told_to_reload(start_gateway: StartGateway) -> None:
    # The demo seed alone writes more than 100 changes: the first of them are gone.
    gateway = await live(start_gateway, store={"change_retention": 100})
    async with open_stream(gateway, "u-ann", last_event_id="1") as stream:
        event = await stream.next()
        assert event is not None
        assert (event.event, event.data) == ("reload", {"reason": "missed"})
        # It goes on from the newest change: the next change is the next event.
        await set_state(gateway, ACME_TICKET, "Fixed")
        after = await stream.next()
    assert after is not None
    assert after.data["kind"] == "state"


async def test_a_removed_membership_ends_the_stream_after_a_reload_event(start_gateway: StartGateway) -> None:
    gateway = await live(start_gateway)
    async with open_stream(gateway, "u-ann") as stream:
        await ok(gateway, "DELETE", "/admin/api/contacts/u-ann/companies/acme")
        left = await stream.ended()
        await set_state(gateway, ACME_TICKET, "Fixed")  # too late: no stream of Ann's hears of Acme any more
    assert [(event.event, event.data) for event in left] == [("reload", {"reason": "access"})]
    await asyncio.sleep(0)  # the handler returns, the audit middleware writes its record
    records = [record for record in await stream_records(gateway, 1) if record["identity"]["user_id"] == "u-ann"]
    assert records[0]["stream"]["ended"] == "revoked"


async def test_a_stream_ends_when_its_token_expires(start_gateway: StartGateway) -> None:
    gateway = await live(start_gateway)
    token = sign_token(SECRET, user_id="u-ann", now=time.time(), ttl=2)
    async with open_stream(gateway, "u-ann", token=token) as stream:
        assert await stream.ended() == []
    records = await stream_records(gateway, 1)
    assert records[0]["stream"]["ended"] == "expired"


async def test_a_visitor_past_the_limit_gets_429_and_the_worker_past_its_limit_503(
    start_gateway: StartGateway,
) -> None:
    limits = {"per_visitor": 1, "max_streams": 2, "retry_after": 7}
    gateway = await live(start_gateway, portal={"events": limits})
    async with open_stream(gateway, "u-ann"):
        again = await call(gateway, "GET", EVENTS, headers={"Authorization": f"Bearer {portal_token('u-ann')}"})
        assert (again.status, again.headers["Retry-After"]) == (429, "7")
        assert again.json()["error"]["status"] == 429
        async with open_stream(gateway, "u-ben"):
            full = await call(gateway, "GET", EVENTS, headers={"Authorization": f"Bearer {portal_token('u-cho')}"})
            assert (full.status, full.headers["Retry-After"]) == (503, "7")
            assert full.headers["Content-Type"].startswith("application/json")
    # Closed streams give their places back, once they noticed.
    await stream_records(gateway, 2)
    async with open_stream(gateway, "u-ann"), open_stream(gateway, "u-cho"):
        pass


async def test_a_page_the_visitor_left_does_not_count_against_their_limit(start_gateway: StartGateway) -> None:
    # A heartbeat far away: the streams of the pages left are still running when the next pages open.
    gateway = await live(start_gateway, portal={"events": {"per_visitor": 1, "heartbeat": 60}})
    for _ in range(3):  # clicking through pages: each page's stream closes as the next one opens
        async with open_stream(gateway, "u-ann"):
            pass
    async with open_stream(gateway, "u-ann"):
        again = await call(gateway, "GET", EVENTS, headers={"Authorization": f"Bearer {portal_token('u-ann')}"})
        assert again.status == 429  # the page still open does count


async def test_refusals_are_json_with_a_clear_status(start_gateway: StartGateway) -> None:
    gateway = await live(start_gateway)
    anonymous = await call(gateway, "GET", EVENTS, headers={})
    assert anonymous.status == 401  # not a redirect to the login page, which an EventSource cannot follow
    assert anonymous.headers["Content-Type"].startswith("application/json")
    bad = await call(
        gateway,
        "GET",
        EVENTS,
        headers={"Authorization": f"Bearer {portal_token('u-ann')}", "Last-Event-ID": "12; DROP"},
    )
    assert bad.status == 400
    assert "Last-Event-ID" in bad.json()["error"]["detail"]
    # A stream has no headers-only form: HEAD is not served (the path is then only a ticket id no ticket has),
    # and the kept-alive connection serves the next request.
    head = await call(gateway, "HEAD", EVENTS, headers={"Authorization": f"Bearer {portal_token('u-ann')}"})
    assert head.status == 404
    assert (await call(gateway, "GET", "/healthz", headers={})).status == 200


async def test_one_audit_record_per_stream_with_the_events_it_sent(start_gateway: StartGateway) -> None:
    gateway = await live(start_gateway)
    async with open_stream(gateway, "u-ann") as stream:
        await set_state(gateway, ACME_TICKET, "Fixed")
        await reply(gateway, ACME_TICKET, NOTE, public=False)
        await reply(gateway, ACME_TICKET, "Done")
        assert await stream.next() is not None
        assert await stream.next() is not None
    (record,) = await stream_records(gateway, 1)
    assert record["status"] == 200
    assert record["identity"]["user_id"] == "u-ann"
    assert {key: record["stream"][key] for key in ("scope", "resumed", "events")} == {
        "scope": "all",
        "resumed": False,
        "events": 2,
    }
    assert record["stream"]["ended"] == "client_gone"


async def test_stopping_the_gateway_ends_its_streams_within_the_grace(start_gateway: StartGateway) -> None:
    gateway = await live(start_gateway, listen={"shutdown_grace": 60})
    async with open_stream(gateway, "u-ann") as stream:
        stopping = asyncio.create_task(gateway.running.stop())
        assert await stream.ended() == []
        # Well inside the grace: the stream did not make the stop wait for it.
        await asyncio.wait_for(stopping, 30)
    (record,) = [record for record in gateway.audit_records() if record.get("stream")]
    assert record["stream"]["ended"] == "shutdown"


async def stream_records(gateway: Gateway, count: int) -> list[dict[str, Any]]:
    """The audit records of ended streams, once ``count`` are written."""
    for _ in range(500):  # the writer thread writes within its linger
        if len(records := [record for record in gateway.audit_records() if record.get("stream")]) >= count:
            return records
        await asyncio.sleep(0.02)
    raise AssertionError(f"fewer than {count} stream records")


async def until(stream: EventStream, ticket_id: str) -> list[str]:
    """The tickets of the events before the first one about ``ticket_id``."""
    seen: list[str] = []
    while (event := await stream.next()) is not None and event.data["ticket"] != ticket_id:
        seen.append(event.data["ticket"])
    return seen


async def test_one_change_reaches_streams_of_different_filters_each_as_their_own_filter_allows(
    start_gateway: StartGateway,
) -> None:
    # The streams wake on the same change together and share reads: never across filters. Ann's "Created by me"
    # stream has a filter of its own; Ben sees Acme and Globex; Cho Globex only.
    gateway = await live(start_gateway)
    async with AsyncExitStack() as streams:
        opened = {
            name: await streams.enter_async_context(open_stream(gateway, user_id, query=query))
            for name, user_id, query in (
                ("ann", "u-ann", ""),
                ("ann, mine", "u-ann", "scope=mine"),
                ("ben", "u-ben", ""),
                ("cho", "u-cho", ""),
            )
        }
        await set_state(gateway, BENS_ACME_TICKET, "Fixed")  # the one change: Ben's ticket at Acme
        await set_state(gateway, GLOBEX_TICKET, "Fixed")  # where Cho's stream stops reading
        await set_state(gateway, ACME_TICKET, "Fixed")  # where the others' stop: Ann's own ticket
        before = {
            name: await until(stream, GLOBEX_TICKET if name == "cho" else ACME_TICKET)
            for name, stream in opened.items()
        }
    assert before == {
        "ann": [BENS_ACME_TICKET],
        "ann, mine": [],
        "ben": [BENS_ACME_TICKET, GLOBEX_TICKET],
        "cho": [],
    }


async def test_a_stream_over_http_1_0_is_refused_clearly(
    start_gateway: StartGateway, client_ssl: ssl.SSLContext
) -> None:
    # The fan-out writes each event as a chunk of a chunked body, which HTTP/1.0 has not.
    gateway = await live(start_gateway)
    head = f"GET {EVENTS} HTTP/1.0\r\nHost: {DOMAIN}\r\nCookie: portal-jwt={portal_token('u-ann')}\r\n\r\n"
    answer = await raw_exchange(gateway, head.encode(), client_ssl)
    assert answer.statuses == [400]
    assert b"needs HTTP/1.1" in answer.data


def slow_ended(gateway: Gateway) -> bool:
    return any(record["stream"]["ended"] == "slow" for record in gateway.audit_records() if record.get("stream"))


async def test_a_page_that_stopped_reading_ends_its_stream_and_holds_up_no_other(
    start_gateway: StartGateway, client_ssl: ssl.SSLContext
) -> None:
    gateway = await live(start_gateway, portal={"events": {"max_buffered": 1024}})
    # A page that opens its stream and then reads nothing more (its socket's window kept small).
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", gateway.running.https_port))
    reader, writer = await asyncio.open_connection(sock=sock, ssl=client_ssl, server_hostname=DOMAIN)
    head = f"GET {EVENTS} HTTP/1.1\r\nHost: {DOMAIN}\r\nCookie: portal-jwt={portal_token('u-ben')}\r\n\r\n"
    writer.write(head.encode())
    assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")
    acme = [line.ticket_id for line in demo_tickets() if line.company == "acme" and line.category == "Customer"]
    try:
        async with open_stream(gateway, "u-ann") as stream:
            # Each reply's event carries the whole public thread: round the tickets, so that no event is too long
            # for a line, until what the stuck page does not read fills its connection's buffers.
            for number in range(15 * len(acme)):
                await reply(gateway, acme[number % len(acme)], f"{number} " + "x" * 30_000)
                event = await stream.next()  # the reading page gets every one, at once
                assert event is not None
                assert event.data["parts"][-1]["body"].startswith(f"{number} ")
                if slow_ended(gateway):
                    break
        records = await stream_records(gateway, 2)
    finally:
        writer.close()
    ended = {record["identity"]["user_id"]: record["stream"]["ended"] for record in records}
    assert ended == {"u-ben": "slow", "u-ann": "client_gone"}


class CountingStore(SQLiteStore):
    """The real store, counting the ticket reads it is asked for."""

    reads = 0

    async def get_ticket(self, visible: TicketFilter, ticket_id: str) -> TicketDetail | None:
        """Count, then read."""
        self.reads += 1
        return await super().get_ticket(visible, ticket_id)

    async def changed_ticket(self, ticket_id: str) -> ChangedTicket | None:
        """Count, then read."""
        self.reads += 1
        return await super().changed_ticket(ticket_id)


async def test_a_change_is_read_once_and_decided_per_filter_without_the_store(tmp_path: Path) -> None:
    store = await CountingStore.open(tmp_path / "portal.db")
    assert isinstance(store, CountingStore)
    try:
        await store.seed(demo_lines(int(time.time())))
        ann = await store.contact_by_user_id("u-ann")
        assert ann is not None
        acme = frozenset(company.id for company in ann.companies)
        everything, own = (TicketFilter(acme, ann.id, own_only=own_only) for own_only in (False, True))
        nobody = TicketFilter(frozenset(), None, own_only=False)
        fanout = Fanout(store, time.time, 1 << 18)
        change = Change(id=(await store.changes_after(0, 0)).latest, kind="state", ticket_id=BENS_ACME_TICKET)
        event = await fanout.event(change)
        assert event is not None
        shows, frame = event
        assert f'"ticket":"{BENS_ACME_TICKET}"'.encode() in frame
        # Ann's "All", her "Created by me" (Ben's ticket is not hers), someone of no company: no read more.
        assert [shows(visible) for visible in (everything, own, nobody)] == [True, False, False]
        assert store.reads == 1
        assert await fanout.event(Change(id=change.id + 1, kind="access", contact_id=ann.id)) is None
        assert store.reads == 1  # an access change is the streams' own check, not a ticket read
    finally:
        await store.close()

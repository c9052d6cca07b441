"""``POST /intercom/webhooks`` through the real gateway: signed deliveries taken once, items re-read from the API."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from gateway.edge.guard import STORE
from gateway.intercom.connector import INTERCOM
from tests.conftest import DOMAIN, Gateway, StartGateway
from tests.intercom.conftest import RunningFake
from tests.intercom.fake import CLIENT_SECRET, FakeIntercom
from tests.intercom.mirror import actual, expected
from tests.intercom.test_serve import connector_config
from tests.intercom.test_sync import SUPPORT, populate

HOST = {"Host": DOMAIN}
_ids = iter(range(1, 1_000_000))


def notification(topic: str, item: dict[str, Any], **overrides: Any) -> bytes:
    """An Intercom notification_event as a delivery's body."""
    body = {
        "type": "notification_event",
        "app_id": "fakews",
        "id": f"notif_{next(_ids)}",
        "topic": topic,
        "created_at": int(time.time()),
        "delivery_attempts": 1,
        "data": {"type": "notification_event_data", "item": item},
        **overrides,
    }
    return json.dumps(body).encode()


@pytest.fixture
async def webhooked(intercom: RunningFake, start_gateway: StartGateway) -> Gateway:
    """The gateway with the connector on and its client secret set; no background sync in the test's time."""
    return await start_gateway(intercom=connector_config(intercom, webhook_secret=CLIENT_SECRET, sync_interval=3600))


async def deliver(gateway: Gateway, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
    """POST a delivery; its status and its audit record."""
    async with gateway.client.post(gateway.url / "intercom/webhooks", data=body, headers={**HOST, **headers}) as answer:
        status = answer.status
        request_id = answer.headers["X-Request-Id"]
    return status, await gateway.audit_for(request_id)


async def settled(gateway: Gateway) -> None:
    await gateway.running.app[INTERCOM].inbox.drained()


def ticket_item(fake: FakeIntercom, key: str, **forged: Any) -> dict[str, Any]:
    return {**fake.ticket_object(key), **forged}


async def test_head_answers_200_for_intercoms_check(webhooked: Gateway) -> None:
    async with webhooked.client.head(webhooked.url / "intercom/webhooks", headers=HOST) as answer:
        assert answer.status == 200


async def test_a_signed_delivery_is_answered_then_its_item_read_from_the_api(
    intercom: RunningFake, webhooked: Gateway
) -> None:
    ids = populate(intercom.fake)
    store = webhooked.running.app[STORE]
    # The payload says "forged": the store must show what the API says, and it reads every contact it lacks.
    body = notification("ticket.created", ticket_item(intercom.fake, ids["first"], ticket_attributes={"x": "forged"}))
    status, record = await deliver(webhooked, body, intercom.fake.signed(body))
    assert status == 200
    assert record["webhook"]["result"] == "accepted"
    assert record["webhook"]["item"] == f"ticket/{ids['first']}"
    await settled(webhooked)
    assert (await actual(store))["tickets"]["1"] == expected(intercom.fake)["tickets"]["1"]
    assert ("GET", f"/tickets/{ids['first']}", 200) in intercom.fake.calls


async def test_changes_and_deletions_of_every_topic_follow(intercom: RunningFake, webhooked: Gateway) -> None:
    fake = intercom.fake
    ids = populate(fake)
    for key in list(fake.tickets):
        body = notification("ticket.created", {"type": "ticket", "id": key})
        await deliver(webhooked, body, fake.signed(body))
    fake.add_part(ids["first"], "note", "<p>internal only</p>", SUPPORT)
    fake.links[ids["ann"]].append(fake.add_company("initech", "Initech"))
    fake.delete_ticket(ids["second"])
    fake.companies[ids["acme"]]["name"] = "Acme Corp"
    for topic, item in (
        ("ticket.note.created", {"type": "ticket", "id": ids["first"]}),
        ("contact.user.updated", {"type": "contact", "id": ids["ann"]}),
        ("ticket.deleted", {"type": "ticket", "id": ids["second"]}),
        ("company.updated", {"type": "company", "id": ids["acme"]}),
    ):
        body = notification(topic, item)
        assert (await deliver(webhooked, body, fake.signed(body)))[0] == 200
    await settled(webhooked)
    store = webhooked.running.app[STORE]
    mirrored, wanted = await actual(store), expected(fake)
    assert mirrored["tickets"] == wanted["tickets"]
    assert mirrored["contacts"]["u-ann"] == wanted["contacts"]["u-ann"]
    assert (await store.company("acme")).name == "Acme Corp"


@pytest.mark.parametrize(
    ("headers", "result"),
    [
        ({}, "unsigned"),
        ({"X-Hub-Signature": "sha1=" + "0" * 40}, "bad_signature"),
        ({"X-Hub-Signature": "md5=x"}, "bad_signature"),
    ],
)
async def test_unsigned_and_badly_signed_deliveries_are_refused_and_audited(
    intercom: RunningFake, webhooked: Gateway, headers: dict[str, str], result: str
) -> None:
    body = notification("ticket.created", {"type": "ticket", "id": "1"})
    status, record = await deliver(webhooked, body, {"Content-Type": "application/json", **headers})
    assert status == 401
    assert record["webhook"] == {"result": result, "topic": None, "notification_id": None, "item": None}
    assert intercom.fake.calls == []


async def test_a_body_signed_with_another_secret_is_refused(intercom: RunningFake, webhooked: Gateway) -> None:
    body = notification("ticket.created", {"type": "ticket", "id": "1"})
    status, record = await deliver(webhooked, body, intercom.fake.signed(body, secret="someone else's"))
    assert status == 401
    assert record["webhook"]["result"] == "bad_signature"


async def test_replayed_and_stale_deliveries_are_refused(intercom: RunningFake, webhooked: Gateway) -> None:
    body = notification("ticket.created", {"type": "ticket", "id": "404"})
    assert (await deliver(webhooked, body, intercom.fake.signed(body)))[0] == 200
    status, record = await deliver(webhooked, body, intercom.fake.signed(body))
    assert status == 409
    assert record["webhook"]["result"] == "replayed"
    stale = notification("ticket.created", {"type": "ticket", "id": "404"}, created_at=int(time.time()) - 7200)
    assert (await deliver(webhooked, stale, intercom.fake.signed(stale)))[0] == 409


async def test_oversized_and_malformed_deliveries_are_refused(intercom: RunningFake, webhooked: Gateway) -> None:
    big = b"{" + b" " * (300 * 1024) + b"}"
    status, record = await deliver(webhooked, big, intercom.fake.signed(big))
    assert status == 413
    assert record["webhook"]["result"] == "oversized"
    junk = b'{"type": "something else"}'
    status, record = await deliver(webhooked, junk, intercom.fake.signed(junk))
    assert status == 400
    assert record["webhook"]["result"] == "malformed"


async def test_the_audit_never_holds_the_secret_or_a_signature(intercom: RunningFake, webhooked: Gateway) -> None:
    body = notification("ticket.created", {"type": "ticket", "id": "1"})
    headers = intercom.fake.signed(body)
    await deliver(webhooked, body, headers)
    text = webhooked.config.audit.path.read_text()
    assert CLIENT_SECRET not in text
    assert headers["X-Hub-Signature"].removeprefix("sha1=") not in text


async def test_without_the_connector_there_is_no_endpoint(intercom: RunningFake, gateway: Gateway) -> None:
    body = notification("ticket.created", {"type": "ticket", "id": "1"})
    status, record = await deliver(gateway, body, intercom.fake.signed(body))
    assert status == 404
    assert record["webhook"]["result"] == "off"

"""With the connector on, joins and memberships are made in Intercom first; the store follows only what it accepted."""

from __future__ import annotations

import time
from typing import Any

from gateway.edge.guard import STORE
from gateway.intercom.connector import INTERCOM
from gateway.policy.identity import sign_token
from gateway.store.models import TicketFilter
from gateway.store.protocol import Store
from tests.conftest import DOMAIN, SECRET, Gateway, StartGateway
from tests.intercom.conftest import RunningFake
from tests.intercom.test_serve import connector_config
from tests.intercom.test_sync import populate
from tests.routes.adminapi import ADMIN, EVERYONE_IN, call


async def synced(
    intercom: RunningFake, start_gateway: StartGateway, **overrides: Any
) -> tuple[Gateway, dict[str, str]]:
    """A gateway on the fake with its workspace synced, Cat in Acme who takes no part in ticket 1 yet."""
    ids = populate(intercom.fake)
    ids["cat"] = intercom.fake.add_contact("u-cat", "Cat", "cat@acme.example", (ids["acme"],))
    connector = connector_config(intercom, sync_interval=3600, **overrides)
    gateway = await start_gateway(intercom=connector, portal={"access": EVERYONE_IN}, **ADMIN)
    await gateway.running.app[INTERCOM].syncer.run()
    return gateway, ids


async def join(gateway: Gateway, user_id: str, ticket_id: str) -> tuple[int, dict[str, Any]]:
    token = sign_token(SECRET, user_id=user_id, now=time.time(), ttl=600)
    headers = {"Host": DOMAIN, "Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    async with gateway.client.post(
        gateway.url / f"api/v1/tickets/{ticket_id}/join", headers=headers, data=b"{}"
    ) as answer:
        return answer.status, await answer.json()


async def takes_part(store: Store, user_id: str, ticket_id: str) -> bool:
    contact = await store.contact_by_user_id(user_id)
    assert contact is not None
    visible = TicketFilter(frozenset(company.id for company in contact.companies), contact.id, own_only=False)
    detail = await store.get_ticket(visible, ticket_id)
    assert detail is not None
    return detail.participant


async def test_a_join_is_made_in_intercom_then_recorded(intercom: RunningFake, start_gateway: StartGateway) -> None:
    gateway, ids = await synced(intercom, start_gateway)
    status, body = await join(gateway, "u-cat", "1")
    assert status == 200, body
    conversation = intercom.fake.tickets[ids["first"]]["conversation_id"]
    assert ids["cat"] in intercom.fake.conversations[conversation]
    assert await takes_part(gateway.running.app[STORE], "u-cat", "1")
    calls = [call for call in intercom.fake.calls if call[0] == "POST" and "customers" in call[1]]
    status, _ = await join(gateway, "u-cat", "1")  # again: already in, Intercom is not asked twice
    assert status == 200
    assert [call for call in intercom.fake.calls if call[0] == "POST" and "customers" in call[1]] == calls


async def test_a_join_intercom_refuses_is_not_recorded(intercom: RunningFake, start_gateway: StartGateway) -> None:
    gateway, _ = await synced(intercom, start_gateway, admin_id="not-a-teammate")
    status, body = await join(gateway, "u-cat", "1")
    assert status == 502
    assert body["error"]["title"] == "Intercom did not accept the change"
    assert not await takes_part(gateway.running.app[STORE], "u-cat", "1")


async def test_a_ticket_out_of_sight_is_a_404_and_intercom_is_not_asked(
    intercom: RunningFake, start_gateway: StartGateway
) -> None:
    gateway, _ = await synced(intercom, start_gateway)
    before = list(intercom.fake.calls)
    status, _ = await join(gateway, "u-bob", "1")  # Bob is not in Acme
    assert status == 404
    assert intercom.fake.calls == before


async def test_memberships_attach_and_detach_in_intercom_first(
    intercom: RunningFake, start_gateway: StartGateway
) -> None:
    gateway, ids = await synced(intercom, start_gateway)
    answer = await call(gateway, "PUT", "/admin/api/contacts/u-cat/companies/globex")
    assert answer.status == 200, answer.body
    globex = next(key for key, company in intercom.fake.companies.items() if company["company_id"] == "globex")
    assert intercom.fake.links[ids["cat"]] == [ids["acme"], globex]
    assert answer.json()["companies"] == ["acme", "globex"]
    answer = await call(gateway, "DELETE", "/admin/api/contacts/u-cat/companies/acme")
    assert answer.status == 200
    assert intercom.fake.links[ids["cat"]] == [globex]
    assert answer.json()["companies"] == ["globex"]


async def test_a_membership_intercom_cannot_make_changes_nothing(
    intercom: RunningFake, start_gateway: StartGateway
) -> None:
    gateway, ids = await synced(intercom, start_gateway)
    answer = await call(gateway, "DELETE", "/admin/api/contacts/u-cat/companies/globex")
    assert answer.status == 404  # not a member: Missing, and Intercom is not asked
    assert not [call for call in intercom.fake.calls if call[0] == "DELETE"]
    del intercom.fake.contacts[ids["cat"]]  # Cat was deleted in Intercom since the sync
    answer = await call(gateway, "PUT", "/admin/api/contacts/u-cat/companies/globex")
    assert answer.status == 502
    contact = await gateway.running.app[STORE].contact("u-cat")
    assert contact.companies == ("acme",)

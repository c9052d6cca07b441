"""Writes that go to Intercom first: the store records a change only once Intercom holds it.

With the connector on, Intercom is where tickets and memberships live and the
store mirrors it; a change made only in the store would be undone by the next
sync, or worse, shown to visitors while Intercom says otherwise. So a join adds
the visitor to the ticket's linked conversation (``POST
/conversations/{id}/customers``, performed by ``intercom.admin_id``) and a
membership attaches or detaches the contact through the REST API (the seed:
"the method for updating associations is using the REST API"), and only then is
the store written. A refusal raises an :class:`~gateway.errors.IntercomError`
and nothing is written.
"""

from __future__ import annotations

from gateway.errors import IntercomRefused, Missing
from gateway.intercom.connector import Connector
from gateway.store.protocol import RemoteKind, Store


async def _remote(store: Store, kind: RemoteKind, key: str | None) -> str:
    remote = None if key is None else await store.remote_id(kind, key)
    if remote is None:
        raise IntercomRefused(f"the {kind} {key!r} is not one synced from Intercom, so Intercom cannot be changed")
    return remote


async def join(connector: Connector, store: Store, ticket_id: str, user_id: str | None) -> None:
    """Add the visitor to the ticket's linked Intercom conversation."""
    conversation = await store.remote_conversation(ticket_id)
    if conversation is None:
        raise IntercomRefused(f"ticket {ticket_id} has no linked Intercom conversation to join")
    contact = await _remote(store, "contact", user_id)
    body = {"admin_id": connector.admin_id, "customer": {"intercom_user_id": contact}}
    await connector.client.post(f"/conversations/{conversation}/customers", body)


async def attach(connector: Connector, store: Store, user_id: str, company_id: str) -> None:
    """Attach the contact to the company in Intercom (both must exist in the store: Missing otherwise)."""
    await store.contact(user_id)
    await store.company(company_id)
    contact, company = await _remote(store, "contact", user_id), await _remote(store, "company", company_id)
    await connector.client.post(f"/contacts/{contact}/companies", {"id": company})


async def detach(connector: Connector, store: Store, user_id: str, company_id: str) -> None:
    """Detach the contact from the company in Intercom (Missing when the store has either not, or no such member)."""
    await store.company(company_id)
    if company_id not in (await store.contact(user_id)).companies:
        raise Missing(f"contact {user_id!r} is not a member of company {company_id!r}")
    contact, company = await _remote(store, "contact", user_id), await _remote(store, "company", company_id)
    await connector.client.delete(f"/contacts/{contact}/companies/{company}")

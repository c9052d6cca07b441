"""Admin API companies and contacts: create, read, update, delete, and the deletes refused while tickets would
be lost."""

from __future__ import annotations

from urllib.parse import quote

from tests.conftest import StartGateway
from tests.routes.adminapi import (
    ADMIN,
    COMPANIES,
    CONTACTS,
    DEMO,
    NO_BODY,
    call,
    change,
    customer_ticket_of,
    demo_ticket_ids,
    dump,
    ok,
)

# --- companies ------------------------------------------------------------------------------------


async def test_a_record_id_stands_in_a_path_and_a_whole_number_may_be_written_5_0(start_gateway: StartGateway) -> None:
    # A company or contact created with an id no path can carry could never be read, changed or deleted.
    gateway = await start_gateway(**ADMIN)
    for key in ("a/b", "a\\b", "50%", "%41", ".hidden", "..", "tab\there", "nul\u0000"):
        for collection, field in ((COMPANIES, "company_id"), (CONTACTS, "user_id")):
            answer = await call(gateway, "POST", collection, {field: key, "name": "Someone"})
            assert answer.status == 422, (collection, key, answer.body)
            assert [item["path"] for item in answer.json()["error"]["fields"]] == [field]
    for key in ("acme-2", "u.dot", "ünïcode", "with space", "a@b.example"):
        assert (await ok(gateway, "POST", COMPANIES, {"company_id": key, "name": "N"}, 201))["company_id"] == key
        assert (await ok(gateway, "GET", f"{COMPANIES}/{quote(key)}"))["company_id"] == key
    # JSON has one kind of number: 5.0 is the whole number 5 (as JSON Schema's "integer" reads it).
    company = await ok(gateway, "POST", COMPANIES, {"company_id": "whole", "name": "W", "size": 5.0}, 201)
    assert company["size"] == 5
    for size in (5.5, "5", True):
        refused = await call(gateway, "POST", COMPANIES, {"company_id": "half", "name": "H", "size": size})
        assert refused.status == 422, size


async def test_company_create_read_update_delete(start_gateway: StartGateway) -> None:
    gateway = await start_gateway(**ADMIN)
    fields = {
        "company_id": "hooli",
        "name": "Hooli",
        "plan": "enterprise",
        "size": 5000,
        "monthly_spend": 99.5,
        "custom_attributes": {"region": "us", "seats": 12, "beta": True, "ratio": 0.5, "none": None},
    }
    created = await ok(gateway, "POST", "/admin/api/companies", fields, status=201)
    assert created == {"type": "company", **fields, "user_count": 0}
    assert await ok(gateway, "GET", "/admin/api/companies/hooli") == created

    # A second create with the same id is refused and loses nothing.
    duplicate = await call(gateway, "POST", "/admin/api/companies", {"company_id": "hooli", "name": "Other"})
    assert duplicate.status == 409
    assert "hooli" in duplicate.error["detail"]
    assert await ok(gateway, "GET", "/admin/api/companies/hooli") == created

    renamed = await ok(gateway, "PATCH", "/admin/api/companies/hooli", {"name": "Hooli XYZ"})
    assert renamed == {**created, "name": "Hooli XYZ"}
    # Custom attributes merge, as in Intercom's API: a value replaces, null removes, the rest stay.
    merged = await ok(gateway, "PATCH", "/admin/api/companies/hooli", {"custom_attributes": {"seats": 13, "tier": "a"}})
    attributes = {"region": "us", "seats": 12, "beta": True, "ratio": 0.5, "none": None}
    assert fields["custom_attributes"] == attributes
    assert merged["custom_attributes"] == {**attributes, "seats": 13, "tier": "a"}
    gone = dict.fromkeys([*attributes, "tier"])
    cleared = await ok(gateway, "PATCH", "/admin/api/companies/hooli", {"plan": None, "custom_attributes": gone})
    assert cleared == {**renamed, "plan": None, "custom_attributes": {}}
    assert await ok(gateway, "GET", "/admin/api/companies/hooli") == cleared

    for method, body in (("GET", NO_BODY), ("PATCH", {"name": "X"}), ("DELETE", NO_BODY)):
        missing = await call(gateway, method, "/admin/api/companies/nope", body)
        assert missing.status == 404, method
        assert "nope" in missing.error["detail"]

    deleted = await ok(gateway, "DELETE", "/admin/api/companies/hooli")
    assert deleted == {"type": "company", "company_id": "hooli", "deleted": True}
    assert (await call(gateway, "GET", "/admin/api/companies/hooli")).status == 404
    assert (await call(gateway, "DELETE", "/admin/api/companies/hooli")).status == 404


async def test_a_company_with_tickets_is_not_deleted_and_nothing_is_lost(start_gateway: StartGateway) -> None:
    gateway = await start_gateway(**DEMO)
    before = dump(gateway)
    refused = await call(gateway, "DELETE", "/admin/api/companies/acme")
    assert refused.status == 409
    assert f"{len(demo_ticket_ids('acme'))} tickets" in refused.error["detail"]
    assert dump(gateway) == before
    # SECURITY: the audit must not read as if Acme was deleted.
    assert (await gateway.audit_for(refused.request_id))["admin_change"] == change("delete", "company", "acme") | {
        "result": "refused"
    }
    # Once its tickets are elsewhere, it can go.
    empty = await ok(gateway, "POST", "/admin/api/companies", {"company_id": "empty", "name": "Empty"}, status=201)
    assert empty["user_count"] == 0
    await ok(gateway, "DELETE", "/admin/api/companies/empty")


# --- contacts ---------------------------------------------------------------------------------------


async def test_contact_create_read_update_delete(start_gateway: StartGateway) -> None:
    gateway = await start_gateway(**ADMIN)
    fields = {"user_id": "u-zed", "email": "zed@example.com", "name": "Zed", "custom_attributes": {"role": "admin"}}
    created = await ok(gateway, "POST", "/admin/api/contacts", fields, status=201)
    assert created == {"type": "contact", **fields, "companies": []}
    assert await ok(gateway, "GET", "/admin/api/contacts/u-zed") == created

    duplicate = await call(gateway, "POST", "/admin/api/contacts", {"user_id": "u-zed", "email": "other@example.com"})
    assert duplicate.status == 409
    assert await ok(gateway, "GET", "/admin/api/contacts/u-zed") == created

    changed = await ok(gateway, "PATCH", "/admin/api/contacts/u-zed", {"email": "zed@example.org"})
    assert changed == {**created, "email": "zed@example.org"}
    minimal = await ok(gateway, "POST", "/admin/api/contacts", {"user_id": "u-min"}, status=201)
    assert minimal == {
        "type": "contact",
        "user_id": "u-min",
        "email": None,
        "name": None,
        "custom_attributes": {},
        "companies": [],
    }

    for method, body in (("GET", NO_BODY), ("PATCH", {"name": "X"}), ("DELETE", NO_BODY)):
        assert (await call(gateway, method, "/admin/api/contacts/u-nobody", body)).status == 404, method

    assert await ok(gateway, "DELETE", "/admin/api/contacts/u-zed") == {
        "type": "contact",
        "user_id": "u-zed",
        "deleted": True,
    }
    assert (await call(gateway, "GET", "/admin/api/contacts/u-zed")).status == 404


async def test_a_contact_with_tickets_or_replies_is_not_deleted_and_nothing_is_lost(
    start_gateway: StartGateway,
) -> None:
    gateway = await start_gateway(**DEMO)
    # Wrote one reply on someone else's ticket, created no ticket.
    await ok(gateway, "POST", "/admin/api/contacts", {"user_id": "u-replier"}, status=201)
    ticket = customer_ticket_of("acme")
    await ok(
        gateway,
        "POST",
        f"/admin/api/tickets/{ticket}/parts",
        {"body": "Me too", "public": True, "author": "u-replier"},
        status=201,
    )
    before = dump(gateway)
    for user_id, detail in (("u-ann", "created"), ("u-replier", "1 replies")):
        refused = await call(gateway, "DELETE", f"/admin/api/contacts/{user_id}")
        assert refused.status == 409, user_id
        assert detail in refused.error["detail"]
    assert dump(gateway) == before

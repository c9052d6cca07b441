"""Admin API memberships: put and delete, deletes of a company or contact ending them, and the portal seeing
them change at once."""

from __future__ import annotations

from tests.conftest import StartGateway
from tests.routes.adminapi import (
    DEMO,
    call,
    customer_ticket_of,
    ok,
    portal,
    portal_json,
)


async def test_deleting_a_company_ends_its_memberships_for_good(start_gateway: StartGateway) -> None:
    gateway = await start_gateway(**DEMO)
    await ok(gateway, "POST", "/admin/api/companies", {"company_id": "shortlived", "name": "Short"}, status=201)
    await ok(gateway, "PUT", "/admin/api/contacts/u-kim/companies/shortlived")
    await ok(gateway, "PUT", "/admin/api/contacts/u-ann/companies/shortlived")
    assert (await ok(gateway, "GET", "/admin/api/companies/shortlived"))["user_count"] == 2
    await ok(gateway, "DELETE", "/admin/api/companies/shortlived")
    assert (await ok(gateway, "GET", "/admin/api/contacts/u-kim"))["companies"] == []
    assert (await ok(gateway, "GET", "/admin/api/contacts/u-ann"))["companies"] == ["acme"]
    # A company created next (which may reuse the deleted one's row) starts with no members.
    fresh = await ok(gateway, "POST", "/admin/api/companies", {"company_id": "fresh", "name": "Fresh"}, status=201)
    assert fresh["user_count"] == 0
    assert (await ok(gateway, "GET", "/admin/api/contacts/u-kim"))["companies"] == []


async def test_deleting_a_contact_ends_their_memberships(start_gateway: StartGateway) -> None:
    gateway = await start_gateway(**DEMO)
    members = (await ok(gateway, "GET", "/admin/api/companies/acme"))["user_count"]
    await ok(gateway, "POST", "/admin/api/contacts", {"user_id": "u-leaving"}, status=201)
    await ok(gateway, "PUT", "/admin/api/contacts/u-leaving/companies/acme")
    assert (await ok(gateway, "GET", "/admin/api/companies/acme"))["user_count"] == members + 1
    await ok(gateway, "DELETE", "/admin/api/contacts/u-leaving")
    assert (await ok(gateway, "GET", "/admin/api/companies/acme"))["user_count"] == members


async def test_membership_put_is_idempotent_and_delete_needs_a_membership(start_gateway: StartGateway) -> None:
    gateway = await start_gateway(**DEMO)
    members = (await ok(gateway, "GET", "/admin/api/companies/acme"))["user_count"]
    first = await ok(gateway, "PUT", "/admin/api/contacts/u-kim/companies/acme")
    assert first["companies"] == ["acme"]
    assert await ok(gateway, "PUT", "/admin/api/contacts/u-kim/companies/acme") == first
    assert (await ok(gateway, "GET", "/admin/api/companies/acme"))["user_count"] == members + 1
    both = await ok(gateway, "PUT", "/admin/api/contacts/u-kim/companies/globex")
    assert both["companies"] == ["acme", "globex"]

    left = await ok(gateway, "DELETE", "/admin/api/contacts/u-kim/companies/acme")
    assert left["companies"] == ["globex"]
    again = await call(gateway, "DELETE", "/admin/api/contacts/u-kim/companies/acme")
    assert again.status == 404
    assert "not a member" in again.error["detail"]
    assert (await ok(gateway, "GET", "/admin/api/companies/acme"))["user_count"] == members

    for method in ("PUT", "DELETE"):
        for target in ("/admin/api/contacts/u-nobody/companies/acme", "/admin/api/contacts/u-kim/companies/nope"):
            assert (await call(gateway, method, target)).status == 404, (method, target)
    assert (await ok(gateway, "GET", "/admin/api/contacts/u-kim"))["companies"] == ["globex"]


async def test_the_portal_sees_a_membership_change_at_once(start_gateway: StartGateway) -> None:
    gateway = await start_gateway(**DEMO)
    await ok(gateway, "POST", "/admin/api/contacts", {"user_id": "u-new", "email": "new@example.com"}, status=201)
    ticket = customer_ticket_of("acme")

    async def portal_view() -> tuple[list[str], set[str], int]:
        me = await portal_json(gateway, "/api/v1/me", "u-new")
        listed = await portal_json(gateway, "/api/v1/tickets", "u-new")
        detail = await portal(gateway, f"/api/v1/tickets/{ticket}", "u-new")
        companies = [company["company_id"] for company in me["companies"]]
        return companies, {item["company"] for item in listed["tickets"]}, detail.status

    assert await portal_view() == ([], set(), 404)
    await ok(gateway, "PUT", "/admin/api/contacts/u-new/companies/acme")
    assert await portal_view() == (["acme"], {"Acme Corp"}, 200)
    await ok(gateway, "DELETE", "/admin/api/contacts/u-new/companies/acme")
    assert await portal_view() == ([], set(), 404)

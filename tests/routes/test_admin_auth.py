"""The admin API's door: the bearer token (missing, empty, wrong, wrong scheme, non-ASCII, one character off),
the API's absence without ``admin.token``, unknown paths (404) and wrong methods (405 naming the methods)."""

from __future__ import annotations

import base64

import pytest

from tests.conftest import CANARY, RecordingUpstream, StartGateway
from tests.routes.adminapi import (
    ADMIN,
    AUTH,
    DEMO,
    TOKEN,
    call,
    dump,
    ok,
    portal_token,
)

METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


BAD_CREDENTIALS: dict[str, tuple[dict[str, str], str]] = {
    # case: (headers, reason in the audit record)
    "missing": ({}, "missing"),
    "empty header": ({"Authorization": ""}, "missing"),
    "scheme only": ({"Authorization": "Bearer"}, "missing"),
    "blank token": ({"Authorization": "Bearer    "}, "missing"),
    "token without scheme": ({"Authorization": TOKEN}, "missing"),
    "wrong token": ({"Authorization": f"Bearer wrong-{CANARY}-0123456789abcdef"}, "bad_token"),
    "same length, last character off": ({"Authorization": f"Bearer {TOKEN[:-1]}X"}, "bad_token"),
    "same length, first character off": ({"Authorization": f"Bearer X{TOKEN[1:]}"}, "bad_token"),
    "prefix": ({"Authorization": f"Bearer {TOKEN[:-1]}"}, "bad_token"),
    "longer": ({"Authorization": f"Bearer {TOKEN}0"}, "bad_token"),
    "twice": ({"Authorization": f"Bearer {TOKEN} {TOKEN}"}, "bad_token"),
    "other case": ({"Authorization": f"Bearer {TOKEN.upper()}"}, "bad_token"),
    "non-ASCII": ({"Authorization": f"Bearer {TOKEN[:-2]}é"}, "bad_token"),
    "non-ASCII only": ({"Authorization": "Bearer ééééééééééééééé"}, "bad_token"),
    "wrong scheme": ({"Authorization": f"Token {TOKEN}"}, "bad_token"),
    "basic": ({"Authorization": basic("admin", TOKEN)}, "bad_token"),
    "in a cookie": ({"Cookie": f"portal-jwt={TOKEN}; admin_token={TOKEN}"}, "missing"),
    "in another header": ({"X-Admin-Token": TOKEN, "X-Api-Key": TOKEN}, "missing"),
    "a visitor's portal token": ({"Authorization": f"Bearer {portal_token('u-ann')}"}, "bad_token"),
}


@pytest.mark.parametrize("case", sorted(BAD_CREDENTIALS))
async def test_bad_credentials_answer_401_json_audited_and_change_nothing(
    start_gateway: StartGateway, case: str
) -> None:
    gateway = await start_gateway(**ADMIN)
    headers, reason = BAD_CREDENTIALS[case]
    answer = await call(gateway, "POST", "/admin/api/companies", {"company_id": "probe", "name": "P"}, headers=headers)
    assert answer.status == 401
    assert answer.headers["WWW-Authenticate"] == 'Bearer realm="admin"'
    error = answer.error
    assert "Authorization: Bearer" in error["detail"]
    assert "fields" not in error
    record = await gateway.audit_for(answer.request_id)
    assert record["identity"] == {"method": "admin_token", "user_id": None, "result": "rejected", "reason": reason}
    assert record["admin_change"] is None
    assert record["status"] == 401
    # Nothing was looked up, nothing written, and no credential presented is in the audit.
    assert (await call(gateway, "GET", "/admin/api/companies/probe")).status == 404
    audit = gateway.config.audit.path.read_text()
    assert TOKEN not in audit
    presented = [word for value in headers.values() for word in value.split() if len(word) >= 16]
    assert not [word for word in presented if word in audit]


@pytest.mark.parametrize(
    "authorization", [f"Bearer {TOKEN}", f"bearer {TOKEN}", f"BEARER   {TOKEN}  "], ids=["Bearer", "bearer", "spaced"]
)
async def test_the_token_opens_the_api_and_never_reaches_the_audit(
    start_gateway: StartGateway, upstream: RecordingUpstream, authorization: str
) -> None:
    gateway = await start_gateway(**ADMIN)
    headers = {"Authorization": authorization}
    answer = await call(gateway, "POST", "/admin/api/companies", {"company_id": "co", "name": "Co"}, headers=headers)
    assert answer.status == 201, answer.body
    record = await gateway.audit_for(answer.request_id)
    assert record["identity"] == {"method": "admin_token", "user_id": None, "result": "verified", "reason": None}
    assert TOKEN not in gateway.config.audit.path.read_text()
    assert upstream.requests == []


async def test_without_the_token_a_known_path_is_401_like_an_unknown_one(start_gateway: StartGateway) -> None:
    """A caller without the token learns nothing: not whether a company exists, nor which paths are routes."""
    gateway = await start_gateway(**DEMO)
    answers: set[tuple[str, str, str]] = set()
    for method, target in [
        ("GET", "/admin/api/companies/acme"),
        ("GET", "/admin/api/companies/no-such-company"),
        ("DELETE", "/admin/api/companies/acme"),
        ("GET", "/admin/api/no-such-route"),
        ("PUT", "/admin/api/contacts/u-kim/companies/acme"),
    ]:
        answer = await call(gateway, method, target, headers={})
        assert answer.status == 401, (method, target)
        assert answer.headers["WWW-Authenticate"] == 'Bearer realm="admin"'
        error = answer.error
        answers.add((error["title"], error["detail"], answer.headers["Content-Type"]))
    assert len(answers) == 1
    assert (await ok(gateway, "GET", "/admin/api/contacts/u-kim"))["companies"] == []


ADMIN_PATHS = (
    "/admin/api",
    "/admin/api/",
    "/admin/api/companies",
    "/admin/api/companies/acme",
    "/admin/api/companies/acme/tickets",
    "/admin/api/contacts/u-ann/companies/acme",
    "/admin/api/tickets?company_id=acme&q=csv",
    "/admin/api/tickets/1001/parts",
    "/admin/api/no/such/route",
)


async def test_without_admin_token_the_api_does_not_exist(
    start_gateway: StartGateway, upstream: RecordingUpstream
) -> None:
    gateway = await start_gateway(store={"seed_demo": True})
    request_ids = []
    for target in ADMIN_PATHS:
        for method in METHODS:
            for headers in ({}, AUTH):
                answer = await call(gateway, method, target, {"company_id": "x", "name": "X"}, headers=headers)
                assert answer.status == 404, (method, target, headers)
                assert "WWW-Authenticate" not in answer.headers
                if target.startswith("/admin/api/") and method != "HEAD":
                    assert answer.error["title"] == "Not Found"
                request_ids.append(answer.request_id)
    for request_id in request_ids:  # read once all are sent: one batch's linger for the lot, not 126 of them
        record = await gateway.audit_for(request_id)
        assert record["identity"]["method"] != "admin_token"
        assert record["upstream"]["url"] is None
    assert upstream.requests == []
    # The recording upstream does see what is not the admin namespace.
    assert (await call(gateway, "GET", "/admin/apis", headers={})).status == 200
    assert [request.path for request in upstream.requests] == ["/admin/apis"]


UNKNOWN: list[tuple[str, str]] = [
    ("GET", "/admin/api"),
    ("GET", "/admin/api/"),
    ("GET", "/admin/api/nothing"),
    ("GET", "/admin/api/contacts/u-ann/companies"),
    ("GET", "/admin/api/tickets/1001/parts/1"),
    ("GET", "/admin/api/companies/acme/tickets/1001"),
]
WRONG_METHOD: list[tuple[str, str, str]] = [
    ("GET", "/admin/api/companies", "POST"),  # there is no list of companies
    ("GET", "/admin/api/contacts", "POST"),
    ("PUT", "/admin/api/companies/acme", "DELETE,GET,PATCH"),
    ("POST", "/admin/api/companies/acme", "DELETE,GET,PATCH"),
    ("GET", "/admin/api/contacts/u-ann/companies/acme", "DELETE,PUT"),
    ("POST", "/admin/api/contacts/u-ann/companies/acme", "DELETE,PUT"),
    ("PATCH", "/admin/api/contacts/u-ann/companies/acme", "DELETE,PUT"),
    ("DELETE", "/admin/api/tickets/1001", "GET,PATCH"),
    ("PUT", "/admin/api/tickets/1001", "GET,PATCH"),
    ("GET", "/admin/api/tickets/1001/parts", "POST"),
    ("HEAD", "/admin/api/tickets", "GET,POST"),
    ("OPTIONS", "/admin/api/tickets", "GET,POST"),
]


async def test_unknown_admin_paths_are_404_with_the_token_and_401_without(
    start_gateway: StartGateway, upstream: RecordingUpstream
) -> None:
    gateway = await start_gateway(**DEMO)
    before = dump(gateway)
    for method, target in UNKNOWN:
        found = await call(gateway, method, target, {"name": "Renamed"})
        assert found.status == 404, (method, target, found.body)
        assert "Allow" not in found.headers
        refused = await call(gateway, method, target, {"name": "Renamed"}, headers={})
        assert refused.status == 401, (method, target)
        assert refused.headers["WWW-Authenticate"] == 'Bearer realm="admin"'
    assert upstream.requests == []
    assert dump(gateway) == before


async def test_a_wrong_method_on_an_admin_path_is_405_naming_the_methods_and_401_without_the_token(
    start_gateway: StartGateway, upstream: RecordingUpstream
) -> None:
    gateway = await start_gateway(**DEMO)
    before = dump(gateway)
    for method, target, allow in WRONG_METHOD:
        answer = await call(gateway, method, target, {"name": "Renamed"})
        assert answer.status == 405, (method, target, answer.body)
        assert answer.headers["Allow"] == allow, (method, target)
        if method != "HEAD":
            assert answer.json()["error"]["status"] == 405
        refused = await call(gateway, method, target, {"name": "Renamed"}, headers={})
        assert (refused.status, "Allow" in refused.headers) == (401, False), (method, target)
    assert upstream.requests == []
    assert dump(gateway) == before

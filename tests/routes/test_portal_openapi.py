"""The portal's real responses against its OpenAPI document (/api/v1).

Every test runs the real gateway (``gateway.run.server.start``) over TLS on loopback, on a store
written and an oracle built by ``tests.routes.portalkit`` (the expected answers never come from the gateway).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from referencing import Registry
from referencing.jsonschema import DRAFT202012

from gateway.store.demo import INTERNAL_WORD, PUBLIC_WORD
from tests.conftest import Gateway, StartGateway
from tests.routes.portalkit import (
    ACME_ONLY,
    ANN,
    CHO,
    IVY,
    RANK_WORD,
    Auth,
    open_portal,
)

DOCUMENT_URI = "urn:portal-gateway:openapi"
HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


async def fetch_document(gateway: Gateway) -> dict[str, Any]:
    async with gateway.client.get(gateway.url.with_path("/api/v1/openapi.json")) as response:  # no credentials
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("application/json")
        document: dict[str, Any] = await response.json()
    return document


def response_schema(document: dict[str, Any], path: str, method: str, status: int) -> Draft202012Validator:
    """A validator for the documented JSON body of one answer, $refs resolved within the document."""
    responses = document["paths"][path][method]["responses"]
    assert str(status) in responses, f"{method.upper()} {path} answered {status}: not documented"
    assert "application/json" in responses[str(status)]["content"]
    escaped = path.replace("~", "~0").replace("/", "~1")
    pointer = f"/paths/{escaped}/{method}/responses/{status}/content/application~1json/schema"
    registry: Registry[Any] = Registry().with_resource(DOCUMENT_URI, DRAFT202012.create_resource(document))
    return Draft202012Validator({"$ref": f"{DOCUMENT_URI}#{pointer}"}, registry=registry)


async def test_real_responses_match_the_document(start_gateway: StartGateway, tmp_path: Path) -> None:
    portal = await open_portal(start_gateway, tmp_path, portal={"access": ACME_ONLY, "page_size": 10})
    document = await fetch_document(portal.gateway)
    visible = portal.world.visible(ANN)
    cases: list[tuple[str, str, str, dict[str, str], Auth, str, int]] = [
        # (method, documented path, real path, query, credentials, user, expected status)
        ("get", "/api/v1/me", "/api/v1/me", {}, "bearer", ANN, 200),
        ("get", "/api/v1/me", "/api/v1/me", {}, "cookie", IVY, 200),
        ("get", "/api/v1/me", "/api/v1/me", {}, "none", ANN, 401),
        ("get", "/api/v1/me", "/api/v1/me", {}, "bearer", CHO, 403),
        ("get", "/api/v1/tickets", "/api/v1/tickets", {}, "bearer", ANN, 200),
        (
            "get",
            "/api/v1/tickets",
            "/api/v1/tickets",
            {"page": "2", "sort": "state", "order": "asc"},
            "bearer",
            ANN,
            200,
        ),
        ("get", "/api/v1/tickets", "/api/v1/tickets", {"scope": "mine", "state": "1"}, "bearer", ANN, 200),
        ("get", "/api/v1/tickets", "/api/v1/tickets", {"q": PUBLIC_WORD}, "bearer", ANN, 200),
        ("get", "/api/v1/tickets", "/api/v1/tickets", {"q": RANK_WORD, "sort": "relevance"}, "bearer", ANN, 200),
        ("get", "/api/v1/tickets", "/api/v1/tickets", {"q": INTERNAL_WORD}, "bearer", ANN, 200),
        ("get", "/api/v1/tickets", "/api/v1/tickets", {"page": "0"}, "bearer", ANN, 400),
        ("get", "/api/v1/tickets", "/api/v1/tickets", {"created_after": "soon"}, "bearer", ANN, 400),
        ("get", "/api/v1/tickets", "/api/v1/tickets", {}, "none", ANN, 401),
        ("get", "/api/v1/tickets/{ticket_id}", "/api/v1/tickets/9003", {}, "bearer", ANN, 200),
        ("get", "/api/v1/tickets/{ticket_id}", f"/api/v1/tickets/{visible[0].ticket_id}", {}, "bearer", ANN, 200),
        ("get", "/api/v1/tickets/{ticket_id}", "/api/v1/tickets/99999", {}, "bearer", ANN, 404),
        ("get", "/api/v1/tickets/{ticket_id}", "/api/v1/tickets/9006", {}, "bearer", ANN, 404),
        ("get", "/api/v1/me/tickets-space", "/api/v1/me/tickets-space", {}, "bearer", ANN, 200),
        ("get", "/api/v1/me/tickets-space", "/api/v1/me/tickets-space", {"page": "x"}, "bearer", ANN, 400),
        ("post", "/api/v1/tickets/{ticket_id}/join", "/api/v1/tickets/9003/join", {}, "bearer", ANN, 200),
        ("post", "/api/v1/tickets/{ticket_id}/join", "/api/v1/tickets/99999/join", {}, "bearer", ANN, 404),
        ("post", "/api/v1/tickets/{ticket_id}/join", "/api/v1/tickets/9003/join", {}, "cookie", ANN, 400),
        ("post", "/api/v1/tickets/{ticket_id}/join", "/api/v1/tickets/9003/join", {}, "none", ANN, 401),
        ("get", "/api/v1/me/tickets-space", "/api/v1/me/tickets-space", {}, "bearer", ANN, 200),  # after the join
    ]
    problems = []
    for method, documented, real, params, auth, user, status in cases:
        answer = await portal.call(method.upper(), real, params=params, auth=auth, user=user)
        label = f"{method.upper()} {real} {params} as {user} ({auth})"
        if answer.status != status:
            problems.append(f"{label}: {answer.status}, expected {status}")
            continue
        if not answer.headers["Content-Type"].startswith("application/json"):
            problems.append(f"{label}: {answer.headers['Content-Type']}")
            continue
        errors = [
            f"{'/'.join(map(str, error.absolute_path))}: {error.message}"
            for error in response_schema(document, documented, method, status).iter_errors(answer.json())
        ]
        if errors:
            problems.append(f"{label}: {errors[:3]}")
    assert problems == []
    # The documented enums are accepted as documented.
    for parameter in document["paths"]["/api/v1/tickets"]["get"]["parameters"]:
        for value in parameter["schema"].get("enum", []):
            answer = await portal.call("GET", "/api/v1/tickets", params={parameter["name"]: value}, auth="bearer")
            assert answer.status == 200, f"documented {parameter['name']}={value} answered {answer.status}"
    space = await portal.api("/api/v1/me/tickets-space")
    assert "9003" in [ticket["ticket_id"] for ticket in space["tickets"]]

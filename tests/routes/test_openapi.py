"""The OpenAPI descriptions of /api/v1 and /admin/api against the live gateway over TLS.

schemathesis (its engine, as its command line runs it: examples, coverage, fuzzing and stateful phases)
sends requests generated from each document, valid ones and ones that break a declared bound, and
runs every check it has on each answer: status codes, content types, response schemas and headers,
valid data accepted, invalid data refused, methods a path does not take answered 405, and requests
without credentials refused. Seeded and derandomized, with a bounded number of examples; the engine
runs in a thread (it is synchronous) while the gateway serves on the test's event loop. Only
``max_response_time`` stays off: it has no limit unless one is set, and the suite asserts no timings.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any

import pytest
import schemathesis
from jsonschema import Draft202012Validator
from openapi_spec_validator import OpenAPIV31SpecValidator, validate
from schemathesis.engine import events

from gateway.policy.identity import sign_token
from tests.conftest import CANARY, SECRET, CertFiles, Gateway, StartGateway

ADMIN_TOKEN = f"admin-token-{CANARY}-0123456789"
EVERYONE_IN = {"match": "any", "rules": [{"attribute": "person.user_id", "op": "exists"}]}
DEMO: dict[str, Any] = {"store": {"seed_demo": True}, "portal": {"access": EVERYONE_IN}}
ADMIN: dict[str, Any] = {**DEMO, "admin": {"token": ADMIN_TOKEN}}
VISITOR = "u-ann"  # in the demo store, a member of Acme with tickets of her own and of her colleagues
HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
DOCUMENTS = {"/api/v1/": "/api/v1/openapi.json", "/admin/api/": "/admin/api/openapi.json"}
MAX_EXAMPLES = 25
# The checks that must have run on some answer (schemathesis runs more: these are the ones the API's bounds,
# methods and credentials are judged by).
CHECKS = {
    *("not_a_server_error", "status_code_conformance", "content_type_conformance", "response_schema_conformance"),
    *("response_headers_conformance", "positive_data_acceptance", "negative_data_rejection"),
    *("unsupported_method", "allow_header_conformance", "ignored_auth"),
}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def visitor_token() -> str:
    return sign_token(SECRET, user_id=VISITOR, now=time.time(), ttl=3600)


async def get_json(gateway: Gateway, path: str, headers: Mapping[str, str]) -> tuple[int, Any]:
    async with gateway.client.get(gateway.url.with_path(path), headers=headers) as response:
        assert response.headers["Content-Type"].startswith("application/json"), path
        return response.status, await response.json()


async def document_of(gateway: Gateway, prefix: str) -> dict[str, Any]:
    """The served document of the namespace ``prefix``, fetched as its clients fetch it."""
    status, document = await get_json(gateway, DOCUMENTS[prefix], bearer(ADMIN_TOKEN) if "admin" in prefix else {})
    assert status == 200
    assert isinstance(document, dict)
    return document


def schemathesis_failures(
    document: dict[str, Any], base_url: str, headers: dict[str, str], ca: str, accepted: tuple[str, ...] = ()
) -> list[str]:
    """Run schemathesis with all its checks on every operation of ``document``; the failures it found.

    ``accepted``: statuses that answer a schema-valid request without refusing it as malformed.
    """
    positive = {"expected-statuses": ["2xx", "3xx", "401", "403", "404", "409", "429", *accepted]}
    config = schemathesis.Config.from_dict(
        {
            "seed": 20261206,
            "base-url": base_url,
            "tls-verify": ca,
            # One request per connection: schemathesis keeps its sessions (and their idle connections) to the
            # end of the run, and a TLS connection still open when the gateway stops is never closed.
            "headers": {**headers, "Connection": "close"},
            "generation": {"mode": "all", "max-examples": MAX_EXAMPLES, "deterministic": True, "database": "none"},
            "checks": {"enabled": True, "positive_data_acceptance": positive},
        }
    )
    schema = schemathesis.openapi.from_dict(document, config=config)
    found: list[str] = []
    operations, ran = set(), set()
    for event in schemathesis.engine.from_schema(schema).execute():
        if isinstance(event, events.NonFatalError | events.FatalError):
            found.append(f"schemathesis could not run: {event!r}")
        elif isinstance(event, events.ScenarioFinished | events.FuzzScenarioFinished):
            for case_id, checks in event.recorder.checks.items():
                case = event.recorder.cases[case_id].value
                operations.add(case.operation.label)
                for check in checks:
                    ran.add(check.name)
                    if check.failure_info is not None:
                        failure = check.failure_info.failure
                        found.append(
                            f"{check.name}: {failure.title}: {failure.message}\n{check.failure_info.code_sample}"
                        )
    missed = {f"{method} {path}" for method, path in described_routes(document)} - operations
    unchecked = CHECKS - ran
    return [
        *found,
        *([f"operations never run: {sorted(missed)}"] if missed else []),
        *([f"checks never run: {sorted(unchecked)}"] if unchecked else []),
    ]


async def test_the_api_passes_every_schemathesis_check(start_gateway: StartGateway, cert_files: CertFiles) -> None:
    gateway = await start_gateway(**DEMO)
    token = visitor_token()
    status, listed = await get_json(gateway, "/api/v1/tickets", bearer(token))
    assert (status, listed["total_count"] > 0) == (200, True), "the visitor should have tickets to look at"
    document = await document_of(gateway, "/api/v1/")
    found = await asyncio.to_thread(
        schemathesis_failures, document, str(gateway.url), bearer(token), str(cert_files.ca)
    )
    assert found == [], "\n\n".join(found[:10])


async def test_the_admin_api_passes_every_schemathesis_check(
    start_gateway: StartGateway, cert_files: CertFiles
) -> None:
    # The store is this test's own (a demo seed in its tmp_path): the generated writes may change anything.
    gateway = await start_gateway(**ADMIN)
    document = await document_of(gateway, "/admin/api/")
    # A schema-valid body may still name a contact, state, type or company the store does not have, or a
    # company its creator is not a member of: no schema can say which exist, and the answer is a 422 whose
    # fields name the one at fault.
    found = await asyncio.to_thread(
        schemathesis_failures, document, str(gateway.url), bearer(ADMIN_TOKEN), str(cert_files.ca), ("422",)
    )
    assert found == [], "\n\n".join(found[:10])


@pytest.mark.parametrize("prefix", DOCUMENTS)
async def test_the_documents_are_valid_openapi_3_1(start_gateway: StartGateway, prefix: str) -> None:
    gateway = await start_gateway(**ADMIN)
    document = await document_of(gateway, prefix)
    assert document["openapi"].startswith("3.1.")
    validate(document, cls=OpenAPIV31SpecValidator)
    for schema in document["components"]["schemas"].values():
        Draft202012Validator.check_schema(schema)


async def test_the_admin_document_is_only_for_the_admin(start_gateway: StartGateway) -> None:
    gateway = await start_gateway(**ADMIN)
    for headers in ({}, bearer(ADMIN_TOKEN + "x"), {"Authorization": ADMIN_TOKEN}, bearer(visitor_token())):
        status, body = await get_json(gateway, "/admin/api/openapi.json", headers)
        assert (status, body["error"]["status"]) == (401, 401), headers.keys()
        assert "paths" not in body
    assert (await document_of(gateway, "/admin/api/"))["info"]["title"] == "Portal gateway admin API"
    # Without an admin token configured the admin API, its description included, does not exist.
    without = await start_gateway(**DEMO)
    status, body = await get_json(without, "/admin/api/openapi.json", bearer(ADMIN_TOKEN))
    assert (status, body["error"]["status"]) == (404, 404)


def served_routes(gateway: Gateway, prefix: str) -> set[tuple[str, str]]:
    """(method, path) of every route the running app registered under ``prefix``, but its description."""
    served = set()
    for resource in gateway.running.app.router.resources():
        if resource.canonical.startswith(prefix):
            for route in resource:
                # HEAD comes with every GET; "*" is the namespace's own 405/404 for everything else.
                if route.method not in ("HEAD", "*"):
                    served.add((route.method, resource.canonical))
    served.discard(("GET", DOCUMENTS[prefix]))  # a document does not describe itself
    return served


def described_routes(document: dict[str, Any]) -> set[tuple[str, str]]:
    return {
        (method.upper(), path) for path, item in document["paths"].items() for method in item if method in HTTP_METHODS
    }


@pytest.mark.parametrize("prefix", DOCUMENTS)
async def test_every_route_is_described_and_every_described_route_served(
    start_gateway: StartGateway, prefix: str
) -> None:
    gateway = await start_gateway(**ADMIN)
    served = served_routes(gateway, prefix)
    assert len(served) >= 5
    assert served == described_routes(await document_of(gateway, prefix))


@pytest.mark.parametrize("prefix", DOCUMENTS)
async def test_a_method_a_described_path_does_not_take_is_a_405_naming_those_it_does(
    start_gateway: StartGateway, prefix: str
) -> None:
    gateway = await start_gateway(**ADMIN)
    document = await document_of(gateway, prefix)
    headers = bearer(ADMIN_TOKEN if "admin" in prefix else visitor_token())
    problems = []
    for template, item in document["paths"].items():
        path = template.format(ticket_id="1001", company_id="acme", user_id="u-ann")
        taken = {method.upper() for method in item if method in HTTP_METHODS}
        allow = ",".join(sorted(taken | ({"HEAD"} if "GET" in taken and prefix == "/api/v1/" else set())))
        for method in sorted({"GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE"} - taken):
            async with gateway.client.request(method, gateway.url.with_path(path), headers=headers) as response:
                body = await response.json()
                answer = (response.status, response.headers.get("Allow"), body["error"]["status"])
            if answer != (405, allow, 405):
                problems.append(f"{method} {path}: {answer}, expected (405, {allow!r}, 405)")
    assert problems == []

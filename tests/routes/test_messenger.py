"""The Messenger proxy through the real gateway: what the Messenger upstream receives, what is audited.

Bodies have the real shape: ``application/x-www-form-urlencoded`` with
``user_data`` as a JSON string and ``user_active_company_id`` beside it.
The recording upstream stands in for the Messenger API and keeps each body.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import http.client
import json
import ssl
import threading
import time
from collections.abc import Coroutine, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode

import jwt as pyjwt
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families
from yarl import URL

from gateway.config import GatewayConfig
from gateway.policy.identity import sign_token
from gateway.run.server import Running, start
from gateway.run.tls import server_context
from tests.conftest import (
    CANARY,
    DEVICE_COOKIE,
    SECRET,
    SESSION_COOKIE,
    CertFiles,
    Gateway,
    JWKSServer,
    RecordingUpstream,
    StartGateway,
    config_dict,
)
from tests.policy.test_identity import RSA_KEY, jwk

FORM = "application/x-www-form-urlencoded"
GLOBEX = {"company_id": "globex", "name": "Globex"}
ACME = {"company_id": "acme", "name": "Acme Corp"}
T = TypeVar("T")


def jwt(user_id: str = "u-ann", secret: str = SECRET, ttl: float = 600, **claims: Any) -> str:
    """A Messenger JWT signing ``claims`` besides the user id."""
    return sign_token(secret, user_id=user_id, now=time.time(), ttl=ttl, extra=claims)


def form(user_data: Mapping[str, Any] | None = None, **fields: str) -> bytes:
    """A body as the Messenger web client sends it."""
    pairs = [("app_id", "ws1a2b3c"), *(("user_data", json.dumps(user_data)),) * (user_data is not None)]
    return urlencode([*pairs, *fields.items()]).encode()


class Answer:
    """A response read whole."""

    def __init__(self, status: int, headers: Mapping[str, str], body: bytes) -> None:
        self.status, self.headers, self.body = status, headers, body

    def json(self) -> Any:
        return json.loads(self.body)


async def call(
    gateway: Gateway,
    body: bytes | None = None,
    *,
    endpoint: str = "ping",
    method: str = "POST",
    query: str = "",
    headers: Mapping[str, str] | None = None,
) -> Answer:
    """One Messenger API call to the gateway."""
    url = URL(f"{gateway.url}/messenger/web/{endpoint}{'?' + query if query else ''}", encoded=True)
    sent = {"Content-Type": FORM, **(headers or {})} if body is not None else dict(headers or {})
    async with gateway.client.request(method, url, data=body, headers=sent) as response:
        return Answer(response.status, response.headers, await response.read())


def received(upstream: RecordingUpstream) -> dict[str, str]:
    """The last body the Messenger upstream received, as a dict of fields."""
    return dict(parse_qsl(upstream.last.body.decode(), keep_blank_values=True, strict_parsing=True))


def received_user_data(upstream: RecordingUpstream) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(received(upstream)["user_data"])
    return result


@pytest.fixture
async def messenger(start_gateway: StartGateway, upstream: RecordingUpstream) -> Gateway:
    """The gateway with the demo store, Messenger calls going to the recording upstream, the policy on (strip)."""
    return await start_gateway(messenger={"upstream": str(upstream.url)}, store={"seed_demo": True})


# --- strip ----------------------------------------------------------------------------------------------


async def test_a_call_without_company_data_reaches_upstream_byte_for_byte(
    messenger: Gateway, upstream: RecordingUpstream
) -> None:
    # "+" for a space and a lower-case escape: re-encoding would change both.
    body = b"app_id=ws1a2b3c&user_data=%7b%22email%22%3a%22ann%40acme.example.com%22%7d&v=a+b"
    answer = await call(messenger, body, endpoint="open", query="x=%7e1")
    assert answer.status == 200
    assert upstream.last.path == "/messenger/web/open"
    assert upstream.last.body == body
    assert upstream.last.raw_query == "x=%7e1"
    audit = await messenger.audit_for(answer.headers["X-Request-Id"])
    assert audit["company_policy"] == {
        "action": "pass",
        "user_id": None,
        "verified": False,
        "removed": [],
        "reason": None,
    }


async def test_an_anonymous_visitor_cannot_add_themselves_to_a_company(
    messenger: Gateway, upstream: RecordingUpstream
) -> None:
    user_data = {"user_id": "u-ann", "email": "ann@acme.example.com", "companies": [GLOBEX], "name": "Ann"}
    answer = await call(messenger, form(user_data))
    assert answer.status == 200
    assert received_user_data(upstream) == {"user_id": "u-ann", "email": "ann@acme.example.com", "name": "Ann"}
    assert received(upstream)["app_id"] == "ws1a2b3c"
    assert int(upstream.last.headers["Content-Length"]) == len(upstream.last.body)
    audit = await messenger.audit_for(answer.headers["X-Request-Id"])
    assert audit["company_policy"] == {
        "action": "strip",
        "user_id": "u-ann",
        "verified": False,
        "removed": [{"field": "user_data.companies", "reason": "not signed in the JWT"}],
        "reason": None,
    }


async def test_a_verified_visitor_cannot_add_a_company_their_jwt_does_not_sign(
    messenger: Gateway, upstream: RecordingUpstream
) -> None:
    token = jwt("u-ann", companies=[ACME])
    user_data = {"user_id": "u-ann", "intercom_user_jwt": token, "companies": [ACME, GLOBEX], "company": GLOBEX}
    answer = await call(messenger, form(user_data))
    assert answer.status == 200
    assert received_user_data(upstream) == {"user_id": "u-ann", "intercom_user_jwt": token}
    audit = await messenger.audit_for(answer.headers["X-Request-Id"])
    assert audit["identity"]["result"] == "verified"
    assert audit["company_policy"]["verified"] is True
    assert audit["company_policy"]["removed"] == [
        {"field": "user_data.companies", "reason": "differs from the value signed in the JWT"},
        {"field": "user_data.company", "reason": "not signed in the JWT"},
    ]
    assert token not in json.dumps(audit)


@pytest.mark.parametrize("token_key", ["intercom_user_jwt", "user_hash"])
async def test_company_data_signed_in_the_jwt_passes(
    messenger: Gateway, upstream: RecordingUpstream, token_key: str
) -> None:
    token = jwt("u-ann", companies=[ACME], company=ACME)
    user_data = {"user_id": "u-ann", token_key: token, "companies": [ACME], "company": ACME}
    body = form(user_data)
    answer = await call(messenger, body)
    assert answer.status == 200
    assert upstream.last.body == body
    audit = await messenger.audit_for(answer.headers["X-Request-Id"])
    assert audit["company_policy"]["action"] == "pass"


async def test_a_jwt_speaks_only_for_its_own_user(messenger: Gateway, upstream: RecordingUpstream) -> None:
    # Ann's genuine token, which signs Acme, cannot carry Acme onto Ben's record.
    token = jwt("u-ann", companies=[ACME])
    answer = await call(messenger, form({"user_id": "u-ben", "intercom_user_jwt": token, "companies": [ACME]}))
    assert answer.status == 200
    assert "companies" not in received_user_data(upstream)
    audit = await messenger.audit_for(answer.headers["X-Request-Id"])
    assert audit["company_policy"]["user_id"] == "u-ben"
    assert audit["company_policy"]["verified"] is False


async def test_company_fields_beside_user_data_never_pass(messenger: Gateway, upstream: RecordingUpstream) -> None:
    body = urlencode([("user_data", "{}"), ("companies[][company_id]", "globex"), ("company", "globex")]).encode()
    answer = await call(messenger, body)
    assert answer.status == 200
    assert received(upstream) == {"user_data": "{}"}


# --- the active company ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("user_id", "active", "passes"),
    [
        pytest.param("u-ben", "globex", True, id="member"),
        pytest.param("u-ann", "globex", False, id="forged"),
        pytest.param("u-kim", "acme", False, id="no-company"),
    ],
)
async def test_active_company_passes_only_for_a_company_of_the_verified_user(
    messenger: Gateway, upstream: RecordingUpstream, user_id: str, active: str, passes: bool
) -> None:
    body = form({"user_id": user_id, "intercom_user_jwt": jwt(user_id)}, user_active_company_id=active)
    answer = await call(messenger, body)
    assert answer.status == 200
    assert ("user_active_company_id" in received(upstream)) is passes
    audit = await messenger.audit_for(answer.headers["X-Request-Id"])
    expected = [] if passes else [{"field": "user_active_company_id", "reason": "not a company of the verified user"}]
    assert audit["company_policy"]["removed"] == expected


async def test_active_company_without_a_verified_user_is_removed(
    messenger: Gateway, upstream: RecordingUpstream
) -> None:
    answer = await call(messenger, form({"user_id": "u-ben"}, user_active_company_id="globex"))
    assert answer.status == 200
    assert "user_active_company_id" not in received(upstream)


async def test_the_portal_jwt_cookie_verifies_a_call_without_a_token_in_user_data(
    messenger: Gateway, upstream: RecordingUpstream
) -> None:
    headers = {"Cookie": f"portal-jwt={jwt('u-ben')}"}
    answer = await call(messenger, form({"user_id": "u-ben"}, user_active_company_id="globex"), headers=headers)
    assert answer.status == 200
    assert received(upstream)["user_active_company_id"] == "globex"
    assert "portal-jwt" not in upstream.last.headers.get("Cookie", "")


async def test_the_active_company_in_the_query_is_policed_too(messenger: Gateway, upstream: RecordingUpstream) -> None:
    answer = await call(messenger, method="GET", query="user_active_company_id=globex&v=2")
    assert answer.status == 200
    assert upstream.last.raw_query == "v=2"


@pytest.fixture
async def legacy(start_gateway: StartGateway, upstream: RecordingUpstream) -> Gateway:
    """The ``messenger`` gateway with legacy HMAC identity enabled."""
    return await start_gateway(
        messenger={"upstream": str(upstream.url)}, store={"seed_demo": True}, identity={"hmac": {"enabled": True}}
    )


def user_hash(user_id: str) -> str:
    """The legacy HMAC of ``user_id`` under the test secret."""
    return hmac.new(SECRET.encode(), user_id.encode(), hashlib.sha256).hexdigest()


async def test_legacy_user_hash_verifies_the_user_but_signs_no_company(
    legacy: Gateway, upstream: RecordingUpstream
) -> None:
    gateway = legacy
    digest = user_hash("u-ben")
    user_data = {"user_id": "u-ben", "user_hash": digest, "companies": [GLOBEX]}
    answer = await call(gateway, form(user_data, user_active_company_id="globex"))
    assert answer.status == 200
    assert received(upstream)["user_active_company_id"] == "globex"
    assert "companies" not in received_user_data(upstream)
    bad = await call(gateway, form({"user_id": "u-ben", "user_hash": "0" * 64}))
    assert bad.status == 401
    audit = await gateway.audit_for(bad.headers["X-Request-Id"])
    assert audit["identity"] == {"method": "hmac", "user_id": None, "result": "rejected", "reason": "bad_signature"}


# --- reject ---------------------------------------------------------------------------------------------


async def test_reject_mode_refuses_the_call_with_a_403_and_forwards_nothing(
    start_gateway: StartGateway, upstream: RecordingUpstream
) -> None:
    gateway = await start_gateway(messenger={"upstream": str(upstream.url), "company_update_action": "reject"})
    answer = await call(gateway, form({"user_id": "u-ann", "companies": [GLOBEX]}))
    assert answer.status == 403
    error = answer.json()["error"]
    assert "user_data.companies (not signed in the JWT)" in error["detail"]
    assert "globex" not in error["detail"]
    assert upstream.requests == []
    audit = await gateway.audit_for(answer.headers["X-Request-Id"])
    assert audit["company_policy"]["action"] == "reject"
    assert audit["upstream"]["url"] is None
    allowed = await call(gateway, form({"user_id": "u-ann", "email": "ann@acme.example.com"}))
    assert allowed.status == 200
    assert len(upstream.requests) == 1


# --- bad bodies -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "content_type", "reason"),
    [
        pytest.param(b"user_data=%7B&x=1", FORM, "user_data is not JSON", id="user-data-not-json"),
        pytest.param(b"user_data=%5B%5D", FORM, "user_data is not a JSON object", id="user-data-array"),
        pytest.param(b"user_data=%7B%7D&user_data=%7B%7D", FORM, "user_data appears more than once", id="twice"),
        pytest.param(b"a=1&&b", FORM, "not form data", id="not-form"),
        pytest.param(b"user_data=\xff", FORM, "not UTF-8", id="not-utf8"),
        pytest.param(b'{"user_data": {}}', "application/json", f"the body is not {FORM}", id="json-body"),
        pytest.param(b"user_data%5Bcompanies%5D=x", FORM, "must be one plain field", id="rack-nested"),
        pytest.param(
            b'user_data={"companies":[],"companies":[{"company_id":"globex"}]}',
            FORM,
            "user_data has a key more than once",
            id="duplicate-key",
        ),
    ],
)
async def test_a_body_that_is_not_a_messenger_call_gets_400_and_nothing_is_forwarded(
    messenger: Gateway, upstream: RecordingUpstream, body: bytes, content_type: str, reason: str
) -> None:
    answer = await call(messenger, body, headers={"Content-Type": content_type})
    assert answer.status == 400
    assert reason in answer.json()["error"]["detail"]
    assert upstream.requests == []
    audit = await messenger.audit_for(answer.headers["X-Request-Id"])
    assert audit["company_policy"]["action"] == "invalid"
    assert reason in audit["company_policy"]["reason"]


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        pytest.param({"Content-Type": f"{FORM}; charset=utf-16"}, "charset is not utf-8", id="charset"),
        pytest.param(
            {
                "Connection": "Upgrade",
                "Upgrade": "websocket",
                "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
                "Sec-WebSocket-Version": "13",
            },
            "not upgraded",
            id="websocket",
        ),
    ],
)
async def test_calls_an_upstream_could_read_differently_are_refused(
    messenger: Gateway, upstream: RecordingUpstream, headers: dict[str, str], reason: str
) -> None:
    upgrade = "Upgrade" in headers
    body = None if upgrade else form({"email": "a@b.example"})
    answer = await call(messenger, body, method="GET" if upgrade else "POST", headers=headers)
    assert answer.status == 400
    assert reason in answer.json()["error"]["detail"]
    assert upstream.requests == []


@pytest.mark.parametrize(
    "path",
    [
        "//messenger/web/ping",
        "/messenger//web/ping",
        "/./messenger/web/ping",
        "/x/../messenger/web/ping",
        "/Messenger/Web/ping",
        "/messenger/web/",
        "/messenger%2Fweb/ping",
        "/messenger/web%2Fping",
        "/%256dessenger/web/ping",
        "/messenger;x=1/web/ping",
        "/messenger\\web/ping",
        "//admin/api/companies",
        "/Admin/API/contacts/u-ann/companies/globex",
        "/admin%2fapi",
    ],
)
async def test_other_spellings_of_the_messenger_and_admin_paths_never_reach_upstream(
    messenger: Gateway, upstream: RecordingUpstream, path: str
) -> None:
    url = URL(f"{messenger.url}{path}", encoded=True)
    body = form({"companies": [GLOBEX]})
    async with messenger.client.post(url, data=body, headers={"Content-Type": FORM}) as response:
        assert response.status in (400, 404)
    assert upstream.requests == []
    plain = await call(messenger, method="GET", endpoint="ping")  # the real path still works
    assert plain.status == 200


async def test_a_compressed_body_is_refused(messenger: Gateway, upstream: RecordingUpstream) -> None:
    answer = await call(messenger, b"\x1f\x8b\x08\x00", headers={"Content-Encoding": "gzip"})
    assert answer.status == 400
    assert "compressed" in answer.json()["error"]["detail"]
    assert upstream.requests == []


async def test_an_oversized_body_gets_400_with_or_without_a_length(
    start_gateway: StartGateway, upstream: RecordingUpstream
) -> None:
    gateway = await start_gateway(messenger={"upstream": str(upstream.url), "max_body_bytes": 2048})
    big = form({"name": "x" * 4096})
    answer = await call(gateway, big)
    assert answer.status == 400
    assert "the body is over 2048 bytes" in answer.json()["error"]["detail"]

    async def chunks() -> Any:
        for offset in range(0, len(big), 512):
            yield big[offset : offset + 512]

    url = URL(f"{gateway.url}/messenger/web/ping")
    async with gateway.client.post(url, data=chunks(), headers={"Content-Type": FORM}) as response:
        assert response.status == 400
        assert "over 2048 bytes" in (await response.json())["error"]["detail"]
    assert upstream.requests == []
    fits = await call(gateway, form({"name": "x" * 1000}))
    assert fits.status == 200


async def test_a_forged_token_in_user_data_gets_401_with_its_reason_in_the_audit(
    messenger: Gateway, upstream: RecordingUpstream
) -> None:
    forged = jwt("u-ann", secret=f"not-the-secret-{CANARY}-0123456789abcdef", companies=[GLOBEX])
    answer = await call(messenger, form({"user_id": "u-ann", "intercom_user_jwt": forged, "companies": [GLOBEX]}))
    assert answer.status == 401
    assert answer.headers["WWW-Authenticate"] == 'Bearer realm="messenger"'
    assert upstream.requests == []
    audit = await messenger.audit_for(answer.headers["X-Request-Id"])
    assert audit["identity"] == {"method": "jwt", "user_id": None, "result": "rejected", "reason": "bad_signature"}
    stale = sign_token(SECRET, user_id="u-ann", now=time.time() - 3600, ttl=60)
    answer = await call(messenger, form({"intercom_user_jwt": stale}))
    assert answer.status == 401
    assert (await messenger.audit_for(answer.headers["X-Request-Id"]))["identity"]["reason"] == "expired"


async def test_the_messenger_and_the_portal_read_the_same_token_the_same_way(messenger: Gateway) -> None:
    # One set of credential sources and verifiers: a token in user_data is judged as the portal's bearer token is.
    tokens = {
        "verified": jwt("u-ann"),
        "bad_signature": jwt("u-ann", secret=f"not-the-secret-{CANARY}-0123456789abcdef"),
        "expired": sign_token(SECRET, user_id="u-ann", now=time.time() - 3600, ttl=60),
        "malformed": "not.a.jwt",
        "missing_user_id": jwt(" "),  # a blank user id is no user id
    }
    for expected, token in tokens.items():
        portal_url = URL(f"{messenger.url}/tickets")
        bearer = {"Authorization": f"Bearer {token}"}
        async with messenger.client.get(portal_url, headers=bearer, allow_redirects=False) as response:
            through_portal = await messenger.audit_for(response.headers["X-Request-Id"])
        answer = await call(messenger, form({"intercom_user_jwt": token}))
        through_messenger = await messenger.audit_for(answer.headers["X-Request-Id"])
        assert through_messenger["identity"] == through_portal["identity"], expected
        identity = through_portal["identity"]
        assert (identity["result"] if expected == "verified" else identity["reason"]) == expected


async def test_the_messenger_and_the_portal_judge_the_same_legacy_pair_the_same_way(legacy: Gateway) -> None:
    gateway, good = legacy, user_hash("u-ben")
    for digest in (good, "0" * 64):
        cookies = {"Cookie": f"portal-user-id=u-ben; portal-user-hash={digest}"}
        async with gateway.client.get(URL(f"{gateway.url}/tickets"), headers=cookies, allow_redirects=False) as got:
            through_portal = await gateway.audit_for(got.headers["X-Request-Id"])
        answer = await call(gateway, form({"user_id": "u-ben", "user_hash": digest}))
        through_messenger = await gateway.audit_for(answer.headers["X-Request-Id"])
        assert through_messenger["identity"] == through_portal["identity"]
        assert through_portal["identity"]["method"] == "hmac"
        assert through_portal["identity"]["result"] == ("verified" if digest == good else "rejected")


@pytest.mark.parametrize("through", ["portal", "messenger"])
async def test_a_token_naming_a_key_published_after_start_is_verified_after_one_refetch(
    start_gateway: StartGateway, upstream: RecordingUpstream, idp: JWKSServer, through: str
) -> None:
    # Both readers of a token refetch alike (guard.rejudged): an unknown kid fetches the JWKS anew once, then judges.
    gateway = await start_gateway(
        messenger={"upstream": str(upstream.url)},
        store={"seed_demo": True},
        identity={"jwt": {"jwks_url": str(idp.url)}},
    )
    assert idp.requests == 1  # fetched at start, still empty
    idp.document = {"keys": [jwk(RSA_KEY, "rotated-in")]}
    now = int(time.time())
    signed = pyjwt.encode(
        {"user_id": "u-ann", "iat": now, "exp": now + 600}, RSA_KEY, algorithm="RS256", headers={"kid": "rotated-in"}
    )
    if through == "portal":
        bearer = {"Authorization": f"Bearer {signed}"}
        async with gateway.client.get(URL(f"{gateway.url}/tickets"), headers=bearer) as response:
            request_id = response.headers["X-Request-Id"]
    else:
        request_id = (await call(gateway, form({"intercom_user_jwt": signed}))).headers["X-Request-Id"]
    audit = await gateway.audit_for(request_id)
    assert audit["identity"] == {"method": "jwt", "user_id": "u-ann", "result": "verified", "reason": None}
    assert idp.requests == 2


# --- what else crosses ----------------------------------------------------------------------------------


async def test_the_cookie_allow_list_applies_to_messenger_calls(
    messenger: Gateway, upstream: RecordingUpstream
) -> None:
    cookies = f"{SESSION_COOKIE}=s1; {DEVICE_COOKIE}=d1; portal-jwt={CANARY}; _ga=x; intercom-session-other=o"
    answer = await call(messenger, form({"email": "a@b.example"}), headers={"Cookie": cookies})
    assert answer.status == 200
    assert upstream.last.headers["Cookie"] == f"{SESSION_COOKIE}=s1; {DEVICE_COOKIE}=d1"
    audit = await messenger.audit_for(answer.headers["X-Request-Id"])
    assert sorted(audit["cookies"]["stripped"]) == ["_ga", "intercom-session-other", "portal-jwt"]


async def test_upstream_answers_stream_back_and_failures_are_json(
    messenger: Gateway, upstream: RecordingUpstream, start_gateway: StartGateway
) -> None:
    async def conversations(request: web.Request) -> web.StreamResponse:
        return web.json_response({"conversations": []}, headers={"Set-Cookie": f"{SESSION_COOKIE}=new; Path=/"})

    upstream.on("/messenger/web/conversations", conversations)
    answer = await call(messenger, form({}), endpoint="conversations")
    assert answer.json() == {"conversations": []}
    assert answer.headers["Set-Cookie"].startswith(f"{SESSION_COOKIE}=new")
    down = await start_gateway(messenger={"upstream": "http://127.0.0.1:9"})
    failed = await call(down, form({}))
    assert failed.status == 502
    assert failed.json()["error"]["status"] == 502
    assert "127.0.0.1" not in failed.body.decode()


async def test_company_values_never_reach_the_audit_log(messenger: Gateway, upstream: RecordingUpstream) -> None:
    user_data = {"user_id": "u-ann", "companies": [{"company_id": f"evil-{CANARY}", "name": CANARY}]}
    answer = await call(messenger, form(user_data, user_active_company_id=f"x-{CANARY}"))
    assert answer.status == 200
    audit = await messenger.audit_for(answer.headers["X-Request-Id"])
    assert CANARY not in json.dumps(audit)


async def test_with_the_policy_off_calls_pass_untouched(
    start_gateway: StartGateway, upstream: RecordingUpstream
) -> None:
    gateway = await start_gateway(messenger={"upstream": str(upstream.url), "prevent_company_updates": False})
    body = form({"companies": [GLOBEX]}, user_active_company_id="globex")
    answer = await call(gateway, body)
    assert answer.status == 200
    assert upstream.last.body == body
    audit = await gateway.audit_for(answer.headers["X-Request-Id"])
    assert audit["company_policy"] is None


async def test_policy_outcomes_are_counted_in_metrics(messenger: Gateway, upstream: RecordingUpstream) -> None:
    await call(messenger, form({"companies": [GLOBEX]}))
    await call(messenger, form({"email": "a@b.example"}))
    await call(messenger, b"a=1&&", headers={"Content-Type": FORM})
    async with messenger.client.get(messenger.url / "metrics") as response:
        text = await response.text()
    counts = {
        sample.labels["action"]: sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "gateway_messenger_company_policy"
        for sample in family.samples
        if sample.name.endswith("_total")
    }
    assert counts == {"strip": 1.0, "pass": 1.0, "invalid": 1.0}


# --- the end-to-end property ----------------------------------------------------------------------------


@dataclass
class Background:
    """The gateway and a recording Messenger upstream on an event loop of their own, for sync property tests."""

    loop: asyncio.AbstractEventLoop
    recorder: RecordingUpstream
    port: int
    context: ssl.SSLContext

    def post(self, body: bytes) -> int:
        """POST a Messenger call; the status."""
        connection = http.client.HTTPSConnection("127.0.0.1", self.port, context=self.context, timeout=10)
        try:
            connection.request("POST", "/messenger/web/ping", body=body, headers={"Content-Type": FORM})
            response = connection.getresponse()
            response.read()
            return response.status
        finally:
            connection.close()


@pytest.fixture(scope="module")
def background(
    cert_files: CertFiles, client_ssl: ssl.SSLContext, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Background]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="background-gateway", daemon=True)
    thread.start()

    def run(coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, loop).result(timeout=60)

    recorder = RecordingUpstream()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", recorder.handle)
    server = TestServer(app, host="127.0.0.1")
    run(server.start_server())
    raw = config_dict(cert_files, tmp_path_factory.mktemp("messenger-property"), str(server.make_url("/")))
    raw["messenger"] = {"upstream": str(server.make_url("/"))}
    config = GatewayConfig.model_validate(raw, context={"environ": {}})

    async def start_gateway() -> Running:
        return await start(config, server_context(config.tls.cert, config.tls.key))

    running = run(start_gateway())
    yield Background(loop, recorder, running.https_port, client_ssl)
    run(running.stop())
    run(server.close())
    loop.call_soon_threadsafe(loop.stop)
    thread.join(timeout=10)
    loop.close()


company_values = st.sampled_from([ACME, GLOBEX, {"company_id": "acme"}, {"company_id": "acme", "size": 1}, None])
company_lists = st.lists(company_values, max_size=2)


@st.composite
def signed_calls(draw: st.DrawFn) -> tuple[bytes, dict[str, Any]]:
    """A Messenger body whose company data agrees with what its JWT signs only some of the time; and the claims."""
    claims: dict[str, Any] = {}
    if draw(st.booleans()):
        claims["companies"] = draw(company_lists)
    if draw(st.booleans()):
        claims["company"] = draw(company_values)
    user_data: dict[str, Any] = {"email": "ann@acme.example.com"}
    if draw(st.booleans()):
        user_data["user_id"] = draw(st.sampled_from(["u-ann", "u-ben"]))
    for key in draw(st.lists(st.sampled_from(["companies", "company", "Companies", "COMPANY"]), unique=True)):
        same = key in claims and draw(st.booleans())
        user_data[key] = claims[key] if same else draw(company_lists if "ies" in key.lower() else company_values)
    if draw(st.booleans()):
        user_data[draw(st.sampled_from(["intercom_user_jwt", "user_hash"]))] = jwt("u-ann", **claims)
    extra = draw(st.lists(st.sampled_from(["companies[]=globex", "company=globex", "v=1"]), max_size=2))
    body = "&".join([urlencode({"user_data": json.dumps(user_data)}), *extra]).encode()
    return body, claims


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(signed_calls())
def test_no_generated_call_makes_upstream_receive_company_data_the_jwt_did_not_sign(
    background: Background, call: tuple[bytes, dict[str, Any]]
) -> None:
    body, claims = call
    seen = len(background.recorder.requests)
    status = background.post(body)
    assert status == 200
    assert len(background.recorder.requests) == seen + 1
    fields = parse_qsl(background.recorder.last.body.decode(), keep_blank_values=True, strict_parsing=True)
    assert all(name.partition("[")[0].casefold() not in ("company", "companies") for name, _ in fields)
    (user_data,) = [json.loads(value) for name, value in fields if name == "user_data"]
    for key, value in user_data.items():
        if key.casefold() in ("company", "companies"):
            assert any(token in user_data for token in ("intercom_user_jwt", "user_hash"))
            assert user_data.get("user_id", "u-ann") == "u-ann"
            assert key in claims
            assert value == claims[key]

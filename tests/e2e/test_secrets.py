"""Secret hygiene (advisory class 8): planted cookie values, tokens and secrets never come back.

The run-wide check (``leaks`` in conftest) watches every log line, audit
file, metrics exposition and error page of the whole suite; these tests make
sure the error answers that are easiest to get wrong are actually produced.
"""

from __future__ import annotations

import json
import re
import ssl
import time
from urllib.parse import urlencode

import pytest
from yarl import URL

from gateway.policy.identity import sign_token
from tests.conftest import (
    CANARY,
    DOMAIN,
    SECRET,
    SESSION_COOKIE,
    WORKSPACE,
    Gateway,
    RecordingUpstream,
    StartGateway,
    planted,
    raw_exchange,
)

HOST = f"Host: {DOMAIN}\r\n"
MALFORMED = {
    "nul-in-cookie": f"GET / HTTP/1.1\r\n{HOST}Cookie: {SESSION_COOKIE}={CANARY}\x00x\r\n\r\n",
    "bare-cr-in-cookie": f"GET / HTTP/1.1\r\n{HOST}Cookie: portal-jwt={CANARY}\rx\r\n\r\n",
    "overlong-authorization": f"GET / HTTP/1.1\r\n{HOST}Authorization: Bearer {CANARY}{'x' * 9000}\r\n\r\n",
    "control-in-path": f"GET /{CANARY}\x01 HTTP/1.1\r\n{HOST}\r\n",
    "bad-content-length": f"POST / HTTP/1.1\r\n{HOST}Content-Length: {CANARY}\r\n\r\n",
    "bad-header-name": f"GET / HTTP/1.1\r\n{HOST}X-{CANARY}\x7f: 1\r\n\r\n",
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
async def test_a_request_the_parser_refuses_is_not_quoted_back(
    gateway: Gateway, client_ssl: ssl.SSLContext, caplog: pytest.LogCaptureFixture, name: str
) -> None:
    """Class 8, reflected secrets (the CVE-2012-0053 class): a 400 for a malformed header quotes nothing of it."""
    answer = await raw_exchange(gateway, MALFORMED[name].encode("latin-1"), client_ssl, seconds=1)
    assert answer.statuses == [431 if name == "overlong-authorization" else 400]
    assert answer.closed
    assert planted(answer.data.decode("latin-1")) == []
    assert b"aiohttp" not in answer.data
    assert all(planted(record.getMessage() + str(record.exc_info)) == [] for record in caplog.records)
    assert any("could not read" in record.getMessage() for record in caplog.records)


def _token(email: str) -> str:
    """A valid token carrying canaries in its claims (the user id is no secret: the audit log records it; nor
    is the name, which every page's header shows to the visitor it names)."""
    return sign_token(
        SECRET, user_id="u-stranger", now=time.time(), ttl=600, email=email, name="Stranger", extra={"note": CANARY}
    )


async def test_error_pages_audit_and_metrics_hold_no_planted_value(start_gateway: StartGateway) -> None:
    """Class 8: every error page the gateway renders, with canaries in cookies, tokens, headers and queries."""
    access = {"rules": [{"attribute": "person.email", "op": "ends_with", "value": "@allowed.example"}]}
    gateway = await start_gateway(
        upstream={"url": "http://127.0.0.1:9"}, requests={"max_body_size": 1024}, portal={"access": access}
    )
    allowed = _token(f"{CANARY}@allowed.example")
    cookie = f"{SESSION_COOKIE}={CANARY}; portal-jwt={allowed}; other={CANARY}"
    cases = [
        ("GET", f"/x/%2e%2e/y?{CANARY}", {"Cookie": cookie}, 400),
        ("GET", f"/api/v1/me?token={CANARY}", {"Authorization": f"Bearer {CANARY}.{CANARY}.{CANARY}"}, 401),
        ("GET", f"/api/v1/me?{SECRET}", {"Authorization": f"Bearer {_token(f'{CANARY}@other.example')}"}, 403),
        ("GET", f"/_gateway/static/none.css?{CANARY}", {"Cookie": cookie}, 404),
        ("POST", "/api/v1/tickets/1/join", {"Authorization": f"Bearer {allowed}", "Cookie": cookie}, 413),
        ("GET", f"/anything?{CANARY}", {"Cookie": cookie, "X-Portal-User-Id": CANARY, "Host": "evil.example"}, 421),
        ("GET", f"/anything?{CANARY}", {"Cookie": cookie, "X-Forwarded-For": CANARY}, 502),
    ]
    for method, target, headers, status in cases:
        url = URL(f"{gateway.url}{target}", encoded=True)
        body = b"x" * 2048 if method == "POST" else None
        async with gateway.client.request(method, url, headers={"Host": DOMAIN, **headers}, data=body) as response:
            page = await response.text()
            assert response.status == status, target
            assert planted(page + str(response.headers)) == [], (target, response.status)
            request_id = response.headers["X-Request-Id"]
        assert planted(str(await gateway.audit_for(request_id))) == []


async def test_the_messengers_token_is_never_audited_nor_logged(
    start_gateway: StartGateway, upstream: RecordingUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    """The token a ticket page signs for the Messenger: on the page (that is its place), never in the audit
    records of the page or of the Messenger calls that carry it, a valid one or a tampered one (refused: 401)."""
    gateway = await start_gateway(
        store={"seed_demo": True},
        portal={"access": {"rules": [{"attribute": "person.user_id", "op": "exists"}]}},
        messenger={"upstream": str(upstream.url), "boot": {"enabled": True}},
    )
    cookie = f"portal-jwt={sign_token(SECRET, user_id='u-ben', now=time.time(), ttl=600)}"
    async with gateway.client.get(gateway.url / "tickets/1014", headers={"Cookie": cookie}) as response:
        page = await response.text()
        page_id = response.headers["X-Request-Id"]
    (token,) = re.findall(r'data-messenger-jwt="([^"]+)"', page)
    tampered = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    seen = [page_id]
    for sent, status in ((token, 200), (tampered, 401)):
        body = urlencode({"app_id": WORKSPACE, "user_data": json.dumps({"intercom_user_jwt": sent})})
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        async with gateway.client.post(gateway.url / "messenger/web/ping", data=body, headers=headers) as response:
            assert response.status == status
            assert planted(await response.text()) == []
            seen.append(response.headers["X-Request-Id"])
    for request_id in seen:
        assert planted(json.dumps(await gateway.audit_for(request_id))) == [], request_id
    assert all(planted(record.getMessage()) == [] for record in caplog.records)

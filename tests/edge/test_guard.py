"""The identity and access stages through the real gateway over TLS.

Sign-in redirects (an expired token's too) and the 401/403 pages with their next
step, every JWT rejection on a portal page with
its exact reason in the audit record (never on the page), legacy HMAC, every
open-redirect payload of the reference list against /signin and /signout, the
identity headers towards upstream, the demo's dev login, and the identity
metrics. Tokens are signed with ``gateway.policy.identity.sign_token`` against the
wall clock, because the running gateway reads the wall clock.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, replace
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from http.cookies import Morsel, SimpleCookie
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from multidict import CIMultiDict, CIMultiDictProxy
from prometheus_client.parser import text_string_to_metric_families
from yarl import URL

from gateway.app import create_app
from gateway.edge.guard import CLOCK, GUARD, STORE, VISIBILITY
from gateway.policy.identity import Identity, sign_token
from gateway.policy.visibility import VisibilityPolicy, Visitor
from gateway.store.demo import PEOPLE
from gateway.store.models import Company, Contact
from tests.conftest import CANARY, DOMAIN, SECRET, Gateway, MakeConfig, RecordingUpstream, StartGateway
from tests.routes.portalkit import parse_html

LOGIN_URL = "https://app.example.com/login"
ORIGIN = f"https://{DOMAIN}"
JWT_COOKIE = "portal-jwt"
REASONS = ("missing", "expired", "bad_signature", "alg_not_allowed", "missing_user_id", "not_yet_valid", "malformed")
# Two conditions, so the audit record has to say which one decided.
ACCESS: dict[str, Any] = {
    "match": "all",
    "rules": [
        {"attribute": "person.user_id", "op": "starts_with", "value": "u-"},
        {"attribute": "person.email", "op": "ends_with", "value": "example.com"},
    ],
}
PORTAL: dict[str, Any] = {"portal": {"access": ACCESS}}
WITH_LOGIN: dict[str, Any] = {**PORTAL, "identity": {"login_url": LOGIN_URL}}
DEMO: dict[str, Any] = {"store": {"seed_demo": True}}


@dataclass(frozen=True)
class Answer:
    """One response, read in full."""

    status: int
    headers: CIMultiDictProxy[str]
    body: str
    cookies: SimpleCookie

    @property
    def request_id(self) -> str:
        return self.headers["X-Request-Id"]

    @property
    def location(self) -> str:
        return self.headers["Location"]

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def heading(self) -> str:
        return parse_html(self.body).find("h1").text()

    @property
    def links(self) -> dict[str, str]:
        """Each link of the page: its text -> its href."""
        return {link.text(): link.attrs["href"] for link in parse_html(self.body).find_all("a")}

    @property
    def account(self) -> str:
        """The text of the header's account navigation."""
        return parse_html(self.body).find("nav", aria_label="Account").text()


async def fetch(
    gateway: Gateway,
    target: str,
    *,
    method: str = "GET",
    headers: Mapping[str, str] | CIMultiDict[str] | None = None,
    data: Mapping[str, str] | None = None,
) -> Answer:
    """``target`` (path and raw query, sent exactly as written) without following redirects."""
    url = URL(f"{gateway.url}{target}", encoded=True)
    async with gateway.client.request(method, url, headers=headers, data=data, allow_redirects=False) as response:
        body = (await response.read()).decode("utf-8", errors="replace")
        return Answer(response.status, response.headers, body, response.cookies)


def token(
    user_id: str = "u-ann",
    *,
    email: str | None = None,
    secret: str = SECRET,
    issued: float | None = None,
    ttl: float = 600,
) -> str:
    """A token signed like the customer's app would; the canary rides along as an extra signed claim."""
    now = time.time() if issued is None else issued
    return sign_token(secret, user_id=user_id, now=now, ttl=ttl, email=email, extra={"note": CANARY})


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def expired_token() -> str:
    return token(f"u-{CANARY}", email="x@example.com", issued=time.time() - 3600, ttl=60)


def wrong_secret_token() -> str:
    return token(f"u-{CANARY}", email="x@example.com", secret=f"another-secret-{CANARY}-0123456789abcdef")


def tampered_token() -> str:
    header, _, signature = token(f"u-{CANARY}", email="x@example.com").split(".")
    claims = {"user_id": "u-admin", "email": "admin@example.com", "exp": int(time.time()) + 600, "note": CANARY}
    return f"{header}.{b64(json.dumps(claims).encode())}.{signature}"


def alg_none_token() -> str:
    header = b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    claims = {"user_id": f"u-{CANARY}", "email": "x@example.com", "exp": int(time.time()) + 600}
    return f"{header}.{b64(json.dumps(claims).encode())}."


def bearer(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}


def jwt_cookie(value: str) -> dict[str, str]:
    return {"Cookie": f"{JWT_COOKIE}={value}"}


DELIVERIES: dict[str, Callable[[str], dict[str, str]]] = {"cookie": jwt_cookie, "bearer": bearer}


def user_hash(user_id: str, secret: str = SECRET) -> str:
    return hmac.new(secret.encode(), user_id.encode(), hashlib.sha256).hexdigest()


def hmac_cookies(user_id: str, digest: str) -> dict[str, str]:
    return {"Cookie": f"portal-user-id={user_id}; portal-user-hash={digest}"}


def return_to_of(location: str, login: str = LOGIN_URL) -> str:
    """The ``return_to`` of a redirect to ``login``, failing when the redirect goes anywhere else."""
    url = URL(location)
    assert url.with_query(None) == URL(login), location
    assert list(url.query) == ["return_to"], location
    return url.query["return_to"]


# --- unauthenticated, rejected, denied, allowed ----------------------------------------------------


async def test_unauthenticated_portal_page_redirects_to_login_with_the_absolute_url_asked_for(
    start_gateway: StartGateway,
) -> None:
    gateway = await start_gateway(**WITH_LOGIN)
    answer = await fetch(gateway, "/tickets?state=in_progress&page=2&sort=updated")
    assert answer.status == 302
    assert return_to_of(answer.location) == f"{ORIGIN}/tickets?state=in_progress&page=2&sort=updated"
    record = await gateway.audit_for(answer.request_id)
    assert record["identity"]["result"] == "none"
    assert record["access"]["decision"] == "deny"

    detail = await fetch(gateway, "/tickets/T-42")
    assert detail.status == 302
    assert return_to_of(detail.location) == f"{ORIGIN}/tickets/T-42"


@pytest.mark.parametrize("query", ["q=csv%20export", "q=a%26b", "q=C%2B%2B"])
async def test_unauthenticated_search_keeps_its_query_in_return_to(start_gateway: StartGateway, query: str) -> None:
    gateway = await start_gateway(**WITH_LOGIN)
    answer = await fetch(gateway, f"/tickets?{query}")
    assert answer.status == 302
    return_to = URL(return_to_of(answer.location))
    assert return_to.path == "/tickets"
    assert return_to.query == URL(f"/tickets?{query}").query


async def test_without_login_url_a_portal_page_answers_401_saying_how_to_sign_in(start_gateway: StartGateway) -> None:
    gateway = await start_gateway(**PORTAL, identity={"login_url": None})
    for target in ("/tickets", "/signin?return_to=/tickets"):
        answer = await fetch(gateway, target)
        assert answer.status == 401, target
        assert "Location" not in answer.headers
        assert answer.headers["Content-Type"].startswith("text/html")
        assert "sign in" in answer.body.lower()
        assert answer.request_id in answer.body


async def test_api_without_credentials_answers_401_json_with_www_authenticate(start_gateway: StartGateway) -> None:
    gateway = await start_gateway(**WITH_LOGIN)
    for target in ("/api/v1/me", "/api/v1/tickets", "/api/v1/tickets/T-1"):
        answer = await fetch(gateway, target)
        assert answer.status == 401, target
        assert "Location" not in answer.headers
        assert answer.headers["WWW-Authenticate"].startswith("Bearer")
        assert answer.headers["Content-Type"].startswith("application/json")
        assert answer.json()["error"]["status"] == 401
    public = await fetch(gateway, "/api/v1/openapi.json")
    assert public.status != 401


# Refused for a reason signing in again cannot mend: a redirect to the login page would come back here.
REJECTED: dict[str, tuple[Callable[[], str], str]] = {
    "tampered": (tampered_token, "bad_signature"),
    "wrong-secret": (wrong_secret_token, "bad_signature"),
    "alg-none": (alg_none_token, "alg_not_allowed"),
    "garbage": (lambda: f"{CANARY}.junk{CANARY}.a-token", "malformed"),
}


@pytest.mark.parametrize("delivery", sorted(DELIVERIES))
async def test_expired_token_on_a_portal_page_signs_in_again_like_no_token(
    start_gateway: StartGateway, delivery: str
) -> None:
    """A sign-in that ran out is no dead end: off to the login page, back to the page asked for."""
    gateway = await start_gateway(**WITH_LOGIN)
    answer = await fetch(gateway, "/tickets?scope=mine&q=csv", headers=DELIVERIES[delivery](expired_token()))
    assert answer.status == 302
    assert return_to_of(answer.location) == f"{ORIGIN}/tickets?scope=mine&q=csv"
    record = await gateway.audit_for(answer.request_id)
    assert record["identity"] == {"method": "jwt", "user_id": None, "result": "rejected", "reason": "expired"}
    assert record["access"] == {"decision": "deny", "rule": "identity required"}

    demo = await start_gateway(**DEV)
    answer = await fetch(demo, "/tickets/T-7", headers=DELIVERIES[delivery](expired_token()))
    assert answer.status == 302
    assert return_to_of(answer.location, login="/dev/login") == f"{ORIGIN}/tickets/T-7"

    # Without a login page there is nowhere to send them: the 401 page says to sign in through their app.
    nowhere = await start_gateway(**PORTAL, identity={"login_url": None})
    answer = await fetch(nowhere, "/tickets", headers=DELIVERIES[delivery](expired_token()))
    assert answer.status == 401
    assert answer.heading == "Please sign in again"
    assert "Sign in again" not in answer.links


@pytest.mark.parametrize("delivery", sorted(DELIVERIES))
@pytest.mark.parametrize("case", sorted(REJECTED))
async def test_rejected_token_on_a_portal_page_is_401_never_a_redirect(
    start_gateway: StartGateway, case: str, delivery: str
) -> None:
    make, reason = REJECTED[case]
    value = make()
    gateway = await start_gateway(**WITH_LOGIN)
    answer = await fetch(gateway, f"/tickets/T-9?state=2&t={CANARY}", headers=DELIVERIES[delivery](value))
    assert answer.status == 401
    assert "Location" not in answer.headers  # never back to the login page, which would sign them in again
    assert answer.heading == "Please sign in again"
    # The way out is one click away, back to the page asked for: a person's choice, so never a loop.
    # Only its path: a page never quotes the query back (the canary in it is looked for in every error page).
    assert return_to_of(answer.links["Sign in again"]) == f"{ORIGIN}/tickets/T-9"
    for secret in (value, *value.split(".")[:2], CANARY):
        if secret:
            assert secret not in answer.body
            assert all(secret not in header for header in answer.headers.values())
    for text in REASONS:
        assert text not in answer.body.lower()
    record = await gateway.audit_for(answer.request_id)
    assert record["identity"] == {"method": "jwt", "user_id": None, "result": "rejected", "reason": reason}
    assert record["access"]["decision"] == "deny"
    assert record["status"] == 401


async def test_rejected_token_in_demo_mode_offers_the_dev_login(start_gateway: StartGateway) -> None:
    gateway = await start_gateway(**DEV)
    answer = await fetch(gateway, "/tickets/T-7", headers=jwt_cookie(wrong_secret_token()))
    assert answer.status == 401
    assert return_to_of(answer.links["Sign in again"], login="/dev/login") == f"{ORIGIN}/tickets/T-7"


@pytest.mark.parametrize("case", [*sorted(REJECTED), "expired"])
async def test_api_answers_a_refused_token_with_invalid_token(start_gateway: StartGateway, case: str) -> None:
    """RFC 6750 section 3.1: a token was sent and refused (an expired one too: the API never redirects)."""
    make = expired_token if case == "expired" else REJECTED[case][0]
    gateway = await start_gateway(**WITH_LOGIN)
    answer = await fetch(gateway, "/api/v1/tickets", headers=bearer(make()))
    assert answer.status == 401
    assert answer.headers.getall("WWW-Authenticate") == ['Bearer realm="portal", error="invalid_token"']
    assert set(answer.json()["error"]) == {"status", "title", "detail", "request_id"}
    assert answer.json()["error"]["title"] == "Unauthorized"
    without = await fetch(gateway, "/api/v1/tickets")
    assert without.headers.getall("WWW-Authenticate") == ['Bearer realm="portal"']


@pytest.mark.parametrize("delivery", sorted(DELIVERIES))
async def test_verified_visitor_outside_the_audience_gets_403_naming_the_rule(
    start_gateway: StartGateway, upstream: RecordingUpstream, delivery: str
) -> None:
    gateway = await start_gateway(**WITH_LOGIN)
    cases = {
        "portal.access.rules[0]": token("z-outsider", email="z@example.com"),
        "portal.access.rules[1]": token("u-outsider", email="u@example.com.evil.org"),
    }
    for rule, value in cases.items():
        answer = await fetch(gateway, "/tickets", headers=DELIVERIES[delivery](value))
        assert answer.status == 403, rule
        assert "Location" not in answer.headers
        assert answer.headers["Content-Type"].startswith("text/html")
        assert answer.heading == "You don't have access to this portal"
        assert "ask your company&#39;s admin for access to the support portal" in answer.body.lower()
        record = await gateway.audit_for(answer.request_id)
        assert record["identity"]["result"] == "verified"
        assert record["access"] == {"decision": "deny", "rule": rule}
    assert upstream.requests == []


@pytest.mark.parametrize("delivery", sorted(DELIVERIES))
async def test_verified_visitor_in_the_audience_is_let_in(
    start_gateway: StartGateway, upstream: RecordingUpstream, delivery: str
) -> None:
    gateway = await start_gateway(**WITH_LOGIN)
    answer = await fetch(
        gateway, "/tickets?page=1", headers=DELIVERIES[delivery](token("u-zed", email="z@x.example.com"))
    )
    assert answer.status == 200
    assert upstream.requests == []  # the portal page is the gateway's own
    record = await gateway.audit_for(answer.request_id)
    assert record["identity"] == {"method": "jwt", "user_id": "u-zed", "result": "verified", "reason": None}
    assert record["access"]["decision"] == "allow"

    me = await fetch(gateway, "/api/v1/me", headers=DELIVERIES[delivery](token("u-zed", email="z@x.example.com")))
    assert me.status == 200
    assert me.json()["user_id"] == "u-zed"
    assert me.json()["companies"] == []


async def test_the_403_page_names_the_visitor_and_lets_them_switch_account(start_gateway: StartGateway) -> None:
    """Signed in as the wrong person: the page says who, and one link signs out and on to sign in again."""
    gateway = await start_gateway(**WITH_LOGIN)
    cookie = jwt_cookie(token("z-outsider", email="z@example.com"))
    answer = await fetch(gateway, f"/tickets/T-9?scope=all&t={CANARY}", headers=cookie)
    assert answer.status == 403
    assert answer.account == "Signed in as z@example.com Sign out"
    switch = answer.links["Sign in as someone else"]
    signout = await fetch(gateway, switch, headers=cookie)  # as written in the page: path and raw query
    assert signout.status == 302
    assert cleared(signout.cookies[JWT_COOKIE])
    signin = await fetch(gateway, signout.location)
    assert signin.status == 302
    assert return_to_of(signin.location) == f"{ORIGIN}/tickets/T-9"

    api = await fetch(gateway, "/api/v1/me", headers=cookie)
    assert api.status == 403
    assert api.json()["error"]["title"] == "Forbidden"  # JSON keeps HTTP's title; its detail says what to do
    assert "admin" in api.json()["error"]["detail"]


async def test_the_401_page_offers_sign_in_and_names_nobody(start_gateway: StartGateway) -> None:
    gateway = await start_gateway(**WITH_LOGIN)
    answer = await fetch(gateway, f"/tickets/T-9?t={CANARY}", headers=bearer(tampered_token()))
    assert answer.account == "Sign in"
    assert return_to_of(answer.links["Sign in"]) == f"{ORIGIN}/tickets/T-9"
    assert "Sign out" not in answer.links


# --- legacy HMAC -----------------------------------------------------------------------------------


async def test_legacy_hmac_cookies_are_ignored_unless_enabled(start_gateway: StartGateway) -> None:
    gateway = await start_gateway(**WITH_LOGIN, **DEMO)
    cookies = hmac_cookies("u-ann", user_hash("u-ann"))
    page = await fetch(gateway, "/tickets", headers=cookies)
    assert page.status == 302  # treated as not signed in at all
    assert return_to_of(page.location) == f"{ORIGIN}/tickets"
    api = await fetch(gateway, "/api/v1/me", headers=cookies)
    assert api.status == 401
    for answer in (page, api):
        assert (await gateway.audit_for(answer.request_id))["identity"]["result"] == "none"


async def test_legacy_hmac_when_enabled_grants_a_correct_hash_and_rejects_a_wrong_one(
    start_gateway: StartGateway,
) -> None:
    gateway = await start_gateway(**PORTAL, **DEMO, identity={"login_url": LOGIN_URL, "hmac": {"enabled": True}})
    good = await fetch(gateway, "/api/v1/me", headers=hmac_cookies("u-ann", user_hash("u-ann")))
    assert good.status == 200
    assert good.json()["user_id"] == "u-ann"
    assert good.json()["email"] == "ann@acme.example.com"
    record = await gateway.audit_for(good.request_id)
    assert record["identity"] == {"method": "hmac", "user_id": "u-ann", "result": "verified", "reason": None}
    assert record["access"]["decision"] == "allow"

    wrong_secret = user_hash(f"u-{CANARY}", secret=f"not-the-secret-{CANARY}")
    for cookies in (
        hmac_cookies(f"u-{CANARY}", wrong_secret),
        hmac_cookies("u-ann", user_hash("u-ben")),  # a real hash of somebody else
    ):
        bad = await fetch(gateway, "/tickets", headers=cookies)
        assert bad.status == 401
        assert "Location" not in bad.headers
        assert CANARY not in bad.body
        assert "bad_signature" not in bad.body
        record = await gateway.audit_for(bad.request_id)
        assert record["identity"] == {
            "method": "hmac",
            "user_id": None,
            "result": "rejected",
            "reason": "bad_signature",
        }


# --- sign-in, sign-out, open redirects ---------------------------------------------------------------


def safe_absolute(value: str) -> bool:
    """Whether ``value`` is an absolute URL on the custom domain whose path cannot be read as another host."""
    if not value.startswith(f"{ORIGIN}/"):
        return False
    rest = value[len(ORIGIN) :]
    return safe_path(rest) and URL(value).host == DOMAIN


def safe_path(value: str) -> bool:
    """A same-origin path: one leading slash, no backslash, no whitespace or control characters anywhere."""
    if not value.startswith("/") or value.startswith(("//", "/\\")):
        return False
    return "\\" not in value and not any(ord(char) <= 0x20 or ord(char) == 0x7F for char in value)


def open_redirect_payloads(reference: Path) -> list[str]:
    lines = (reference / "open-redirects" / "openredirects.txt").read_text(encoding="utf-8").splitlines()
    return [line for line in lines if line.strip()]


def raw_query_value(payload: str) -> str:
    """The payload as a browser puts it into a request line: only what cannot appear there is encoded."""
    return "".join(
        char if 0x21 <= ord(char) < 0x7F and char not in '"<>`{}|^' else URL.build(path=char).raw_path
        for char in payload
    )


ENCODINGS: dict[str, Callable[[str], str]] = {
    "raw": raw_query_value,  # as written in the list, which a browser would send (a '#' ends the query)
    "quoted": lambda payload: quote(payload, safe=""),  # the gateway decodes exactly the listed text
}


@pytest.mark.parametrize("encoding", sorted(ENCODINGS))
async def test_every_open_redirect_payload_stays_on_the_domain(
    start_gateway: StartGateway, reference: Path, encoding: str
) -> None:
    payloads = open_redirect_payloads(reference)
    assert len(payloads) == 558
    gateway = await start_gateway(**WITH_LOGIN)
    escaped: list[str] = []
    fallbacks = 0
    for payload in payloads:
        value = ENCODINGS[encoding](payload)
        signin = await fetch(gateway, f"/signin?return_to={value}")
        if signin.status != 302:
            escaped.append(f"/signin {payload!r}: status {signin.status}")
        else:
            target = return_to_of(signin.location)
            fallbacks += target == f"{ORIGIN}/tickets"
            if not safe_absolute(target):
                escaped.append(f"/signin {payload!r}: return_to {target!r}")
        signout = await fetch(gateway, f"/signout?return_to={value}")
        location = signout.headers.get("Location", "")
        if signout.status != 302 or not (safe_path(location) or safe_absolute(location)):
            escaped.append(f"/signout {payload!r}: {signout.status} to {location!r}")
        elif URL(f"{ORIGIN}/signout").join(URL(location, encoded=True)).host != DOMAIN:
            escaped.append(f"/signout {payload!r}: {location!r} resolves off the domain")
    assert not escaped, f"{len(escaped)} of {2 * len(payloads)} answers leave {DOMAIN}:\n" + "\n".join(escaped)
    assert fallbacks > len(payloads) // 2  # the list is attacks: most must fall back to the portal path


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        ("/tickets/T-12?scope=mine", "/tickets/T-12?scope=mine"),
        ("%2Ftickets%3Fstate%3Dresolved", "/tickets?state=resolved"),
        (f"https://{DOMAIN}/tickets?x=1", "/tickets?x=1"),
        ("/", "/"),
    ],
)
async def test_signin_and_signout_keep_a_same_origin_target(start_gateway: StartGateway, given: str, kept: str) -> None:
    gateway = await start_gateway(**WITH_LOGIN)
    signin = await fetch(gateway, f"/signin?return_to={given}")
    assert signin.status == 302
    assert return_to_of(signin.location) == f"{ORIGIN}{kept}"
    signout = await fetch(gateway, f"/signout?return_to={given}")
    assert signout.status == 302
    assert URL(f"{ORIGIN}/signout").join(URL(signout.location)) == URL(f"{ORIGIN}{kept}")


async def test_signin_and_signout_without_return_to_fall_back_to_the_portal(start_gateway: StartGateway) -> None:
    gateway = await start_gateway(**WITH_LOGIN)
    for target in ("/signin", "/signin?return_to=", "/signin?return_to=https://evil.example.org/tickets"):
        answer = await fetch(gateway, target)
        assert answer.status == 302, target
        assert return_to_of(answer.location) == f"{ORIGIN}/tickets", target
    for target in (
        "/signout",
        "/signout?return_to=//evil.example.org/",
        f"/signout?return_to=https://{DOMAIN}.evil.org/",
    ):
        answer = await fetch(gateway, target)
        assert answer.status == 302, target
        assert answer.location == "/tickets", target


def cleared(morsel: Morsel[str]) -> bool:
    """Whether a Set-Cookie deletes the cookie: Max-Age=0 or an Expires in the past."""
    if morsel["max-age"] not in ("", None):
        return int(morsel["max-age"]) <= 0
    return bool(morsel["expires"]) and parsedate_to_datetime(morsel["expires"]) < datetime.now(UTC)


async def test_signout_clears_the_portal_cookie(start_gateway: StartGateway) -> None:
    gateway = await start_gateway(**WITH_LOGIN)
    answer = await fetch(gateway, "/signout?return_to=/tickets", headers=jwt_cookie(token(email="a@example.com")))
    assert answer.status == 302
    assert answer.location == "/tickets"
    assert len(answer.headers.getall("Set-Cookie")) == 1
    morsel = answer.cookies[JWT_COOKIE]
    assert morsel.value in ("", '""')
    assert cleared(morsel)
    assert morsel["secure"]
    assert morsel["httponly"]
    assert morsel["path"] == "/"


# --- identity towards upstream -----------------------------------------------------------------------

SPOOFED = CIMultiDict(
    [
        ("X-Portal-User-Id", f"spoof-{CANARY}"),
        ("x-portal-USER-id", f"spoof2-{CANARY}"),
        ("X_Portal_User_Id", f"spoof3-{CANARY}"),
        ("X-Portal-Company-Ids", f"evilcorp-{CANARY}"),
        ("X-Portal-Email", f"boss-{CANARY}@example.com"),
        ("X-Forwarded-User", f"fwd-{CANARY}"),
        ("X-Forwarded-Email", f"fwd-{CANARY}@example.com"),
        ("Remote-User", f"remote-{CANARY}"),
    ]
)
IDENTITY_NAMES = {"x-forwarded-user", "x-forwarded-email", "remote-user"}


def identity_headers(headers: CIMultiDictProxy[str]) -> list[tuple[str, str]]:
    """Every header upstream got that names an identity, however spelled."""
    return [
        (name, value)
        for name, value in headers.items()
        if (normal := name.lower().replace("_", "-")).startswith("x-portal-") or normal in IDENTITY_NAMES
    ]


def spoofed_with(extra: Mapping[str, str]) -> CIMultiDict[str]:
    headers = SPOOFED.copy()
    headers.update(extra)
    return headers


async def test_client_identity_headers_never_reach_upstream(
    start_gateway: StartGateway, upstream: RecordingUpstream
) -> None:
    gateway = await start_gateway(**WITH_LOGIN, **DEMO)
    answer = await fetch(gateway, "/anything", headers=SPOOFED)
    assert answer.status == 200
    assert upstream.last.path == "/anything"
    assert identity_headers(upstream.last.headers) == []
    assert all(CANARY not in value for value in upstream.last.headers.values())


async def test_verified_visitor_in_the_store_gets_the_gateways_own_identity_headers(
    start_gateway: StartGateway, upstream: RecordingUpstream
) -> None:
    gateway = await start_gateway(**WITH_LOGIN, **DEMO)
    answer = await fetch(gateway, "/anything", headers=spoofed_with(bearer(token("u-ben"))))
    assert answer.status == 200
    assert sorted(identity_headers(upstream.last.headers)) == [
        ("X-Portal-Company-Ids", "acme,globex"),
        ("X-Portal-Email", "ben@acme.example.com"),
        ("X-Portal-User-Id", "u-ben"),
    ]
    assert all(CANARY not in value for value in upstream.last.headers.values())

    # The signed email claim wins over the store's.
    await fetch(gateway, "/anything", headers=spoofed_with(jwt_cookie(token("u-ann", email="ann.token@example.com"))))
    assert sorted(identity_headers(upstream.last.headers)) == [
        ("X-Portal-Company-Ids", "acme"),
        ("X-Portal-Email", "ann.token@example.com"),
        ("X-Portal-User-Id", "u-ann"),
    ]


async def test_verified_visitor_not_in_the_store_belongs_to_no_company(
    start_gateway: StartGateway, upstream: RecordingUpstream
) -> None:
    gateway = await start_gateway(**WITH_LOGIN, **DEMO)
    await fetch(gateway, "/anything", headers=spoofed_with(bearer(token("u-stranger"))))
    assert sorted(identity_headers(upstream.last.headers)) == [
        ("X-Portal-Company-Ids", ""),
        ("X-Portal-User-Id", "u-stranger"),
    ]
    await fetch(gateway, "/anything", headers=spoofed_with(bearer(token("u-stranger", email="s@example.org"))))
    assert sorted(identity_headers(upstream.last.headers)) == [
        ("X-Portal-Company-Ids", ""),
        ("X-Portal-Email", "s@example.org"),
        ("X-Portal-User-Id", "u-stranger"),
    ]


async def test_rejected_visitor_gets_no_identity_headers_upstream(
    start_gateway: StartGateway, upstream: RecordingUpstream
) -> None:
    gateway = await start_gateway(**WITH_LOGIN, **DEMO)
    for headers in (bearer(expired_token()), jwt_cookie(tampered_token()), {}):
        answer = await fetch(gateway, "/anything", headers=spoofed_with(headers))
        assert answer.status == 200
        assert identity_headers(upstream.last.headers) == []


# --- dev login -----------------------------------------------------------------------------------------

DEV: dict[str, Any] = {
    "identity": {"dev_login": True, "login_url": LOGIN_URL},
    "store": {"seed_demo": True},
    "portal": {"access": {"rules": [{"attribute": "person.email", "op": "contains", "value": "example.com"}]}},
}


async def test_dev_login_is_where_unauthenticated_visitors_go(start_gateway: StartGateway) -> None:
    gateway = await start_gateway(**DEV)
    answer = await fetch(gateway, "/tickets?state=resolved")
    assert answer.status == 302
    assert return_to_of(answer.location, login="/dev/login") == f"{ORIGIN}/tickets?state=resolved"

    page = await fetch(gateway, "/dev/login?return_to=/tickets%22%3E%3Cscript%3Ealert(1)%3C/script%3E")
    assert page.status == 200
    assert "<script>" not in page.body  # the return_to is echoed into a hidden field, escaped
    assert page.headers["Content-Type"].startswith("text/html")
    for user_id, name, email, _ in PEOPLE:
        assert f'value="{user_id}"' in page.body
        assert name in page.body
        assert email in page.body


async def test_dev_login_shows_each_persons_role(start_gateway: StartGateway) -> None:
    gateway = await start_gateway(**DEV)
    page = await fetch(gateway, "/dev/login")
    rows = {row.split('name="user_id" value="')[1].split('"')[0]: row for row in page.body.split("<tr>")[2:]}
    assert "<td>admin</td>" in rows["u-ann"]  # the README's demo-people table: Ann admin, Ivy member
    assert "<td>member</td>" in rows["u-ivy"]
    assert '<th scope="col">Role</th>' in page.body


async def test_dev_login_signs_a_token_the_api_accepts(start_gateway: StartGateway) -> None:
    gateway = await start_gateway(**DEV)
    answer = await fetch(
        gateway, "/dev/login", method="POST", data={"user_id": "u-ann", "return_to": f"{ORIGIN}/tickets?state=resolved"}
    )
    assert answer.status == 303
    assert answer.location == "/tickets?state=resolved"
    morsel = answer.cookies[JWT_COOKIE]
    assert morsel["secure"]
    assert morsel["httponly"]
    assert morsel["path"] == "/"
    me = await fetch(gateway, "/api/v1/me", headers=jwt_cookie(morsel.value))
    assert me.status == 200
    assert me.json()["user_id"] == "u-ann"
    assert [company["company_id"] for company in me.json()["companies"]] == ["acme"]

    unsafe = await fetch(gateway, "/dev/login", method="POST", data={"user_id": "u-ben", "return_to": "//evil.org/x"})
    assert unsafe.status == 303
    assert unsafe.location == "/tickets"


async def test_dev_login_refuses_cross_site_posts_and_unknown_people(start_gateway: StartGateway) -> None:
    gateway = await start_gateway(**DEV)
    cross = await fetch(
        gateway,
        "/dev/login",
        method="POST",
        data={"user_id": "u-ann", "return_to": "/tickets"},
        headers={"Sec-Fetch-Site": "cross-site"},
    )
    assert cross.status == 403
    assert JWT_COOKIE not in cross.cookies
    assert cross.heading == "This sign-in came from another site"
    assert cross.links["Open the sign-in page"] == "/dev/login"
    for form in ({"user_id": "u-nobody", "return_to": "/tickets"}, {"return_to": "/tickets"}):
        unknown = await fetch(gateway, "/dev/login", method="POST", data=form)
        assert unknown.status == 400, form
        assert JWT_COOKIE not in unknown.cookies
        assert unknown.heading == "There is no such person"
        assert "No person in the store has that user id" in unknown.body
        assert unknown.links["Open the sign-in page"] == "/dev/login"
        assert "u-nobody" not in unknown.body, "the page does not echo what was sent"


async def test_without_dev_login_the_path_is_proxied_like_any_other(
    start_gateway: StartGateway, upstream: RecordingUpstream
) -> None:
    gateway = await start_gateway(**WITH_LOGIN, **DEMO)
    page = await fetch(gateway, "/dev/login")
    assert page.status == 200
    assert page.json() == {"path": "/dev/login", "received": 0}
    posted = await fetch(gateway, "/dev/login", method="POST", data={"user_id": "u-ann"})
    assert posted.status == 200
    assert JWT_COOKIE not in posted.cookies
    assert [(r.method, r.path) for r in upstream.requests] == [("GET", "/dev/login"), ("POST", "/dev/login")]
    unauthenticated = await fetch(gateway, "/tickets")
    assert return_to_of(unauthenticated.location) == f"{ORIGIN}/tickets"  # the real login page, not /dev/login


# --- metrics -------------------------------------------------------------------------------------------


async def test_identity_results_are_counted_by_method_result_and_reason(start_gateway: StartGateway) -> None:
    gateway = await start_gateway(**PORTAL, identity={"login_url": LOGIN_URL, "hmac": {"enabled": True}})
    for headers in (
        bearer(expired_token()),
        jwt_cookie(expired_token()),
        bearer(alg_none_token()),
        bearer(token("u-one", email="one@example.com")),
        hmac_cookies("u-one", "0" * 64),
        hmac_cookies("u-one", user_hash("u-one")),
        {},
    ):
        await fetch(gateway, "/api/v1/me", headers=headers)
    answer = await fetch(gateway, "/metrics")
    assert answer.status == 200
    counts = {
        (sample.labels["method"], sample.labels["result"], sample.labels["reason"]): sample.value
        for family in text_string_to_metric_families(answer.body)
        if family.name == "gateway_identity_results"
        for sample in family.samples
        if sample.name == "gateway_identity_results_total"
    }
    assert counts == {
        ("jwt", "rejected", "expired"): 2.0,
        ("jwt", "rejected", "alg_not_allowed"): 1.0,
        ("jwt", "verified", ""): 1.0,
        ("hmac", "rejected", "bad_signature"): 1.0,
        ("hmac", "verified", ""): 1.0,
    }


async def test_a_membership_change_reaches_the_very_next_request(
    start_gateway: StartGateway, upstream: RecordingUpstream
) -> None:
    """The contact cache is emptied by the commit itself: no window in which a company a visitor has left
    still reaches the upstream (X-Portal-Company-Ids) or the access rules."""
    gateway = await start_gateway(**WITH_LOGIN, **DEMO)
    store = gateway.running.app[STORE]

    async def companies() -> str:
        answer = await fetch(gateway, "/anything", headers=bearer(token("u-ben")))
        assert answer.status == 200
        return upstream.last.headers["X-Portal-Company-Ids"]

    assert await companies() == "acme,globex"
    await store.remove_membership("u-ben", "globex")
    assert await companies() == "acme"
    await store.add_membership("u-ben", "globex")
    assert await companies() == "acme,globex"


async def test_connection_header_cannot_strip_the_gateways_identity_headers(
    start_gateway: StartGateway, upstream: RecordingUpstream
) -> None:
    """Class 3, hop-by-hop abuse: naming X-Portal-* in Connection must not remove the gateway's own values."""
    gateway = await start_gateway(**WITH_LOGIN, **DEMO)
    hop = "X-Portal-User-Id, X-Portal-Company-Ids, X-Portal-Email, X-Forwarded-For"
    answer = await fetch(gateway, "/anything", headers={**bearer(token("u-ben")), "Connection": hop})
    assert answer.status == 200
    assert sorted(identity_headers(upstream.last.headers)) == [
        ("X-Portal-Company-Ids", "acme,globex"),
        ("X-Portal-Email", "ben@acme.example.com"),
        ("X-Portal-User-Id", "u-ben"),
    ]
    assert upstream.last.headers["X-Forwarded-For"] == "127.0.0.1"


# --- what the routes get besides the guard ------------------------------------------------------------------


def test_routes_get_visibility_and_the_clock_through_their_own_keys_and_the_guard_keeps_identity_and_access(
    make_config: MakeConfig,
) -> None:
    config = make_config(**PORTAL, identity={"hmac": {"enabled": True}})
    app = create_app(config)
    assert isinstance(app[VISIBILITY], VisibilityPolicy)
    assert app[CLOCK] is app[GUARD].clock  # one clock: the one the identity stage verifies tokens with
    guard = app[GUARD]
    assert [source.name for source in guard.sources] == ["bearer", "jwt_cookie", "hmac_cookies"]
    assert [source.name for source in guard.messenger_sources] == ["user_data_jwt", "user_data_hmac"]
    assert {field.name for field in fields(guard)}.isdisjoint({"visibility", "hmac_secrets", "hmac_cookies"})


class ReadClaims(dict[str, Any]):
    """Signed claims that count how often the access rules' facts were built from them."""

    reads = 0

    def items(self) -> Any:
        self.reads += 1
        return super().items()


def test_an_access_decision_is_made_once_per_identity_and_contact_and_afresh_for_new_ones(
    make_config: MakeConfig,
) -> None:
    """SECURITY: the decision is reused only for the very identity and contact objects it was made on; the
    store gives a new contact object after any commit, so a membership removed is decided afresh."""
    rules = {"rules": [{"attribute": "company.plan", "op": "equals", "value": "pro"}]}
    guard = create_app(make_config(portal={"access": rules}))[GUARD]
    claims = ReadClaims(user_id="u-ann")
    identity = Identity("u-ann", "jwt", "ann@acme.example.com", "Ann", claims)
    member = Contact(1, "u-ann", "ann@acme.example.com", "Ann", {}, (Company(7, "acme", "Acme", plan="pro"),))
    assert guard.admits(Visitor(identity, member)).allowed
    assert guard.admits(Visitor(identity, member)).allowed
    assert claims.reads == 1  # decided once for these two objects
    removed = replace(member, companies=())  # what the store reads after the membership's removal
    assert not guard.admits(Visitor(identity, removed)).allowed
    assert claims.reads == 2
    assert not guard.admits(Visitor(replace(identity), removed)).allowed  # an equal identity, another object
    assert claims.reads == 3

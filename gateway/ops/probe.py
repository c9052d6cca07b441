"""The end-to-end probe: canary cookies through whatever sits in front of the gateway, judged hop by hop.

``portal-gateway probe https://help.example.com`` sends both Intercom cookies with random values and
decoys (fixed names, among them look-alikes of the Intercom names, which are what a sloppy rule in front
mishandles, each with a random value) to ``GET /_gateway/probe``, authorized by a proof of the admin token
(:func:`probe_authorization`: the token itself never crosses the CDN). The gateway answers, signed with the admin
token, what it received and what its own cookie policy (``cookies.py``) would send upstream: :func:`answer`. Values
never travel back: each one is named by an HMAC keyed with the request's nonce, which the CLI
recomputes from the values it sent. The ``check_*`` functions judge what came back, one
:class:`~gateway.ops.checks.Check` each; only :func:`observe` touches the network.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import re
import secrets
import socket
import ssl
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from http.cookies import SimpleCookie
from pathlib import Path

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from pydantic import BaseModel, ConfigDict, ValidationError
from yarl import URL

from gateway.config import intercom_cookies
from gateway.namespace import PROBE_PATH
from gateway.ops.checks import Check
from gateway.policy.cookies import cookie_names, cookie_value, filter_cookies
from gateway.proxy.forward import Upstream
from gateway.run.tls import CertificateInfo, peer_certificate

SIGNATURE_HEADER = "X-Probe-Signature"
PROOF_SCHEME = "Probe"
PROOF_WINDOW = 300  # seconds a probe's proof is good for, either way (clocks of the CLI's host and the gateway's)
_PROOF = re.compile(r"t=(?P<t>[0-9]{1,12}),proof=(?P<proof>[0-9a-f]{64})")
NONCE = re.compile(r"[0-9a-f]{32}")
_MAX_AGE = re.compile(r"(?:^|;)\s*max-age\s*=\s*\"?(\d+)\"?", re.IGNORECASE)
TIMEOUT = 10.0


def digest(nonce: str, value: str) -> str:
    """How the answer names a cookie value: HMAC-SHA256 keyed with the nonce, so no value travels back."""
    return hmac.new(nonce.encode(), value.encode("utf-8", "surrogateescape"), hashlib.sha256).hexdigest()


def _proof(token: bytes, nonce: str, at: int) -> str:
    return hmac.new(token, f"portal-gateway probe {nonce} {at}".encode(), hashlib.sha256).hexdigest()


def probe_authorization(token: bytes, nonce: str, now: float) -> str:
    """The probe's ``Authorization`` value: the time and an HMAC with the admin token of the nonce and time.

    SECURITY: what sits in front (a CDN, its logs) sees a proof good for this nonce and a few minutes, never the
    admin token, which would open the admin API.
    """
    at = int(now)
    return f"{PROOF_SCHEME} t={at},proof={_proof(token, nonce, at)}"


def probe_authorization_problem(header: str, token: bytes, nonce: str, now: float) -> str | None:
    """Why ``header`` does not authorize a probe of ``nonce`` now (None: it does), in a word for the audit."""
    scheme, _, rest = header.partition(" ")
    match = _PROOF.fullmatch(rest.strip())
    if scheme.lower() != PROOF_SCHEME.lower() or match is None:
        return "missing" if not header else "bad_token"
    at = int(match["t"])
    # SECURITY: constant-time; a proof seen in transit opens nothing after the window, and no other nonce.
    if not hmac.compare_digest(match["proof"], _proof(token, nonce, at)):
        return "bad_token"
    return None if abs(now - at) <= PROOF_WINDOW else "stale"


def sign(token: bytes, body: bytes) -> str:
    """The signature header's value for an answer body: HMAC-SHA256 with the admin token."""
    return "sha256=" + hmac.new(token, body, hashlib.sha256).hexdigest()


def sample_set_cookie(name: str, nonce: str, upstream_host: str) -> str:
    """A Set-Cookie as the help center sends one, scoped to its own host; ``Max-Age=0`` so nothing keeps it."""
    return f"{name}=probe-{nonce}; Domain={upstream_host}; Path=/; Max-Age=0; HttpOnly; SameSite=Lax"


class Seen(BaseModel):
    """One cookie in the answer: its name and the digest of its value (None for a placeholder name)."""

    model_config = ConfigDict(frozen=True)

    name: str
    digest: str | None


class Answer(BaseModel):
    """The probe endpoint's signed answer."""

    model_config = ConfigDict(frozen=True)

    nonce: str
    domain: str
    workspace_id: str
    allowed: list[str]
    """The cookie names the gateway lets reach upstream."""
    received: list[Seen]
    upstream: list[Seen]
    """Every pair of the Cookie header the gateway would send upstream, in order."""
    stripped: list[str]
    set_cookie: str | None
    """What the gateway passes back for :func:`sample_set_cookie` of the session cookie (None: dropped)."""


def answer(cookie_headers: Sequence[str], nonce: str, upstream: Upstream, *, workspace_id: str) -> Answer:
    """What the gateway received and would forward, decided by the proxy's own cookie policy."""
    decision = filter_cookies(cookie_headers, upstream.allowed_cookies)

    def seen(headers: Sequence[str], name: str) -> Seen:
        value = cookie_value(headers, name)
        return Seen(name=name, digest=None if value is None else digest(nonce, value))

    # filter_cookies joins the forwarded pairs with "; " and no forwarded value holds ";" or a space.
    forwarded = decision.header.split("; ") if decision.header else []
    session, _ = intercom_cookies(workspace_id)
    return Answer(
        nonce=nonce,
        domain=upstream.custom_domain,
        workspace_id=workspace_id,
        allowed=sorted(upstream.allowed_cookies),
        received=[seen(cookie_headers, name) for name in cookie_names(cookie_headers)],
        upstream=[seen([pair], pair.partition("=")[0]) for pair in forwarded],
        stripped=list(decision.stripped),
        set_cookie=upstream.set_cookie(sample_set_cookie(session, nonce, upstream.base.host or "")).header,
    )


@dataclass(frozen=True)
class Canaries:
    """What one probe sends: the two Intercom cookies and the decoys, each with a random value."""

    nonce: str
    intercom: tuple[tuple[str, str], ...]
    decoys: tuple[tuple[str, str], ...]

    @classmethod
    def fresh(cls, workspace_id: str) -> Canaries:
        """New random values; decoys under fixed names, look-alikes of the Intercom names among them."""

        def value() -> str:
            return secrets.token_urlsafe(18)

        session, device = intercom_cookies(workspace_id)
        # Fixed names: what a cookie came as is told by its value's digest, never by its name, so random names
        # would add nothing but new rows to the audit log's cookie table on every run.
        decoys = (
            (f"probe-decoy-{session}", value()),  # a name that ends like the session cookie's
            ("portal-probe-decoy", value()),
            ("intercom-session-probedecoy", value()),  # another workspace's session
            ("portal-probe-decoy-2", value()),
        )
        return cls(secrets.token_hex(16), ((session, value()), (device, value())), decoys)

    def cookie_header(self) -> str:
        """The Cookie header: each Intercom cookie right after its look-alike, decoys in between."""
        (session, device), decoys = self.intercom, self.decoys
        pairs = (decoys[0], session, decoys[1], decoys[2], device, decoys[3])
        return "; ".join(f"{name}={value}" for name, value in pairs)

    def whose(self, seen: Seen) -> str | None:
        """Which cookie sent by the probe has the value ``seen`` carries, if any."""
        return next(
            (name for name, value in self.intercom + self.decoys if digest(self.nonce, value) == seen.digest), None
        )


# --- the checks: pure functions of what was observed ------------------------------------------------------

NO_ANSWER = "not checked: no signed answer from the probe endpoint"
ANSWER, AT_GATEWAY, UPSTREAM, SET_COOKIE, HSTS = (
    "Probe answer",
    "Intercom cookies at the gateway",
    "Cookies towards upstream",
    "Upstream Set-Cookie",
    "HSTS",
)


def check_answer(status: int | None, body: bytes, signature: str | None, token: bytes, nonce: str) -> Answer | str:
    """The parsed answer when it is the gateway's, signed and fresh; otherwise what went wrong and what to do."""
    if status == 404:
        return (
            f"{PROBE_PATH} answered 404: the admin token is not the gateway's, admin.token is unset there, or the "
            f"gateway predates the probe; check the token, and that the CDN sends {PROBE_PATH} to the gateway"
        )
    if status != 200:
        return f"{PROBE_PATH} answered {status}; it must reach the gateway unchanged (no CDN rule on /_gateway/)"
    if signature is None or not hmac.compare_digest(signature, sign(token, body)):
        return (
            "signature mismatch: the answer was changed on the way (a CDN rewriting bodies: minification, "
            f"sub_filter, an injected script) or comes from a server that does not hold the admin token; exempt "
            f"{PROBE_PATH} from body rewriting"
        )
    try:
        parsed = Answer.model_validate_json(body)
    except ValidationError:
        return "the signed answer is not a probe answer: update the probe or the gateway so they match"
    if parsed.nonce != nonce:
        return f"a stale answer (another nonce): a cache in front replayed it; never cache {PROBE_PATH}"
    return parsed


def check_received(canaries: Canaries, answer: Answer) -> Check:
    """Both Intercom cookies reached the gateway with the values sent."""
    name = AT_GATEWAY
    received = {seen.name: seen for seen in answer.received}
    problems = []
    missing = [cookie for cookie, _ in canaries.intercom if cookie not in received]
    if missing:
        problems.append(
            f"{' and '.join(missing)} did not arrive: something in front drops cookies; let it pass the Cookie "
            "header whole"
        )
    for cookie, value in canaries.intercom:
        seen = received.get(cookie)
        if seen is not None and seen.digest != digest(canaries.nonce, value):
            other = canaries.whose(seen)
            problems.append(
                f"{cookie} arrived with the value of decoy {other}: a rule in front copies cookies by a loose name "
                "match; match the whole name"
                if other
                else f"{cookie} arrived changed: something in front rewrites cookie values; turn that rule off"
            )
    if problems:
        return Check(name, False, "; ".join(problems))
    return Check(name, True, " and ".join(cookie for cookie, _ in canaries.intercom) + " arrived unchanged")


def check_upstream(canaries: Canaries, answer: Answer) -> Check:
    """Upstream would get exactly the two Intercom cookies as sent; every decoy that arrived is stripped."""
    name = UPSTREAM
    problems = []
    expected = [(cookie, digest(canaries.nonce, value)) for cookie, value in canaries.intercom]
    received = {seen.name for seen in answer.received}
    for cookie, value_digest in expected:
        if any(seen.name == cookie and seen.digest == value_digest for seen in answer.upstream):
            continue
        if cookie not in answer.allowed:
            problems.append(
                f"{cookie} would be stripped: the gateway forwards only {', '.join(answer.allowed) or 'nothing'} "
                f"(workspace {answer.workspace_id}); check workspace_id and cookie_forwarding on both sides"
            )
        else:
            why = "it did not reach the gateway" if cookie not in received else "not with the value the probe sent"
            problems.append(f"{cookie} would not go upstream as sent: {why}")
    for seen in answer.upstream:
        if (seen.name, seen.digest) in expected:
            continue
        source = canaries.whose(seen)
        if source is None:
            problems.append(
                f"{seen.name} would also go upstream with a value the probe never sent: something in front "
                "injects cookies under the Intercom names; remove that rule"
            )
        elif source != seen.name:
            problems.append(f"decoy {source} would go upstream as {seen.name}: a rule in front renames cookies")
        else:
            problems.append(f"decoy {source} would go upstream: the gateway's allow-list lets it through")
    decoys = {cookie for cookie, _ in canaries.decoys}
    arrived = decoys & received
    kept = sorted(arrived - set(answer.stripped))
    if kept:
        problems.append(f"decoys not stripped: {', '.join(kept)}")
    if problems:
        return Check(name, False, "; ".join(problems))
    what = f"{len(arrived)} of {len(decoys)} decoys arrived and would be stripped"
    if not arrived:
        what = "no decoy reached the gateway (stripped in front)"
    return Check(name, True, f"only the two Intercom cookies would go upstream; {what}")


def check_redirect(status: int | None, location: str | None, error: str | None, http_url: URL, https_url: URL) -> Check:
    """``http://domain/`` answers a permanent redirect to the same path over HTTPS on the domain."""
    name = "HTTP to HTTPS"
    if error is not None:
        return Check(name, False, f"{http_url} unreachable ({error}); listen on port 80 and redirect to HTTPS")
    target = URL(location) if location else None
    wanted = https_url.with_path("/")
    if status not in (301, 308) or target is None or target.with_query(None) != wanted:
        got = f"{status}" + (f" to {location}" if location else "")
        return Check(name, False, f"{http_url} answered {got}; redirect it with 308 to {wanted} (Always Use HTTPS)")
    note = " (301: browsers resend a POST as GET; 308 keeps it)" if status == 301 else ""
    return Check(name, True, f"{http_url} answers {status} to {target}{note}")


def check_hsts(value: str | None) -> Check:
    """The HTTPS answer carries Strict-Transport-Security with a max-age."""
    name = HSTS
    match = _MAX_AGE.search(value or "")
    if match is None or int(match[1]) == 0:
        said = f"is {value!r}" if value else "is missing"
        return Check(name, False, f"Strict-Transport-Security {said}; set tls.hsts_max_age and let the CDN pass it")
    return Check(name, True, f"max-age={match[1]} ({int(match[1]) // 86400} days)")


def check_certificate(info: CertificateInfo | str, host: str, now: datetime, min_days: int) -> Check:
    """The certificate in front is trusted, names the domain and has ``min_days`` left."""
    name = "TLS certificate"
    if isinstance(info, str):
        return Check(name, False, f"{info}; install a certificate for {host} from a CA the clients trust (or --ca)")
    left = (info.not_after - now).days
    problems = []
    if not info.names_host(host):
        problems.append(f"does not name {host} (names: {', '.join(info.names) or 'none'})")
    if info.not_before > now:
        problems.append(f"not valid before {info.not_before:%Y-%m-%d}")
    if left < min_days:
        problems.append(f"{'expired' if left < 0 else f'{left} days left'}, under {min_days}; renew it")
    if problems:
        return Check(name, False, "; ".join(problems))
    return Check(name, True, f"names {host}, valid until {info.not_after:%Y-%m-%d} ({left} days)")


def check_set_cookie(
    headers: Sequence[str], cookie: str, nonce: str, cookie_domain: str, signed: Answer | None
) -> Check:
    """The gateway's rewrite of an upstream Set-Cookie comes back through the CDN Secure, with the right Domain."""
    name = SET_COOKIE
    value = f"probe-{nonce}"
    arrived = [header for header in headers if header.partition("=")[0].strip() == cookie]
    if not arrived:
        return Check(name, False, f"no Set-Cookie for {cookie} came back; let the CDN pass Set-Cookie through")
    morsel = SimpleCookie(arrived[-1]).get(cookie)
    problems = []
    if morsel is None or morsel.value != value:
        problems.append("it came back with another value")
    else:
        if not morsel["secure"]:
            problems.append("Secure is missing; the CDN must not rewrite cookie attributes")
        if morsel["domain"].lstrip(".").lower() != cookie_domain:
            problems.append(f"Domain is {morsel['domain'] or 'unset'}, not {cookie_domain}; check cookie_domain")
    note = ""
    if signed is not None and signed.set_cookie != arrived[-1]:
        # Only the gateway's words are signed: say what the CDN changed, whether or not it matters.
        note = f" (the gateway sent {signed.set_cookie!r}, the CDN passed back {arrived[-1]!r})"
    if problems:
        return Check(name, False, "; ".join(problems) + note)
    return Check(name, True, f"{cookie} comes back Secure with Domain={cookie_domain}{note}")


# --- the network part --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """Where to probe, and how to reach it."""

    url: URL
    """The custom domain's HTTPS URL (scheme, host and port only are used)."""
    http_port: int = 80
    pinned: Mapping[tuple[str, int], str] = field(default_factory=dict)
    """``--resolve``: (host, port) to the address to connect to instead of asking DNS."""
    ca: Path | None = None

    @property
    def host(self) -> str:
        """The custom domain."""
        return self.url.host or ""

    @property
    def http_url(self) -> URL:
        """The domain's plain-HTTP home page."""
        return URL.build(scheme="http", host=self.host, port=self.http_port, path="/")

    def address(self, port: int) -> str:
        """Where to connect for ``port`` of the domain."""
        return self.pinned.get((self.host.lower(), port), self.host)

    def ssl_context(self, *, check_hostname: bool = True) -> ssl.SSLContext:
        """A verifying client context that trusts ``ca`` (or the system's CAs)."""
        context = ssl.create_default_context(cafile=self.ca)
        context.check_hostname = check_hostname
        return context


def parse_resolve(entries: Sequence[str]) -> dict[tuple[str, int], str]:
    """``HOST:PORT:ADDR`` entries, as curl's ``--resolve``; raises ValueError naming a bad one."""
    pinned = {}
    for entry in entries:
        host, _, rest = entry.partition(":")
        port, _, address = rest.partition(":")
        if not host or not port.isdigit() or not address:
            raise ValueError(f"{entry!r} is not HOST:PORT:ADDR")
        pinned[(host.lower(), int(port))] = address.strip("[]")
    return pinned


class _PinnedResolver(AbstractResolver):
    """The system resolver, except for the (host, port) pairs ``--resolve`` pins."""

    def __init__(self, target: Target) -> None:
        self._target = target
        self._system = aiohttp.ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        if (host.lower(), port) not in self._target.pinned:
            return await self._system.resolve(host, port, family)
        address = self._target.address(port)
        pinned_family = socket.AF_INET6 if ":" in address else socket.AF_INET
        return [
            ResolveResult(
                hostname=host, host=address, port=port, family=pinned_family, proto=0, flags=socket.AI_NUMERICHOST
            )
        ]

    async def close(self) -> None:
        await self._system.close()


@dataclass
class Observed:
    """Everything the probe saw, for the checks to judge."""

    status: int | None = None
    body: bytes = b""
    signature: str | None = None
    set_cookies: list[str] = field(default_factory=list)
    hsts: str | None = None
    error: str | None = None
    redirect_status: int | None = None
    location: str | None = None
    redirect_error: str | None = None
    certificate: CertificateInfo | str = "not checked"


def _reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


async def _certificate(target: Target) -> CertificateInfo | str:
    """The certificate the domain's HTTPS port presents, verified up to a trusted CA (names judged apart)."""
    port = target.url.port or 443
    try:
        _, writer = await asyncio.wait_for(
            asyncio.open_connection(
                target.address(port), port, ssl=target.ssl_context(check_hostname=False), server_hostname=target.host
            ),
            TIMEOUT,
        )
    except (OSError, TimeoutError, ssl.SSLError) as exc:
        return f"no trusted TLS connection to {target.host}:{port} ({_reason(exc)})"
    der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    writer.close()
    with contextlib.suppress(OSError, ssl.SSLError):
        await writer.wait_closed()
    try:
        return peer_certificate(der)
    except (TypeError, ValueError) as exc:
        return f"{target.host}:{port} presented no readable certificate ({_reason(exc)})"


async def observe(target: Target, token: bytes, canaries: Canaries) -> Observed:
    """Ask the probe endpoint through whatever is in front, try the plain-HTTP URL, look at the certificate."""
    seen = Observed()
    connector = aiohttp.TCPConnector(ssl=target.ssl_context(), resolver=_PinnedResolver(target))
    timeout = aiohttp.ClientTimeout(total=TIMEOUT)
    async with aiohttp.ClientSession(
        connector=connector, timeout=timeout, cookie_jar=aiohttp.DummyCookieJar()
    ) as session:
        url = target.url.with_path(PROBE_PATH).with_query(nonce=canaries.nonce)
        headers = {"Authorization": probe_authorization(token, canaries.nonce, time.time())}
        try:
            async with session.get(url, headers={**headers, "Cookie": canaries.cookie_header()}) as response:
                seen.status, seen.body = response.status, await response.read()
                seen.signature = response.headers.get(SIGNATURE_HEADER)
                seen.set_cookies = response.headers.getall("Set-Cookie", [])
                seen.hsts = response.headers.get("Strict-Transport-Security")
        except (aiohttp.ClientError, TimeoutError) as exc:
            seen.error = _reason(exc)
        try:
            async with session.get(target.http_url, allow_redirects=False) as response:
                seen.redirect_status, seen.location = response.status, response.headers.get("Location")
        except (aiohttp.ClientError, TimeoutError) as exc:
            seen.redirect_error = _reason(exc)
    seen.certificate = await _certificate(target)
    return seen


def judge(
    observed: Observed,
    canaries: Canaries,
    *,
    target: Target,
    token: bytes,
    cookie_domain: str,
    now: datetime,
    min_days: int,
) -> list[Check]:
    """One check per hop, in the order a request crosses them."""
    # Without an answer at all, the checks that judge one say so, not what a missing answer lacks.
    unanswered = NO_ANSWER if observed.error is None else f"not checked: {target.url} unreachable"
    if observed.error is not None:
        parsed: Answer | str = f"{target.url.with_path(PROBE_PATH)} unreachable ({observed.error})"
    else:
        parsed = check_answer(observed.status, observed.body, observed.signature, token, canaries.nonce)
    checks = [check_certificate(observed.certificate, target.host, now, min_days)]
    if isinstance(parsed, str):
        checks += [
            Check(ANSWER, False, parsed),
            Check(AT_GATEWAY, False, unanswered),
            Check(UPSTREAM, False, unanswered),
        ]
        signed = None
    else:
        signed = parsed
        checks += [
            Check(ANSWER, True, f"signed by the gateway for {parsed.domain}, workspace {parsed.workspace_id}"),
            check_received(canaries, parsed),
            check_upstream(canaries, parsed),
        ]
    if signed is None and not observed.set_cookies:
        checks.append(Check(SET_COOKIE, False, unanswered))
    else:
        session = canaries.intercom[0][0]
        checks.append(check_set_cookie(observed.set_cookies, session, canaries.nonce, cookie_domain, signed))
    checks += [
        check_hsts(observed.hsts) if observed.error is None else Check(HSTS, False, unanswered),
        check_redirect(
            observed.redirect_status, observed.location, observed.redirect_error, target.http_url, target.url
        ),
    ]
    return checks

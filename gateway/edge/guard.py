"""The identity and access stages of the pipeline.

``identity_stage`` says who the visitor is (or why not) on every request;
``access_stage`` decides, on the portal's own paths only, whether they
may come in. Both only wire the pure functions of ``identity.py``,
``rules.py`` and ``visibility.py`` to the request, the store and the audit.
``account_context`` tells every page's header who is signed in. Routes read what they need of the
pipeline through their own keys (``STORE``, ``VISIBILITY``, ``CLOCK``), not through the ``Guard``.
"""

from __future__ import annotations

import contextlib
import re
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, TypeVar
from urllib.parse import quote

from aiohttp import web
from yarl import URL

from gateway.config import GatewayConfig
from gateway.edge.headers import request_cookies
from gateway.errors import Forbidden, Link, StoreUnavailable, Unauthorized
from gateway.namespace import DEV_LOGIN_PATH, NAMESPACES, SIGN_IN_PATH, SIGN_OUT_PATH, request_namespace
from gateway.observe.audit import AUDIT_ENTRY, AccessResult, IdentityResult
from gateway.observe.metrics import METRICS
from gateway.policy.credentials import (
    CredentialSource,
    Presented,
    Verifiers,
    identify,
    messenger_sources,
    portal_sources,
)
from gateway.policy.identity import Identity, JWTVerifier, Rejection
from gateway.policy.redirects import safe_return_to
from gateway.policy.rules import Decision, Policy, compile_rules
from gateway.policy.visibility import VisibilityPolicy, Visitor
from gateway.proxy.forward import UPSTREAM_SESSION
from gateway.run.periodic import periodic
from gateway.run.protocol import arrived_ns
from gateway.store.models import Contact
from gateway.store.protocol import Store

CHALLENGE = 'Bearer realm="portal"'
DECISIONS_KEPT = 10_000  # access decisions remembered, as many as the store's contact cache holds
_HEADER_SAFE = "".join(chr(code) for code in range(0x21, 0x7F) if chr(code) != "%")
_HEADER_SAFE_VALUE = re.compile(r"[\x21-\x24\x26-\x7e]*")  # _HEADER_SAFE's characters only

CREDENTIALS = web.RequestKey("credentials", Identity | Rejection | None)  # type: ignore[arg-type]
VISITOR = web.RequestKey("visitor", Visitor)
STORE = web.AppKey("store", Store)
CONTACT = web.RequestKey("contact", Contact | None)  # type: ignore[arg-type]


async def visitor_contact(request: web.Request, user_id: str) -> Contact | None:
    """The verified visitor's contact, read from the store once per request: the page header, the access
    decision and the upstream headers all ask for it."""
    if CONTACT in request:
        return request[CONTACT]
    # Requests read together share the store's check that nothing was committed since (gateway/run/protocol.py).
    contact = await request.app[STORE].contact_by_user_id(user_id, arrived_ns(request))
    request[CONTACT] = contact  # type: ignore[misc]  # mypy cannot infer the value type of a union-typed key
    return contact


VISIBILITY = web.AppKey("visibility", VisibilityPolicy)
Clock = Callable[[], float]
"""Unix seconds now (``time.time`` when serving): passed in, never read directly, so that time can be set."""
CLOCK: web.AppKey[Clock] = web.AppKey("clock", Clock)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Guard:
    """What the identity and access stages need, compiled once from the config (routes get theirs by key)."""

    verifiers: Verifiers
    sources: tuple[CredentialSource, ...]
    """The portal's credential sources, in precedence order."""
    messenger_sources: tuple[CredentialSource, ...]
    """The sources a Messenger call's ``user_data`` puts in front of the portal's."""
    jwt_cookie: str
    enforce: bool
    access: Policy
    portal_path: str
    domain: str
    login_url: URL | None
    dev_login: bool
    clock: Clock = time.time
    _decided: dict[tuple[int, int], tuple[Identity, Contact | None, Decision]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )
    """Access decisions by the visitor's identity and contact objects (held, so their ids stay theirs)."""

    @classmethod
    def from_config(cls, config: GatewayConfig, verifier: JWTVerifier, clock: Clock = time.time) -> Guard:
        """Compile the rules, and build the credential sources and their verifiers."""
        identity = config.identity
        secrets = tuple(secret.get_secret_value() for secret in identity.jwt.secrets)
        return cls(
            verifiers=Verifiers(verifier, secrets if identity.hmac.enabled else None),
            sources=portal_sources(identity),
            messenger_sources=messenger_sources(identity),
            jwt_cookie=identity.jwt.cookie,
            enforce=identity.enforce,
            access=compile_rules(config.portal.access, "portal.access"),
            portal_path=config.portal.path,
            domain=config.domain,
            login_url=identity.login_url,
            dev_login=identity.dev_login,
            clock=clock,
        )

    def credentials(self, request: web.Request) -> Identity | Rejection | None:
        """The visitor's identity from the first of the portal's sources that presents a credential."""
        if not self.enforce:
            return None
        return self.identify(self.sources, presented(request))

    def identify(self, sources: tuple[CredentialSource, ...], what: Presented) -> Identity | Rejection | None:
        """The first credential ``sources`` find in ``what``, verified now; None when none finds one."""
        return identify(sources, what, self.verifiers, self.clock())

    def admits(self, visitor: Visitor) -> Decision:
        """The access rules' decision on ``visitor``, made once per identity and contact.

        Both are immutable, and the same objects come back while nothing changes: the identity from the
        verifier's cache for the same token, the contact from the store's cache until any commit (which
        gives a new contact object, and so a new decision). SECURITY: a decision is reused only for the
        very objects it was made on (``is``), so a changed membership or claim is always decided afresh.
        """
        identity, contact = visitor.identity, visitor.contact
        key = (id(identity), id(contact))
        known = self._decided.get(key)
        if known is not None and known[0] is identity and known[1] is contact:
            return known[2]
        decision = self.access(visitor.facts())
        if len(self._decided) >= DECISIONS_KEPT:
            self._decided.clear()  # bounded; a few µs to decide again
        self._decided[key] = (identity, contact, decision)
        return decision

    def landing(self, return_to: str | None) -> str:
        """``return_to`` when it is a same-origin path, else the portal: where a sign-in or sign-out lands."""
        return safe_return_to(return_to, domain=self.domain, fallback=self.portal_path)

    @cached_property
    def _login(self) -> URL | None:
        return URL(DEV_LOGIN_PATH) if self.dev_login else self.login_url

    def sign_in_url(self, return_to: str | None) -> URL | None:
        """The login page with an absolute same-origin ``return_to``; None when there is no login page."""
        if self._login is None:
            return None
        return self._login.update_query(return_to=f"https://{self.domain}{self.landing(return_to)}")

    @cached_property
    def sign_out_url(self) -> str:
        """Sign out, back to the Help Center home: a portal page would only send the visitor to sign in again."""
        return str(URL(SIGN_OUT_PATH).with_query(return_to="/"))

    def switch_account_url(self, return_to: str | None) -> str | None:
        """Sign out, then sign in (as anyone) and come back to ``return_to``; None when there is no login page."""
        if self._login is None:
            return None
        target = self.landing(return_to)
        # Both hops stay on this domain (relative paths), as /signout's return_to must.
        return str(URL(SIGN_OUT_PATH).with_query(return_to=str(URL(SIGN_IN_PATH).with_query(return_to=target))))


GUARD = web.AppKey("guard", Guard)


def presented(request: web.Request, user_data: dict[str, Any] | None = None) -> Presented:
    """What ``request`` presents to the credential sources, as plain data (plus a Messenger call's user_data)."""
    return Presented(request.headers.get("Authorization", ""), request_cookies(request), user_data)


JWKS_REFRESH_SECONDS = 600.0


async def jwks_context(app: web.Application) -> AsyncIterator[None]:
    """Cleanup context: with ``jwks_url`` set, fetch the keys at start and again every few minutes."""
    jwks = app[GUARD].verifiers.jwt.jwks
    if jwks is None:
        yield
        return
    session = app[UPSTREAM_SESSION]
    await jwks.refresh(session)
    async with periodic(lambda: jwks.refresh(session), JWKS_REFRESH_SECONDS, name="JWKS refresh"):
        yield


Judgement = TypeVar("Judgement", Identity | Rejection, Identity | Rejection | None)


def stale_keys(guard: Guard, result: Identity | Rejection | None) -> bool:
    """Whether ``result`` names a key the JWKS has not fetched yet, and a fetch may be made now."""
    jwks = guard.verifiers.jwt.jwks
    return (
        isinstance(result, Rejection)
        and result.reason == "unknown_kid"
        and jwks is not None
        and jwks.needs_refetch(guard.clock())
    )


async def rejudged(request: web.Request, judge: Callable[[], Judgement]) -> Judgement:
    """``judge()`` after fetching the JWKS anew: a new signing key may have been published since the last fetch."""
    jwks = request.app[GUARD].verifiers.jwt.jwks
    if jwks is not None:
        await jwks.refresh(request.app[UPSTREAM_SESSION])
    return judge()


async def judged(request: web.Request, judge: Callable[[], Judgement]) -> Judgement:
    """``judge()``; judged again once after fetching the JWKS anew, when it names a key not fetched yet."""
    result = judge()
    return await rejudged(request, judge) if stale_keys(request.app[GUARD], result) else result


def record_identity(request: web.Request, result: Identity | Rejection | None) -> None:
    """Write an identity outcome into the request's audit entry and the metrics."""
    entry = request[AUDIT_ENTRY]
    if isinstance(result, Identity):
        entry.identity = IdentityResult(method=result.method, user_id=result.user_id, result="verified")
    elif isinstance(result, Rejection):
        entry.identity = IdentityResult(method=result.method, result="rejected", reason=result.reason)
    if result is not None:
        metrics = request.app[METRICS]
        metrics.count(metrics.identity_results, result.method, entry.identity.result, entry.identity.reason or "")


def identity_stage(request: web.Request) -> Awaitable[None] | None:
    """Identify the visitor on every request; audit and count the outcome. Never refuses by itself.

    Synchronous but for the rare token whose key must be fetched first (then it returns what to await).
    """
    if not request_namespace(request).visitor_token:
        # The admin API and the probe have their own bearer token: it is not a visitor's JWT, nor a failed one.
        request[CREDENTIALS] = None
        return None
    guard = request.app[GUARD]
    result = guard.credentials(request)
    if stale_keys(guard, result):
        return _identified_after_refetch(request)
    _identified(request, result)
    return None


def _identified(request: web.Request, result: Identity | Rejection | None) -> None:
    request[CREDENTIALS] = result
    record_identity(request, result)


async def _identified_after_refetch(request: web.Request) -> None:
    guard = request.app[GUARD]
    _identified(request, await rejudged(request, lambda: guard.credentials(request)))


async def upstream_identity(request: web.Request) -> dict[str, str]:
    """The X-Portal-* headers that tell upstream who a verified visitor is (none for anyone else)."""
    result = request[CREDENTIALS]
    if not isinstance(result, Identity):
        return {}
    visitor = request.get(VISITOR) or Visitor(result, await visitor_contact(request, result.user_id))
    headers = {
        "X-Portal-User-Id": result.user_id,
        "X-Portal-Company-Ids": ",".join(company.company_id for company in visitor.companies),
    }
    if visitor.email:
        headers["X-Portal-Email"] = visitor.email
    # SECURITY: signed claims still must not split headers; anything outside printable ASCII is percent-encoded
    # (a value of printable ASCII but "%" alone is what quote() would give back: it is kept without the call).
    return {
        name: value if _HEADER_SAFE_VALUE.fullmatch(value) else quote(value, safe=_HEADER_SAFE)
        for name, value in headers.items()
    }


def _back_here(request: web.Request) -> str | None:
    """Where a page's sign-in link comes back to: this page, or (after a form was sent) the portal."""
    # SECURITY: a page never quotes the request's query back (it may hold a token or a secret): only the path.
    return request.rel_url.raw_path if request.method in ("GET", "HEAD") else None


def _wants_page(request: web.Request) -> bool:
    return request.method in ("GET", "HEAD") and not request_namespace(request).json_errors


@dataclass(frozen=True)
class Account:
    """The page header's account: who is signed in, and the links to sign in or out."""

    page: weakref.ref[web.Request]
    """The request whose page shows the header, held weakly: the request's template context holds this account,
    and a cycle between the two would leave every request to the cyclic garbage collector to free."""
    known: Visitor | None
    """The verified visitor as far as the identity stage knows them; None when nobody is signed in."""

    @property
    def request(self) -> web.Request:
        """The request whose page is being rendered (templates read an account only while it is answered)."""
        request = self.page()
        if request is None:
            raise RuntimeError("an account was read after its request was answered")
        return request

    @cached_property
    def name(self) -> str | None:
        """The visitor's name, else their email (else user id); None when nobody is signed in."""
        # On portal pages the access stage has read the store's contact: its name wins over a bare email claim.
        visitor = self.request.get(VISITOR) or self.known
        if visitor is None:
            return None
        return visitor.name or visitor.email or visitor.identity.user_id

    @property
    def sign_out(self) -> str:
        """The Sign out link."""
        return self.request.app[GUARD].sign_out_url

    @cached_property
    def sign_in(self) -> str | None:
        """The Sign in link, back to this page; None when there is no login page."""
        login = self.request.app[GUARD].sign_in_url(_back_here(self.request))
        return str(login) if login is not None else None


async def account_context(request: web.Request) -> dict[str, Account]:
    """aiohttp-jinja2 context processor: ``account``, the header every page shows (the error pages too)."""
    # Runs on every request that passed the identity stage, most of which render nothing: links are
    # only built if a page asks for them, and the store is asked only when the token names nobody.
    credentials = request.get(CREDENTIALS)
    known = Visitor(credentials, None) if isinstance(credentials, Identity) else None
    if known is not None and known.name is None and known.email is None:
        # A bare user id: the store may know their name. A header is not worth failing the page for.
        with contextlib.suppress(StoreUnavailable):
            known = Visitor(known.identity, await visitor_contact(request, known.identity.user_id))
    return {"account": Account(weakref.ref(request), known)}


def access_stage(request: web.Request) -> Awaitable[None] | None:
    """On portal paths: no identity, sign in; a bad token, 401; rules not met, 403; otherwise a Visitor."""
    # SECURITY: decided on the broadest reading of the path (gateway/namespace.py), so that ``/TICKETS``,
    # ``/tickets;x`` or ``//tickets.`` cannot pass here as "not the portal" and be served upstream as it.
    if not request.app[NAMESPACES].decided(request.path).identity:
        return None
    return _admitted(request)


async def _admitted(request: web.Request) -> None:
    """The access decision on a portal path: raises the page that refuses, else sets the Visitor."""
    guard = request.app[GUARD]
    entry = request[AUDIT_ENTRY]
    result = request[CREDENTIALS]
    if not isinstance(result, Identity):
        entry.access = AccessResult(decision="deny", rule="identity required")
        # An expired token is a sign-in that ran out: like no token at all, the way on is to sign in again.
        # SECURITY: any other refusal (bad signature, wrong algorithm, malformed) is a configuration problem
        # that a redirect would turn into a loop through the login page: it gets the 401 page instead.
        if (result is None or result.reason == "expired") and _wants_page(request):
            redirect = guard.sign_in_url(str(request.rel_url))
            if redirect is not None:
                raise web.HTTPFound(redirect)
        login = guard.sign_in_url(_back_here(request))
        if result is None:
            raise Unauthorized(
                link=Link(str(login), "Sign in") if login else None, headers={"WWW-Authenticate": CHALLENGE}
            )
        raise Unauthorized(
            "Your sign-in could not be confirmed. Sign in again; if you come back to this page, "
            "let your company's admin know.",
            title="Please sign in again",
            link=Link(str(login), "Sign in again") if login else None,
            # RFC 6750: a token was sent and refused.
            headers={"WWW-Authenticate": f'{CHALLENGE}, error="invalid_token"'},
        )
    # SECURITY: the store's contact cache is emptied by any commit (store/sqlite.py): a membership the admin
    # API removes (or a company's attributes it changes) is out of the very next request's access decision,
    # visibility and headers.
    visitor = Visitor(identity=result, contact=await visitor_contact(request, result.user_id))
    decision = guard.admits(visitor)
    entry.access = AccessResult(decision="allow" if decision.allowed else "deny", rule=decision.rule)
    if not decision.allowed:
        # SECURITY: a signed-in visitor outside the audience gets a 403, never a sign-in loop.
        switch = guard.switch_account_url(_back_here(request))
        raise Forbidden(
            "The support portal is not open to the account you are signed in with. Ask your company's admin "
            "for access to the support portal, or sign in as someone else.",
            title="You don't have access to this portal",
            link=Link(switch, "Sign in as someone else") if switch else None,
        )
    request[VISITOR] = visitor

"""The identity and access stages of the pipeline.

``identity_middleware`` says who the visitor is (or why not) on every request;
``access_middleware`` decides, on the portal's own paths only, whether they
may come in. Both only wire the pure functions of ``identity.py``,
``rules.py`` and ``visibility.py`` to the request, the store and the audit.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from functools import cached_property
from typing import TypeVar
from urllib.parse import quote

from aiohttp import web
from aiohttp.typedefs import Handler
from yarl import URL

from gateway.audit import AUDIT_ENTRY, AccessResult, IdentityResult
from gateway.config import GatewayConfig
from gateway.cookies import cookie_value
from gateway.identity import Identity, JWTVerifier, Rejection, verify_hmac
from gateway.metrics import METRICS
from gateway.paths import decision_path
from gateway.proxy import UPSTREAM_SESSION
from gateway.redirects import safe_return_to
from gateway.rules import Policy, compile_rules
from gateway.store import SQLiteStore
from gateway.visibility import VisibilityPolicy, Visitor

API_PREFIX = "/api/v1/"
ADMIN_PREFIX = "/admin/api"
PROBE_PATH = "/_gateway/probe"  # the end-to-end probe's endpoint (routes/probe.py), behind the admin token too
PUBLIC_API = frozenset({"/api/v1/openapi.json"})
DEV_LOGIN_PATH = "/dev/login"
_HEADER_SAFE = "".join(chr(code) for code in range(0x21, 0x7F) if chr(code) != "%")

CREDENTIALS = web.RequestKey("credentials", Identity | Rejection | None)  # type: ignore[arg-type]
VISITOR = web.RequestKey("visitor", Visitor)
STORE = web.AppKey("store", SQLiteStore)


@dataclass(frozen=True)
class Guard:
    """Everything the identity and access stages need, compiled once from the config."""

    verifier: JWTVerifier
    hmac_secrets: tuple[str, ...] | None
    jwt_cookie: str
    hmac_cookies: tuple[str, str]
    enforce: bool
    access: Policy
    visibility: VisibilityPolicy
    portal_path: str
    domain: str
    login_url: URL | None
    dev_login: bool
    clock: Callable[[], float] = time.time

    @classmethod
    def from_config(cls, config: GatewayConfig, verifier: JWTVerifier) -> Guard:
        """Compile the rules and gather the identity settings."""
        identity = config.identity
        secrets = tuple(secret.get_secret_value() for secret in identity.jwt.secrets)
        return cls(
            verifier=verifier,
            hmac_secrets=secrets if identity.hmac.enabled else None,
            jwt_cookie=identity.jwt.cookie,
            hmac_cookies=(identity.hmac.user_id_cookie, identity.hmac.user_hash_cookie),
            enforce=identity.enforce,
            access=compile_rules(config.portal.access, "portal.access"),
            visibility=VisibilityPolicy(config.portal.visibility),
            portal_path=config.portal.path,
            domain=config.domain,
            login_url=identity.login_url,
            dev_login=identity.dev_login,
        )

    def protects(self, path: str) -> bool:
        """Whether ``path`` belongs to the portal (pages or JSON API) and needs a visitor."""
        # SECURITY: decided on the broadest reading of the path (paths.py), so that ``/TICKETS``,
        # ``/tickets;x`` or ``//tickets.`` cannot pass here as "not the portal" and be served upstream as it.
        path = decision_path(path)
        if path == API_PREFIX.rstrip("/") or path.startswith(API_PREFIX):
            return path not in PUBLIC_API
        portal = self._portal_decision_path
        return path == portal or path.startswith(portal + "/")

    @cached_property
    def _portal_decision_path(self) -> str:
        return decision_path(self.portal_path)

    def credentials(self, request: web.Request) -> Identity | Rejection | None:
        """The visitor's identity from the bearer token, the JWT cookie or (if enabled) the legacy HMAC cookies."""
        if not self.enforce:
            return None
        authorization = request.headers.get("Authorization", "")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return self.verifier.verify(token.strip(), self.clock())
        cookies = request.headers.getall("Cookie", ())
        from_cookie = cookie_value(cookies, self.jwt_cookie)
        if from_cookie:
            return self.verifier.verify(from_cookie, self.clock())
        if self.hmac_secrets is not None:
            user_id, user_hash = (cookie_value(cookies, name) or "" for name in self.hmac_cookies)
            if user_id and user_hash:
                return verify_hmac(user_id, user_hash, self.hmac_secrets)
        return None

    def sign_in_url(self, return_to: str | None) -> URL | None:
        """The login page with an absolute same-origin ``return_to``; None when there is no login page."""
        target = safe_return_to(return_to, domain=self.domain, fallback=self.portal_path)
        login = URL(DEV_LOGIN_PATH) if self.dev_login else self.login_url
        return login.update_query(return_to=f"https://{self.domain}{target}") if login is not None else None


GUARD = web.AppKey("guard", Guard)
JWKS_REFRESH_SECONDS = 600.0


async def jwks_context(app: web.Application) -> AsyncIterator[None]:
    """Cleanup context: with ``jwks_url`` set, fetch the keys at start and again every few minutes."""
    jwks = app[GUARD].verifier.jwks
    if jwks is None:
        yield
        return
    session = app[UPSTREAM_SESSION]
    await jwks.refresh(session)

    async def refresh_periodically() -> None:
        while True:
            await asyncio.sleep(JWKS_REFRESH_SECONDS)
            await jwks.refresh(session)

    task = asyncio.create_task(refresh_periodically())
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


Judgement = TypeVar("Judgement", Identity | Rejection, Identity | Rejection | None)


async def judged(request: web.Request, judge: Callable[[], Judgement]) -> Judgement:
    """``judge()``; judged again once after fetching the JWKS anew, when it names a key not fetched yet."""
    guard = request.app[GUARD]
    result = judge()
    jwks = guard.verifier.jwks
    if isinstance(result, Rejection) and result.reason == "unknown_kid" and jwks and jwks.needs_refetch(guard.clock()):
        # A new signing key may have been published since the last fetch: fetch once, then judge again.
        await jwks.refresh(request.app[UPSTREAM_SESSION])
        result = judge()
    return result


def record_identity(request: web.Request, result: Identity | Rejection | None) -> None:
    """Write an identity outcome into the request's audit entry and the metrics."""
    entry = request[AUDIT_ENTRY]
    if isinstance(result, Identity):
        entry.identity = IdentityResult(method=result.method, user_id=result.user_id, result="verified")
    elif isinstance(result, Rejection):
        entry.identity = IdentityResult(method=result.method, result="rejected", reason=result.reason)
    if result is not None:
        metrics = request.app[METRICS]
        metrics.child(metrics.identity_results, result.method, entry.identity.result, entry.identity.reason or "").inc()


@web.middleware
async def identity_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Identify the visitor on every request; audit and count the outcome. Never refuses by itself."""
    guard = request.app[GUARD]
    if request.path in (ADMIN_PREFIX, PROBE_PATH) or request.path.startswith(ADMIN_PREFIX + "/"):
        # The admin API and the probe have their own bearer token: it is not a visitor's JWT, nor a failed one.
        request[CREDENTIALS] = None
        return await handler(request)
    result = await judged(request, lambda: guard.credentials(request))
    request[CREDENTIALS] = result
    record_identity(request, result)
    return await handler(request)


async def upstream_identity(request: web.Request) -> dict[str, str]:
    """The X-Portal-* headers that tell upstream who a verified visitor is (none for anyone else)."""
    result = request[CREDENTIALS]
    if not isinstance(result, Identity):
        return {}
    visitor = request.get(VISITOR) or Visitor(result, await request.app[STORE].contact_by_user_id(result.user_id))
    headers = {
        "X-Portal-User-Id": result.user_id,
        "X-Portal-Company-Ids": ",".join(company.company_id for company in visitor.companies),
    }
    if visitor.email:
        headers["X-Portal-Email"] = visitor.email
    # SECURITY: signed claims still must not split headers; anything outside printable ASCII is percent-encoded.
    return {name: quote(value, safe=_HEADER_SAFE) for name, value in headers.items()}


def _wants_page(request: web.Request) -> bool:
    return request.method in ("GET", "HEAD") and not request.path.startswith(API_PREFIX)


@web.middleware
async def access_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """On portal paths: no identity, sign in; a bad token, 401; rules not met, 403; otherwise a Visitor."""
    guard = request.app[GUARD]
    if not guard.protects(request.path):
        return await handler(request)
    entry = request[AUDIT_ENTRY]
    result = request[CREDENTIALS]
    if not isinstance(result, Identity):
        entry.access = AccessResult(decision="deny", rule="identity required")
        login = guard.sign_in_url(str(request.rel_url)) if result is None and _wants_page(request) else None
        if login is not None:
            raise web.HTTPFound(login)
        raise web.HTTPUnauthorized(headers={"WWW-Authenticate": 'Bearer realm="portal"'})
    # SECURITY: the store's contact cache is emptied by any commit (store/sqlite.py): a membership the admin
    # API removes (or a company's attributes it changes) is out of the very next request's access decision,
    # visibility and headers.
    visitor = Visitor(identity=result, contact=await request.app[STORE].contact_by_user_id(result.user_id))
    decision = guard.access(visitor.facts())
    entry.access = AccessResult(decision="allow" if decision.allowed else "deny", rule=decision.rule)
    if not decision.allowed:
        # SECURITY: a signed-in visitor outside the audience gets a 403, never a sign-in loop.
        raise web.HTTPForbidden()
    request[VISITOR] = visitor
    return await handler(request)

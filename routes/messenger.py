"""``/messenger/web/{endpoint}``: Messenger API calls, forwarded to ``messenger.upstream``.

With ``messenger.prevent_company_updates`` the call's query and body are read
(up to ``messenger.max_body_bytes``), the policy of ``companyupdates.py``
decides what company data may pass, and the decision is audited; then the
call goes upstream, rewritten only where the policy removed something.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gateway.config import CONFIG
from gateway.edge.guard import CREDENTIALS, GUARD, STORE, judged, presented, record_identity
from gateway.errors import BadRequest, Forbidden, Unauthorized
from gateway.namespace import MESSENGER_PREFIX
from gateway.observe.audit import AUDIT_ENTRY, CompanyPolicyResult
from gateway.observe.metrics import METRICS
from gateway.policy.companyupdates import (
    BodyError,
    Form,
    Sender,
    Verdict,
    encode,
    parse_form,
    police,
    user_data_of,
)
from gateway.policy.identity import Identity, Rejection
from gateway.proxy.forward import MESSENGER, forward

FORM = "application/x-www-form-urlencoded"
MAX_AUDITED_USER_ID = 200


async def _read_body(request: web.Request, limit: int) -> bytes:
    """The whole body, refused when it is not an uncompressed UTF-8 form or is longer than ``limit``."""
    if not request.body_exists:
        return b""
    if request.content_type != FORM:
        raise BodyError(f"the body is not {FORM}")
    if request.charset not in (None, "utf-8"):
        # SECURITY: the body is read as UTF-8; an upstream honouring another charset would read other fields.
        raise BodyError("the body's charset is not utf-8")
    if request.headers.get("Content-Encoding", "identity").strip().lower() != "identity":
        raise BodyError("a compressed body is not accepted")
    if request.content_length is not None and request.content_length > limit:
        raise BodyError(f"the body is over {limit} bytes")
    body = await request.read()  # already read by the body stage, under its deadline and size cap
    if len(body) > limit:
        raise BodyError(f"the body is over {limit} bytes")
    return body


async def _sender(request: web.Request, user_data: dict[str, Any] | None) -> Sender:
    """Who sent the call: the JWT or legacy ``user_hash`` in ``user_data``, else the portal's own credentials.

    ``user_data``'s sources come first, then the portal's (bearer, JWT cookie, HMAC cookies), all read through
    the same interface. A credential in ``user_data`` that fails verification answers 401 (the reason goes to
    the audit log); the portal's were judged (and audited) once already by the identity stage, and a refused
    one leaves the call anonymous, as it would be for the Help Center.
    """
    guard = request.app[GUARD]
    what = presented(request, user_data)
    result = await judged(request, lambda: guard.identify(guard.messenger_sources, what))
    if result is not None:
        record_identity(request, result)
    else:
        credentials = request[CREDENTIALS]
        if not isinstance(credentials, Identity):
            return Sender()
        result = credentials
    if isinstance(result, Rejection):
        refusal = Unauthorized(f"the {result.method} identity in user_data is not valid")
        refusal.headers["WWW-Authenticate"] = 'Bearer realm="messenger"'
        raise refusal
    contact = await request.app[STORE].contact_by_user_id(result.user_id)
    emails = (result.email, contact.email if contact else None)
    return Sender(
        user_id=result.user_id,
        signed=result.claims if result.method == "jwt" else None,
        companies=frozenset(company.company_id for company in contact.companies) if contact else frozenset(),
        emails=frozenset(email.strip().casefold() for email in emails if email),
    )


def _audited_user(user_data: dict[str, Any] | None, sender: Sender) -> str | None:
    claimed = (user_data or {}).get("user_id")
    user_id = sender.user_id if claimed is None else str(claimed)
    return user_id[:MAX_AUDITED_USER_ID] if user_id is not None else None


def _rewritten(original: Form, kept: Form) -> str | None:
    """The encoded form when the policy changed it; None when the original may go as it came."""
    return None if kept is original else encode(kept)


async def messenger(request: web.Request) -> web.StreamResponse:
    """Forward a Messenger call, with company data the sender did not sign removed (or the call refused)."""
    config = request.app[CONFIG].messenger
    upstream = request.app[MESSENGER]
    if not config.prevent_company_updates:
        return await forward(request, upstream, body=await request.read() if request.body_exists else None)
    entry = request[AUDIT_ENTRY]
    metrics = request.app[METRICS]
    try:
        if "Upgrade" in request.headers:
            # SECURITY: frames of an upgraded connection would cross unread by the policy.
            raise BodyError("the Messenger API is not upgraded to another protocol here")
        raw_query = request.rel_url.raw_query_string
        raw_body = await _read_body(request, config.max_body_bytes)
        query, body = parse_form(raw_query), parse_form(raw_body)
        user_data = user_data_of(query + body)
        sender = await _sender(request, user_data)
        verdict: Verdict = police((query, body), sender)
    except BodyError as exc:
        entry.company_policy = CompanyPolicyResult(action="invalid", reason=str(exc))
        metrics.count(metrics.company_policy, "invalid")
        raise BadRequest(str(exc)) from None
    removed = list(verdict.removals)
    action = "pass" if not removed else config.company_update_action
    entry.company_policy = CompanyPolicyResult(
        action=action, user_id=_audited_user(user_data, sender), verified=verdict.verified, removed=removed
    )
    metrics.count(metrics.company_policy, action)
    if action == "reject":
        fields = ", ".join(f"{item.field} ({item.reason})" for item in removed)
        raise Forbidden(f"company data may change only through the admin API: {fields}")
    kept_query, kept_body = verdict.parts
    new_body = _rewritten(body, kept_body)
    return await forward(
        request,
        upstream,
        query=_rewritten(query, kept_query),
        body=(raw_body if new_body is None else new_body.encode("ascii")) if request.body_exists else None,
    )


def add_routes(app: web.Application) -> None:
    """The Messenger API routes, every method."""
    app.router.add_route("*", MESSENGER_PREFIX + "/{endpoint:.+}", messenger, name="messenger")

"""The one place errors become answers: an HTML page, or JSON for API clients.

Every page carries the request id, so a visitor can quote it and ops can
find the audit record; no page shows an exception, an upstream address or
anything else from inside the gateway. A page is headed in plain words
("Page not found") and may offer the next step as a link ("Sign in again");
a JSON body keeps HTTP's reason phrase as its title, which API clients match on.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from http import HTTPStatus

import aiohttp_jinja2
from aiohttp import web

from gateway.errors import (
    BodyTimeout,
    ChangeRefused,
    Explained,
    IntercomError,
    Link,
    StoreUnavailable,
    UpstreamError,
)
from gateway.namespace import NAMESPACES
from gateway.observe.audit import AUDIT_ENTRY
from gateway.run.protocol import refused_status

log = logging.getLogger(__name__)

_HINTS = {
    400: "The request could not be understood.",
    401: "Please sign in through your company's app, then open this page again.",
    403: "You are signed in, but this page is not open to you.",
    404: "There is nothing at this address.",
    405: "This address does not accept that method.",
    408: "The request took too long to arrive.",
    409: "That change conflicts with what is stored.",
    413: "The request is too large.",
    414: "The address is too long. Try a shorter search.",
    421: "This server does not serve that host name.",
    431: "The request carries too many or too large headers. Clearing this site's cookies may help.",
    502: "The help center could not be reached. Please try again in a moment.",
    503: "Please try again in a moment.",
    504: "The help center did not answer in time. Please try again in a moment.",
}
# A page's heading: what a person reads, instead of the reason phrase ("Not Found", "Forbidden").
_HEADINGS = {
    400: "This request could not be read",
    401: "Please sign in",
    403: "You don't have access to this page",
    404: "Page not found",
    405: "This page cannot do that",
    408: "The request took too long",
    409: "That change conflicts with what is stored",
    413: "The request is too large",
    414: "This address is too long",
    421: "This address is not served here",
    431: "The request's headers are too large",
    500: "Something went wrong on our side",
    502: "The help center is unreachable",
    503: "The help center is not available right now",
    504: "The help center took too long to answer",
}


def wants_json(request: web.Request) -> bool:
    """The API namespaces, and clients that ask for JSON, get JSON errors."""
    if request.app[NAMESPACES].of(request.path).json_errors:
        return True
    accept = request.headers.get("Accept", "")
    return "application/json" in accept and "text/html" not in accept


def error_response(
    request: web.Request,
    status: int,
    title: str,
    detail: str | None = None,
    fields: Sequence[tuple[str, str]] = (),
    *,
    heading: str | None = None,
    link: Link | None = None,
) -> web.Response:
    """The error answer for ``status``: a page or a JSON body, with the request id (and, for JSON, the
    path and reason of each bad input field); the page is headed ``heading`` (else the status's plain
    heading) and offers ``link``."""
    request_id = request[AUDIT_ENTRY].request_id
    detail = detail or _HINTS.get(status, "Something went wrong on our side.")
    if wants_json(request):
        error: dict[str, object] = {"status": status, "title": title, "detail": detail, "request_id": request_id}
        if fields:
            error["fields"] = [{"path": path, "reason": reason} for path, reason in fields]
        return web.json_response({"error": error}, status=status)
    return aiohttp_jinja2.render_template(
        "error.html",
        request,
        {
            "status": status,
            "title": heading or _HEADINGS.get(status, title),
            "detail": detail,
            "request_id": request_id,
            "link": link,
        },
        status=status,
    )


def refused_answer(request: web.Request) -> web.Response | None:
    """The answer to a request standing in for a head the parser refused (gateway/run/protocol.py), else None."""
    refused = refused_status(request)
    return None if refused is None else error_response(request, refused, HTTPStatus(refused).phrase)


def error_answer(request: web.Request, exc: Exception) -> web.Response:
    """The page for an HTTP error (never a redirect: those pass through), an upstream failure or a bug."""
    if isinstance(exc, web.HTTPException):
        if isinstance(exc, Explained):
            response = error_response(request, exc.status, exc.reason, exc.detail, heading=exc.title, link=exc.link)
        else:
            response = error_response(request, exc.status, exc.reason)
        for name in ("Allow", "WWW-Authenticate", "Retry-After"):
            if name in exc.headers:
                response.headers[name] = exc.headers[name]
    elif isinstance(exc, UpstreamError | BodyTimeout | StoreUnavailable | IntercomError):
        response = error_response(request, exc.status, exc.title)
    elif isinstance(exc, ChangeRefused):
        response = error_response(request, exc.status, exc.title, str(exc), exc.fields)
    else:
        log.error("unhandled error", exc_info=exc, extra={"request_id": request[AUDIT_ENTRY].request_id})
        response = error_response(request, 500, "Internal error")
    # SECURITY: a body left half-read (too big, too slow, refused early) is not drained for
    # seconds more, nor parsed as the next request: the connection closes after the page.
    if not request.content.is_eof():
        response.force_close()
    return response

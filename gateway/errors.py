"""The gateway's own error types, in one tree.

    GatewayError
    ├── ConfigError            a configuration value is missing or wrong (exit code 2)
    ├── BodyTimeout            the client stopped sending its request body (408)
    ├── StoreUnavailable       the store is locked, missing or failing (503)
    ├── CopyRefused            ``store copy`` cannot start, or its copy did not arrive whole; ``str()`` says which
    ├── UpstreamError          the upstream could not answer the proxied request
    │   ├── UpstreamUnreachable    connection refused, reset or DNS failure (502)
    │   └── UpstreamTimeout        no answer within ``upstream.read_timeout`` (504)
    ├── ChangeRefused          an admin API change the store will not make; ``str()`` says why
    │   ├── Missing                something it names does not exist (404)
    │   ├── Conflict               it would duplicate something or lose data (409)
    │   └── Invalid                input fields whose values are refused, by path (422)
    └── IntercomError          the Intercom REST API did not do what was asked (502); ``str()`` says what
        ├── IntercomUnauthorized   the access token was refused (401): the sync stops until it is fixed
        ├── IntercomNotFound       the object asked for does not exist there (404)
        ├── IntercomRefused        any other 4xx, with Intercom's own message
        └── IntercomUnavailable    5xx, resets, timeouts or malformed answers, past every retry

    web.HTTPException (aiohttp)
    └── Explained              an HTTP error whose detail, heading and next-step ``Link`` the client may see
        ├── BadRequest             400, with the reason
        ├── Unauthorized           401, with the reason (never the credential)
        ├── Forbidden              403, with the reason
        ├── TooManyRequests        429, with the reason and a Retry-After
        └── ServiceBusy            503, with the reason and a Retry-After

    Link                       not an error: the next step an error page offers (href, label)

Handlers raise these (or ``web.HTTPException``); one error middleware
(gateway/edge/errorpages.py) turns them into a page or a JSON body, so no
handler formats its own errors.
"""

from __future__ import annotations

from typing import NamedTuple

from aiohttp import web
from aiohttp.typedefs import LooseHeaders


class GatewayError(Exception):
    """The root of the gateway's own errors."""


class ConfigError(GatewayError):
    """Configuration keys are invalid; ``str()`` is one line per key: its dotted path and why."""

    def __init__(self, *problems: tuple[str, str]) -> None:
        self.problems = problems
        super().__init__("\n".join(f"{path}: {reason}" if path else reason for path, reason in problems))


class BodyTimeout(GatewayError):
    """The client's request body stopped arriving for longer than ``requests.body_timeout``."""

    status = 408
    title = "Request timeout"


class StoreUnavailable(GatewayError):
    """The store cannot answer now: locked by another process, its file gone, or a disk error."""

    status = 503
    title = "The help center is not available right now"


class CopyRefused(GatewayError):
    """``store copy`` cannot start (the destination holds data, the schemas differ) or its copy did not arrive
    whole; ``str()`` says which."""


class UpstreamError(GatewayError):
    """The upstream did not produce a response; carries the HTTP status to answer with."""

    status = 502
    title = "Bad gateway"
    kind = "error"


class UpstreamUnreachable(UpstreamError):
    """The upstream refused or dropped the connection before answering."""

    status = 502
    title = "The help center is unreachable"
    kind = "unreachable"


class UpstreamTimeout(UpstreamError):
    """The upstream did not answer within the configured read timeout."""

    status = 504
    title = "The help center took too long to answer"
    kind = "timeout"


class ChangeRefused(GatewayError):
    """An admin API change the store will not make; carries the status, and bad fields as (path, reason)."""

    status = 400
    title = "Bad request"

    def __init__(self, reason: str, fields: tuple[tuple[str, str], ...] = ()) -> None:
        super().__init__(reason)
        self.fields = fields


class Missing(ChangeRefused):
    """Something the change names does not exist."""

    status = 404
    title = "Not found"


class Conflict(ChangeRefused):
    """The change would duplicate something, or lose data that refers to what it deletes."""

    status = 409
    title = "Conflict"


class Invalid(ChangeRefused):
    """Input fields whose values are refused, each as (path, reason), so clients can show them."""

    status = 422
    title = "Unprocessable content"

    def __init__(self, *fields: tuple[str, str]) -> None:
        super().__init__("; ".join(f"{path}: {reason}" for path, reason in fields), fields)


class IntercomError(GatewayError):
    """The Intercom REST API did not do what was asked; ``str()`` says which call and why (never the token)."""

    status = 502
    title = "Intercom did not accept the change"


class IntercomUnauthorized(IntercomError):
    """Intercom refused the access token (401): nothing is retried until the token is fixed."""


class IntercomNotFound(IntercomError):
    """The object asked for does not exist in the workspace (404)."""


class IntercomRefused(IntercomError):
    """Intercom refused the call (a 4xx other than 401 and 404), with its own message."""


class IntercomUnavailable(IntercomError):
    """Intercom answered 5xx, reset the connection, timed out or sent something unreadable, past every retry."""

    title = "Intercom is not reachable right now"


class Link(NamedTuple):
    """The next step an error page offers: where it goes, and what the link says."""

    href: str
    label: str


class Explained(web.HTTPException):
    """An HTTP error whose detail (which input, and why) is safe to show the client; mixed into one below.

    ``title`` heads its page in place of the status's own heading, ``link`` is the next step the page offers;
    neither goes into a JSON body.
    """

    def __init__(
        self,
        detail: str | None = None,
        *,
        title: str | None = None,
        link: Link | None = None,
        headers: LooseHeaders | None = None,
    ) -> None:
        super().__init__(headers=headers)
        self.detail = detail
        self.title = title
        self.link = link


class BadRequest(Explained, web.HTTPBadRequest):
    """400, with the reason."""


class Unauthorized(Explained, web.HTTPUnauthorized):
    """401, with the reason (never the credential)."""


class Forbidden(Explained, web.HTTPForbidden):
    """403, with the reason."""


class TooManyRequests(Explained, web.HTTPTooManyRequests):
    """429, with the reason; ``headers`` carry the Retry-After."""


class ServiceBusy(Explained, web.HTTPServiceUnavailable):
    """503, with the reason; ``headers`` carry the Retry-After."""

"""Security headers, set on every response as it is prepared."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence

from aiohttp import web

from gateway.observe.audit import REQUEST_ID, REQUEST_ID_HEADER
from gateway.proxy.forward import PROXIED
from gateway.run.protocol import SERVER

# No inline script, no framing, forms only to ourselves.
_POLICY: Mapping[str, tuple[str, ...]] = {
    "default-src": ("'self'",),
    "script-src": ("'self'",),
    "style-src": ("'self'",),
    "img-src": ("'self'", "data:"),
    "object-src": ("'none'",),
    "base-uri": ("'none'",),
    "form-action": ("'self'",),
    "frame-ancestors": ("'none'",),
}


def content_security_policy(extra: Mapping[str, Sequence[str]] | None = None) -> str:
    """The gateway's policy with ``extra`` sources added per directive; a directive new to it starts from
    default-src's sources, so naming one never loosens what default-src allowed."""
    directives = {name: list(sources) for name, sources in _POLICY.items()}
    for name, sources in (extra or {}).items():
        kept = directives.setdefault(name, list(_POLICY["default-src"]))
        kept.extend(source for source in sources if source not in kept)
    return "; ".join(f"{name} {' '.join(sources)}" for name, sources in directives.items())


CONTENT_SECURITY_POLICY = content_security_policy()
"""The policy of every page the gateway renders, but the ticket page that boots the Messenger."""


async def server_header(request: web.Request, response: web.StreamResponse) -> None:
    """An on_response_prepare hook: name the gateway, never the Python and aiohttp versions behind it."""
    response.headers["Server"] = SERVER


def security_headers(hsts_max_age: int) -> Callable[[web.Request, web.StreamResponse], Awaitable[None]]:
    """An on_response_prepare hook: HSTS and the request id everywhere, page headers on our own pages."""
    hsts = f"max-age={hsts_max_age}"

    async def on_prepare(request: web.Request, response: web.StreamResponse) -> None:
        response.headers["Strict-Transport-Security"] = hsts
        if REQUEST_ID in request:
            response.headers[REQUEST_ID_HEADER] = request[REQUEST_ID]
        await server_header(request, response)
        if request.get(PROXIED):
            return  # upstream's pages keep upstream's own policy
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "same-origin"
        response.headers["X-Frame-Options"] = "DENY"
        response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)

    return on_prepare

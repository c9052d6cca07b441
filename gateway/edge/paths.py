"""Request paths: refuse the ones servers read differently, and decide access on the broadest reading.

The path is forwarded upstream as the client sent it, so the gateway must
never decide on one reading while the upstream acts on another. Targets that
no browser sends and that servers disagree on (dot segments, backslashes,
NUL and control characters, double encoding, a raw ``#``, and by default
encoded slashes) are refused with a 400. For the rest, the access decision is
taken on :func:`~gateway.namespace.decision_path`, which folds everything a lenient upstream
might ignore (case, ``;`` parameters, trailing dots, doubled slashes): any
path that some upstream could read as a portal path is decided as one.
"""

from __future__ import annotations

import posixpath
import re
from urllib.parse import unquote

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from gateway.errors import BadRequest
from gateway.namespace import RESERVED_PREFIXES, decision_path

__all__ = ["decision_path", "path_middleware", "reserved", "target_problem"]

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_ENCODED_SLASH = re.compile(r"%(2f|5c)", re.IGNORECASE)
_DOUBLE_ENCODED = re.compile(r"%25[0-9a-f]{2}", re.IGNORECASE)
_DOTS_ONLY = re.compile(r"\.+")


def target_problem(raw_target: str, *, allow_encoded_slashes: bool) -> str | None:
    """Why a raw request target (path and query, as sent) is refused, or None when it has one reading."""
    raw_path, _, _ = raw_target.partition("?")
    decoded = unquote(raw_path)
    # SECURITY: each of these has bypassed a proxy's path rules in some upstream (CVE-class: path confusion).
    if "#" in raw_target:
        return "A request target has no fragment (#)."
    if "\\" in raw_path:
        return "Backslashes are not accepted in paths."
    if _CONTROL.search(decoded):
        return "NUL and control characters are not accepted in paths."
    if _DOUBLE_ENCODED.search(raw_path):
        return "Doubly percent-encoded paths are not accepted."
    if not allow_encoded_slashes and _ENCODED_SLASH.search(raw_path):
        return "Encoded slashes are not accepted in paths."
    # ".." hides behind ";" (Tomcat's "..;") and trailing dots ("..." on Windows) too.
    if any(_DOTS_ONLY.fullmatch(segment.split(";")[0]) for segment in decoded.split("/")):
        return "Dot segments (. and ..) are not accepted in paths."
    return None


_DECODE_ROUNDS = 4


def reserved(raw_path: str) -> bool:
    """Whether ``raw_path`` names a reserved namespace (gateway/namespace.py: /messenger/web under the
    company-update policy, /admin/api behind the admin token) as the most lenient server would read it:
    percent-decoded again and again, backslashes as slashes, dot segments resolved, then ``decision_path``."""
    path = raw_path.partition("?")[0]
    for _ in range(_DECODE_ROUNDS):
        decoded = unquote(path)
        if decoded == path:
            break
        path = decoded
    path = decision_path(posixpath.normpath("/" + path.replace("\\", "/").lstrip("/")))
    return any(path == prefix or path.startswith(prefix + "/") for prefix in RESERVED_PREFIXES)


def path_middleware(allow_encoded_slashes: bool) -> Middleware:
    """Refuse request targets that servers read in more than one way."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        problem = target_problem(request.raw_path, allow_encoded_slashes=allow_encoded_slashes)
        if problem is not None:
            raise BadRequest(problem)
        return await handler(request)

    return middleware

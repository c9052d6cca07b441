"""Request paths: refuse the ones servers read differently, and decide access on the broadest reading.

The path is forwarded upstream as the client sent it (``raw_path``, not
re-encoded), so the gateway must never decide on one reading while the
upstream acts on another. The decision is taken on a canonical form: the raw
path decoded once, strictly. A path without one (not UTF-8 after that decode,
still holding ``%``, decoding to ``?``, ``#`` or a control character) is
refused with a 400, and so are targets that no browser sends and that servers
disagree on (dot segments, backslashes, a raw ``#``, and by default encoded
slashes), and a path whose lenient reading (NFKC, case folded, look-alike
slashes) falls in a guarded namespace that its canonical form does not name
as it. For the rest, the access decision is taken on
:func:`~gateway.namespace.decision_path`, which folds everything a lenient
upstream might ignore (case, ``;`` parameters, trailing dots, doubled
slashes): any path that some upstream could read as a portal path is decided
as one.
"""

from __future__ import annotations

import functools
import posixpath
import re
import unicodedata
from collections.abc import Callable
from typing import TYPE_CHECKING
from urllib.parse import unquote, unquote_to_bytes

from aiohttp import web

from gateway.errors import BadRequest
from gateway.namespace import NAMESPACES, RESERVED_PREFIXES, decision_path

if TYPE_CHECKING:
    from gateway.edge.pipeline import Stage

__all__ = ["canonical", "decision_path", "path_stage", "reserved", "target_problem"]

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_ENCODED_SLASH = re.compile(r"%(2f|5c)", re.IGNORECASE)
# "0x2e" is how a few decoders (and the traversal corpora) spell a dot.
_SEPARATORS = re.compile(r"[/\\]")
_DOTS_ONLY = re.compile(r"(?:\.|0x2e)+", re.IGNORECASE)
# Slashes that NFKC keeps but that best-fit code pages and some path APIs read as "/" or "\".
_SLASH_LOOKALIKES = str.maketrans(dict.fromkeys("\u2215\u2044\u29f8\u2571\u29f5\u2216\u29f9\u2572", "/"))


def canonical(raw_path: str) -> str | None:
    """The raw path decoded once, strictly: None when it is not UTF-8 after that decode."""
    if "%" not in raw_path and raw_path.isascii():
        return raw_path  # the common case, at a tenth of the cost
    try:
        return unquote_to_bytes(raw_path).decode("utf-8")  # str in: encoded as UTF-8 first, raising on surrogates
    except UnicodeError:
        return None


def _lenient(path: str) -> str:
    """``path`` as the most lenient reader may take it: NFKC, compared without case (upper-cased first, so
    that dotless i (U+0131) and long s (U+017F) meet "i" and "s"), look-alike slashes as "/"."""
    upper = unicodedata.normalize("NFKC", path).upper()
    return unicodedata.normalize("NFKC", upper).casefold().translate(_SLASH_LOOKALIKES)


def target_problem(raw_target: str, *, allow_encoded_slashes: bool, guarded: Callable[[str], str | None]) -> str | None:
    """Why a raw request target (path and query, as sent) is refused, or None when it has one reading.

    ``guarded(path)`` names the namespace the gateway guards (the portal, the APIs) that a decoded path
    lies in, if any: a path whose lenient reading lies in a guarded namespace that it does not lie in
    itself is refused.
    """
    raw_path, _, _ = raw_target.partition("?")
    # SECURITY: each of these has bypassed a proxy's path rules in some upstream (CVE-class: path confusion).
    if "#" in raw_target:
        return "A request target has no fragment (#)."
    if "\\" in raw_path:
        return "Backslashes are not accepted in paths."
    decoded = canonical(raw_path)
    if decoded is None:
        return "A path must be UTF-8 once percent-decoded (no overlong or stray bytes)."
    # A "%" left after one decode is a second encoding (%252e, %%32%65, %u002e) that some reader decodes again.
    if "%" in decoded:
        return "A path still holding % once decoded (double or %u encoding) is not accepted."
    if "?" in decoded or "#" in decoded:
        return "An encoded ? or # is not accepted in paths."
    if _CONTROL.search(decoded):
        return "NUL and control characters are not accepted in paths."
    if not allow_encoded_slashes and _ENCODED_SLASH.search(raw_path):
        return "Encoded slashes are not accepted in paths."
    ascii_only = decoded.isascii()
    lenient = decoded if ascii_only else _lenient(decoded)
    # ".." hides behind ";" (Tomcat's "..;"), trailing dots ("..." on Windows) and full-width dots too.
    if any(_DOTS_ONLY.fullmatch(segment.split(";")[0]) for segment in _SEPARATORS.split(lenient)):
        return "Dot segments (. and ..) are not accepted in paths."
    if ascii_only:
        return None
    # SECURITY: "/%EF%BD%94ickets" (full-width t) or "/t%C4%B1ckets" (dotless i) is not the portal to the
    # access stage, but it is to an upstream that normalizes Unicode: look-alikes of a guarded namespace
    # are refused outright.
    if "\\" in lenient or "%" in lenient:
        return "Look-alikes of / \\ or % are not accepted in paths."
    namespace = guarded(lenient)
    if namespace is not None and namespace != guarded(decoded):
        return "Look-alikes of the portal's or the API's paths are not accepted."
    return None


_DECODE_ROUNDS = 4
_REMEMBERED_LENGTH = 256  # characters of a path :func:`reserved` remembers the answer for, at most


def reserved(raw_path: str) -> bool:
    """Whether ``raw_path`` names a reserved namespace (gateway/namespace.py: /messenger/web under the
    company-update policy, /admin/api behind the admin token) as the most lenient server would read it:
    percent-decoded again and again, backslashes as slashes, dot segments resolved, then ``decision_path``."""
    path = raw_path.partition("?")[0]  # never the query: it may hold a token, and is not remembered
    # The same paths come again and again; only short ones are remembered, so that a client sending long
    # paths (up to the 32 KB request line) cannot make the memory hold 4,096 of them.
    return _remembered(path) if len(path) <= _REMEMBERED_LENGTH else _reserved_path(path)


def _reserved_path(path: str) -> bool:
    """:func:`reserved` of a path without its query."""
    for _ in range(_DECODE_ROUNDS):
        decoded = unquote(path)
        if decoded == path:
            break
        path = decoded
    path = decision_path(posixpath.normpath("/" + path.replace("\\", "/").lstrip("/")))
    return any(path == prefix or path.startswith(prefix + "/") for prefix in RESERVED_PREFIXES)


_remembered = functools.lru_cache(maxsize=4096)(_reserved_path)


def path_stage(allow_encoded_slashes: bool) -> Stage:
    """Refuse request targets that servers read in more than one way."""

    def stage(request: web.Request) -> None:
        problem = target_problem(
            request.raw_path, allow_encoded_slashes=allow_encoded_slashes, guarded=request.app[NAMESPACES].guarded
        )
        if problem is not None:
            raise BadRequest(problem)

    return stage

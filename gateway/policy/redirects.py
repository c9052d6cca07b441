"""Where a ``return_to`` may send a visitor: only back to this Help Center, never elsewhere."""

from __future__ import annotations

import re
from urllib.parse import unquote

from yarl import URL

# SECURITY: what browsers or servers may read as "another host" inside a path:
# a doubled slash (protocol-relative), any backslash (treated as a slash),
# dot segments, whitespace and control characters (stripped by browsers).
# Checked on the whole decoded target, query included: a same-origin page whose
# query names another site (``/redirect?url=//evil``) is refused as well, so no
# chain through another endpoint can leave the domain.
_UNSAFE = re.compile(r"//|\\|/\.{1,2}(/|$|\?)|[\x00-\x1f\x7f]")
# Whitespace is refused in the path; in the query a plain space (a search for "csv export") is harmless.
_WHITESPACE = re.compile(r"\s")
_MAX_DECODES = 5


def _fully_decoded(value: str) -> str | None:
    """Percent-decode until nothing changes; None when it keeps changing (nested encodings)."""
    for _ in range(_MAX_DECODES):
        decoded = unquote(value)
        if decoded == value:
            return value
        value = decoded
    return None


def safe_return_to(value: str | None, *, domain: str, fallback: str) -> str:
    """The same-origin path (with query) that ``value`` names, or ``fallback`` when it names anything else.

    Accepted: a path such as ``/tickets/12?tab=mine``, or ``https://<domain>/...``;
    returned in its own percent-encoding (``?q=a%26b`` stays one parameter).
    Refused, falling back: other hosts, other schemes, protocol-relative
    ``//host`` anywhere (query included), backslashes, userinfo, encoded
    tricks, whitespace, control characters.
    """
    if not value or len(value) > 2048:
        return fallback
    decoded = _fully_decoded(value)
    if decoded is None:
        return fallback
    if decoded.lower().startswith("https://"):
        try:
            url, given = URL(decoded), URL(value)
        except ValueError:
            return fallback
        foreign = url.host != domain or url.user is not None or url.password is not None
        if foreign or url.explicit_port not in (None, 443):
            return fallback
        decoded, value = url.path_qs or "/", given.raw_path_qs or "/"
    path, _, query = decoded.partition("?")
    if not path.startswith("/") or _UNSAFE.search(decoded) or _WHITESPACE.search(path) or "\t" in query:
        return fallback
    # Judged on the decoded text, answered with the text as given (normalised): ``q=a%26b`` keeps its meaning.
    return URL(value).raw_path_qs

"""The namespaces the gateway answers itself, recognised however a path spells them.

``/messenger/web/...`` goes through the company-update policy and ``/admin/api/...``
behind the admin token. A spelling the router does not match (``//messenger/web``,
``/Messenger/web``, ``/messenger%2Fweb``, ``/x/../admin/api``) must not reach the
help center through the catch-all proxy, where a lenient server could read it as
the real thing, unpoliced.
"""

from __future__ import annotations

import posixpath
import re
from urllib.parse import unquote

RESERVED = ("/messenger/web", "/admin/api")
_DECODE_ROUNDS = 4
_PARAMETERS = re.compile(r";[^/]*")


def lenient(raw_path: str) -> str:
    """A path as the most lenient server would read it: percent-decoded again and again, backslashes as
    slashes, ``;parameters`` dropped, slashes collapsed, dot segments resolved, case folded."""
    path = raw_path.partition("?")[0]
    for _ in range(_DECODE_ROUNDS):
        decoded = unquote(path)
        if decoded == path:
            break
        path = decoded
    path = _PARAMETERS.sub("", path.replace("\\", "/"))
    return posixpath.normpath("/" + path.lstrip("/")).casefold()


def reserved(raw_path: str) -> bool:
    """Whether ``raw_path`` names the Messenger or admin namespace, in any spelling."""
    path = lenient(raw_path)
    return any(path == prefix or path.startswith(prefix + "/") for prefix in RESERVED)

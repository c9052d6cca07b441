"""Request framing that the HTTP parser accepts but a proxy must not: refused before any byte is forwarded.

aiohttp's parser (llhttp) already refuses duplicate or malformed lengths,
obs-fold, bare CR and NUL. What it accepts and a chain of proxies may read
two ways is refused here, with the connection closed so that nothing queued
behind the request is parsed as another one.
"""

from __future__ import annotations

from aiohttp import web
from multidict import CIMultiDictProxy


def _tokens(headers: CIMultiDictProxy[str], name: str) -> list[str]:
    return [token.strip().lower() for value in headers.getall(name, ()) for token in value.split(",")]


def framing_problem(method: str, headers: CIMultiDictProxy[str], *, refuse_underscores: bool = False) -> str | None:
    """Why a request's framing is refused, or None when it has exactly one reading."""
    # SECURITY: "Transfer_Encoding" is "Transfer-Encoding" to an upstream that reads "_" as "-". Such names
    # never go upstream (gateway/edge/headers.py drops them); requests.underscore_headers: refuse says 400.
    if refuse_underscores and any("_" in name for name in headers):
        return "Header names with an underscore (_) are not accepted."
    # SECURITY: request smuggling. "gzip, chunked" is legal HTTP, but a front proxy that does not
    # know "gzip" may frame the body by Content-Length or until close; only plain chunked is accepted.
    if "Transfer-Encoding" in headers and _tokens(headers, "Transfer-Encoding") != ["chunked"]:
        return "Transfer-Encoding other than a single chunked is not accepted."
    if "Transfer-Encoding" in headers and "Content-Length" in headers:
        return "Content-Length and Transfer-Encoding together are not accepted."
    # SECURITY: h2c and other upgrades tunnel past every check behind the proxy; only a WebSocket
    # handshake (a GET naming the upgrade in Connection) may ask to switch protocols.
    if "Upgrade" in headers and (
        method != "GET"
        or _tokens(headers, "Upgrade") != ["websocket"]
        or "upgrade" not in _tokens(headers, "Connection")
    ):
        return "Only a WebSocket handshake may ask for an upgrade."
    return None


def upgrade_refused(request: web.Request, response: web.StreamResponse) -> bool:
    """Whether ``request`` asked for an upgrade that ``response`` did not make: its connection must close."""
    # SECURITY: bytes a client sent behind an upgrade request (or a refused one) must not be
    # parsed as the next request on this connection: it is closed unless the upgrade happened.
    return "Upgrade" in request.headers and response.status != 101

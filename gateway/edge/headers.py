"""Header rewriting for the proxy, as pure functions: hop-by-hop removal, X-Forwarded-*, and the positive
model of what a client's request headers may carry to upstream."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address
from typing import TYPE_CHECKING

from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

from gateway.observe.audit import AUDIT_ENTRY
from gateway.policy.cookies import RequestCookies

if TYPE_CHECKING:
    from gateway.edge.pipeline import Stage

Network = IPv4Network | IPv6Network

# RFC 9110 section 7.6.1, plus the legacy ones proxies still see.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
    }
)
# SECURITY: the positive model. A client's header reaches upstream only when it is one of these
# (RFC 9110/9111 request headers, CORS preflight, the WebSocket handshake) or a browser's fetch metadata
# and client hints, or one that ``upstream.pass_headers`` names; every other name is dropped and audited.
# A deny-list of identity and forwarding names (X-Auth-User, IV-User, CF-Connecting-IP,
# X-HTTP-Method-Override, ...) is never complete: an upstream that believes one would believe the client.
STANDARD_REQUEST_HEADERS = frozenset(
    {
        "accept",
        "accept-encoding",
        "accept-language",
        "access-control-request-headers",
        "access-control-request-method",
        "authorization",
        "cache-control",
        "content-encoding",
        "content-language",
        "content-length",
        "content-type",
        "dnt",
        "if-match",
        "if-modified-since",
        "if-none-match",
        "if-range",
        "if-unmodified-since",
        "origin",
        "pragma",
        "priority",
        "range",
        "referer",
        "sec-websocket-extensions",
        "sec-websocket-key",
        "sec-websocket-protocol",
        "sec-websocket-version",
        "upgrade-insecure-requests",
        "user-agent",
        "x-requested-with",
    }
)
_STANDARD_PREFIXES = ("sec-fetch-", "sec-ch-")  # set by browsers, never by page scripts
GATEWAY_PREFIXES = ("x-portal-", "x-forwarded-")
"""Names only the gateway sets: a client's are replaced (X-Forwarded-For, -Proto, -Host) or dropped."""
# Never forwarded as the client sent them, and not worth an audit line: the connection's own headers,
# and those the gateway writes itself (the upstream's Host, the filtered Cookie, its X-Forwarded-*).
_REPLACED = HOP_BY_HOP | {"host", "cookie", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host"}


@dataclass(frozen=True)
class Forwarding:
    """Who the client is and the X-Forwarded-* values to send upstream."""

    client_ip: str
    forwarded_for: str
    proto: str
    host: str


def _hop_by_hop(headers: CIMultiDictProxy[str] | CIMultiDict[str]) -> frozenset[str]:
    """The lower-case names of a message's hop-by-hop headers: the standard ones and any Connection names."""
    if "Connection" not in headers:
        return HOP_BY_HOP
    return HOP_BY_HOP.union(
        token.strip().lower() for value in headers.getall("Connection") for token in value.split(",") if token.strip()
    )


def without_hop_by_hop(headers: CIMultiDictProxy[str] | CIMultiDict[str]) -> CIMultiDict[str]:
    """A copy without hop-by-hop headers, including any the Connection header names."""
    # A copy, then a removal by name in multidict's C code: a dozen look-ups, not a lower() per header (the
    # names a parser lets through are tokens: ASCII, where the multidict's case-folding is lower()'s).
    kept = CIMultiDict(headers)
    for name in HOP_BY_HOP:
        kept.popall(name, None)
    for value in headers.getall("Connection", ()):
        for token in value.split(","):
            kept.popall(token.strip(), None)
    return kept


def _parse_ip(text: str) -> IPv4Address | IPv6Address | None:
    try:
        address = ip_address(text.strip().strip("[]"))
    except ValueError:
        return None
    # A dual-stack socket reports IPv4 peers as ::ffff:a.b.c.d; match them against IPv4 networks.
    return address.ipv4_mapped if isinstance(address, IPv6Address) and address.ipv4_mapped else address


def _trusted(address: IPv4Address | IPv6Address | None, trusted: Iterable[Network]) -> bool:
    return address is not None and any(address in network for network in trusted)


def forwarding(
    peer: str,
    headers: CIMultiDictProxy[str] | CIMultiDict[str],
    *,
    host: str,
    trusted: frozenset[Network],
) -> Forwarding:
    """Decide the client address and X-Forwarded-* for one request.

    A client's own X-Forwarded-* values are believed only when the peer is a
    trusted proxy; then the client is the right-most address in the chain
    that is not itself a trusted proxy.
    """
    if not trusted or not _trusted(_parse_ip(peer), trusted):  # no proxy trusted (the default): nothing to parse
        return Forwarding(client_ip=peer, forwarded_for=peer, proto="https", host=host)
    chain = [
        entry.strip() for value in headers.getall("X-Forwarded-For", ()) for entry in value.split(",") if entry.strip()
    ]
    client = peer
    for entry in reversed(chain):
        client = entry
        if not _trusted(_parse_ip(entry), trusted):
            break
    return Forwarding(
        client_ip=client,
        forwarded_for=", ".join([*chain, peer]),
        proto=headers.get("X-Forwarded-Proto", "https").strip() or "https",
        host=headers.get("X-Forwarded-Host", host).strip() or host,
    )


@dataclass(frozen=True)
class UpstreamHeaders:
    """The headers to send upstream, and the names of the client's headers the model dropped."""

    headers: CIMultiDict[str]
    dropped: tuple[str, ...]
    """Lower-case names, each once, in the order the client sent them (names only: never a value)."""


def passes(lower: str, extra: frozenset[str] = frozenset()) -> bool:
    """Whether a client's header named ``lower`` (lower case) may reach upstream: standard, or in ``extra``."""
    # SECURITY: a name with "_" never passes, whatever the config: CGI, WSGI and PHP read it as "-", so
    # "Transfer_Encoding" would frame the body and "X_Portal_User_Id" claim an identity (nginx's
    # underscores_in_headers off). The gateway's own prefixes are its alone.
    if "_" in lower or lower.startswith(GATEWAY_PREFIXES):
        return False
    return lower in STANDARD_REQUEST_HEADERS or lower in extra or lower.startswith(_STANDARD_PREFIXES)


def upstream_request_headers(
    headers: CIMultiDictProxy[str],
    *,
    cookie: str | None,
    fwd: Forwarding,
    identity: Mapping[str, str] | None = None,
    extra: frozenset[str] = frozenset(),
) -> UpstreamHeaders:
    """The headers to send upstream: the client's that :func:`passes` admits (no hop-by-hop), the filtered
    Cookie, the gateway's own X-Forwarded-* and, for a verified visitor, X-Portal-*; and what was dropped."""
    hop = _hop_by_hop(headers)
    out: CIMultiDict[str] = CIMultiDict()
    dropped: dict[str, None] = {}  # an ordered set
    for key, value in headers.items():
        lower = key.lower()
        if lower in _REPLACED:
            continue
        # A name the client's Connection lists is hop-by-hop: never forwarded, but audited when unusual.
        if lower not in hop and passes(lower, extra):
            out.add(key, value)
        else:
            dropped[lower] = None
    out.update(identity or {})
    if cookie:
        out["Cookie"] = cookie
    out["X-Forwarded-For"] = fwd.forwarded_for
    out["X-Forwarded-Proto"] = fwd.proto
    out["X-Forwarded-Host"] = fwd.host
    return UpstreamHeaders(out, tuple(dropped))


FORWARDING = web.RequestKey("forwarding", Forwarding)
COOKIES = web.RequestKey("cookies", RequestCookies)


def request_cookies(request: web.Request) -> RequestCookies:
    """The request's Cookie headers, split once for every stage that reads them (identity, the allow-list)."""
    cookies = request.get(COOKIES)
    if cookies is None:
        cookies = request[COOKIES] = RequestCookies(request.headers.getall("Cookie", ()))
    return cookies


def forwarded_stage(trusted: frozenset[Network]) -> Stage:
    """Decide each request's client address and X-Forwarded-* once, for the audit and the proxy."""

    def stage(request: web.Request) -> None:
        fwd = forwarding(request.remote or "", request.headers, host=request.host, trusted=trusted)
        request[FORWARDING] = fwd
        request[AUDIT_ENTRY].client_ip = fwd.client_ip

    return stage


def peer_in(peer: str | None, networks: frozenset[Network]) -> bool:
    """Whether a TCP peer address lies in one of ``networks``."""
    return _trusted(_parse_ip(peer or ""), networks)

"""Header rewriting for the proxy, as pure functions: hop-by-hop removal and X-Forwarded-*."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from multidict import CIMultiDict, CIMultiDictProxy

from gateway.observe.audit import AUDIT_ENTRY

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
# SECURITY: headers through which a client could claim an identity; always dropped,
# whatever their case and with "_" for "-", so only the gateway's own X-Portal-* reach upstream.
_IDENTITY_HEADERS = frozenset(
    {
        "x-forwarded-user",
        "x-forwarded-email",
        "x-forwarded-preferred-username",
        "x-forwarded-groups",
        "x-forwarded-access-token",
        "x-auth-request-user",
        "x-auth-request-email",
        "x-auth-request-groups",
        "x-auth-request-access-token",
        "x-remote-user",
        "remote-user",
        "x-user",
        "x-user-id",
        "x-email",
    }
)


# SECURITY: headers through which a client could lie about where it is, or which URL it asked for
# (X-Original-URL re-routes some frameworks past the path the access decision saw). Every
# X-Forwarded-* and these are dropped in any spelling; the gateway sends its own X-Forwarded-For,
# -Proto and -Host, believing a client's values only when the peer is a trusted proxy.
_CLIENT_FORWARDING = frozenset(
    {
        "forwarded",
        "x-real-ip",
        "x-client-ip",
        "true-client-ip",
        "x-cluster-client-ip",
        "client-ip",
        "x-original-url",
        "x-rewrite-url",
        "x-original-host",
        "x-host",
        "front-end-https",
        "x-url-scheme",
    }
)


_CLAIMED_PREFIXES = ("x-portal-", "x-forwarded-")
_CLAIMED_NAMES = _IDENTITY_HEADERS | _CLIENT_FORWARDING
_NOT_FORWARDED = HOP_BY_HOP | {"host", "cookie"}  # and the upstream's own Host, the filtered Cookie


def _is_claim(lower: str) -> bool:
    """Whether a lower-case header name claims an identity (``X-Portal-*``, the usual proxy-auth headers),
    where the client is, or what it asked for (``X-Forwarded-*`` and the like), read as lenient upstream
    servers read it: "_" for "-" (CGI, WSGI, PHP)."""
    normalized = lower.replace("_", "-")
    return normalized.startswith(_CLAIMED_PREFIXES) or normalized in _CLAIMED_NAMES


@dataclass(frozen=True)
class Forwarding:
    """Who the client is and the X-Forwarded-* values to send upstream."""

    client_ip: str
    forwarded_for: str
    proto: str
    host: str


def _hop_by_hop(
    headers: CIMultiDictProxy[str] | CIMultiDict[str], standard: frozenset[str] = HOP_BY_HOP
) -> frozenset[str]:
    """The lower-case names of a message's hop-by-hop headers: ``standard`` and any Connection names."""
    if "Connection" not in headers:
        return standard
    return standard.union(
        token.strip().lower() for value in headers.getall("Connection") for token in value.split(",") if token.strip()
    )


def without_hop_by_hop(headers: CIMultiDictProxy[str] | CIMultiDict[str]) -> CIMultiDict[str]:
    """A copy without hop-by-hop headers, including any the Connection header names."""
    drop = _hop_by_hop(headers)
    return CIMultiDict([(key, value) for key, value in headers.items() if key.lower() not in drop])


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


def upstream_request_headers(
    headers: CIMultiDictProxy[str],
    *,
    cookie: str | None,
    fwd: Forwarding,
    identity: Mapping[str, str] | None = None,
) -> CIMultiDict[str]:
    """The headers to send upstream: no hop-by-hop, no client Host, forwarding or identity claims;
    the filtered Cookie; the gateway's own X-Forwarded-* and, for a verified visitor, X-Portal-*."""
    drop = _hop_by_hop(headers, _NOT_FORWARDED)
    out = CIMultiDict(
        [(key, value) for key, value in headers.items() if (lower := key.lower()) not in drop and not _is_claim(lower)]
    )
    out.update(identity or {})
    if cookie:
        out["Cookie"] = cookie
    out["X-Forwarded-For"] = fwd.forwarded_for
    out["X-Forwarded-Proto"] = fwd.proto
    out["X-Forwarded-Host"] = fwd.host
    return out


FORWARDING = web.RequestKey("forwarding", Forwarding)


def forwarded_middleware(trusted: frozenset[Network]) -> Middleware:
    """Decide each request's client address and X-Forwarded-* once, for the audit and the proxy."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        fwd = forwarding(request.remote or "", request.headers, host=request.host, trusted=trusted)
        request[FORWARDING] = fwd
        request[AUDIT_ENTRY].client_ip = fwd.client_ip
        return await handler(request)

    return middleware


def peer_in(peer: str | None, networks: frozenset[Network]) -> bool:
    """Whether a TCP peer address lies in one of ``networks``."""
    return _trusted(_parse_ip(peer or ""), networks)

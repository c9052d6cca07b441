"""The reverse proxy: the only code that talks to an upstream.

Bodies stream both ways in chunks (nothing is buffered whole) over the app's
one :class:`UpstreamPool` of kept-alive connections (``upstreamclient.py``);
WebSocket upgrades are relayed frame by frame through the app's aiohttp
``ClientSession``, which also serves the rare requests outside the proxy
(JWKS, readiness). The header and cookie decisions are the pure functions of
``headers.py`` and ``cookies.py``; this module only wires them to the network
and records what happened in the request's audit entry.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from functools import cached_property

import aiohttp
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from gateway.config import GatewayConfig
from gateway.edge.headers import FORWARDING, request_cookies, upstream_request_headers, without_hop_by_hop
from gateway.edge.slowclients import timed_body
from gateway.errors import UpstreamError, UpstreamTimeout, UpstreamUnreachable
from gateway.observe.audit import AUDIT_ENTRY, AuditEntry
from gateway.observe.metrics import METRICS
from gateway.policy.cookies import SetCookieDecision, filter_cookies, rewrite_set_cookie
from gateway.proxy.client import Body, Origin, Timeouts, UpstreamPool, UpstreamResponse

log = logging.getLogger(__name__)

PROXIED = web.RequestKey("proxied", bool)
# The client library writes its own handshake; the browser's must not be doubled.
_WS_HANDSHAKE = ("sec-websocket-key", "sec-websocket-version", "sec-websocket-extensions", "sec-websocket-protocol")


@dataclass(frozen=True)
class Upstream:
    """One upstream and the rules for talking to it, parsed once from the config."""

    base: URL
    origin: Origin
    allowed_cookies: frozenset[str]
    pass_headers: frozenset[str]
    """Request headers it may receive beyond the standard ones (``upstream.pass_headers``)."""
    custom_domain: str
    cookie_domain: str
    timeouts: Timeouts
    body_timeout: float

    @classmethod
    def from_config(cls, config: GatewayConfig, base: URL) -> Upstream:
        """The upstream at ``base`` with the config's cookie rules and timeouts."""
        return cls(
            base=base,
            origin=Origin.of(base),
            allowed_cookies=config.allowed_cookies,
            pass_headers=config.upstream.pass_headers,
            custom_domain=config.domain,
            cookie_domain=config.cookie_domain,
            timeouts=Timeouts(
                connect=config.upstream.connect_timeout,
                read=config.upstream.read_timeout,
                head=config.upstream.read_timeout,
            ),
            body_timeout=config.requests.body_timeout,
        )

    def set_cookie(self, header: str) -> SetCookieDecision:
        """One Set-Cookie from this upstream through the allow-list: made Secure and scoped to our domain."""
        return rewrite_set_cookie(
            header,
            self.allowed_cookies,
            upstream_host=self.base.host or "",
            custom_domain=self.custom_domain,
            cookie_domain=self.cookie_domain,
        )

    def url_for(self, raw_path: str) -> URL:
        """The upstream URL for a request's raw path and query, under the base path."""
        return URL(self._prefix + raw_path, encoded=True)

    @cached_property
    def _prefix(self) -> str:
        return str(self.base).rstrip("/")


class _ProxiedResponse(web.StreamResponse):
    """A streamed answer whose headers leave with its first body chunk: one TLS record and one send, not two."""

    _send_headers_immediately = False  # what aiohttp's own web.Response does; a plain StreamResponse sends at once


HELP_CENTER = web.AppKey("help_center", Upstream)
MESSENGER = web.AppKey("messenger", Upstream)
UPSTREAM_SESSION = web.AppKey("upstream_session", aiohttp.ClientSession)
UPSTREAM_POOL = web.AppKey("upstream_pool", UpstreamPool)


async def upstream_pool(app: web.Application) -> AsyncIterator[None]:
    """Cleanup context: the proxy's pooled upstream connections, closed when the app stops."""
    pool = UpstreamPool(limit=256, limit_per_host=128)
    app[UPSTREAM_POOL] = pool
    yield
    pool.close()


async def upstream_session(app: web.Application) -> AsyncIterator[None]:
    """Cleanup context: the aiohttp client for WebSocket relays, JWKS and readiness, closed when the app stops."""
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=256, limit_per_host=128, ttl_dns_cache=60),
        auto_decompress=False,
        cookie_jar=aiohttp.DummyCookieJar(),
        skip_auto_headers=("User-Agent", "Accept-Encoding"),
    )
    app[UPSTREAM_SESSION] = session
    yield
    await session.close()


def _is_websocket(request: web.Request) -> bool:
    # Upgrade first: almost no request has one, so the Connection header's tokens are seldom read.
    if request.headers.get("Upgrade", "").lower() != "websocket":
        return False
    return "upgrade" in {token.strip().lower() for token in request.headers.get("Connection", "").split(",")}


def _fail(
    entry: AuditEntry, request: web.Request, error: UpstreamError, cause: BaseException | None = None
) -> UpstreamError:
    """Record an upstream failure; the returned error is raised to become a 502/504 page."""
    entry.upstream.error = error.kind
    metrics = request.app[METRICS]
    metrics.count(metrics.upstream_errors, error.kind)
    cause = cause or error.__cause__ or error
    log.warning("upstream %s: %s", error.kind, type(cause).__name__, extra={"request_id": entry.request_id})
    return error


async def forward(
    request: web.Request,
    upstream: Upstream,
    *,
    identity: Mapping[str, str] | None = None,
    query: str | None = None,
    body: bytes | None = None,
) -> web.StreamResponse:
    """Send the request to ``upstream`` and stream its answer back under the cookie allow-list.

    ``identity`` holds the gateway's own X-Portal-* headers for a verified visitor.
    ``query`` (raw, without "?") and ``body`` replace the client's, for a caller
    that read and rewrote them; otherwise the client's body streams through.
    """
    entry = request[AUDIT_ENTRY]
    cookies = filter_cookies(request_cookies(request), upstream.allowed_cookies)
    entry.cookies.forwarded, entry.cookies.stripped = cookies.forwarded, cookies.stripped  # received: the audit's
    outgoing = upstream_request_headers(
        request.headers, cookie=cookies.header, fwd=request[FORWARDING], identity=identity, extra=upstream.pass_headers
    )
    headers, entry.headers.dropped = outgoing.headers, outgoing.dropped
    _count_dropped(request, outgoing.dropped)
    url = upstream.url_for(request.raw_path if query is None else request.rel_url.raw_path + _query(query))
    # SECURITY: the audit's URL never holds the query (it may hold a token). Cut from the URL's text: what
    # yarl's with_query(None).with_fragment(None) gives, without building two more URLs a request.
    entry.upstream.url = str(url).partition("?")[0].partition("#")[0]
    if _is_websocket(request):
        return await _relay_websocket(request, request.app[UPSTREAM_SESSION], url, headers, upstream)
    data: Body = body
    if body is None and request.body_exists:
        data = timed_body(request.content, upstream.body_timeout)  # a stall raises BodyTimeout, passed on as is
    try:
        response = await request.app[UPSTREAM_POOL].request(
            request.method, upstream.origin, url.raw_path_qs, headers, data, upstream.timeouts
        )
    except UpstreamError as exc:
        raise _fail(entry, request, exc) from None
    with response:
        entry.upstream.status = response.status
        return await _stream_back(request, response, upstream, entry)


def _count_dropped(request: web.Request, dropped: tuple[str, ...]) -> None:
    """Count the dropped header names by reason: a name's own reason, never the name (clients invent those)."""
    if not dropped:
        return
    metrics = request.app[METRICS]
    underscored = sum("_" in name for name in dropped)
    if underscored:
        metrics.count(metrics.headers_dropped, "underscore", amount=underscored)
    if underscored < len(dropped):
        metrics.count(metrics.headers_dropped, "not_allowed", amount=len(dropped) - underscored)


def _query(query: str) -> str:
    return f"?{query}" if query else ""


def _response_headers(response: UpstreamResponse, upstream: Upstream, entry: AuditEntry) -> CIMultiDict[str]:
    """Upstream's headers without hop-by-hop ones, Set-Cookie through the allow-list."""
    headers = without_hop_by_hop(response.headers)
    headers.popall("Set-Cookie", None)
    passed, dropped = [], []
    for value in response.headers.getall("Set-Cookie", ()):
        decision = upstream.set_cookie(value)
        if decision.header is None:
            dropped.append(decision.name)
        else:
            passed.append(decision.name)
            headers.add("Set-Cookie", decision.header)
    entry.cookies.upstream_set, entry.cookies.upstream_dropped = tuple(passed), tuple(dropped)
    return headers


async def _stream_back(
    request: web.Request, response: UpstreamResponse, upstream: Upstream, entry: AuditEntry
) -> web.StreamResponse:
    out = _ProxiedResponse(
        status=response.status, reason=response.reason, headers=_response_headers(response, upstream, entry)
    )
    request[PROXIED] = True
    await out.prepare(request)
    try:
        async for chunk in response.chunks():
            await out.write(chunk)
    except UpstreamError as exc:
        # Headers are gone already: the only honest answer left is to cut the
        # client's connection, so it sees a truncated response, not a whole one.
        entry.aborted = True
        _fail(entry, request, exc)
        if request.transport is not None:
            request.transport.close()
        return out
    await out.write_eof()
    return out


async def _relay_websocket(
    request: web.Request,
    session: aiohttp.ClientSession,
    url: URL,
    headers: CIMultiDict[str] | CIMultiDictProxy[str],
    upstream: Upstream,
) -> web.StreamResponse:
    """Open the upstream WebSocket first (so a refusal is a 502 page), then relay frames both ways."""
    entry = request[AUDIT_ENTRY]
    protocols = [p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",") if p.strip()]
    for name in _WS_HANDSHAKE:
        headers.popall(name, None)  # type: ignore[union-attr]
    try:
        upstream_ws = await session.ws_connect(
            url.with_scheme("wss" if url.scheme == "https" else "ws"),
            headers=headers,
            protocols=protocols,
            max_msg_size=0,
            timeout=aiohttp.ClientWSTimeout(ws_close=upstream.timeouts.read),
        )
    except TimeoutError as exc:
        raise _fail(entry, request, UpstreamTimeout(), exc) from None
    except aiohttp.ClientError as exc:
        raise _fail(entry, request, UpstreamUnreachable(), exc) from None
    entry.upstream.status = 101
    client_ws = web.WebSocketResponse(protocols=[upstream_ws.protocol] if upstream_ws.protocol else (), max_msg_size=0)
    request[PROXIED] = True
    await client_ws.prepare(request)
    async with upstream_ws:
        await asyncio.gather(_pump(client_ws, upstream_ws), _pump(upstream_ws, client_ws))
    return client_ws


async def _pump(
    source: web.WebSocketResponse | aiohttp.ClientWebSocketResponse,
    sink: web.WebSocketResponse | aiohttp.ClientWebSocketResponse,
) -> None:
    """Copy frames from source to sink until source closes; then close sink with the same code."""
    async for message in source:
        if sink.closed:
            break
        if message.type is aiohttp.WSMsgType.TEXT:
            await sink.send_str(message.data)
        elif message.type is aiohttp.WSMsgType.BINARY:
            await sink.send_bytes(message.data)
    if not sink.closed:
        await sink.close(code=source.close_code or aiohttp.WSCloseCode.OK)

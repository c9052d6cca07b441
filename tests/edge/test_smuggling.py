"""Request smuggling and parsing over raw TLS sockets (advisory class 1).

Each request below is framed so that two parsers could disagree on where it
ends (CL.TE, TE.CL, duplicate lengths, folded or bare-CR headers, odd
codings, an upgrade followed by bytes). The gateway must answer 400 or close
the connection, and the upstream must never see the request hidden inside.
"""

from __future__ import annotations

import ssl

import pytest

from tests.conftest import DOMAIN, Gateway, RecordingUpstream, StartGateway, raw_exchange

HIDDEN = b"GET /smuggled HTTP/1.1\r\nHost: " + DOMAIN.encode() + b"\r\n\r\n"
HOST = b"Host: " + DOMAIN.encode() + b"\r\n"


def post(*headers: bytes, body: bytes = b"", target: bytes = b"/front") -> bytes:
    """A request with the given raw header lines (each ending in CRLF) and body."""
    return b"POST " + target + b" HTTP/1.1\r\n" + HOST + b"".join(headers) + b"\r\n" + body


CHUNKED_THEN_HIDDEN = b"0\r\n\r\n" + HIDDEN
SMUGGLING = {
    "cl-te": post(b"Content-Length: 5\r\n", b"Transfer-Encoding: chunked\r\n", body=CHUNKED_THEN_HIDDEN),
    "te-cl": post(b"Transfer-Encoding: chunked\r\n", b"Content-Length: 5\r\n", body=CHUNKED_THEN_HIDDEN),
    "two-content-lengths": post(
        b"Content-Length: 0\r\n", b"Content-Length: %d\r\n" % len(HIDDEN), body=HIDDEN + HIDDEN
    ),
    "two-equal-content-lengths": post(b"Content-Length: 0\r\n", b"Content-Length: 0\r\n", body=HIDDEN),
    "content-length-list": post(b"Content-Length: 0, %d\r\n" % len(HIDDEN), body=HIDDEN + HIDDEN),
    "content-length-plus": post(b"Content-Length: +0\r\n", body=HIDDEN),
    "obs-fold-transfer-encoding": post(b"Transfer-Encoding:\r\n chunked\r\n", body=CHUNKED_THEN_HIDDEN),
    "obs-fold-header": post(b"X-Note: a\r\n b\r\n", b"Content-Length: 0\r\n", body=HIDDEN),
    "te-gzip-chunked": post(b"Transfer-Encoding: gzip, chunked\r\n", body=CHUNKED_THEN_HIDDEN),
    "te-chunked-gzip": post(b"Transfer-Encoding: chunked, gzip\r\n", body=CHUNKED_THEN_HIDDEN),
    "te-identity": post(b"Transfer-Encoding: identity\r\n", b"Content-Length: 0\r\n", body=HIDDEN),
    "te-xchunked": post(b"Transfer-Encoding: xchunked\r\n", body=CHUNKED_THEN_HIDDEN),
    "te-twice": post(b"Transfer-Encoding: chunked\r\n", b"Transfer-Encoding: chunked\r\n", body=CHUNKED_THEN_HIDDEN),
    "te-space-before-colon": post(b"Transfer-Encoding : chunked\r\n", body=CHUNKED_THEN_HIDDEN),
    "te-tab-value": post(b"Transfer-Encoding:\tchunked\x0b\r\n", body=CHUNKED_THEN_HIDDEN),
    "te-http-1.0": b"POST /front HTTP/1.0\r\n" + HOST + b"Transfer-Encoding: chunked\r\n\r\n" + CHUNKED_THEN_HIDDEN,
    "chunk-size-overflow": post(b"Transfer-Encoding: chunked\r\n", body=b"10000000000000000\r\n" + HIDDEN),
    "chunk-extension-bare-cr": post(b"Transfer-Encoding: chunked\r\n", body=b"0;a\rb\r\n\r\n" + HIDDEN),
    "chunk-lf-only": post(b"Transfer-Encoding: chunked\r\n", body=b"0\n\n" + HIDDEN),
    "bare-cr-in-header": post(b"X-Note: a\rTransfer-Encoding: chunked\r\n", body=CHUNKED_THEN_HIDDEN),
    "bare-lf-in-header": post(b"X-Note: a\nContent-Length: 0\r\n", body=HIDDEN),
    "bare-lf-line-ends": b"POST /front HTTP/1.1\nHost: " + DOMAIN.encode() + b"\nContent-Length: 0\n\n" + HIDDEN,
    "nul-in-header": post(b"X-Note: a\x00b\r\n", b"Content-Length: 0\r\n", body=HIDDEN),
    "space-in-target": b"GET /front HTTP/1.1/../smuggled HTTP/1.1\r\n" + HOST + b"\r\n",
    "space-in-path": b"GET /fr ont HTTP/1.1\r\n" + HOST + b"\r\n" + HIDDEN,
    "tab-in-request-line": b"GET\t/front HTTP/1.1\r\n" + HOST + b"\r\n" + HIDDEN,
    "trailing-space-in-request-line": b"GET /front HTTP/1.1 \r\n" + HOST + b"\r\n" + HIDDEN,
    "header-without-colon": b"GET /front HTTP/1.1\r\n" + HOST + b"Transfer-Encoding chunked\r\n\r\n" + HIDDEN,
    "upgrade-h2c-then-bytes": b"GET /front HTTP/1.1\r\n"
    + HOST
    + b"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n"
    + HIDDEN,
    "upgrade-websocket-then-bytes": b"GET /front HTTP/1.1\r\n"
    + HOST
    + b"Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
    + b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    + HIDDEN,
    "upgrade-with-body": post(
        b"Connection: Upgrade\r\n", b"Upgrade: websocket\r\n", b"Content-Length: %d\r\n" % len(HIDDEN), body=HIDDEN
    ),
}


# A real WebSocket handshake goes upstream (which refuses it here); what follows it must not.
HANDSHAKE = "upgrade-websocket-then-bytes"


@pytest.mark.parametrize("name", sorted(SMUGGLING))
async def test_ambiguous_framing_is_refused_and_nothing_is_smuggled(
    gateway: Gateway, upstream: RecordingUpstream, client_ssl: ssl.SSLContext, name: str
) -> None:
    """Class 1, request smuggling (CL.TE/TE.CL desync, obs-fold, bare CR/LF, h2c upgrade): 400 and closed."""
    answer = await raw_exchange(gateway, SMUGGLING[name], client_ssl)
    assert answer.closed, answer.data[:600]
    assert answer.statuses in ([502] if name == HANDSHAKE else [400], []), answer.data[:600]
    assert [recorded.path for recorded in upstream.requests] == (["/front"] if name == HANDSHAKE else [])


async def test_a_well_framed_pipeline_is_served_in_order(
    gateway: Gateway, upstream: RecordingUpstream, client_ssl: ssl.SSLContext
) -> None:
    """Class 1 control: the same raw client, framed correctly, gets every pipelined request answered."""
    chunked = post(b"Transfer-Encoding: chunked\r\n", body=b"3\r\nabc\r\n0\r\n\r\n")
    sized = post(b"Content-Length: 3\r\n", body=b"xyz", target=b"/second")
    last = b"GET /third HTTP/1.1\r\n" + HOST + b"Connection: close\r\n\r\n"
    answer = await raw_exchange(gateway, chunked + sized + last, client_ssl)
    assert answer.statuses == [200, 200, 200], answer.data[:600]
    assert [(r.path, r.body_size) for r in upstream.requests] == [("/front", 3), ("/second", 3), ("/third", 0)]


UNDERSCORED = post(b"Transfer_Encoding: chunked\r\n", b"Content-Length: 5\r\n", body=CHUNKED_THEN_HIDDEN)


async def test_an_underscore_name_is_dropped_by_default(
    gateway: Gateway, upstream: RecordingUpstream, client_ssl: ssl.SSLContext
) -> None:
    """Issue 20, class 1: ``Transfer_Encoding`` beside Content-Length goes upstream as neither framing:
    the gateway frames by the length and sends its own; the name with "_" is dropped."""
    answer = await raw_exchange(gateway, UNDERSCORED, client_ssl, seconds=1.0)
    assert answer.statuses[:1] == [200], answer.data[:600]
    front = upstream.requests[0]
    assert front.path == "/front"
    assert front.body == b"0\r\n\r\n"
    assert [name for name in front.headers if "_" in name or name.lower() == "transfer-encoding"] == []


async def test_an_underscore_name_is_refused_when_configured(
    start_gateway: StartGateway, upstream: RecordingUpstream, client_ssl: ssl.SSLContext
) -> None:
    """Issue 20, class 1: ``requests.underscore_headers: refuse`` answers 400 and closes the connection,
    whatever the name (a harmless one too); nothing reaches upstream."""
    gateway = await start_gateway(requests={"underscore_headers": "refuse"})
    for request in (UNDERSCORED, post(b"X_Note: 1\r\n", b"Content-Length: 0\r\n", body=HIDDEN)):
        answer = await raw_exchange(gateway, request, client_ssl)
        assert answer.statuses == [400], answer.data[:600]
        assert answer.closed
    assert upstream.requests == []

"""The HTTP/1.1 connection handler: aiohttp's, with the configured limits; a head it refuses gets the gateway's answer.

aiohttp answers a request its parser refuses with a plain-text 400 that
quotes the offending line, and logs the same line: a Cookie or Authorization
header with a stray byte would be echoed to the client and written to the
log. Here such a request is instead handed to the app as a stand-in request
that holds only what is safe to keep of the head (method, path without its
query, Host and Accept), so the pipeline answers it like any other: 414 for a
request line past ``MAX_LINE``, 431 for a header line past
``requests.max_field_size`` or more than ``requests.max_headers`` headers, 400
for any other malformed head; the gateway's page or JSON error, a request id,
an audit record and the request metrics. The connection then closes: the
parser cannot find where the next request would start.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus

from aiohttp import web
from aiohttp.http import HttpVersion11, RawRequestMessage
from aiohttp.http_exceptions import HttpProcessingError, LineTooLong
from aiohttp.streams import EMPTY_PAYLOAD
from aiohttp.web_protocol import RequestHandler, _ErrInfo
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from gateway.config import RequestsConfig

log = logging.getLogger(__name__)

SERVER = "portal-gateway"  # the Server header of every answer, the parser's refusals included

# A 10 KB search, percent-encoded, must reach the handler (aiohttp's default request line is 8190 bytes).
MAX_LINE = 32 * 1024
ProtocolFactory = Callable[[], RequestHandler]

TOO_MANY_HEADERS = "Too many headers received"  # the message of aiohttp's BadHttpMessage for max_headers
# Characters of a refused request's path kept for the audit record: as many as aiohttp's parser quotes of
# a line it refused, so the cut is the same whichever read the path came from.
KEPT_PATH = 100
_SCANNED = 64 * 1024  # bytes of the refused read searched for the request line, Host and Accept
_REQUEST_LINE = re.compile(rb"(?:\r?\n)*([!#$%&'*+.^_`|~0-9A-Za-z-]{1,20}) ([^ \r\n]*)")
# SECURITY: only characters a path may hold unencoded (RFC 3986 pchar and "/"): anything else in a
# refused head is dropped whole, never cut down to a prefix that could carry what followed it.
_SAFE_PATH = re.compile(rb"/[A-Za-z0-9\-._~!$&'()*+,;=:@/%]*")
_SAFE_HOST = re.compile(rb"[A-Za-z0-9.\-]{1,253}(?::[0-9]{1,5})?|\[[0-9A-Fa-f:.]{2,45}\](?::[0-9]{1,5})?")
_SAFE_ACCEPT = re.compile(rb"[\x20-\x7e]{0,1024}")


@dataclass(frozen=True)
class Refusal:
    """A request head the parser refused: the status to answer and the stand-in message the app sees."""

    status: int
    message: RawRequestMessage


def _status(exc: HttpProcessingError) -> int:
    """414, 431 or 400 for what the parser refused."""
    if isinstance(exc, LineTooLong):
        # The parser names the limit it hit: MAX_LINE is the request line's (were requests.max_field_size set
        # to exactly MAX_LINE, an over-long header would read as a 414: refused all the same).
        return 414 if exc.args[1] == MAX_LINE else 431
    return 431 if exc.message == TOO_MANY_HEADERS else 400


def _head_fields(lines: list[bytes]) -> CIMultiDict[str]:
    """Host and Accept from the complete header lines, when their values are plainly harmless."""
    kept: CIMultiDict[str] = CIMultiDict()
    for line in lines:
        line = line.rstrip(b"\r")
        if not line:
            break  # the end of the head
        name, _, value = line.partition(b":")
        value = value.strip(b" \t")
        for wanted, safe in ((b"host", _SAFE_HOST), (b"accept", _SAFE_ACCEPT)):
            if name.lower() == wanted and wanted.decode() not in kept and safe.fullmatch(value):
                kept[wanted.decode()] = value.decode("ascii")
    return kept


def refused_head(exc: HttpProcessingError, data: bytes) -> Refusal:
    """The answer's status and a stand-in message for a head the parser refused while reading ``data``.

    ``data`` is the read the parser failed in; it usually starts with the refused head. When it does not
    (a head longer than one read), the path comes from the start of the request line that the parser quotes
    in its error, and the method, Host and Accept are not known. A read holding several heads (pipelining;
    aiohttp answers none of those before the refused one) is taken for its first.
    """
    scanned = data[:_SCANNED]
    method, target, lines = "UNKNOWN", b"", []
    line = _REQUEST_LINE.match(scanned)
    if line is not None:
        method, target = line[1].decode("ascii"), line[2]
        # Only lines ended within the read: the last piece may be cut.
        lines = scanned[line.end() :].split(b"\n")[1:-1]
    elif isinstance(exc, LineTooLong) and isinstance(exc.args[0], bytes | bytearray):  # llhttp's: a bytearray
        target = bytes(exc.args[0]).removesuffix(b"...")
    # SECURITY: never the query (it may hold a token or a search) and never a long path whole.
    path = target.partition(b"?")[0].partition(b"#")[0][:KEPT_PATH]
    safe = path.decode("ascii") if _SAFE_PATH.fullmatch(path) else ""
    headers = _head_fields(lines)
    headers.setdefault("Host", "")  # never left to aiohttp's fallback, a blocking getfqdn()
    message = RawRequestMessage(
        method,
        safe,
        HttpVersion11,
        CIMultiDictProxy(headers),
        (),
        True,  # should_close: the parser cannot find where the next request would start
        None,
        False,
        False,
        URL.build(path=safe, encoded=True),
    )
    return Refusal(_status(exc), message)


class QuietRequestHandler(RequestHandler):
    """aiohttp's request handler whose own error answers and logs carry no request bytes."""

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """A bare ``status`` page that closes the connection; the log names the error's type only.

        With :class:`PipelineRequestHandler` what still comes here is a handler's unhandled error and a head
        refused behind a declined upgrade.
        """
        # SECURITY: the Apache CVE-2012-0053 class: a 400 page quoting the header it refused hands
        # HttpOnly cookies and bearer tokens to a script that can read the response. Quote nothing.
        log.warning("refused a request the parser could not read: %s", type(exc).__name__ if exc else status)
        if request.writer.output_size > 0:
            raise ConnectionError("the response had started; the connection is closed instead")
        phrase = HTTPStatus(status).phrase
        response = web.Response(status=status, text=f"{status} {phrase}\n", headers={"Server": SERVER})
        response.force_close()
        return response


class PipelineRequestHandler(QuietRequestHandler):
    """A quiet request handler whose parser's refusals reach the app as stand-in requests."""

    refusal: Refusal | None = None
    """The head refused on this connection, once there was one (the connection then closes)."""
    read_ns = 0
    """``time.monotonic_ns()`` as the last bytes of this connection reached the parser: every request it has
    delivered had arrived by then (:func:`arrived_ns`)."""

    def data_received(self, data: bytes) -> None:
        """Parse as aiohttp does; a parse error it queued becomes the stand-in request of :func:`refused_head`."""
        self.read_ns = time.monotonic_ns()  # before the parser: the requests in ``data`` arrived before this
        super().data_received(data)
        # aiohttp queues a parse error as an _ErrInfo, which it would answer itself with handle_error.
        if self.refusal is None and self._messages and isinstance(error := self._messages[-1][0], _ErrInfo):
            exc = error.exc
            # SECURITY: as in handle_error: the log names the error's type, never the bytes it quotes.
            log.warning("refused a request the parser could not read: %s", type(exc).__name__)
            if isinstance(exc, HttpProcessingError):
                self.refusal = refused_head(exc, data)
                self._messages[-1] = (self.refusal.message, EMPTY_PAYLOAD)
            self.close()  # read nothing more: the requests queued before it are answered, then the connection ends

    async def finish_response(
        self, request: web.BaseRequest, resp: web.StreamResponse, start_time: float | None
    ) -> tuple[web.StreamResponse, bool]:
        """Write the answer as aiohttp does, then drop what the request and its answer carried.

        aiohttp's ``start()`` keeps the last request and response in its frame until the connection's next
        request, so an idle kept-alive connection would hold what the pipeline recorded on its last request
        (its cookies, forwarding, identity and access results) and the answer's headers: some 3-4 KB a
        connection, 5,000 idle connections' 20 MB (bench/README.md, "Round six: idle connections"). Nothing
        reads them once the answer is written: the audit record and the metrics were taken by then.
        """
        answered = await super().finish_response(request, resp, start_time)
        request.clear()  # the pipeline's stages' results, under their request keys
        if resp.prepared:
            resp.clear()
            resp.headers.clear()  # sent; aiohttp reads only the response's keep-alive flag after this
        return answered


def refused_status(request: web.BaseRequest) -> int | None:
    """The status to answer when ``request`` stands in for a head the parser refused, else None."""
    protocol = request.protocol
    refusal = protocol.refusal if isinstance(protocol, PipelineRequestHandler) else None
    # Requests queued before the refused one on the same connection are answered as usual.
    return refusal.status if refusal is not None and refusal.message.headers is request.headers else None


def arrived_ns(request: web.BaseRequest) -> int | None:
    """An instant (``time.monotonic_ns()``) by which ``request`` had arrived whole; None when not known."""
    protocol = request.protocol
    return protocol.read_ns if isinstance(protocol, PipelineRequestHandler) else None


def connection_factory(server: web.Server, limits: RequestsConfig | None) -> ProtocolFactory:
    """A protocol factory for ``server``'s connections; with ``limits`` (the gateway's app, whose pipeline answers
    refused heads), the configured header sizes and deadlines."""
    loop = asyncio.get_running_loop()
    # SECURITY: no access log; its lines would hold query strings. aiohttp reads a falsy logger as "off".
    if limits is None:
        return functools.partial(QuietRequestHandler, server, loop=loop, access_log=None)  # type: ignore[arg-type]
    return functools.partial(
        PipelineRequestHandler,
        server,
        loop=loop,
        access_log=None,  # type: ignore[arg-type]
        max_line_size=MAX_LINE,
        max_field_size=limits.max_field_size,
        max_headers=limits.max_headers,
        # SECURITY: an idle kept-alive connection, one dripping its next head, or one still sending a body
        # that was already answered (a 408 or 413) is closed on the same deadline as a new connection's head.
        keepalive_timeout=limits.header_timeout,
        lingering_time=limits.header_timeout,
    )

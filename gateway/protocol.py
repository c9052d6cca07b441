"""The HTTP/1.1 connection handler: aiohttp's, with the configured limits, never quoting a bad request.

aiohttp answers a request its parser refuses with a plain-text 400 that
quotes the offending line, and logs the same line: a Cookie or Authorization
header with a stray byte would be echoed to the client and written to the
log. This handler answers with the status alone and logs the error's type.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from http import HTTPStatus

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from gateway.config import RequestsConfig

log = logging.getLogger(__name__)

# A 10 KB search, percent-encoded, must reach the handler (aiohttp's default request line is 8190 bytes).
MAX_LINE = 32 * 1024
ProtocolFactory = Callable[[], RequestHandler]


class QuietRequestHandler(RequestHandler):
    """aiohttp's request handler whose parse-error answers and logs carry no request bytes."""

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """A bare ``status`` page that closes the connection; the log names the error's type only."""
        # SECURITY: the Apache CVE-2012-0053 class: a 400 page quoting the header it refused hands
        # HttpOnly cookies and bearer tokens to a script that can read the response. Quote nothing.
        log.warning("refused a request the parser could not read: %s", type(exc).__name__ if exc else status)
        if request.writer.output_size > 0:
            raise ConnectionError("the response had started; the connection is closed instead")
        phrase = HTTPStatus(status).phrase
        response = web.Response(status=status, text=f"{status} {phrase}\n", headers={"Server": "portal-gateway"})
        response.force_close()
        return response


def connection_factory(server: web.Server, limits: RequestsConfig | None) -> ProtocolFactory:
    """A protocol factory for ``server``'s connections; with ``limits``, the configured header sizes and deadlines."""
    # SECURITY: no access log; its lines would hold query strings. aiohttp reads a falsy logger as "off".
    make = functools.partial(QuietRequestHandler, server, loop=asyncio.get_running_loop(), access_log=None)  # type: ignore[arg-type]
    if limits is None:
        return make
    return functools.partial(
        make,
        max_line_size=MAX_LINE,
        max_field_size=limits.max_field_size,
        max_headers=limits.max_headers,
        # SECURITY: an idle kept-alive connection, one dripping its next head, or one still sending a body
        # that was already answered (a 408 or 413) is closed on the same deadline as a new connection's head.
        keepalive_timeout=limits.header_timeout,
        lingering_time=limits.header_timeout,
    )

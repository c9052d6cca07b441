"""The aiohttp internals the gateway relies on, each still there in the shape the code uses.

pyproject.toml caps aiohttp below the next minor: before raising the cap, this
file says what the new version moved. Each check names the module that uses it.
"""

from __future__ import annotations

import collections
import inspect
from typing import NamedTuple

from aiohttp import web
from aiohttp.http import HttpVersion11, RawRequestMessage
from aiohttp.http_exceptions import HttpProcessingError, LineTooLong
from aiohttp.streams import EMPTY_PAYLOAD, EmptyStreamReader
from aiohttp.test_utils import TestClient, TestServer
from aiohttp.web_protocol import RequestHandler, _ErrInfo
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from gateway.proxy.forward import _ProxiedResponse
from gateway.run.protocol import PipelineRequestHandler, QuietRequestHandler, connection_factory


def test_stream_response_has_send_headers_immediately() -> None:
    """gateway/proxy/forward.py: a class attribute, True on StreamResponse, False on aiohttp's own Response."""
    assert web.StreamResponse._send_headers_immediately is True
    assert web.Response._send_headers_immediately is False
    assert _ProxiedResponse._send_headers_immediately is False


def test_request_handler_is_a_class_with_the_hooks_overridden() -> None:
    """gateway/run/protocol.py: subclassed, overriding handle_error(request, status, exc, message) and
    data_received(data); close() is called; __init__ takes the keywords connection_factory passes."""
    assert issubclass(PipelineRequestHandler, QuietRequestHandler)
    assert issubclass(QuietRequestHandler, RequestHandler)
    assert list(inspect.signature(RequestHandler.handle_error).parameters) == [
        "self",
        "request",
        "status",
        "exc",
        "message",
    ]
    assert list(inspect.signature(RequestHandler.data_received).parameters) == ["self", "data"]
    assert callable(RequestHandler.close)
    init = inspect.signature(RequestHandler.__init__).parameters
    for keyword in (
        "loop",
        "access_log",
        "max_line_size",
        "max_field_size",
        "max_headers",
        "keepalive_timeout",
        "lingering_time",
    ):
        assert init[keyword].kind is inspect.Parameter.KEYWORD_ONLY, keyword


def test_err_info_carries_the_parser_exception() -> None:
    """gateway/run/protocol.py: a queued parse error is an _ErrInfo with ``exc``; the parser's errors as used."""
    assert inspect.isclass(_ErrInfo)
    assert list(inspect.signature(_ErrInfo).parameters) == ["status", "exc", "message"]
    assert issubclass(LineTooLong, HttpProcessingError)
    assert isinstance(EMPTY_PAYLOAD, EmptyStreamReader)
    # Built positionally (refused_head): the fields in this order, read back by name.
    fields = (
        "GET",
        "/x",
        HttpVersion11,
        CIMultiDictProxy(CIMultiDict(Host="h")),
        (),
        True,
        None,
        False,
        False,
        URL("/x"),
    )
    message = RawRequestMessage(*fields)
    names = ("method", "path", "version", "headers", "raw_headers", "should_close", "compression", "upgrade")
    assert tuple(getattr(message, name) for name in (*names, "chunked", "url")) == fields


class Seen(NamedTuple):
    """What a handler of a real server saw of aiohttp's internals."""

    messages: object
    output_size: object
    protocol: object


async def test_a_real_connection_has_messages_output_size_and_a_runner_server() -> None:
    """gateway/run/protocol.py reads ``self._messages`` (a deque of (message, payload)) and
    ``request.writer.output_size`` (an int); gateway/run/server.py takes ``runner.server`` after setup and
    builds the connections with connection_factory; gateway/edge/slowclients.py reads ``request.protocol``."""
    seen: list[Seen] = []

    async def handler(request: web.Request) -> web.Response:
        protocol = request.protocol
        seen.append(Seen(protocol._messages, request.writer.output_size, protocol))
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        assert isinstance(runner.server, web.Server)
        factory = connection_factory(runner.server, None)
        assert isinstance(factory(), QuietRequestHandler)
    finally:
        await runner.cleanup()
    async with TestClient(TestServer(app)) as client, client.get("/") as response:
        assert response.status == 200
    [(messages, output_size, protocol)] = seen
    assert isinstance(messages, collections.deque)
    assert isinstance(output_size, int)
    assert isinstance(protocol, RequestHandler)

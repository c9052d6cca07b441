"""Shared test harness: a trustme CA, a recording upstream, the real gateway over real TLS.

Nothing of the project is mocked: the gateway runs through ``gateway.run.server.start``
exactly as ``serve`` runs it; only the hosted help center is faked, by a small
aiohttp app that records what reached it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest
import trustme
from aiohttp import web
from aiohttp.test_utils import TestServer
from multidict import CIMultiDictProxy
from prometheus_client import generate_latest
from yarl import URL

from gateway.config import GatewayConfig
from gateway.observe.metrics import METRICS
from gateway.run.logs import JSONFormatter
from gateway.run.server import Running, start
from gateway.run.tls import server_context
from tests.pgserver import PostgresServer, start_server

DOMAIN = "help.example.com"
WORKSPACE = "ws1a2b3c"
SESSION_COOKIE = f"intercom-session-{WORKSPACE}"
DEVICE_COOKIE = f"intercom-device-id-{WORKSPACE}"
SECRET = "test-messenger-secret-0123456789abcdef"
# Planted in cookie values, tokens and secrets; no audit file of the run may contain it.
CANARY = "CANARYc4n4ry"
KEPT_BODY = 1024**2
REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference"


@dataclass(frozen=True)
class CertFiles:
    """A certificate for localhost, 127.0.0.1 and the test domain, signed by the test CA."""

    cert: Path
    key: Path
    ca: Path


LoopFactory = Callable[[], asyncio.AbstractEventLoop]
ASYNCIO_LOOP: Mapping[str, LoopFactory] = {"asyncio": asyncio.new_event_loop}
# A signed token in any shape (header.payload.): never written anywhere the gateway writes.
JWT_SHAPE = re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.eyJ[A-Za-z0-9_-]{4,}\.")


def planted(text: str) -> list[str]:
    """Which planted values (canary, secret, a token) ``text`` holds."""
    found = [value for value in (CANARY, SECRET) if value in text]
    return found + [match[0] for match in JWT_SHAPE.finditer(text)]


@dataclass
class Leaks:
    """Where planted values were seen during the run: log lines, audit files, metrics, error pages."""

    found: list[str] = field(default_factory=list)

    def check(self, where: str, text: str) -> None:
        if values := planted(text):
            self.found.append(f"{where}: {values[0]!r} in {text[:300]!r}")


class _LogLeaks(logging.Handler):
    """Formats every log record of the run as the gateway writes it, and checks the line."""

    def __init__(self, leaks: Leaks) -> None:
        super().__init__(logging.DEBUG)
        self.leaks = leaks
        self.setFormatter(JSONFormatter())

    def emit(self, record: logging.LogRecord) -> None:
        self.leaks.check(f"log line of {record.name}", self.format(record))


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> Mapping[str, LoopFactory]:
    """The event loops a test runs on: asyncio's, or each of those in its module's ``LOOP_FACTORIES``."""
    factories: Mapping[str, LoopFactory] = getattr(getattr(item, "module", None), "LOOP_FACTORIES", ASYNCIO_LOOP)
    return factories


@pytest.fixture(scope="session", autouse=True)
def leaks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Leaks]:
    """Class 8, secret hygiene, over the whole run: no planted cookie value, token or secret in any log
    line, audit file, metrics exposition or error page (the last two are checked as each gateway stops)."""
    found = Leaks()
    handler = _LogLeaks(found)
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield found
    root.removeHandler(handler)
    root.setLevel(level)
    for path in tmp_path_factory.getbasetemp().rglob("audit*.jsonl*"):
        found.check(f"audit file {path}", path.read_text(errors="replace"))
    assert not found.found, "planted values leaked:\n" + "\n".join(found.found)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A throwaway PostgreSQL server for the whole session (tests/pgserver.py), removed at the end."""
    server = start_server()
    yield server
    server.remove()


@pytest.fixture(scope="session")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="session")
def cert_files(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> CertFiles:
    folder = tmp_path_factory.mktemp("certs")
    leaf = ca.issue_cert("localhost", "127.0.0.1", DOMAIN)
    files = CertFiles(cert=folder / "cert.pem", key=folder / "key.pem", ca=folder / "ca.pem")
    leaf.cert_chain_pems[0].write_to_path(str(files.cert))
    leaf.private_key_pem.write_to_path(str(files.key))
    ca.cert_pem.write_to_path(str(files.ca))
    return files


@pytest.fixture(scope="session")
def client_ssl(ca: trustme.CA) -> ssl.SSLContext:
    """A client context that trusts only the test CA."""
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


def deep_merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``overrides`` written into it, section by section."""
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def config_dict(cert_files: CertFiles, tmp_path: Path, upstream_url: str) -> dict[str, Any]:
    """A complete, valid configuration as the YAML file would hold it."""
    return {
        "workspace_id": WORKSPACE,
        "domain": DOMAIN,
        "listen": {"https": "127.0.0.1:0", "http": "127.0.0.1:0", "shutdown_grace": 2, "allowed_hosts": ["127.0.0.1"]},
        "tls": {"cert": str(cert_files.cert), "key": str(cert_files.key), "hsts_max_age": 31536000},
        "upstream": {"url": upstream_url, "connect_timeout": 2, "read_timeout": 2},
        "identity": {"jwt": {"secrets": [SECRET]}},
        "messenger": {"upstream": "http://127.0.0.1:9"},
        "audit": {"path": str(tmp_path / "audit.jsonl")},
        "store": {"path": str(tmp_path / "portal.db")},
    }


@dataclass
class Recorded:
    """One request as the upstream saw it."""

    method: str
    path: str
    query_string: str
    headers: CIMultiDictProxy[str]
    body_size: int
    raw_path: str
    body: bytes = b""
    """The first ``KEPT_BODY`` bytes of the body (big streaming bodies are only counted)."""
    raw_query: str = ""
    """The query string as sent, still percent-encoded."""
    peer_port: int = 0
    """The gateway's port of the connection it came on: requests on one kept-alive connection share it."""


UpstreamHandler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class RecordingUpstream:
    """A stand-in for the hosted help center that records every request it receives.

    By default it answers 200 with a small JSON body; ``on(path, handler)``
    replaces the answer for one path. Request bodies are counted; only their
    first ``KEPT_BODY`` bytes are kept.
    """

    url: URL = field(default_factory=URL)
    requests: list[Recorded] = field(default_factory=list)
    handlers: dict[str, UpstreamHandler] = field(default_factory=dict)

    def on(self, path: str, handler: UpstreamHandler) -> None:
        self.handlers[path] = handler

    @property
    def last(self) -> Recorded:
        return self.requests[-1]

    async def handle(self, request: web.Request) -> web.StreamResponse:
        handler = self.handlers.get(request.path)
        if handler is not None and request.headers.get("Upgrade", "").lower() == "websocket":
            self.requests.append(
                Recorded(request.method, request.path, request.query_string, request.headers, 0, request.raw_path)
            )
            return await handler(request)
        size, kept = 0, bytearray()
        async for chunk in request.content.iter_any():
            size += len(chunk)
            if len(kept) < KEPT_BODY:
                kept += chunk[: KEPT_BODY - len(kept)]
        self.requests.append(
            Recorded(
                request.method,
                request.path,
                request.query_string,
                request.headers,
                size,
                request.raw_path,
                bytes(kept),
                request.rel_url.raw_query_string,
                request.transport.get_extra_info("peername")[1] if request.transport else 0,
            )
        )
        if handler is not None:
            return await handler(request)
        return web.json_response({"path": request.path, "received": size})


StartUpstream = Callable[..., Awaitable[RecordingUpstream]]


@pytest.fixture
async def start_upstream() -> AsyncIterator[StartUpstream]:
    """Start recording upstreams with server options (``ssl``, ``keepalive_timeout``); closed after the test."""
    servers: list[TestServer] = []

    async def start(**options: Any) -> RecordingUpstream:
        recorder = RecordingUpstream()
        app = web.Application(client_max_size=0)
        app.router.add_route("*", "/{tail:.*}", recorder.handle)
        server = TestServer(app, host="127.0.0.1")
        servers.append(server)
        await server.start_server(**options)
        recorder.url = server.make_url("/")
        return recorder

    yield start
    for server in servers:
        await server.close()


@pytest.fixture
async def upstream(start_upstream: StartUpstream) -> RecordingUpstream:
    return await start_upstream()


MakeConfig = Callable[..., GatewayConfig]


@pytest.fixture
def make_config(cert_files: CertFiles, tmp_path: Path, upstream: RecordingUpstream) -> MakeConfig:
    """Build a validated config pointing at the recording upstream, with overrides merged in."""

    def make(**overrides: Any) -> GatewayConfig:
        raw = deep_merge(config_dict(cert_files, tmp_path, str(upstream.url)), overrides)
        return GatewayConfig.model_validate(raw, context={"environ": {}})

    return make


def audit_records(path: Path) -> list[dict[str, Any]]:
    """The records written to an audit file so far (none when there is no file): its whole lines only.

    The writer thread appends a batch with one write(2), but a reader polling the live file can see it land
    page by page, and so read a record cut in two: what follows the last newline is not written yet.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in data[: data.rfind(b"\n") + 1].splitlines()]


@dataclass
class Gateway:
    """A running gateway and a client that trusts its certificate."""

    running: Running
    config: GatewayConfig
    client: aiohttp.ClientSession

    @property
    def url(self) -> URL:
        return URL.build(scheme="https", host="127.0.0.1", port=self.running.https_port)

    @property
    def http_url(self) -> URL:
        assert self.running.http_port is not None
        return URL.build(scheme="http", host="127.0.0.1", port=self.running.http_port)

    def audit_records(self) -> list[dict[str, Any]]:
        """The audit file's whole records so far."""
        return audit_records(self.config.audit.path)

    async def audit_for(self, request_id: str) -> dict[str, Any]:
        """The audit record of one request, waiting for the writer thread to write it."""
        for _ in range(500):
            found = [record for record in self.audit_records() if record["request_id"] == request_id]
            if found:
                return found[0]
            await asyncio.sleep(0.01)
        raise AssertionError(f"no audit record for request {request_id}")


StartGateway = Callable[..., Awaitable[Gateway]]


@pytest.fixture
async def start_gateway(
    make_config: MakeConfig, client_ssl: ssl.SSLContext, cert_files: CertFiles, leaks: Leaks
) -> AsyncIterator[StartGateway]:
    """Start the real gateway (``gateway.run.server.start``) with config overrides; stopped after the test."""
    started: list[Gateway] = []

    async def launch(**overrides: Any) -> Gateway:
        config = make_config(**overrides)
        running = await start(config, server_context(config.tls.cert, config.tls.key))
        client = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=client_ssl),
            cookie_jar=aiohttp.DummyCookieJar(),
            trace_configs=[error_page_check(leaks)],
        )
        gateway = Gateway(running=running, config=config, client=client)
        started.append(gateway)
        return gateway

    yield launch
    for gateway in started:
        await gateway.client.close()
        leaks.check("metrics", generate_latest(gateway.running.app[METRICS].registry).decode())
        await gateway.running.stop()


def error_page_check(leaks: Leaks) -> aiohttp.TraceConfig:
    """A client trace that checks the headers and body of every error answer (status 400 and up)."""
    trace = aiohttp.TraceConfig()

    async def on_end(session: object, context: SimpleNamespace, params: aiohttp.TraceRequestEndParams) -> None:
        context.error = params.response.status >= 400
        context.body = b""
        if context.error:
            leaks.check(f"error headers of {params.url}", str(params.response.headers))

    async def on_chunk(
        session: object, context: SimpleNamespace, params: aiohttp.TraceResponseChunkReceivedParams
    ) -> None:
        if getattr(context, "error", False):
            context.body += params.chunk
            leaks.check(f"error page of {params.url}", context.body.decode(errors="replace"))

    trace.on_request_end.append(on_end)
    trace.on_response_chunk_received.append(on_chunk)
    return trace


@pytest.fixture
async def gateway(start_gateway: StartGateway) -> Gateway:
    """The gateway on the default test config."""
    return await start_gateway()


@pytest.fixture
def reference() -> Path:
    """``../shared/reference``; tests that need it skip, saying why, where it is absent."""
    if not REFERENCE.is_dir():
        pytest.skip(f"reference data not found at {REFERENCE} (clone made outside the workspace)")
    return REFERENCE


@dataclass(frozen=True)
class RawAnswer:
    """What came back on one raw connection, and whether the gateway closed it."""

    data: bytes
    closed: bool

    @property
    def statuses(self) -> list[int]:
        """The status codes of every response in the answer, in order."""
        return [int(status) for status in re.findall(rb"HTTP/1\.[01] (\d{3}) ", self.data)]


async def raw_exchange(gateway: Gateway, data: bytes, context: ssl.SSLContext, *, seconds: float = 3.0) -> RawAnswer:
    """Send ``data`` as is over one TLS connection; read until the gateway closes it or goes quiet
    for ``seconds``: for requests no HTTP client library would write."""
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", gateway.running.https_port, ssl=context, server_hostname=DOMAIN
    )
    writer.write(data)
    answer, closed = b"", False
    try:
        while chunk := await asyncio.wait_for(reader.read(65536), seconds):
            answer += chunk
        closed = True
    except (ConnectionResetError, ssl.SSLError):
        closed = True
    except TimeoutError:
        pass
    writer.close()
    with contextlib.suppress(OSError, ssl.SSLError):
        await writer.wait_closed()
    return RawAnswer(answer, closed)


@dataclass
class JWKSServer:
    """A loopback identity provider: serves ``document`` at ``url`` with ``status``."""

    url: URL
    document: Any = field(default_factory=lambda: {"keys": []})
    status: int = 200
    requests: int = 0


@pytest.fixture
async def idp() -> AsyncIterator[JWKSServer]:
    """A loopback identity provider publishing a JWK set (empty until a test sets ``document``)."""
    state = JWKSServer(url=URL())

    async def serve(request: web.Request) -> web.Response:
        state.requests += 1
        if state.status in (301, 302):
            raise web.HTTPFound("/elsewhere")
        body = state.document if isinstance(state.document, str) else json.dumps(state.document)
        return web.Response(status=state.status, text=body, content_type="application/json")

    app = web.Application()
    app.router.add_get("/.well-known/jwks.json", serve)
    app.router.add_get("/elsewhere", serve)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    state.url = server.make_url("/.well-known/jwks.json")
    try:
        yield state
    finally:
        await server.close()

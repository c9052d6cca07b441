"""The listeners: TLS 1.2 as the floor, HTTP only ever redirects to our own domain."""

from __future__ import annotations

import asyncio
import socket
import ssl
import warnings

import pytest
import trustme

from tests.conftest import DOMAIN, Gateway, StartGateway


def _handshake(port: int, context: ssl.SSLContext, server_hostname: str = "localhost") -> str:
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname=server_hostname) as tls,
    ):
        return str(tls.version())


def _client(ca: trustme.CA, *, minimum: ssl.TLSVersion, maximum: ssl.TLSVersion) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    # Let the client offer old protocols at all, so that the refusal is the server's.
    context.set_ciphers("ALL:@SECLEVEL=0")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TLS 1.0/1.1 are deprecated: that is the point
        context.minimum_version = minimum
        context.maximum_version = maximum
    return context


async def test_tls_1_2_and_1_3_are_accepted(gateway: Gateway, ca: trustme.CA) -> None:
    for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
        context = _client(ca, minimum=version, maximum=version)
        assert await asyncio.to_thread(_handshake, gateway.running.https_port, context) == version.name.replace(
            "v1_", "v1."
        )


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1])
async def test_tls_below_1_2_is_refused(gateway: Gateway, ca: trustme.CA, version: ssl.TLSVersion) -> None:
    context = _client(ca, minimum=version, maximum=version)
    with pytest.raises((ssl.SSLError, ConnectionResetError)):
        await asyncio.to_thread(_handshake, gateway.running.https_port, context)


async def test_the_certificate_names_the_custom_domain(gateway: Gateway, client_ssl: ssl.SSLContext) -> None:
    assert await asyncio.to_thread(_handshake, gateway.running.https_port, client_ssl, DOMAIN)


async def test_hsts_uses_the_configured_max_age(start_gateway: StartGateway) -> None:
    gateway = await start_gateway(tls={"hsts_max_age": 600})
    async with gateway.client.get(gateway.url / "healthz") as response:
        assert response.headers["Strict-Transport-Security"] == "max-age=600"


@pytest.mark.parametrize("method", ["GET", "POST", "HEAD", "DELETE"])
async def test_http_answers_308_to_https_on_the_configured_domain(gateway: Gateway, method: str) -> None:
    async with gateway.client.request(
        method,
        f"{gateway.http_url}/tickets/12?state=open&q=a%20b",
        headers={"Host": "evil.example"},
        allow_redirects=False,
    ) as response:
        assert response.status == 308
        assert (
            response.headers["Location"]
            == f"https://{DOMAIN}:{gateway.running.https_port}/tickets/12?state=open&q=a%20b"
        )


@pytest.mark.parametrize(("public_port", "authority"), [(443, DOMAIN), (9443, f"{DOMAIN}:9443")])
async def test_http_redirects_to_the_public_https_port_behind_a_port_mapping(
    start_gateway: StartGateway, public_port: int, authority: str
) -> None:
    """``docker run -p 443:8443``: clients reach 443, so the redirect must not name the listening port."""
    gateway = await start_gateway(listen={"public_https_port": public_port})
    assert gateway.running.https_port != public_port
    async with gateway.client.get(f"{gateway.http_url}/tickets?x=1", allow_redirects=False) as response:
        assert response.status == 308
        assert response.headers["Location"] == f"https://{authority}/tickets?x=1"


async def _raw_http(port: int, request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    head = await reader.read(4096)
    writer.close()
    await writer.wait_closed()
    return head


@pytest.mark.parametrize(
    "target",
    [b"http://evil.example/steal?x=1", b"//evil.example/x", b"/\\evil.example", b"/%2F%2Fevil.example"],
)
async def test_http_redirect_never_leaves_the_configured_domain(gateway: Gateway, target: bytes) -> None:
    assert gateway.running.http_port is not None
    head = await _raw_http(gateway.running.http_port, b"GET " + target + b" HTTP/1.1\r\nHost: evil.example\r\n\r\n")
    location = next(line for line in head.split(b"\r\n") if line.lower().startswith(b"location:"))
    assert location.split(b":", 1)[1].strip().startswith(f"https://{DOMAIN}:{gateway.running.https_port}/".encode())


async def test_http_listener_serves_no_content(gateway: Gateway) -> None:
    async with gateway.client.get(gateway.http_url / "healthz", allow_redirects=False) as response:
        assert response.status == 308
        assert "ok" not in await response.text()


async def test_http_redirect_names_the_gateway_as_https_does(gateway: Gateway) -> None:
    async with gateway.client.get(gateway.http_url / "x", allow_redirects=False) as redirect:
        assert redirect.status == 308
    async with gateway.client.get(gateway.url / "healthz") as https:
        assert redirect.headers["Server"] == https.headers["Server"] == "portal-gateway"

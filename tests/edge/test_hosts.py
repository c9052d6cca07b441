"""The Host header (advisory class 4): only the custom domain is served, and nothing is built from another Host."""

from __future__ import annotations

import ssl

import pytest
from multidict import CIMultiDict

from tests.conftest import DOMAIN, Gateway, RecordingUpstream, StartGateway, raw_exchange

FOREIGN_HOSTS = [
    "evil.example",
    "evil.example:443",
    f"{DOMAIN}.evil.example",
    f"evil.example.{DOMAIN}",
    f"{DOMAIN}.",
    f"{DOMAIN}@evil.example",
    f"{DOMAIN}:443@evil.example",
    "localhost",
    "[::1]",
    "",
]
PATHS = ["/", "/tickets", "/tickets/1", "/signin?return_to=/tickets", "/anything?x=1", "/api/v1/me"]


@pytest.mark.parametrize("host", FOREIGN_HOSTS)
async def test_a_foreign_host_gets_421_or_400_never_content_or_a_redirect(
    gateway: Gateway, upstream: RecordingUpstream, host: str
) -> None:
    """Class 4, Host header injection: no page, redirect or upstream request is built from another Host."""
    for path in PATHS:
        async with gateway.client.get(
            f"{gateway.url}{path}", headers={"Host": host}, allow_redirects=False
        ) as response:
            body = await response.text()
            assert response.status in (400, 421), (path, response.status)
            assert "Location" not in response.headers
            assert "evil" not in body
    assert upstream.requests == []


@pytest.mark.parametrize("host", [DOMAIN, f"{DOMAIN}:443", f"{DOMAIN}:8443", DOMAIN.upper()])
async def test_the_custom_domain_in_any_case_and_with_a_port_is_served(
    gateway: Gateway, upstream: RecordingUpstream, host: str
) -> None:
    """Class 4 control: the configured domain is served, host names compared without case."""
    async with gateway.client.get(gateway.url / "articles", headers={"Host": host}) as response:
        assert response.status == 200
    assert upstream.last.path == "/articles"


@pytest.mark.parametrize(
    "request_head",
    [
        b"GET /anything HTTP/1.1\r\n\r\n",
        b"GET /anything HTTP/1.0\r\n\r\n",
        b"GET /anything HTTP/1.1\r\nHost: " + DOMAIN.encode() + b"\r\nHost: evil.example\r\n\r\n",
        b"GET /anything HTTP/1.1\r\nHost: " + DOMAIN.encode() + b"\r\nHost: " + DOMAIN.encode() + b"\r\n\r\n",
        b"GET https://evil.example/anything HTTP/1.1\r\nHost: " + DOMAIN.encode() + b"\r\n\r\n",
        b"GET http://" + DOMAIN.encode() + b"@evil.example/anything HTTP/1.1\r\nHost: " + DOMAIN.encode() + b"\r\n\r\n",
    ],
    ids=["no-host-1.1", "no-host-1.0", "two-hosts", "two-equal-hosts", "absolute-form-foreign", "absolute-userinfo"],
)
async def test_missing_doubled_or_overridden_hosts_are_refused(
    gateway: Gateway, upstream: RecordingUpstream, client_ssl: ssl.SSLContext, request_head: bytes
) -> None:
    """Class 4, Host header injection over raw sockets: no Host, two Hosts, an absolute-form target elsewhere."""
    answer = await raw_exchange(gateway, request_head, client_ssl, seconds=1.0)
    assert answer.statuses in ([400], [421]), answer.data[:400]
    assert b"evil" not in answer.data
    assert upstream.requests == []


async def test_loopback_names_are_served_in_dev_mode_only(
    start_gateway: StartGateway, upstream: RecordingUpstream
) -> None:
    """Class 4: localhost is the domain's stand-in only with the demo's dev login on, or when it is the domain."""
    for overrides, served in (
        ({"listen": {"allowed_hosts": []}}, False),
        ({"listen": {"allowed_hosts": []}, "identity": {"dev_login": True}}, True),
        ({"listen": {"allowed_hosts": []}, "domain": "localhost"}, True),
    ):
        gateway = await start_gateway(**overrides)
        for host in ("localhost", f"127.0.0.1:{gateway.running.https_port}", "[::1]:443"):
            async with gateway.client.get(gateway.url / "articles", headers={"Host": host}) as response:
                assert (response.status == 200) is served, (overrides, host, response.status)


async def test_health_probes_answer_whatever_the_host(gateway: Gateway, client_ssl: ssl.SSLContext) -> None:
    """Class 4 exemption, as the README's ``listen.allowed_hosts`` states it: probes address the pod or container
    by IP, so /healthz, /readyz and /metrics (which show nothing host-built) answer any well-formed Host; nothing
    else does, and a missing or malformed Host is a 400 there too."""
    headers = CIMultiDict({"Host": "10.1.2.3:8443"})
    for path in ("healthz", "readyz", "metrics"):
        async with gateway.client.get(gateway.url / path, headers=headers) as response:
            assert response.status == 200, path
    for path in ("metrics/", "healthz/", "", "tickets", "signin"):
        async with gateway.client.get(gateway.url / path, headers=headers, allow_redirects=False) as response:
            assert response.status == 421, path
    async with gateway.client.get(gateway.url / "healthz", headers={"Host": "not a host"}) as response:
        assert response.status == 400
    answer = await raw_exchange(gateway, b"GET /healthz HTTP/1.1\r\n\r\n", client_ssl, seconds=1.0)
    assert answer.statuses == [400]

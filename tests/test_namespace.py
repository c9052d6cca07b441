"""The namespace table (gateway/namespace.py): each route is in one namespace, each stage applies its properties."""

from __future__ import annotations

import re
import ssl
from pathlib import Path
from typing import Any

import pytest

from gateway.config import load_config
from gateway.errors import ConfigError
from gateway.namespace import NAMESPACES, REST, Namespace, NamespaceTable
from tests.conftest import DOMAIN, Gateway, RecordingUpstream, StartGateway, raw_exchange

ADMIN_TOKEN = "admin-token-for-namespace-tests-0123456789"
# Everything registered: dev login, the admin API and the probe, the portal in render mode.
EVERYTHING: dict[str, Any] = {"identity": {"dev_login": True}, "admin": {"token": ADMIN_TOKEN}}
# One path in each namespace; the test below checks that each is in the namespace it stands for.
SAMPLES = {
    "portal": "/tickets",
    "events": "/tickets/events",
    "api": "/api/v1/me",
    "api_description": "/api/v1/openapi.json",
    "admin": "/admin/api/contacts",
    "messenger": "/messenger/web/ping",
    "health": "/healthz",
    "metrics": "/metrics",
    "static": "/_gateway/static/gateway.css",
    "probe": "/_gateway/probe",
    "dev_login": "/dev/login",
    "sign_in": "/signin",
    "home": "/",
    "rest": "/articles/42",
}


@pytest.fixture
async def everything(start_gateway: StartGateway) -> Gateway:
    """A gateway with every optional route registered."""
    return await start_gateway(**EVERYTHING)


def table(gateway: Gateway) -> NamespaceTable:
    return gateway.running.app[NAMESPACES]


def namespace(gateway: Gateway, name: str) -> Namespace:
    return next(ns for ns in (*table(gateway).namespaces, REST) if ns.name == name)


def claimants(namespaces: tuple[Namespace, ...], path: str) -> list[str]:
    """The namespaces that claim ``path``: those naming it exactly, else those whose prefix holds it."""
    exact = [ns.name for ns in namespaces if path in ns.paths]
    return exact or [ns.name for ns in namespaces if ns.holds(path)]


def sample_path(canonical: str) -> str:
    """A concrete path a route's canonical form matches: ``{name}`` as one segment (a leading ``/`` added
    when the placeholder follows no slash, as ``/admin/api{tail}`` does)."""
    return re.sub(r"(/?)\{[^}]+\}", lambda match: (match[1] or "/") + "x", canonical)


async def test_every_registered_route_belongs_to_exactly_one_namespace(everything: Gateway) -> None:
    """Each route of the running app's router is claimed by one namespace; only the catch-all by none (rest);
    and each namespace of the table has a route, so none is stale."""
    namespaces = table(everything).namespaces
    owners: dict[str, list[str]] = {}
    for resource in everything.running.app.router.resources():
        path = sample_path(resource.canonical)
        claimed = claimants(namespaces, path)
        owners.setdefault(claimed[0] if claimed else REST.name, []).append(resource.canonical)
        assert len(claimed) <= 1, (resource.canonical, claimed)
        assert table(everything).of(path).name == (claimed[0] if claimed else REST.name)
    assert owners[REST.name] == ["/{tail}"]
    assert set(owners) == {ns.name for ns in (*namespaces, REST)}


async def test_each_sample_is_in_its_namespace(everything: Gateway) -> None:
    """The samples the property tests use stand for every namespace, each in its own."""
    assert {name: table(everything).of(path).name for name, path in SAMPLES.items()} == {name: name for name in SAMPLES}


@pytest.mark.parametrize("name", SAMPLES)
async def test_json_errors_where_the_namespace_says(everything: Gateway, client_ssl: ssl.SSLContext, name: str) -> None:
    """An error in a JSON namespace is JSON even to a browser; elsewhere it is the HTML page."""
    # A raw "#" is refused by the path stage (400) in every namespace, before any route runs.
    head = f"GET {SAMPLES[name]}?a#b HTTP/1.1\r\nHost: {DOMAIN}\r\nAccept: text/html\r\nConnection: close\r\n\r\n"
    answer = await raw_exchange(everything, head.encode(), client_ssl)
    assert answer.statuses == [400]
    json_body = b"content-type: application/json" in answer.data.lower()
    assert json_body == namespace(everything, name).json_errors
    assert (b"<!doctype html>" in answer.data.lower()) != json_body


@pytest.mark.parametrize("name", SAMPLES.keys() - {"home"})
async def test_other_spellings_are_protected_reserved_or_proxied_as_the_namespace_says(
    everything: Gateway, upstream: RecordingUpstream, name: str
) -> None:
    """Upper case names the same namespace to a lenient upstream: an identity namespace asks for a visitor, a
    reserved one answers 404 itself; any other spelling is proxied (only the exact spelling is routed)."""
    ns = namespace(everything, name)
    spelling = SAMPLES[name].upper()
    async with everything.client.get(
        everything.url.with_path(spelling, encoded=True), headers={"Host": DOMAIN}, allow_redirects=False
    ) as response:
        record = await everything.audit_for(response.headers["X-Request-Id"])
    assert (record["access"]["rule"] == "identity required") == ns.identity
    if ns.identity:
        assert response.status in (302, 401)
    elif ns.reserved:
        assert response.status == 404
    else:
        assert response.status == 200
        assert upstream.last.raw_path == spelling
    assert len(upstream.requests) == (0 if ns.identity or ns.reserved else 1)


@pytest.mark.parametrize("name", SAMPLES)
async def test_only_any_host_namespaces_answer_a_foreign_host(everything: Gateway, name: str) -> None:
    """A Host we do not serve gets 421, except on the namespaces probes use by IP."""
    async with everything.client.get(
        everything.url.with_path(SAMPLES[name]), headers={"Host": "evil.example"}, allow_redirects=False
    ) as response:
        assert (response.status != 421) == namespace(everything, name).any_host


@pytest.mark.parametrize("name", SAMPLES.keys() - {"static", "home", "sign_in", "rest", "dev_login", "metrics"})
async def test_the_identity_stage_reads_a_visitor_token_where_the_namespace_says(
    everything: Gateway, name: str
) -> None:
    """A bearer token is read as a visitor's JWT (and rejected) except where the admin token is the credential."""
    async with everything.client.get(
        everything.url.with_path(SAMPLES[name]),
        headers={"Host": DOMAIN, "Authorization": "Bearer not-a-jwt"},
        allow_redirects=False,
    ) as response:
        record = await everything.audit_for(response.headers["X-Request-Id"])
    assert (record["identity"]["method"] == "jwt") == namespace(everything, name).visitor_token


@pytest.mark.parametrize("portal_path", ["/api", "/admin", "/API/v1/x", "/_gateway", "/Healthz", "/messenger/web/t"])
def test_a_portal_path_overlapping_another_namespace_is_refused(tmp_path: Path, portal_path: str) -> None:
    """The portal cannot take another namespace's paths (or be taken by them): a config error, not a silent winner."""
    (tmp_path / "gateway.yaml").write_text(f"portal: {{path: {portal_path}}}\n")
    with pytest.raises(ConfigError, match=rf"portal\.path: {re.escape(portal_path)} overlaps the gateway's own"):
        load_config(tmp_path / "gateway.yaml", environ={"MESSENGER_API_SECRET": "s", "PORTAL_ADMIN_TOKEN": "t" * 32})


def test_the_access_decision_reads_the_broadest_spelling() -> None:
    """Case, ``;`` parameters, trailing dots and doubled slashes fold into the portal and the API; the exact
    reading (routes, hosts, error pages) does not fold."""
    namespaces = NamespaceTable.for_portal("/Help/Tickets")
    for path in ("/help/tickets", "//HELP/tickets./1", "/help;x/tickets", "/API/v1/me", "/api/v1;/x"):
        assert namespaces.decided(path).identity, path
    assert not namespaces.decided("/api/v1/OpenAPI.json.").identity
    assert namespaces.of("/Help/Tickets/1").name == "portal"
    assert namespaces.of("/help/tickets").name == "rest"
    assert namespaces.of("/HEALTHZ").name == "rest"


def test_the_readme_table_is_the_namespace_table() -> None:
    """README's Development section draws the table as the code has it: each namespace's row, each property."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    rows = re.findall(
        r"^\| (\w+) \| [^|]+ \| (yes|no) \| (yes|no) \| (yes|no) \| (yes|no) \| (yes|no) \|$", readme, re.M
    )
    drawn = {name: tuple(value == "yes" for value in values) for name, *values in rows}
    namespaces = (*NamespaceTable.for_portal("/tickets").namespaces, REST)
    assert drawn == {
        ns.name: (ns.identity, ns.json_errors, ns.reserved, ns.any_host, ns.visitor_token) for ns in namespaces
    }

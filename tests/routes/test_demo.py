"""What a newcomer running the bundled configuration meets: the gateway's own icon in render mode, and the
links to the hosted help center marked as failing while, in demo mode, nothing answers there.

Demo mode, as the pages see it, is ``identity.dev_login`` on (``serve`` without ``-c`` turns it on); a link to
the hosted help center is marked when, in demo mode, the help-center upstream does not answer the probe
``/readyz`` makes. The other tests of the portal pages are in ``test_portal_*.py``.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from yarl import URL

from gateway.policy.identity import sign_token
from gateway.store.demo import PEOPLE
from routes.brand import DEFAULT_FAVICON, FAVICON
from tests.conftest import SECRET, Gateway, RecordingUpstream, StartGateway
from tests.proxy.test_proxy import free_port
from tests.routes.portalkit import EVERYONE_IN, Element, parse_html

NOTE = "Demo: no help center behind this gateway"


# --- the favicon -----------------------------------------------------------------------------------


async def test_render_mode_answers_favicon_itself_and_links_its_icon(
    start_gateway: StartGateway, upstream: RecordingUpstream
) -> None:
    gateway = await start_gateway()
    async with gateway.client.get(gateway.url / "favicon.ico") as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == "image/svg+xml"
        assert await response.read() == DEFAULT_FAVICON.read_bytes()
        record = await gateway.audit_for(response.headers["X-Request-Id"])
    assert (record["status"], record["upstream"]["url"]) == (200, None)
    async with gateway.client.get(gateway.url.with_path("/")) as response:
        icons = [link for link in parse_html(await response.text()).find_all("link") if link.attrs["rel"] == "icon"]
    assert [URL(icon.attrs["href"]).path for icon in icons] == [FAVICON]
    async with gateway.client.get(gateway.url.join(URL(icons[0].attrs["href"]))) as response:
        assert response.status == 200
        assert await response.read() == DEFAULT_FAVICON.read_bytes()
    assert [request.path for request in upstream.requests] == []


async def test_proxy_mode_sends_favicon_to_the_hosted_help_center(
    start_gateway: StartGateway, upstream: RecordingUpstream
) -> None:
    gateway = await start_gateway(portal={"mode": "proxy"})
    async with gateway.client.get(gateway.url / "favicon.ico") as response:
        assert response.status == 200
        assert await response.json() == {"path": "/favicon.ico", "received": 0}
    assert [request.path for request in upstream.requests] == ["/favicon.ico"]


# --- links that can only fail in demo mode ---------------------------------------------------------

USER_ID = PEOPLE[0][0]


def bearer() -> dict[str, str]:
    return {"Authorization": f"Bearer {sign_token(SECRET, user_id=USER_ID, now=time.time(), ttl=600)}"}


async def demo_gateway(start_gateway: StartGateway, *, dev_login: bool, upstream_up: bool) -> Gateway:
    """The demo store and audience, dev login on or off, the upstream the recording one or a closed port."""
    overrides: dict[str, Any] = {
        "identity": {"dev_login": dev_login},
        "store": {"seed_demo": True},
        "portal": {"access": EVERYONE_IN},
    }
    if not upstream_up:
        overrides["upstream"] = {"url": f"http://127.0.0.1:{free_port()}"}
    return await start_gateway(**overrides)


async def participant_page(gateway: Gateway) -> str:
    """A ticket page of a ticket the visitor joined, so that it offers "Send us a message"."""
    async with gateway.client.get(gateway.url / "api" / "v1" / "tickets", headers=bearer()) as response:
        assert response.status == 200
        ticket_id = (await response.json())["tickets"][0]["ticket_id"]
    join = gateway.url / "api" / "v1" / "tickets" / str(ticket_id) / "join"
    async with gateway.client.post(join, headers=bearer()) as response:
        assert response.status == 200
    async with gateway.client.get(gateway.url / "tickets" / str(ticket_id), headers=bearer()) as response:
        assert response.status == 200
        return await response.text()


def marked(root: Element, link_text: str) -> bool:
    """Whether the page's link ``link_text`` is described (``aria-describedby``) by the demo note."""
    link = next(link for link in root.find("main").find_all("a") if link.text().strip() == link_text)
    described = link.attrs.get("aria-describedby")
    if described is None:
        return False
    notes = [element for element in root.iter() if element.attrs.get("id") == described]
    assert len(notes) == 1, f"{link_text} is described by {len(notes)} elements"
    return NOTE in notes[0].text()


@pytest.mark.parametrize(
    ("dev_login", "upstream_up", "expected"),
    [(True, False, True), (True, True, False), (False, False, False)],
    ids=["demo-without-help-center", "demo-with-help-center", "no-dev-login"],
)
async def test_help_center_links_are_marked_only_in_demo_mode_without_a_help_center(
    start_gateway: StartGateway, dev_login: bool, upstream_up: bool, expected: bool
) -> None:
    gateway = await demo_gateway(start_gateway, dev_login=dev_login, upstream_up=upstream_up)
    async with gateway.client.get(gateway.url.with_path("/")) as response:
        assert response.status == 200
        home = parse_html(await response.text())
    ticket = parse_html(await participant_page(gateway))
    assert (marked(home, "Articles"), marked(ticket, "Send us a message")) == (expected, expected)
    assert not marked(home, "Your tickets")  # the gateway's own pages work in demo mode
    # The note is shown once per marked link, and nowhere else.
    assert (home.text().count(NOTE), ticket.text().count(NOTE)) == (expected, expected)

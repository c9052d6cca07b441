"""The tickets portal over HTTP: the Help Center home, the header of every page, the error pages.

Every test runs the real gateway (``gateway.run.server.start``) over TLS on loopback, on a store
written and an oracle built by ``tests.routes.portalkit`` (the expected answers never come from the gateway).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from gateway.policy.identity import sign_token
from tests.conftest import DOMAIN, SECRET, StartGateway
from tests.proxy.test_proxy import free_port
from tests.routes.portalkit import (
    ANN,
    LOGIN,
    Answer,
    check_page_headers,
    open_portal,
    parse_html,
)


@pytest.mark.parametrize(
    ("sections", "portal_path", "expected"),
    [
        (["tickets_portal", "articles"], "/tickets", ["/tickets", "/articles"]),
        (["articles", "tickets_portal"], "/tickets", ["/articles", "/tickets"]),
        (["articles", "tickets_portal"], "/support/tickets", ["/articles", "/support/tickets"]),
    ],
)
async def test_home_shows_the_sections_in_the_configured_order(
    start_gateway: StartGateway, sections: list[str], portal_path: str, expected: list[str]
) -> None:
    gateway = await start_gateway(help_center={"sections": sections}, portal={"path": portal_path})
    async with gateway.client.get(gateway.url.with_path("/")) as response:  # anyone: no credentials
        answer = Answer(response.status, response.headers, await response.text())
    assert answer.status == 200
    assert answer.headers["Content-Type"].startswith("text/html")
    check_page_headers(answer)
    cards = parse_html(answer.text).find("ul", cls="cards").find_all("li", cls="card")
    assert [card.find("h2").find("a").attrs["href"] for card in cards] == expected
    tickets_card = cards[expected.index(portal_path)]
    assert "tickets" in tickets_card.text().lower()


@pytest.mark.parametrize(
    "overrides",
    [{"help_center": {"sections": ["articles"]}}, {"portal": {"enabled": False}}],
    ids=["left-out", "portal-disabled"],
)
async def test_home_hides_the_tickets_card(start_gateway: StartGateway, overrides: dict[str, Any]) -> None:
    gateway = await start_gateway(**overrides)
    async with gateway.client.get(gateway.url.with_path("/")) as response:
        assert response.status == 200
        root = parse_html(await response.text())
    hrefs = [link.attrs["href"] for link in root.find("main").find_all("a")]
    assert hrefs == ["/articles"]
    assert "Your tickets" not in root.text()


async def test_home_searches_the_portal_for_a_signed_in_visitor(start_gateway: StartGateway, tmp_path: Path) -> None:
    portal = await open_portal(start_gateway, tmp_path, portal={"path": "/support/tickets"})
    signed_in = parse_html((await portal.call("GET", "/")).text)
    form = signed_in.find("form", cls="home-search")
    assert (form.attrs["method"], form.attrs["action"]) == ("get", "/support/tickets")
    field = form.find("input", type="search")
    assert field.attrs["name"] == "q"
    assert signed_in.find("label", **{"for": field.attrs["id"]}).text() == "Search your tickets"
    # What the form sends is the portal's own search.
    found = await portal.page("/support/tickets", params={field.attrs["name"]: "printing"})
    assert found.ids == ["9003"]
    async with portal.gateway.client.get(portal.gateway.url.with_path("/")) as response:  # no credentials
        assert parse_html(await response.text()).maybe("form", cls="home-search") is None


async def test_a_moved_portal_path_moves_every_portal_link(start_gateway: StartGateway, tmp_path: Path) -> None:
    portal = await open_portal(start_gateway, tmp_path, portal={"path": "/support/tickets"})
    page = await portal.page("/support/tickets")
    assert page.root.find("form", cls="filters").attrs["action"] == "/support/tickets"
    assert all(href.startswith("/support/tickets?") for _, href, _ in page.tabs)
    assert page.rows
    assert all(link == f"/support/tickets/{row.ticket_id}" for row in page.rows for link in row.links)
    detail = await portal.call("GET", "/support/tickets/9003")
    assert detail.status == 200
    assert parse_html(detail.text).find("form", method="post").attrs["action"] == "/support/tickets/9003/join"


def account_of(answer: Answer) -> tuple[str, dict[str, str]] | None:
    """The header's account navigation: its text and its links (text -> href); None when there is none."""
    nav = parse_html(answer.text).maybe("nav", aria_label="Account")
    return (nav.text(), {link.text(): link.attrs["href"] for link in nav.find_all("a")}) if nav else None


async def test_every_page_names_the_signed_in_visitor_and_offers_sign_out(
    start_gateway: StartGateway, tmp_path: Path
) -> None:
    """Home, list, detail, a missing ticket, a page the help center fails on: who is signed in, and Sign out."""
    unreachable = {"url": f"http://127.0.0.1:{free_port()}"}
    portal = await open_portal(start_gateway, tmp_path, identity={"login_url": LOGIN}, upstream=unreachable)
    name = portal.world.names[ANN]  # the token signs only her user id: the name is the store's

    pages = {"/": 200, "/tickets": 200, "/tickets/9003": 200, "/tickets/99999": 404, "/articles/down": 502}
    for target, status in pages.items():
        answer = await portal.call("GET", target)
        assert answer.status == status, target
        assert account_of(answer) == (f"Signed in as {name} Sign out", {"Sign out": "/signout?return_to=/"}), target

    stranger = sign_token(SECRET, user_id="u-new", now=time.time(), ttl=60, email="new@example.org")
    by_email = await portal.call("GET", "/", headers={"Authorization": f"Bearer {stranger}"}, auth="none")
    assert account_of(by_email) == ("Signed in as new@example.org Sign out", {"Sign out": "/signout?return_to=/"})

    signout = await portal.call("GET", "/signout?return_to=/")
    assert (signout.status, signout.headers["Location"]) == (302, "/")
    anonymous = await portal.call("GET", "/", auth="none")
    assert account_of(anonymous) == ("Sign in", {"Sign in": f"{LOGIN}?return_to=https://{DOMAIN}/"})


async def test_without_a_login_page_an_anonymous_page_offers_no_sign_in(start_gateway: StartGateway) -> None:
    gateway = await start_gateway()
    async with gateway.client.get(gateway.url / "") as response:
        assert account_of(Answer(response.status, response.headers, await response.text())) is None


@pytest.mark.parametrize(
    ("target", "status", "heading", "title"),
    [
        ("/tickets/99999", 404, "Page not found", "Not Found"),
        ("/tickets/9003/edit", 404, "Page not found", "Not Found"),
        ("/tickets?page=x", 400, "This request could not be read", "Bad Request"),
        ("/articles/down", 502, "The help center is unreachable", "The help center is unreachable"),
    ],
)
async def test_error_pages_speak_plainly_and_json_keeps_its_titles(
    start_gateway: StartGateway, tmp_path: Path, target: str, status: int, heading: str, title: str
) -> None:
    """Pages say what happened in plain words; a JSON body keeps the title API clients match on."""
    portal = await open_portal(start_gateway, tmp_path, upstream={"url": f"http://127.0.0.1:{free_port()}"})

    page = await portal.call("GET", target)
    assert page.status == status
    root = parse_html(page.text)
    assert root.find("h1").text() == heading
    assert root.find("title").text() == f"{heading} · Help Center"
    api = await portal.call("GET", target, headers={"Accept": "application/json"})
    assert api.status == status
    assert api.json()["error"]["title"] == title

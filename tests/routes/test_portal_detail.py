"""The tickets portal over HTTP: the ticket detail and joining its conversation (page and API).

Every test runs the real gateway (``gateway.run.server.start``) over TLS on loopback, on a store
written and an oracle built by ``tests.routes.portalkit`` (the expected answers never come from the gateway).
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

from gateway.edge.secure import CONTENT_SECURITY_POLICY
from gateway.policy.csrf import csrf_token, derive_key
from gateway.store.demo import SUPPORT
from tests.conftest import SECRET, StartGateway
from tests.routes.portalkit import (
    ANN,
    BEN,
    CHO,
    EVERYONE_IN,
    NOTE_WORD,
    Answer,
    Portal,
    check_page_headers,
    facts,
    iso,
    open_portal,
    parse_html,
)


async def test_detail_shows_the_ticket_and_only_its_public_replies(start_gateway: StartGateway, tmp_path: Path) -> None:
    portal = await open_portal(start_gateway, tmp_path)
    answer = await portal.call("GET", "/tickets/9003")
    assert answer.status == 200
    check_page_headers(answer)
    root = parse_html(answer.text)
    ticket = portal.world.tickets["9003"]
    shown = facts(root)
    assert shown["State"] == "Waiting on you"
    assert (shown["Ticket ID"], shown["Type"], shown["Company"], shown["Created by"]) == (
        "#9003",
        "Bug report",
        "Acme Corp",
        "Ivy Ito",
    )
    assert root.find("h1").text() == "Printing issue"
    assert root.find("p", cls="description").text() == ticket.description
    parts = [
        (
            item.find("p", cls="meta").find("strong").text(),
            item.find("p", cls="body").text(),
            item.find("time").attrs["datetime"],
            item.find("span", cls="role").text(),
            "from-support" in item.attrs["class"].split(),
            item.find("span", cls="avatar").text(),
        )
        for item in root.find("ol", cls="conversation").find_all("li")
    ]
    expected_parts = [
        (
            reply.author,
            reply.body,
            iso(reply.at),
            "Support" if reply.by_support else "Customer",
            reply.by_support,
            {SUPPORT: "S", "Ivy Ito": "II"}[reply.author],  # "(support)" is a role, not a name
        )
        for reply in ticket.replies
    ]
    assert parts == expected_parts
    # Support and customer both speak in this thread: the page tells them apart.
    assert {part[3] for part in parts} == {"Support", "Customer"}
    assert NOTE_WORD not in answer.text
    assert "keep quiet" not in answer.text
    assert "Needs customer" not in answer.text
    # Ann is not in Ivy's conversation: the join form, with its CSRF token.
    form = root.find("form", method="post")
    assert form.attrs["action"] == "/tickets/9003/join"
    assert re.fullmatch(r"[0-9a-f]{32,}", form.find("input", name="csrf_token").attrs["value"])
    assert form.find("button").text() == "Join conversation"
    assert "Send us a message" not in answer.text

    # On a ticket of her own Ann takes part already.
    own = next(t for t in portal.world.visible(ANN) if t.creator == ANN)
    mine = await portal.call("GET", f"/tickets/{own.ticket_id}")
    assert mine.status == 200
    assert "Send us a message" in mine.text
    assert parse_html(mine.text).maybe("form", method="post") is None
    assert facts(parse_html(mine.text))["State"] == own.state
    # A ticket in an internal state shows its customer-facing label.
    in_progress = facts(parse_html((await portal.call("GET", "/tickets/9001")).text))
    assert in_progress["State"] == "In progress"


async def join_form_token(portal: Portal, ticket_id: str, user: str = ANN) -> str:
    answer = await portal.call("GET", f"/tickets/{ticket_id}", user=user)
    assert answer.status == 200
    return parse_html(answer.text).find("input", name="csrf_token").attrs["value"]


async def space_ids(portal: Portal, user: str = ANN) -> list[str]:
    listed = await portal.api("/api/v1/me/tickets-space", user=user)
    return [ticket["ticket_id"] for ticket in listed["tickets"]]


async def test_joining_a_conversation_needs_the_csrf_token(start_gateway: StartGateway, tmp_path: Path) -> None:
    portal = await open_portal(start_gateway, tmp_path)
    token = await join_form_token(portal, "9003")
    other_ticket = await join_form_token(portal, "9002")
    bens = await join_form_token(portal, "9003", user=BEN)
    assert len({token, other_ticket, bens}) == 3
    assert "9003" not in await space_ids(portal)

    for form in (
        {},
        {"csrf_token": ""},
        {"csrf_token": "0" * len(token)},
        {"csrf_token": other_ticket},
        {"csrf_token": bens},
    ):
        refused = await portal.call("POST", "/tickets/9003/join", data=form)
        assert refused.status == 403, form
        # Not "this page is not open to you": the form is stale, and the way on is to reload it.
        page = parse_html(refused.text)
        assert page.find("h1").text() == "This form has expired"
        assert "reload" in page.find("main").text().lower()
        assert "not open to you" not in refused.text
        assert page.find("a", cls="button").attrs["href"] == "/tickets/9003"
    assert "Join conversation" in (await portal.call("GET", "/tickets/9003")).text
    assert "9003" not in await space_ids(portal)

    joined = await portal.call("POST", "/tickets/9003/join", data={"csrf_token": token})
    assert joined.status == 303
    # Back on the ticket, which says what the button did.
    assert portal.url(joined.headers["Location"]) == portal.url("/tickets/9003?joined=1")
    after = await portal.call("GET", "/tickets/9003?joined=1")
    assert parse_html(after.text).find("p", cls="notice").text().startswith("You joined this conversation.")
    assert "Send us a message" in after.text
    # The notice is for the redirect only: a visitor who is not in the conversation is not told they joined.
    assert (
        parse_html((await portal.call("GET", "/tickets/9003?joined=1", user=BEN)).text).maybe("p", cls="notice") is None
    )
    assert parse_html(after.text).maybe("form", method="post") is None
    again = await portal.call("POST", "/tickets/9003/join", data={"csrf_token": token})
    assert again.status == 303, "joining twice is fine"
    assert (await space_ids(portal)).count("9003") == 1
    # Only Ann joined.
    assert "Join conversation" in (await portal.call("GET", "/tickets/9003", user=BEN)).text


async def test_join_and_detail_of_a_ticket_out_of_reach_answer_like_a_missing_one(
    start_gateway: StartGateway, tmp_path: Path
) -> None:
    portal = await open_portal(start_gateway, tmp_path)
    key = derive_key(SECRET)

    def without_request_id(answer: Answer) -> str:
        return answer.text.replace(answer.headers["X-Request-ID"], "")

    missing = await portal.call("POST", "/tickets/99999/join", data={"csrf_token": csrf_token(key, ANN, "join:99999")})
    assert missing.status == 404
    for ticket_id in ("9006", "9005"):  # another company's; a Tracker ticket of her own company
        # Even with a valid token (as if it had leaked), the ticket is not there for Ann.
        answer = await portal.call(
            "POST", f"/tickets/{ticket_id}/join", data={"csrf_token": csrf_token(key, ANN, f"join:{ticket_id}")}
        )
        assert (answer.status, without_request_id(answer)) == (404, without_request_id(missing)), ticket_id
        api = await portal.call("POST", f"/api/v1/tickets/{ticket_id}/join", auth="bearer")
        assert api.status == 404
        shown = await portal.call("GET", f"/tickets/{ticket_id}")
        gone = await portal.call("GET", "/tickets/99999")
        assert (shown.status, without_request_id(shown)) == (404, without_request_id(gone))
    assert not {"9005", "9006"} & set(await space_ids(portal))
    assert "9006" in await space_ids(portal, user=CHO)


async def test_api_join(start_gateway: StartGateway, tmp_path: Path) -> None:
    portal = await open_portal(start_gateway, tmp_path)
    before = await portal.api("/api/v1/tickets/9003")
    assert before["participant"] is False
    for _ in range(2):  # idempotent
        joined = await portal.call("POST", "/api/v1/tickets/9003/join", auth="bearer")
        assert joined.status == 200, joined.text
        assert joined.json()["participant"] is True
        assert joined.json()["ticket_id"] == "9003"
    assert "9003" in await space_ids(portal)

    # With only the cookie, a cross-site form could post: refused unless the body is JSON.
    form = await portal.call("POST", "/api/v1/tickets/9002/join", auth="cookie", data={"a": "b"})
    assert form.status == 400
    assert form.json()["error"]["status"] == 400
    bare = await portal.call("POST", "/api/v1/tickets/9002/join", auth="cookie")
    assert bare.status == 400
    assert "9002" not in await space_ids(portal)
    as_json = await portal.call("POST", "/api/v1/tickets/9002/join", auth="cookie", body={})
    assert as_json.status == 200
    assert as_json.json()["participant"] is True


def policy_sources(answer: Answer) -> set[str]:
    """Every source the page's Content-Security-Policy names."""
    return {source for part in answer.headers["Content-Security-Policy"].split(";") for source in part.split()[1:]}


async def test_the_messenger_boots_only_where_switched_on_and_for_a_visitor_in_the_conversation(
    start_gateway: StartGateway, tmp_path: Path
) -> None:
    """Off by default (the demo's conversations are no workspace's): today's link, the strict policy, no script."""
    off = await open_portal(start_gateway, tmp_path)
    own = next(t.ticket_id for t in off.world.visible(ANN) if t.creator == ANN)  # she takes part in its conversation
    answer = await off.call("GET", f"/tickets/{own}")
    link = parse_html(answer.text).find("a", cls="button")
    assert link.text() == "Send us a message"
    assert link.attrs["href"].startswith("/conversations/")
    assert not [name for name in link.attrs if name.startswith("data-")]
    scripts = [script.attrs["src"] for script in parse_html(answer.text).find_all("script")]
    assert scripts == ["/_gateway/static/live.js"]  # the live updates' only: no Messenger
    assert answer.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY

    # The same store, served by a gateway that boots the Messenger of a workspace hosted in Australia.
    booting = {
        "portal": {"access": EVERYONE_IN},
        "messenger": {"boot": {"enabled": True}},
        "intercom": {"region": "au"},
    }
    on = replace(off, gateway=await start_gateway(**booting))
    answer = await on.call("GET", f"/tickets/{own}")
    root = parse_html(answer.text)
    link = root.find("a", cls="button")
    assert link.attrs["href"].startswith("/conversations/")  # kept for a browser without JavaScript
    assert link.attrs["data-messenger-conversation"] == link.attrs["href"].removeprefix("/conversations/")
    assert link.attrs["data-messenger-api-base"] == str(on.gateway.url)
    assert [script.attrs["src"] for script in root.find_all("script")] == [
        "/_gateway/static/messenger.js",
        "/_gateway/static/live.js",
    ]
    check_page_headers(answer)  # still no inline script allowed
    assert answer.headers["Cache-Control"] == "no-store"  # it holds the visitor's Messenger token
    sources = policy_sources(answer)
    assert {"https://api-iam.au.intercom.io", "wss://nexus-australia-websocket.intercom.io"} <= sources
    assert not {source for source in sources if ".eu" in source or "europe" in source or "api-iam.intercom" in source}
    # The Join form of a ticket she is not in, and the other pages, keep the strict policy.
    for target in ("/tickets/9003", "/tickets", "/"):
        assert (await on.call("GET", target)).headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY, target

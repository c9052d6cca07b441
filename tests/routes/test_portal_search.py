"""The tickets portal over HTTP: search and its previews, and hostile search input.

Every test runs the real gateway (``gateway.run.server.start``) over TLS on loopback, on a store
written and an oracle built by ``tests.routes.portalkit`` (the expected answers never come from the gateway).
"""

from __future__ import annotations

import re
from html import unescape
from pathlib import Path

import pytest

from gateway.store.demo import INTERNAL_WORD, PUBLIC_WORD, SUPPORT
from gateway.store.search import ELLIPSIS, SNIPPET_CHARS
from tests.conftest import StartGateway
from tests.routes.portalkit import (
    ANN,
    LEAKS,
    NOTE_WORD,
    ONE_COMPANY_COLUMNS,
    RANK_WORD,
    TIER_WORD,
    Reply,
    World,
    iso,
    open_portal,
    read_list_page,
)


def public_hits(world: World, user: str, word: str) -> dict[str, list[Reply]]:
    """The visible tickets with ``word`` in a public reply, and those replies."""
    found: dict[str, list[Reply]] = {}
    for ticket in world.visible(user):
        replies = [reply for reply in ticket.replies if word in reply.body.lower()]
        if replies or word in ticket.title.lower() or word in ticket.description.lower():
            found[ticket.ticket_id] = replies
    return found


async def test_search_finds_a_word_in_a_public_reply_with_a_preview(
    start_gateway: StartGateway, tmp_path: Path
) -> None:
    portal = await open_portal(start_gateway, tmp_path)
    hits = public_hits(portal.world, ANN, PUBLIC_WORD)
    assert len(hits) >= 3
    assert all(hits.values()), "the word should be in replies only"
    rows, pages = await portal.walk({"q": PUBLIC_WORD})
    assert {row.ticket_id for row in rows} == set(hits)
    assert pages[0].headers[-1].label == "Preview"
    assert pages[0].caption.endswith("relevance")
    for row in rows:
        assert row.preview is not None, row.ticket_id
        marks = [mark.text().lower() for mark in row.preview.find_all("mark")]
        assert marks, row.ticket_id
        assert set(marks) == {PUBLIC_WORD}, (row.ticket_id, marks)
        meta = row.preview.find("p", cls="meta")
        moment = meta.find("time").attrs["datetime"]
        candidates = {(reply.author, iso(reply.at)) for reply in hits[row.ticket_id]}
        assert (meta.text().split(" · ")[0], moment) in candidates, (row.ticket_id, meta.text(), candidates)
    assert re.search(rf"<mark>{PUBLIC_WORD}</mark>", pages[0].html, re.IGNORECASE)

    # Our own ticket: the reply's author and its relative time.
    ours = await portal.page(params={"q": "setting"})
    row = next(row for row in ours.rows if row.ticket_id == "9003")
    assert row.preview is not None
    assert [mark.text() for mark in row.preview.find_all("mark")] == ["setting"]
    assert row.preview.find("p", cls="meta").text() == f"{SUPPORT} · 3 h ago"

    listed = await portal.api("/api/v1/tickets", {"q": PUBLIC_WORD, "page": "1"})
    assert listed["total_count"] == len(hits)
    for ticket in listed["tickets"]:
        snippet = ticket["snippet"]
        assert re.search(rf"<mark>{PUBLIC_WORD}</mark>", snippet["html"], re.IGNORECASE), snippet
        replies = hits[ticket["ticket_id"]]
        assert (snippet["author"], snippet["created_at"]) in {(reply.author, reply.at) for reply in replies}


async def test_each_preview_is_one_snippet_of_one_reply_whole_when_it_fits(
    start_gateway: StartGateway, tmp_path: Path
) -> None:
    """One snippet per result, in the page and the API: the credited reply's own words, all of them when the
    reply fits the preview, and so no ellipsis (nothing was cut)."""
    portal = await open_portal(start_gateway, tmp_path)
    hits = public_hits(portal.world, ANN, PUBLIC_WORD)
    rows, _ = await portal.walk({"q": PUBLIC_WORD})
    assert rows
    for row in rows:
        assert row.preview is not None
        snippet, meta = row.preview.find_all("p")  # one snippet, then who wrote it and when
        credited = (meta.text().split(" · ")[0], meta.find("time").attrs["datetime"])
        reply = next(reply for reply in hits[row.ticket_id] if (reply.author, iso(reply.at)) == credited)
        assert len(reply.body) <= SNIPPET_CHARS, "the demo's replies fit a preview"
        assert snippet.text() == " ".join(reply.body.split()), row.ticket_id
        assert ELLIPSIS not in snippet.text()
    listed = await portal.api("/api/v1/tickets", {"q": PUBLIC_WORD})
    for ticket in listed["tickets"]:
        found = ticket["snippet"]
        reply = next(r for r in hits[ticket["ticket_id"]] if (r.author, r.at) == (found["author"], found["created_at"]))
        assert unescape(re.sub("</?mark>", "", found["html"])) == reply.body


@pytest.mark.parametrize(
    "query", [INTERNAL_WORD, NOTE_WORD, "escalation", f"{PUBLIC_WORD} {INTERNAL_WORD}", f"{NOTE_WORD} setting"]
)
async def test_search_never_finds_internal_notes(start_gateway: StartGateway, tmp_path: Path, query: str) -> None:
    portal = await open_portal(start_gateway, tmp_path)
    visible = portal.world.visible(ANN)
    notes = " ".join(note for t in visible for note in t.notes).lower()
    assert all(word.lower() in notes or word.lower() in PUBLIC_WORD + " setting" for word in query.split())
    page = await portal.page(params={"q": query})
    assert page.rows == []
    assert page.count.startswith("0 tickets")
    listed = await portal.api("/api/v1/tickets", {"q": query})
    assert listed["tickets"] == []
    assert listed["total_count"] == 0


async def test_preview_column_can_be_switched_off(start_gateway: StartGateway, tmp_path: Path) -> None:
    portal = await open_portal(start_gateway, tmp_path, portal={"preview_column": False})
    page = await portal.page(params={"q": PUBLIC_WORD})
    assert page.rows, "still found"
    assert [header.label for header in page.headers] == ONE_COMPANY_COLUMNS
    assert all(row.preview is None for row in page.rows)
    assert "<mark>" not in page.html


async def test_title_matches_rank_first(start_gateway: StartGateway, tmp_path: Path) -> None:
    portal = await open_portal(start_gateway, tmp_path)
    # 9001 has the word in its title (least recently updated), 9002 in its description, 9003 in a reply.
    page = await portal.page(params={"q": RANK_WORD})
    assert page.ids == ["9001", "9002", "9003"]
    listed = await portal.api("/api/v1/tickets", {"q": RANK_WORD})
    assert [ticket["ticket_id"] for ticket in listed["tickets"]] == ["9001", "9002", "9003"]
    assert [ticket["snippet"]["author"] for ticket in listed["tickets"]] == ["Ivy Ito", "Ivy Ito", SUPPORT]

    tiers = await portal.page(params={"q": TIER_WORD})
    assert tiers.ids == ["9012", "9011", "9010"]
    listed = await portal.api("/api/v1/tickets", {"q": TIER_WORD, "sort": "relevance", "order": "desc"})
    assert [ticket["ticket_id"] for ticket in listed["tickets"]] == ["9012", "9011", "9010"]

    # In the demo data "slow" is in some titles and in other tickets' descriptions only.
    hits = {
        t.ticket_id: "slow" in t.title.lower()
        for t in portal.world.visible(ANN)
        if "slow" in (t.title + t.description).lower()
    }
    assert any(hits.values())
    assert not all(hits.values())
    rows, _ = await portal.walk({"q": "slow"})
    assert {row.ticket_id for row in rows} == set(hits)
    in_title = [hits[row.ticket_id] for row in rows]
    assert in_title == sorted(in_title, reverse=True), "a title match after a description match"

    # A ticket id is found, and first.
    by_id = await portal.page(params={"q": "#9003"})
    assert by_id.ids[:1] == ["9003"]


HOSTILE = [
    '"',
    "'",
    '""',
    '"unbalanced',
    "unbalanced'",
    "AND OR NOT NEAR(",
    f"NEAR({PUBLIC_WORD} import, 2)",
    "*",
    f"{PUBLIC_WORD}*",
    "^",
    f"^{PUBLIC_WORD}",
    "col:term",
    f"replies:{PUBLIC_WORD}",
    "(((",
    ")))",
    "🙂",
    f"🙂 {PUBLIC_WORD} 🙂",
    "<script>alert(1)</script>",
    "' OR 1=1 --",
    "\\",
    "%",
    "\x02\x03\x04\x1e",
    f"\x02{PUBLIC_WORD}\x03",
    "-" * 100,
    f"{PUBLIC_WORD} " * 1463,  # 10 KB of words
    "x" * 10_240,  # one 10 KB word
]
# Queries whose only word is the public word: operators around it are text, so it is still found.
SAME_AS_THE_WORD = {f"{PUBLIC_WORD}*", f"^{PUBLIC_WORD}", f"🙂 {PUBLIC_WORD} 🙂", f"\x02{PUBLIC_WORD}\x03"}


def hostile_id(query: str) -> str:
    return f"{len(query)}-chars" if len(query) > 200 else query.encode("unicode_escape").decode()


@pytest.mark.parametrize("query", HOSTILE, ids=hostile_id)
async def test_hostile_search_input_is_answered_not_crashed(
    start_gateway: StartGateway, tmp_path: Path, query: str
) -> None:
    portal = await open_portal(start_gateway, tmp_path)
    page = await portal.call("GET", "/tickets", params={"q": query})
    assert page.status == 200, f"{page.status}: {page.text[:200]}"
    api = await portal.call("GET", "/api/v1/tickets", params={"q": query}, auth="bearer")
    assert api.status == 200, f"{api.status}: {api.text[:200]}"
    for body in (page.text, api.text):
        assert not [leak for leak in LEAKS if leak in body.lower()], body[:500]
    listed = read_list_page(page.text)
    assert isinstance(api.json()["tickets"], list)
    assert api.json()["total_count"] == int(listed.count.split()[0])
    assert "<script>alert(1)</script>" not in page.text
    if query == "<script>alert(1)</script>":
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
        assert listed.inputs["q"] == query
    if query in SAME_AS_THE_WORD:
        assert {t["ticket_id"] for t in api.json()["tickets"]} == {
            t["ticket_id"] for t in (await portal.api("/api/v1/tickets", {"q": PUBLIC_WORD}))["tickets"]
        }

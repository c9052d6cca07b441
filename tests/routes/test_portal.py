"""The tickets portal over HTTP: home, list (tabs, filters, sort, pages), search, detail and join, proxy mode, OpenAPI.

Every test runs the real gateway (``gateway.run.server.start``) over TLS on loopback. The store is written
before the gateway starts, through the importer's own line writer: the demo data of
``gateway.store.demo`` for a ``now`` the test knows (so it can predict relative times), plus a few
tickets of our own whose words, times and states are known exactly. The expected answers come from an
oracle built here from those lines and the visibility rules of DESIGN.md, never from the gateway.
"""

from __future__ import annotations

import json
import re
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from html import unescape
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, Literal

import pytest
from jsonschema import Draft202012Validator
from multidict import CIMultiDictProxy
from referencing import Registry
from referencing.jsonschema import DRAFT202012
from yarl import URL

from gateway.policy.csrf import csrf_token, derive_key
from gateway.policy.identity import sign_token
from gateway.store.demo import INTERNAL_WORD, PUBLIC_WORD, STATES, SUPPORT, demo_lines
from gateway.store.importer import CompanyLine, ContactLine, Line, PartLine, StateLine, TicketLine
from gateway.store.models import TicketState
from gateway.store.search import ELLIPSIS, SNIPPET_CHARS
from gateway.store.sqlite import SQLiteStore
from gateway.store.sqlite.lines import write_line
from routes.listing import DATE_FILTERS, canonical_query
from routes.timefmt import relative
from tests.conftest import DOMAIN, SECRET, Gateway, RecordingUpstream, StartGateway
from tests.proxy.test_proxy import free_port

MINUTE, HOUR, DAY = 60, 3600, 86_400
ANN, BEN, IVY, CHO = "u-ann", "u-ben", "u-ivy", "u-cho"  # Ann and Ivy: Acme; Ben: Acme and Globex; Cho: Globex
EVERYONE_IN = {"match": "any", "rules": [{"attribute": "person.user_id", "op": "exists"}]}
ACME_ONLY = {"match": "all", "rules": [{"attribute": "person.email", "op": "contains", "value": "acme.example.com"}]}
LOGIN = "https://app.example.com/login"
RANK_WORD = "marmalade"  # in the title of 9001, the description of 9002, a public reply of 9003
# In the title of 9012, (often) in the description of 9011 and in several replies of 9010: an order that is
# neither by id, by row, by creation nor by update, either way.
TIER_WORD = "quince"
NOTE_WORD = "pangolin"  # only in an internal note of 9003
EXTERNAL_LABELS = ("Submitted", "In progress", "Waiting on you", "Resolved")  # in workflow order
STATE_RANK = {label: rank for rank, label in enumerate(EXTERNAL_LABELS)}
INTERNAL_LABELS = tuple(state.internal_label for state in STATES)
# Internal labels that are not also ordinary words of the demo texts: never anywhere in a page.
DISTINCT_INTERNAL = tuple(label for label in INTERNAL_LABELS if label not in ("New", "Fixed"))
LEAKS = (
    *("sqlite", "fts5", "fts expression", "syntax error", "malformed match", "no such column", "unterminated"),
    *("operationalerror", "traceback", "internal error"),
)
TICKET_COLUMNS = ["ID", "Title", "Type", "State", "Company", "Created by", "Updated"]
# Ann's columns: she is a member of one company, so no column says its name on every row.
ONE_COMPANY_COLUMNS = [label for label in TICKET_COLUMNS if label != "Company"]


# --- the store and its oracle --------------------------------------------------------------------


def extra_lines(now: int) -> list[Line]:
    """Our own tickets, all created by Ivy (so Ann is not in their conversations)."""

    def ticket(ticket_id: str, title: str, **fields: Any) -> TicketLine:
        base: dict[str, Any] = {
            "kind": "ticket",
            "ticket_id": ticket_id,
            "title": title,
            "type": "Bug report",
            "state": "Investigating",
            "category": "Customer",
            "company": "acme",
            "creator": IVY,
            "description": "Nothing special here.",
            "created_at": now - 50 * DAY,
            "updated_at": now - 45 * DAY,
            "participants": [IVY],
        }
        return TicketLine.model_validate({**base, **fields})

    return [
        ticket(
            "9001",
            f"{RANK_WORD.capitalize()} jar export",
            state="Waiting on engineering",
            created_at=now - 40 * DAY,
            updated_at=now - 30 * DAY,
        ),
        ticket(
            "9002",
            "Dashboard question",
            type="Billing question",
            state="New",
            description=f"The {RANK_WORD} widget shows nothing.",
            created_at=now - 60 * DAY,
            updated_at=now - 5 * MINUTE,
        ),
        ticket(
            "9003",
            "Printing issue",
            state="Needs customer",
            description="Printouts come out blank.",
            created_at=now - 5 * DAY,
            updated_at=now - 3 * HOUR,
            parts=[
                PartLine(
                    author_name=SUPPORT,
                    body=f"We found the {RANK_WORD} setting.",
                    public=True,
                    created_at=now - 3 * HOUR,
                ),
                PartLine(
                    author_name=SUPPORT,
                    body=f"{NOTE_WORD} escalation, keep quiet.",
                    public=False,
                    created_at=now - 3 * HOUR + 60,
                ),
                PartLine(author=IVY, body="Thanks, that helped.", public=True, created_at=now - 3 * HOUR + 120),
            ],
        ),
        ticket(
            "9004",
            "Invoice <b>bold</b> & co",
            type="Billing question",
            state="Fixed",
            created_at=now - 20 * DAY,
            updated_at=now - 3 * DAY,
        ),
        ticket(
            "9011",
            "Totals look doubled",
            description=f"Our {TIER_WORD} dashboard shows {TIER_WORD} totals twice, {TIER_WORD} export too.",
            created_at=now - 11 * DAY,
            updated_at=now - 10 * DAY,
        ),
        ticket(
            "9010",
            "Report is wrong",
            created_at=now - 41 * DAY,
            updated_at=now - 40 * DAY,
            parts=[
                PartLine(
                    author=BEN,
                    body=f"The {TIER_WORD} report is wrong for us too.",
                    public=True,
                    created_at=now - 41 * DAY,
                ),
                PartLine(
                    author_name=SUPPORT, body=f"{TIER_WORD} {TIER_WORD} fixed.", public=True, created_at=now - 40 * DAY
                ),
            ],
        ),
        ticket(
            "9012",
            f"{TIER_WORD.capitalize()} report layout on the monthly printed summary page",
            created_at=now - 21 * DAY,
            updated_at=now - 20 * DAY,
        ),
        ticket("9005", f"{RANK_WORD} tracker", type="Engineering tracker", category="Tracker"),
        ticket("9006", f"{RANK_WORD} at Globex", company="globex", creator=CHO, participants=[CHO]),
    ]


@dataclass(frozen=True)
class Reply:
    author: str
    body: str
    at: int
    by_support: bool  # a teammate's reply: the line names no contact author


@dataclass(frozen=True)
class Ticket:
    ticket_id: str
    title: str
    type: str
    internal_state: str
    state: str
    category: str
    shared: bool
    company: str | None
    company_name: str | None
    creator: str
    creator_name: str
    created: int
    updated: int
    description: str
    replies: tuple[Reply, ...]
    notes: tuple[str, ...]


@dataclass(frozen=True)
class World:
    """What the store holds, read from the lines it was written from."""

    now: int
    tickets: dict[str, Ticket]
    members: dict[str, frozenset[str]]
    names: dict[str, str]

    @classmethod
    def of(cls, now: int, lines: Sequence[Line]) -> World:
        companies = {line.company_id: line.name for line in lines if isinstance(line, CompanyLine)}
        contacts = [line for line in lines if isinstance(line, ContactLine)]
        names = {line.user_id: line.name or "" for line in contacts}
        labels = {line.internal_label: line.external_label for line in lines if isinstance(line, StateLine)}
        tickets = {}
        for line in lines:
            if not isinstance(line, TicketLine):
                continue
            replies = tuple(
                Reply(part.author_name or names[part.author or ""], part.body, part.created_at, part.author is None)
                for part in line.parts
                if part.public
            )
            tickets[line.ticket_id] = Ticket(
                ticket_id=line.ticket_id,
                title=line.title,
                type=line.type,
                internal_state=line.state,
                state=labels[line.state],
                category=line.category,
                shared=line.is_shared,
                company=line.company,
                company_name=companies[line.company] if line.company else None,
                creator=line.creator,
                creator_name=names[line.creator],
                created=line.created_at,
                updated=line.updated_at,
                description=line.description,
                replies=replies,
                notes=tuple(part.body for part in line.parts if not part.public),
            )
        members = {line.user_id: frozenset(line.companies) for line in contacts}
        return cls(now, tickets, members, names)

    def visible(self, user_id: str, *, own_only: bool = False) -> list[Ticket]:
        """DESIGN.md: shared tickets (Customer, or Back-office with is_shared) of the user's companies."""
        companies = self.members.get(user_id, frozenset())
        return [
            ticket
            for ticket in self.tickets.values()
            if (ticket.category == "Customer" or (ticket.category == "Back-office" and ticket.shared))
            and (ticket.company in companies or (ticket.company is None and ticket.creator == user_id))
            and (ticket.creator == user_id or not own_only)
        ]

    def ids(self, tickets: Iterable[Ticket]) -> set[str]:
        return {ticket.ticket_id for ticket in tickets}


async def write_store(path: Path, lines: Sequence[Line]) -> None:
    """Write every line in one transaction through the importer's writer, then close the store."""
    store = await SQLiteStore.open(path)
    try:

        def all_lines(connection: sqlite3.Connection) -> None:
            for line in lines:
                write_line(connection, line)

        await store.transaction(all_lines)
    finally:
        await store.close()


def table(path: Path, sql: str) -> dict[str, int]:
    with closing(sqlite3.connect(path)) as connection:
        return {str(key): int(value) for key, value in connection.execute(sql)}


# --- HTML, read with html.parser -------------------------------------------------------------------

VOID = frozenset({"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"})


@dataclass
class Element:
    tag: str
    attrs: dict[str, str]
    children: list[Element | str] = field(default_factory=list)

    def iter(self) -> Iterator[Element]:
        """This element and every element under it, in document order."""
        yield self
        for child in self.children:
            if isinstance(child, Element):
                yield from child.iter()

    def strings(self) -> Iterator[str]:
        for child in self.children:
            if isinstance(child, str):
                yield child
            else:
                yield from child.strings()

    def text(self) -> str:
        return " ".join("".join(self.strings()).split())

    def find_all(self, tag: str, cls: str | None = None, **attrs: str) -> list[Element]:
        """Descendants with that tag, class token and attributes (``aria_current`` names ``aria-current``)."""
        wanted = {name.replace("_", "-"): value for name, value in attrs.items()}
        return [
            element
            for element in self.iter()
            if element is not self
            and element.tag == tag
            and (cls is None or cls in element.attrs.get("class", "").split())
            and all(element.attrs.get(name) == value for name, value in wanted.items())
        ]

    def maybe(self, tag: str, cls: str | None = None, **attrs: str) -> Element | None:
        found = self.find_all(tag, cls, **attrs)
        return found[0] if found else None

    def find(self, tag: str, cls: str | None = None, **attrs: str) -> Element:
        found = self.maybe(tag, cls, **attrs)
        assert found is not None, f"no <{tag} class={cls} {attrs}> in the page"
        return found


class _Builder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Element("#document", {})
        self.stack = [self.root]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        element = Element(tag, {name: value or "" for name, value in attrs})
        self.stack[-1].children.append(element)
        if tag not in VOID:
            self.stack.append(element)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.stack[-1].children.append(Element(tag, {name: value or "" for name, value in attrs}))

    def handle_endtag(self, tag: str) -> None:
        for depth in range(len(self.stack) - 1, 0, -1):
            if self.stack[depth].tag == tag:
                del self.stack[depth:]
                return

    def handle_data(self, data: str) -> None:
        self.stack[-1].children.append(data)


def parse_html(text: str) -> Element:
    builder = _Builder()
    builder.feed(text)
    builder.close()
    return builder.root


@dataclass(frozen=True)
class Row:
    ticket_id: str
    title: str
    type: str
    state: str
    company: str | None  # None: the column is hidden (a visitor of one company)
    creator: str | None  # None: the column is hidden ("Created by me")
    updated: str
    updated_iso: str
    links: tuple[str, ...]
    preview: Element | None


@dataclass(frozen=True)
class Header:
    label: str
    href: str | None
    sort: str | None


@dataclass(frozen=True)
class ListPage:
    html: str
    root: Element
    tabs: list[tuple[str, str, bool]]
    selects: dict[str, list[tuple[str, str, bool]]]
    inputs: dict[str, str]
    count: str
    caption: str
    headers: list[Header]
    rows: list[Row]
    previous: str | None
    next: str | None
    pages_label: str
    empty: str | None

    @property
    def ids(self) -> list[str]:
        return [row.ticket_id for row in self.rows]


def read_list_page(text: str) -> ListPage:
    root = parse_html(text)
    main = root.find("main")
    tabs = [
        (link.text(), link.attrs["href"], link.attrs.get("aria-current") == "page")
        for link in main.find("nav", cls="tabs").find_all("a")
    ]
    form = main.find("form", cls="filters")
    selects = {
        select.attrs["name"]: [
            (option.attrs.get("value", ""), option.text(), "selected" in option.attrs)
            for option in select.find_all("option")
        ]
        for select in form.find_all("select")
    }
    inputs = {field.attrs["name"]: field.attrs.get("value", "") for field in form.find_all("input")}
    headers: list[Header] = []
    rows: list[Row] = []
    caption = ""
    grid = main.maybe("table", cls="tickets")
    if grid is not None:
        caption = grid.find("caption").text()
        for th in grid.find("thead").find_all("th"):
            link = th.maybe("a")
            label = th.text().replace("▼", "").replace("▲", "").strip()
            headers.append(Header(label, link.attrs["href"] if link else None, th.attrs.get("aria-sort")))
        for tr in grid.find("tbody").find_all("tr"):
            cells = {td.attrs["data-label"]: td for td in tr.find_all("td")}
            time_element = cells["Updated"].find("time")
            rows.append(
                Row(
                    ticket_id=cells["ID"].text().removeprefix("#"),
                    title=cells["Title"].text(),
                    type=cells["Type"].text(),
                    state=cells["State"].text(),
                    company=cells["Company"].text() if "Company" in cells else None,
                    creator=cells["Created by"].text() if "Created by" in cells else None,
                    updated=time_element.text(),
                    updated_iso=time_element.attrs.get("datetime", ""),
                    links=tuple(a.attrs["href"] for a in tr.find_all("a")),
                    preview=cells.get("Preview"),
                )
            )
    pages = main.maybe("nav", cls="pages")
    previous = pages.maybe("a", rel="prev") if pages else None
    following = pages.maybe("a", rel="next") if pages else None
    empty = main.maybe("p", cls="empty")
    return ListPage(
        html=text,
        root=root,
        tabs=tabs,
        selects=selects,
        inputs=inputs,
        count=main.find("p", cls="count").text(),
        caption=caption,
        headers=headers,
        rows=rows,
        previous=previous.attrs["href"] if previous else None,
        next=following.attrs["href"] if following else None,
        pages_label=pages.find("span").text() if pages else "",
        empty=empty.text() if empty else None,
    )


def facts(root: Element) -> dict[str, str]:
    """The detail page's <dl>: each <dt> with its <dd>."""
    found: dict[str, str] = {}
    for pair in root.find("dl", cls="facts").find_all("div"):
        found[pair.find("dt").text()] = pair.find("dd").text()
    return found


def iso(timestamp: int) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def day_of(timestamp: int) -> date:
    return datetime.fromtimestamp(timestamp, UTC).date()


def day_start(day: date) -> int:
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp())


def query_of(href: str) -> dict[str, str]:
    return dict(URL(href).query)


# --- the portal under test -------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    status: int
    headers: CIMultiDictProxy[str]
    text: str

    def json(self) -> Any:
        return json.loads(self.text)


Auth = Literal["cookie", "bearer", "none"]


@dataclass
class Portal:
    gateway: Gateway
    world: World
    contact_ids: dict[str, int]
    state_ids: dict[str, int]  # by internal label
    type_ids: dict[str, int]
    path: str = "/tickets"

    def token(self, user_id: str) -> str:
        return sign_token(SECRET, user_id=user_id, now=time.time(), ttl=3600)

    def url(self, target: str) -> URL:
        return self.gateway.url.join(URL(target))

    async def call(
        self,
        method: str,
        target: str,
        *,
        user: str = ANN,
        auth: Auth = "cookie",
        params: Mapping[str, str] | None = None,
        data: Mapping[str, str] | None = None,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> Answer:
        sent = dict(headers or {})
        if auth == "cookie":
            sent["Cookie"] = f"portal-jwt={self.token(user)}"
        elif auth == "bearer":
            sent["Authorization"] = f"Bearer {self.token(user)}"
        async with self.gateway.client.request(
            method, self.url(target), params=params, data=data, json=body, headers=sent, allow_redirects=False
        ) as response:
            return Answer(response.status, response.headers, await response.text())

    async def page(
        self, target: str | None = None, params: Mapping[str, str] | None = None, user: str = ANN
    ) -> ListPage:
        answer = await self.call("GET", target or self.path, params=params, user=user)
        assert answer.status == 200, f"{target} {params}: {answer.status} {answer.text[:300]}"
        assert answer.headers["Content-Type"].startswith("text/html")
        check_page_headers(answer)
        return read_list_page(answer.text)

    async def walk(self, params: Mapping[str, str], user: str = ANN) -> tuple[list[Row], list[ListPage]]:
        """Every row of a list, following its Next links; each link must keep the list's parameters."""
        pages = [await self.page(params=params, user=user)]
        while pages[-1].next is not None:
            link = pages[-1].next
            kept = {name: value for name, value in query_of(link).items() if name != "page"}
            assert kept == {name: value for name, value in params.items() if value}, f"Next link {link} for {params}"
            assert query_of(link)["page"] == str(len(pages) + 1)
            pages.append(await self.page(link, user=user))
            assert len(pages) < 50, "the Next links never end"
        rows = [row for page in pages for row in page.rows]
        return rows, pages

    async def api(self, path: str, params: Mapping[str, str] | None = None, user: str = ANN) -> Any:
        answer = await self.call("GET", path, params=params, user=user, auth="bearer")
        assert answer.status == 200, f"{path} {params}: {answer.status} {answer.text[:300]}"
        assert answer.headers["Content-Type"].startswith("application/json")
        return answer.json()


async def open_portal(start_gateway: StartGateway, tmp_path: Path, **overrides: Any) -> Portal:
    """Write the store (demo lines for a known ``now`` plus ours), then start the gateway on it."""
    now = int(time.time())
    lines = [*demo_lines(now), *extra_lines(now)]
    database = tmp_path / "portal.db"
    await write_store(database, lines)
    portal_config = {"access": EVERYONE_IN, **overrides.pop("portal", {})}
    gateway = await start_gateway(portal=portal_config, **overrides)
    return Portal(
        gateway=gateway,
        world=World.of(now, lines),
        contact_ids=table(database, "SELECT user_id, id FROM contacts"),
        state_ids=table(database, "SELECT internal_label, id FROM ticket_states"),
        type_ids=table(database, "SELECT name, id FROM ticket_types"),
        path=gateway.config.portal.path,
    )


def check_page_headers(answer: Answer) -> None:
    """The headers every page of the gateway's own carries, and a page that needs no inline script or style."""
    csp = answer.headers.get("Content-Security-Policy", "")
    directives = {part.split()[0]: part.split()[1:] for part in (piece.strip() for piece in csp.split(";")) if part}
    scripts = directives.get("script-src", directives.get("default-src"))
    assert scripts is not None, f"CSP without script-src or default-src: {csp!r}"
    assert "'unsafe-inline'" not in scripts, csp
    assert "'unsafe-eval'" not in scripts, csp
    assert answer.headers.get("X-Frame-Options", "").upper() in ("DENY", "SAMEORIGIN")
    assert answer.headers.get("X-Content-Type-Options", "").lower() == "nosniff"
    assert answer.headers.get("Referrer-Policy", "") in (
        "no-referrer",
        "same-origin",
        "strict-origin",
        "strict-origin-when-cross-origin",
    )
    root = parse_html(answer.text)
    assert [s for s in root.find_all("script") if "src" not in s.attrs] == [], "inline <script> in the page"
    handlers = sorted({name for element in root.iter() for name in element.attrs if name.startswith("on")})
    assert handlers == [], f"inline event handlers {handlers}"
    styles = directives.get("style-src", directives.get("default-src", []))
    if "'unsafe-inline'" not in styles:
        assert root.find_all("style") == [], "inline <style> the CSP blocks"
        assert [e.tag for e in root.iter() if "style" in e.attrs] == [], "style attributes the CSP blocks"


# --- the Help Center home --------------------------------------------------------------------------


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


# --- the list: tabs, filters, sort, pages --------------------------------------------------------


@pytest.mark.parametrize("restricted", [False, True], ids=["visibility-off", "visibility-on-no-conditions"])
async def test_tabs_follow_the_visibility_rules(start_gateway: StartGateway, tmp_path: Path, restricted: bool) -> None:
    visibility = {"enabled": restricted, "conditions": []}
    portal = await open_portal(start_gateway, tmp_path, portal={"visibility": visibility})
    world = portal.world
    everything, own = world.ids(world.visible(ANN)), world.ids(world.visible(ANN, own_only=True))
    assert own
    assert own < everything

    first = await portal.page()
    if restricted:
        assert [(label, current) for label, _, current in first.tabs] == [("Created by me", True)]
    else:
        assert [(label, current) for label, _, current in first.tabs] == [("All", True), ("Created by me", False)]
        assert [query_of(href).get("scope") for _, href, _ in first.tabs] == ["all", "mine"]

    rows, _ = await portal.walk({})
    assert {row.ticket_id for row in rows} == (own if restricted else everything)
    mine, _ = await portal.walk({"scope": "mine"})
    assert {row.ticket_id for row in mine} == own
    # All Ann's own: no "Created by" column saying her name on each row, and no creator filter.
    assert {row.creator for row in mine} == {None}
    mine_page = await portal.page(params={"scope": "mine"})
    assert "Created by" not in [header.label for header in mine_page.headers]
    assert "creator" not in mine_page.selects
    # A restricted visitor asking for everything still gets only their own.
    asked_all, pages = await portal.walk({"scope": "all"})
    assert {row.ticket_id for row in asked_all} == (own if restricted else everything)
    assert [label for label, _, current in pages[0].tabs if current] == ["Created by me" if restricted else "All"]


STATE_SLUGS = ("submitted", "in-progress", "waiting-on-you", "resolved")  # the labels as they stand in URLs


@pytest.mark.parametrize(
    ("label", "slug"),
    [
        ("In progress", "in-progress"),
        ("Waiting on you", "waiting-on-you"),
        ("  On hold / waiting (3rd party)  ", "on-hold-waiting-3rd-party"),
        ("Résolu", "résolu"),
        ("snake_case", "snake-case"),
        ("✓✓", "7"),  # nothing to spell: the id stands in
    ],
)
def test_a_state_slug_is_its_label_in_lower_case_words_joined_by_hyphens(label: str, slug: str) -> None:
    assert TicketState(7, "in_progress", "internal", label).slug == slug


def test_the_canonical_query_drops_empty_fields_and_names_states_by_slug() -> None:
    states = [TicketState(1, "submitted", "New", "Submitted"), TicketState(3, "in_progress", "Dev", "In progress")]
    sent = [("q", ""), ("sort", "id"), ("state", "3"), ("type", " "), ("q", "x"), ("state", "9")]
    assert canonical_query(sent, states) == [("sort", "id"), ("state", "in-progress"), ("q", "x"), ("state", "9")]
    clean = [("scope", "all"), ("state", "submitted")]
    assert canonical_query(clean, states) == clean


async def test_state_filter_uses_customer_facing_labels(start_gateway: StartGateway, tmp_path: Path) -> None:
    portal = await open_portal(start_gateway, tmp_path)
    visible = portal.world.visible(ANN)
    first = await portal.page()
    options = [(value, label) for value, label, _ in first.selects["state"] if value]
    assert options == list(zip(STATE_SLUGS, EXTERNAL_LABELS, strict=True)), "each label once, in order, as a slug"
    pages_seen = [first.html]
    for value, label in options:
        rows, pages = await portal.walk({"state": value})
        pages_seen += [page.html for page in pages]
        assert {row.state for row in rows} <= {label}
        assert {row.ticket_id for row in rows} == {t.ticket_id for t in visible if t.state == label}, label
        assert [option_label for _, option_label, selected in pages[0].selects["state"] if selected] == [label]
        api = await portal.api("/api/v1/tickets", {"state": value})
        assert api["total_count"] == len(rows), f"the API reads state={value} as the page does"
    # "in-progress" finds every "In progress" ticket, whichever internal state (9001 is "Waiting on engineering").
    rows, _ = await portal.walk({"state": "in-progress"})
    in_progress = {t.ticket_id for t in visible if t.state == "In progress"}
    assert "9001" in in_progress
    assert {row.ticket_id for row in rows} == in_progress
    for html in pages_seen:
        for internal in DISTINCT_INTERNAL:
            assert internal not in html, f"internal state label {internal!r} in a page"
        texts = {element.text() for element in parse_html(html).iter()}
        assert not texts & set(INTERNAL_LABELS), f"internal state labels {texts & set(INTERNAL_LABELS)} shown"


async def test_an_old_numeric_state_link_redirects_to_its_slug(start_gateway: StartGateway, tmp_path: Path) -> None:
    # A shared link may carry the id of any state: it lands on the slug of that state's label, the other
    # parameters kept in their order, so the form shows the label chosen and Apply keeps the filter.
    portal = await open_portal(start_gateway, tmp_path)
    behind = str(portal.state_ids["Waiting on engineering"])
    moved = await portal.call("GET", "/tickets", params={"sort": "id", "state": behind, "order": "asc"})
    assert moved.status == 302
    assert moved.headers["Location"] == "/tickets?sort=id&state=in-progress&order=asc"
    page = await portal.page(moved.headers["Location"])
    assert {row.state for row in page.rows} == {"In progress"}
    assert [label for _, label, selected in page.selects["state"] if selected] == ["In progress"]
    # The JSON API takes both forms, with the same answer.
    by_id = await portal.api("/api/v1/tickets", {"state": behind})
    by_slug = await portal.api("/api/v1/tickets", {"state": "in-progress"})
    assert by_id == by_slug
    assert by_id["total_count"] == len([t for t in portal.world.visible(ANN) if t.state == "In progress"])
    # An id no state has is not redirected: it matches nothing, as before.
    unknown = await portal.page(params={"state": "999"})
    assert unknown.rows == []


async def test_an_unknown_state_slug_is_a_400_naming_the_slugs(start_gateway: StartGateway, tmp_path: Path) -> None:
    portal = await open_portal(start_gateway, tmp_path)
    cases: tuple[tuple[str, Auth], ...] = (("/tickets", "cookie"), ("/api/v1/tickets", "bearer"))
    for path, auth in cases:
        answer = await portal.call("GET", path, params={"state": "in-progres"}, auth=auth)
        assert answer.status == 400, (path, answer.status)
        assert "state: must be one of submitted, in-progress, waiting-on-you, resolved" in answer.text, path
        zero = await portal.call("GET", path, params={"state": "0"}, auth=auth)
        assert zero.status == 400
        assert "state: must be at least 1" in zero.text, path
        assert "None" not in zero.text


async def test_a_submitted_filter_form_lands_on_the_clean_url(start_gateway: StartGateway, tmp_path: Path) -> None:
    portal = await open_portal(start_gateway, tmp_path)
    form = parse_html((await portal.call("GET", "/tickets")).text).find("form", cls="filters")
    # Every field, in the order a browser submits them, as the form stands: all empty but the scope.
    fields = [
        (field.attrs["name"], field.attrs.get("value", "")) for field in form.iter() if field.tag in ("input", "select")
    ]
    assert [name for name, _ in fields] == ["scope", "q", "state", "type", "creator", *DATE_FILTERS]
    submitted = str(URL("/tickets").with_query(fields))
    clean = await portal.call("GET", submitted)
    assert clean.status == 302, submitted
    assert clean.headers["Location"] == "/tickets?scope=all"
    # Only the fields filled in are kept, in the order they came; a state id becomes its slug on the way.
    chosen = {"q": PUBLIC_WORD, "state": str(portal.state_ids["Investigating"]), "created_before": "2100-01-01"}
    filled = str(URL("/tickets").with_query([(name, chosen.get(name, value)) for name, value in fields]))
    moved = await portal.call("GET", filled)
    assert moved.status == 302
    expected = f"/tickets?scope=all&q={PUBLIC_WORD}&state=in-progress&created_before=2100-01-01"
    assert moved.headers["Location"] == expected
    landed = await portal.page(moved.headers["Location"])
    assert landed.inputs["q"] == PUBLIC_WORD
    # With nothing left, the bare list; and the clean URL itself is served as it is.
    assert (await portal.call("GET", "/tickets?q=&state=&type=")).headers["Location"] == "/tickets"
    assert (await portal.call("GET", expected)).status == 200
    # The JSON API reads an empty parameter as one left out (its document says so: allowEmptyValue).
    listed = await portal.api("/api/v1/tickets", {"q": "", "state": "", "page": ""})
    assert listed["total_count"] == len(portal.world.visible(ANN))


async def test_type_filter(start_gateway: StartGateway, tmp_path: Path) -> None:
    portal = await open_portal(start_gateway, tmp_path)
    visible = portal.world.visible(ANN)
    first = await portal.page()
    options = [(value, label) for value, label, _ in first.selects["type"] if value]
    assert {label for _, label in options} >= {t.type for t in visible}
    for value, label in options:
        assert value == str(portal.type_ids[label])
        rows, pages = await portal.walk({"type": value})
        assert {row.type for row in rows} <= {label}
        assert {row.ticket_id for row in rows} == {t.ticket_id for t in visible if t.type == label}, label
        assert [option for _, option, selected in pages[0].selects["type"] if selected] == [label]


async def test_creator_dropdown_lists_the_creators_by_name(start_gateway: StartGateway, tmp_path: Path) -> None:
    portal = await open_portal(start_gateway, tmp_path)
    creators = {t.creator for t in portal.world.visible(ANN)}
    expected = sorted(
        ((str(portal.contact_ids[user]), portal.world.names[user]) for user in creators), key=lambda c: c[1].lower()
    )
    page = await portal.page()
    assert [(value, label) for value, label, _ in page.selects["creator"] if value or label != "Anyone"] == expected
    chosen = await portal.page(params={"creator": expected[0][0]})
    assert [label for _, label, selected in chosen.selects["creator"] if selected] == [expected[0][1]]


async def test_creator_filter(start_gateway: StartGateway, tmp_path: Path) -> None:
    portal = await open_portal(start_gateway, tmp_path)
    visible = portal.world.visible(ANN)
    creators = sorted({t.creator for t in visible})
    assert len(creators) >= 3
    for user in creators:
        rows, _ = await portal.walk({"creator": str(portal.contact_ids[user])})
        assert {row.creator for row in rows} == {portal.world.names[user]}
        assert {row.ticket_id for row in rows} == {t.ticket_id for t in visible if t.creator == user}, user
    # A contact who created nothing Ann may see: an empty list, not an error.
    rows, _ = await portal.walk({"creator": str(portal.contact_ids[CHO])})
    assert rows == []


async def test_created_and_updated_date_ranges(start_gateway: StartGateway, tmp_path: Path) -> None:
    portal = await open_portal(start_gateway, tmp_path)
    visible = portal.world.visible(ANN)
    created = sorted(day_of(t.created) for t in visible)
    updated = sorted(day_of(t.updated) for t in visible)
    c1, c2 = created[len(created) // 4], created[3 * len(created) // 4]
    u1, u2 = updated[len(updated) // 4], updated[3 * len(updated) // 4]

    def between(value: int, after: date | None, before: date | None) -> bool:
        # YYYY-MM-DD in UTC; both ends include their whole day.
        return (after is None or value >= day_start(after)) and (before is None or value < day_start(before) + DAY)

    cases: list[tuple[dict[str, str], Callable[[Ticket], bool]]] = [
        ({"created_after": c1.isoformat()}, lambda t: between(t.created, c1, None)),
        ({"created_before": c1.isoformat()}, lambda t: between(t.created, None, c1)),
        ({"created_after": c1.isoformat(), "created_before": c2.isoformat()}, lambda t: between(t.created, c1, c2)),
        ({"created_after": c2.isoformat(), "created_before": c2.isoformat()}, lambda t: between(t.created, c2, c2)),
        ({"updated_after": u2.isoformat()}, lambda t: between(t.updated, u2, None)),
        ({"updated_before": u1.isoformat()}, lambda t: between(t.updated, None, u1)),
        ({"updated_after": u1.isoformat(), "updated_before": u2.isoformat()}, lambda t: between(t.updated, u1, u2)),
        (
            {"created_after": c1.isoformat(), "created_before": c2.isoformat(), "updated_after": u1.isoformat()},
            lambda t: between(t.created, c1, c2) and between(t.updated, u1, None),
        ),
        ({"created_after": "2100-01-01"}, lambda t: False),
    ]
    for params, keep in cases:
        expected = {t.ticket_id for t in visible if keep(t)}
        if params != {"created_after": "2100-01-01"}:
            assert expected, f"{params} keeps nothing: a weak case"
            assert expected != {t.ticket_id for t in visible}, f"{params} filters nothing: a weak case"
        rows, pages = await portal.walk(params)
        assert {row.ticket_id for row in rows} == expected, params
        assert all(pages[0].inputs[name] == value for name, value in params.items()), "the form shows the dates"


async def test_a_bad_list_parameter_is_a_400_naming_it(start_gateway: StartGateway) -> None:
    gateway = await start_gateway(portal={"access": EVERYONE_IN})
    portal = Portal(gateway, World(0, {}, {}, {}), {}, {}, {})
    problems = []
    cases = [
        *(
            (name, value)
            for name in ("created_after", "created_before", "updated_after", "updated_before")
            for value in ("2026-02-30", "yesterday", "2026/01/01", "01-02-2026")
        ),
        ("sort", "title"),
        ("order", "up"),
        ("scope", "everyone"),
    ]
    for name, value in cases:
        page = await portal.call("GET", "/tickets", params={name: value})
        if page.status != 400 or not page.headers["Content-Type"].startswith("text/html"):
            problems.append(f"page {name}={value}: {page.status} {page.headers['Content-Type']}")
            continue
        check_page_headers(page)
        detail = parse_html(page.text).find("section", cls="error").text()
        if name not in detail:
            problems.append(f"page {name}={value}: the 400 page does not name the parameter: {detail!r}")
        api = await portal.call("GET", "/api/v1/tickets", params={name: value}, auth="bearer")
        if api.status != 400 or not api.json()["error"]["detail"].startswith(name):
            problems.append(f"api {name}={value}: {api.status} {api.text[:200]}")
    assert problems == []


SORT_KEYS: dict[str, Callable[[Ticket], Any]] = {
    "id": lambda t: int(t.ticket_id),
    "type": lambda t: t.type.casefold(),
    "state": lambda t: STATE_RANK[t.state],
    "created": lambda t: t.created,
    "updated": lambda t: t.updated,
}


async def test_sort_by_each_column_both_ways(start_gateway: StartGateway, tmp_path: Path) -> None:
    portal = await open_portal(start_gateway, tmp_path)
    tickets = portal.world.tickets
    everything = portal.world.ids(portal.world.visible(ANN))
    default, _ = await portal.walk({})
    updated = [tickets[row.ticket_id].updated for row in default]
    assert updated == sorted(updated, reverse=True), "by default the most recently updated first"
    for key, value_of in SORT_KEYS.items():
        for order in ("asc", "desc"):
            rows, pages = await portal.walk({"sort": key, "order": order})
            assert len(rows) == len(everything)
            assert {row.ticket_id for row in rows} == everything
            values = [value_of(tickets[row.ticket_id]) for row in rows]
            assert values == sorted(values, reverse=order == "desc"), f"sort={key} order={order}: {values}"
            assert len(set(values)) > 1
            sorted_by = [header for header in pages[0].headers if header.sort]
            if key != "created":  # the list has no Created column to mark
                assert [(h.label, h.sort) for h in sorted_by] == [
                    (
                        {"id": "ID", "type": "Type", "state": "State", "updated": "Updated"}[key],
                        "ascending" if order == "asc" else "descending",
                    )
                ]
    # The rows show what they were sorted by: the state column in workflow order, the types alphabetically.
    rows, _ = await portal.walk({"sort": "state", "order": "asc"})
    shown = [STATE_RANK[row.state] for row in rows]
    assert shown == sorted(shown)


async def test_pagination_edges(start_gateway: StartGateway, tmp_path: Path) -> None:
    portal = await open_portal(start_gateway, tmp_path, portal={"page_size": 10})
    total = len(portal.world.visible(ANN))
    last = -(-total // 10)
    assert last >= 3
    assert total % 10, "the data should end in a partial page"

    first = await portal.page()
    assert len(first.rows) == 10
    assert first.previous is None
    assert first.next is not None
    assert first.pages_label == f"Page 1 of {last}"
    assert first.count == f"{total} tickets"
    explicit = await portal.page(params={"page": "1"})
    assert explicit.ids == first.ids

    rows, pages = await portal.walk({})
    assert len(pages) == last
    assert len(rows) == total
    assert len({row.ticket_id for row in rows}) == total, "pages overlap or skip"
    final = pages[-1]
    assert len(final.rows) == total % 10
    assert final.next is None
    assert final.previous is not None
    assert query_of(final.previous).get("page") == str(last - 1)
    assert final.pages_label == f"Page {last} of {last}"
    assert final.count == f"{total} tickets", "every page shows the whole total"

    for beyond in (str(last + 1), "10000"):
        past = await portal.page(params={"page": beyond})
        assert past.rows == [], f"page {beyond}"
        assert past.empty is not None, f"page {beyond}"
        assert past.count == f"{total} tickets"
        listed = await portal.api("/api/v1/tickets", {"page": beyond})
        assert listed["tickets"] == []
        assert listed["total_count"] == total


@pytest.mark.parametrize("value", ["0", "abc", "99999999", "10001", "-1", "1.5", "1e3", "²"])
async def test_an_unreadable_page_number_is_a_400(start_gateway: StartGateway, value: str) -> None:
    gateway = await start_gateway(portal={"access": EVERYONE_IN})
    portal = Portal(gateway, World(0, {}, {}, {}), {}, {}, {})
    page = await portal.call("GET", "/tickets", params={"page": value})
    assert page.status == 400, page.text[:300]
    assert "page" in parse_html(page.text).find("section", cls="error").text()
    api = await portal.call("GET", "/api/v1/tickets", params={"page": value}, auth="bearer")
    assert api.status == 400
    assert api.json()["error"]["detail"].startswith("page")


@pytest.mark.parametrize("name", ["state", "type", "creator"])
@pytest.mark.parametrize("value", ["0", "x", "²", "-2"])
async def test_an_unreadable_id_filter_is_a_400(start_gateway: StartGateway, name: str, value: str) -> None:
    gateway = await start_gateway(portal={"access": EVERYONE_IN})
    portal = Portal(gateway, World(0, {}, {}, {}), {}, {}, {})
    targets: tuple[tuple[str, Auth], ...] = (("/tickets", "cookie"), ("/api/v1/tickets", "bearer"))
    for path, auth in targets:
        answer = await portal.call("GET", path, params={name: value}, auth=auth)
        assert answer.status == 400, f"{path}?{name}={value}: {answer.status}"
        assert name in answer.text


async def test_total_count_text(start_gateway: StartGateway, tmp_path: Path) -> None:
    portal = await open_portal(start_gateway, tmp_path)
    total = len(portal.world.visible(ANN))
    assert (await portal.page()).count == f"{total} tickets"
    one = await portal.page(params={"q": "9004"})
    assert one.count == "1 ticket matching “9004”"
    assert one.ids == ["9004"]
    none = await portal.page(params={"q": INTERNAL_WORD})
    assert none.count == f"0 tickets matching “{INTERNAL_WORD}”"
    assert none.rows == []
    assert none.empty == "Search looks in the title, description, ID and public replies of the tickets you can see."


async def test_an_empty_search_says_what_was_searched_and_how_to_clear_it(
    start_gateway: StartGateway, tmp_path: Path
) -> None:
    portal = await open_portal(start_gateway, tmp_path)
    params = {"q": INTERNAL_WORD, "state": "resolved", "sort": "id"}
    none = await portal.page(params=params)
    state = none.root.find("section", cls="empty-state")
    assert state.find("h2").text() == f"No tickets match “{INTERNAL_WORD}”"
    assert "within the other filters" in state.find("p", cls="empty").text()
    actions = {link.text(): query_of(link.attrs["href"]) for link in state.find_all("a")}
    # Clearing the search keeps the rest of the view; clearing everything keeps the scope and the sort only.
    assert actions == {
        "Clear search": {"state": "resolved", "sort": "id"},
        "Clear all filters": {"sort": "id"},
    }
    cleared = await portal.page(params=actions["Clear search"])
    assert cleared.rows, "resolved tickets exist"


async def test_active_filters_are_chips_that_remove_themselves(start_gateway: StartGateway, tmp_path: Path) -> None:
    portal = await open_portal(start_gateway, tmp_path)
    creator = str(portal.contact_ids[IVY])
    params = {"q": "printing", "state": "waiting-on-you", "creator": creator, "updated_after": "2020-01-01"}
    page = await portal.page(params=params)
    chips = {
        link.text().replace("\u00d7", "").replace("(remove)", "").strip(): query_of(link.attrs["href"])
        for link in page.root.find("ul", cls="chips").find_all("a", cls="chip")
    }
    assert chips == {
        "“printing”": {name: value for name, value in params.items() if name != "q"},
        "State: Waiting on you": {name: value for name, value in params.items() if name != "state"},
        "Created by: Ivy Ito": {name: value for name, value in params.items() if name != "creator"},
        "Updated from 2020-01-01": {name: value for name, value in params.items() if name != "updated_after"},
    }
    clear_all = page.root.find("ul", cls="chips").find_all("a")[-1]
    assert (clear_all.text(), query_of(clear_all.attrs["href"])) == ("Clear all", {})
    # The panel holding the chosen filters stands open, so the choice is in view without JavaScript.
    assert "open" in page.root.find("details", cls="filter-panel").attrs
    assert page.root.find("details", cls="filter-panel").find("summary").text() == "Filters (3)"  # the search aside
    searched = await portal.page(params={"q": "printing"})
    assert searched.root.find("details", cls="filter-panel").find("summary").text() == "Filters"
    assert "open" in page.root.find("details", cls="more-filters").attrs
    plain = await portal.page()
    assert plain.root.maybe("ul", cls="chips") is None
    assert "open" not in plain.root.find("details", cls="filter-panel").attrs


async def test_the_pages_are_numbered(start_gateway: StartGateway, tmp_path: Path) -> None:
    portal = await open_portal(start_gateway, tmp_path, portal={"page_size": 1})
    total = len(portal.world.visible(ANN))
    assert total >= 8, "enough tickets for a gap on each side"
    middle = total // 2
    page = await portal.page(params={"page": str(middle)})
    numbers = page.root.find("ol", cls="page-numbers")
    shown = [item.text() for item in numbers.find_all("li")]
    window = [str(n) for n in range(middle - 2, middle + 3)]
    gap_before, gap_after = (["…"] if middle - 2 > 2 else []), (["…"] if middle + 2 < total - 1 else [])
    assert shown == ["1", *gap_before, *window, *gap_after, str(total)]
    current = numbers.find("a", aria_current="page")
    assert (current.text(), query_of(current.attrs["href"]).get("page")) == (str(middle), str(middle))


FILTER_SETS = [
    pytest.param(
        {"scope": "all", "state": "in-progress", "created_after": "2000-01-01", "updated_before": "2100-12-31"},
        ("id", "asc"),
        id="state-and-dates",
    ),
    pytest.param({"q": PUBLIC_WORD, "updated_after": "2000-01-01"}, ("updated", "desc"), id="search"),
]


@pytest.mark.parametrize(("filters", "sort"), FILTER_SETS)
async def test_filters_and_sort_live_in_the_url(
    start_gateway: StartGateway, tmp_path: Path, filters: dict[str, str], sort: tuple[str, str]
) -> None:
    portal = await open_portal(start_gateway, tmp_path, portal={"page_size": 5})
    params = {**filters, "sort": sort[0], "order": sort[1]}
    kept = {name: value for name, value in params.items() if value}
    _rows, pages = await portal.walk(params)  # the Next links keep everything (checked in walk)
    assert len(pages) >= 2
    first, second = pages[0], pages[1]

    # The form is filled in from the URL, so Apply keeps the view.
    for name in ("q", "created_after", "created_before", "updated_after", "updated_before"):
        assert first.inputs[name] == filters.get(name, ""), name
    assert first.inputs["scope"] == "all"
    if "state" in filters:
        assert [value for value, _, selected in first.selects["state"] if selected] == [filters["state"]]

    # Sort links keep the filters, change only sort and order, and start again at page 1.
    for header in first.headers:
        if header.href is None:
            continue
        query = query_of(header.href)
        assert {name: query.get(name) for name in kept if name not in ("sort", "order")} == {
            name: value for name, value in kept.items() if name not in ("sort", "order")
        }, header
        assert "page" not in query
        assert query["sort"] in SORT_KEYS
        assert query["order"] in ("asc", "desc")
    current = next(h for h in first.headers if h.sort)
    assert current.href is not None
    assert query_of(current.href)["order"] == ("desc" if sort[1] == "asc" else "asc"), "the current column flips"

    # Tabs keep the filters too.
    for _, href, _ in first.tabs:
        query = query_of(href)
        assert {name: query.get(name) for name in kept if name != "scope"} == {
            name: value for name, value in kept.items() if name != "scope"
        }

    # The previous link of page 2 keeps them as well.
    assert second.previous is not None
    assert {name: value for name, value in query_of(second.previous).items() if name != "page"} == kept
    assert query_of(second.previous).get("page", "1") == "1"

    # Opening a shared link gives the same view.
    again = await portal.page(portal.path + "?" + str(URL.build(query=params).query_string))
    assert again.ids == first.ids


async def test_columns_show_the_ticket(start_gateway: StartGateway, tmp_path: Path) -> None:
    portal = await open_portal(start_gateway, tmp_path)
    now = portal.world.now
    rows, pages = await portal.walk({})
    assert [header.label for header in pages[0].headers] == ONE_COMPANY_COLUMNS
    by_id = {row.ticket_id: row for row in rows}
    expected = {
        "9001": ("Marmalade jar export", "Bug report", "In progress", "1 mo ago"),
        "9002": ("Dashboard question", "Billing question", "Submitted", "5 min ago"),
        "9003": ("Printing issue", "Bug report", "Waiting on you", "3 h ago"),
        "9004": ("Invoice <b>bold</b> & co", "Billing question", "Resolved", "3 d ago"),
    }
    for ticket_id, (title, type_name, state, updated) in expected.items():
        row = by_id[ticket_id]
        ticket = portal.world.tickets[ticket_id]
        assert (row.title, row.type, row.state, row.company, row.creator, row.updated) == (
            title,
            type_name,
            state,
            None,
            "Ivy Ito",
            updated,
        ), ticket_id
        assert row.updated_iso == iso(ticket.updated)
        # One link per row: the title (the ID beside it is text).
        assert row.links == (f"/tickets/{ticket_id}",)
    month_ago = datetime.fromtimestamp(now - 30 * DAY, UTC)
    title = next(time for time in pages[0].root.find_all("time") if time.text() == "1 mo ago").attrs["title"]
    assert title == f"{month_ago.day} {month_ago:%b %Y, %H:%M} UTC"
    assert "<b>bold</b>" not in pages[0].html
    assert "Invoice &lt;b&gt;bold&lt;/b&gt; &amp; co" in "".join(page.html for page in pages)
    for row in rows:
        ticket = portal.world.tickets[row.ticket_id]
        assert (row.type, row.state, row.creator) == (ticket.type, ticket.state, ticket.creator_name)


async def test_the_company_column_shows_for_a_member_of_two_companies(
    start_gateway: StartGateway, tmp_path: Path
) -> None:
    portal = await open_portal(start_gateway, tmp_path)
    rows, pages = await portal.walk({}, user=BEN)
    assert [header.label for header in pages[0].headers] == TICKET_COLUMNS
    assert {row.company for row in rows} == {ticket.company_name for ticket in portal.world.visible(BEN)}
    assert {row.company for row in rows} >= {"Acme Corp", "Globex"}


@pytest.mark.parametrize(
    ("age", "expected"),
    [
        (0, "now"),
        (-30, "now"),  # a clock a little behind the store
        (59, "now"),
        (60, "1 min ago"),
        (5 * MINUTE, "5 min ago"),
        (HOUR - 1, "59 min ago"),
        (HOUR, "1 h ago"),
        (3 * HOUR, "3 h ago"),
        (DAY - 1, "23 h ago"),
        (DAY, "1 d ago"),
        (29 * DAY, "29 d ago"),
        (30 * DAY, "1 mo ago"),  # "mo", never an "m" that could be minutes
        (100 * DAY, "3 mo ago"),
        (364 * DAY, "12 mo ago"),
        (400 * DAY, "1 y ago"),
    ],
)
def test_relative_time(age: int, expected: str) -> None:
    now = 1_700_000_000 + 7 * DAY  # 2023-11-21T22:13:20Z
    assert relative(now - age, now) == expected


# --- search --------------------------------------------------------------------------------------


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


# --- the ticket detail and joining its conversation -----------------------------------------------


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


# --- proxy mode ------------------------------------------------------------------------------------


async def test_proxy_mode_guards_then_forwards_the_portal(
    start_gateway: StartGateway, tmp_path: Path, upstream: RecordingUpstream
) -> None:
    portal = await open_portal(
        start_gateway, tmp_path, portal={"mode": "proxy", "access": ACME_ONLY}, identity={"login_url": LOGIN}
    )

    def reached(path: str) -> int:
        return sum(1 for request in upstream.requests if request.path == path)

    for path in ("/tickets", "/tickets/1001"):
        anonymous = await portal.call("GET", path, auth="none", params={"q": "x"})
        assert anonymous.status == 302
        assert anonymous.headers["Location"].startswith(LOGIN + "?")
        denied = await portal.call("GET", path, user=CHO)  # signed in, outside the audience
        assert denied.status == 403
        assert reached(path) == 0, f"{path} went upstream without passing the checks"

        allowed = await portal.call(
            "GET", path, params={"q": PUBLIC_WORD, "state": "2"}, headers={"X-Portal-User-Id": "u-cho"}
        )
        assert allowed.status == 200
        assert allowed.json()["path"] == path
        assert reached(path) == 1
        seen = upstream.last
        assert seen.headers["X-Portal-User-Id"] == ANN
        assert dict(URL("/?" + seen.query_string).query) == {"q": PUBLIC_WORD, "state": "2"}

    count = len(upstream.requests)
    home = await portal.call("GET", "/", auth="none")
    assert home.status == 200
    assert "How can we help?" in home.text
    assert len(upstream.requests) == count, "the home page is the gateway's own"


# --- the OpenAPI document --------------------------------------------------------------------------

DOCUMENT_URI = "urn:portal-gateway:openapi"
HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


async def fetch_document(gateway: Gateway) -> dict[str, Any]:
    async with gateway.client.get(gateway.url.with_path("/api/v1/openapi.json")) as response:  # no credentials
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("application/json")
        document: dict[str, Any] = await response.json()
    return document


def response_schema(document: dict[str, Any], path: str, method: str, status: int) -> Draft202012Validator:
    """A validator for the documented JSON body of one answer, $refs resolved within the document."""
    responses = document["paths"][path][method]["responses"]
    assert str(status) in responses, f"{method.upper()} {path} answered {status}: not documented"
    assert "application/json" in responses[str(status)]["content"]
    escaped = path.replace("~", "~0").replace("/", "~1")
    pointer = f"/paths/{escaped}/{method}/responses/{status}/content/application~1json/schema"
    registry: Registry[Any] = Registry().with_resource(DOCUMENT_URI, DRAFT202012.create_resource(document))
    return Draft202012Validator({"$ref": f"{DOCUMENT_URI}#{pointer}"}, registry=registry)


async def test_real_responses_match_the_document(start_gateway: StartGateway, tmp_path: Path) -> None:
    portal = await open_portal(start_gateway, tmp_path, portal={"access": ACME_ONLY, "page_size": 10})
    document = await fetch_document(portal.gateway)
    visible = portal.world.visible(ANN)
    cases: list[tuple[str, str, str, dict[str, str], Auth, str, int]] = [
        # (method, documented path, real path, query, credentials, user, expected status)
        ("get", "/api/v1/me", "/api/v1/me", {}, "bearer", ANN, 200),
        ("get", "/api/v1/me", "/api/v1/me", {}, "cookie", IVY, 200),
        ("get", "/api/v1/me", "/api/v1/me", {}, "none", ANN, 401),
        ("get", "/api/v1/me", "/api/v1/me", {}, "bearer", CHO, 403),
        ("get", "/api/v1/tickets", "/api/v1/tickets", {}, "bearer", ANN, 200),
        (
            "get",
            "/api/v1/tickets",
            "/api/v1/tickets",
            {"page": "2", "sort": "state", "order": "asc"},
            "bearer",
            ANN,
            200,
        ),
        ("get", "/api/v1/tickets", "/api/v1/tickets", {"scope": "mine", "state": "1"}, "bearer", ANN, 200),
        ("get", "/api/v1/tickets", "/api/v1/tickets", {"q": PUBLIC_WORD}, "bearer", ANN, 200),
        ("get", "/api/v1/tickets", "/api/v1/tickets", {"q": RANK_WORD, "sort": "relevance"}, "bearer", ANN, 200),
        ("get", "/api/v1/tickets", "/api/v1/tickets", {"q": INTERNAL_WORD}, "bearer", ANN, 200),
        ("get", "/api/v1/tickets", "/api/v1/tickets", {"page": "0"}, "bearer", ANN, 400),
        ("get", "/api/v1/tickets", "/api/v1/tickets", {"created_after": "soon"}, "bearer", ANN, 400),
        ("get", "/api/v1/tickets", "/api/v1/tickets", {}, "none", ANN, 401),
        ("get", "/api/v1/tickets/{ticket_id}", "/api/v1/tickets/9003", {}, "bearer", ANN, 200),
        ("get", "/api/v1/tickets/{ticket_id}", f"/api/v1/tickets/{visible[0].ticket_id}", {}, "bearer", ANN, 200),
        ("get", "/api/v1/tickets/{ticket_id}", "/api/v1/tickets/99999", {}, "bearer", ANN, 404),
        ("get", "/api/v1/tickets/{ticket_id}", "/api/v1/tickets/9006", {}, "bearer", ANN, 404),
        ("get", "/api/v1/me/tickets-space", "/api/v1/me/tickets-space", {}, "bearer", ANN, 200),
        ("get", "/api/v1/me/tickets-space", "/api/v1/me/tickets-space", {"page": "x"}, "bearer", ANN, 400),
        ("post", "/api/v1/tickets/{ticket_id}/join", "/api/v1/tickets/9003/join", {}, "bearer", ANN, 200),
        ("post", "/api/v1/tickets/{ticket_id}/join", "/api/v1/tickets/99999/join", {}, "bearer", ANN, 404),
        ("post", "/api/v1/tickets/{ticket_id}/join", "/api/v1/tickets/9003/join", {}, "cookie", ANN, 400),
        ("post", "/api/v1/tickets/{ticket_id}/join", "/api/v1/tickets/9003/join", {}, "none", ANN, 401),
        ("get", "/api/v1/me/tickets-space", "/api/v1/me/tickets-space", {}, "bearer", ANN, 200),  # after the join
    ]
    problems = []
    for method, documented, real, params, auth, user, status in cases:
        answer = await portal.call(method.upper(), real, params=params, auth=auth, user=user)
        label = f"{method.upper()} {real} {params} as {user} ({auth})"
        if answer.status != status:
            problems.append(f"{label}: {answer.status}, expected {status}")
            continue
        if not answer.headers["Content-Type"].startswith("application/json"):
            problems.append(f"{label}: {answer.headers['Content-Type']}")
            continue
        errors = [
            f"{'/'.join(map(str, error.absolute_path))}: {error.message}"
            for error in response_schema(document, documented, method, status).iter_errors(answer.json())
        ]
        if errors:
            problems.append(f"{label}: {errors[:3]}")
    assert problems == []
    # The documented enums are accepted as documented.
    for parameter in document["paths"]["/api/v1/tickets"]["get"]["parameters"]:
        for value in parameter["schema"].get("enum", []):
            answer = await portal.call("GET", "/api/v1/tickets", params={parameter["name"]: value}, auth="bearer")
            assert answer.status == 200, f"documented {parameter['name']}={value} answered {answer.status}"
    space = await portal.api("/api/v1/me/tickets-space")
    assert "9003" in [ticket["ticket_id"] for ticket in space["tickets"]]

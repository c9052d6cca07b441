"""What the tickets portal tests share: the world they write, its oracle, an HTML reader, a portal client.

The tests are in ``tests/routes/test_portal_*.py`` (home, list, search, detail, proxy, openapi).

Every test runs the real gateway (``gateway.run.server.start``) over TLS on loopback. The store is written
before the gateway starts, through the importer's own line writer: the demo data of
``gateway.store.demo`` for a ``now`` the test knows (so it can predict relative times), plus a few
tickets of our own whose words, times and states are known exactly. The expected answers come from an
oracle built here from those lines and the visibility rules of DESIGN.md, never from the gateway.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, Literal

from multidict import CIMultiDictProxy
from yarl import URL

from gateway.policy.identity import sign_token
from gateway.store.demo import STATES, SUPPORT, demo_lines
from gateway.store.importer import CompanyLine, ContactLine, Line, PartLine, StateLine, TicketLine
from gateway.store.sqlite import SQLiteStore
from gateway.store.sqlite.lines import write_line
from tests.conftest import SECRET, Gateway, StartGateway

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

"""The demo store (``gateway.store.demo``) seeded as ``serve`` seeds it: a product that demonstrates itself.

Read back through the store's own API: every customer-facing state shows tickets,
customers ask and support answers, the texts read as written by people, and the
README's table of demo people says what the data and the bundled rules really do.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gateway.config import load_config
from gateway.policy.identity import Identity
from gateway.policy.rules import compile_rules
from gateway.policy.visibility import VisibilityPolicy, Visitor
from gateway.store.demo import INTERNAL_WORD, PUBLIC_WORD, TEAMMATES, demo_lines, seed_if_empty
from gateway.store.models import Contact, TicketFilter, TicketQuery
from gateway.store.sqlite import SQLiteStore

README = Path(__file__).resolve().parents[2] / "README.md"
SECRETS = {"MESSENGER_API_SECRET": "x", "PORTAL_ADMIN_TOKEN": "admin-token-0123456789"}
ACRONYMS = {"API", "CSV", "PDF", "SSO", "VAT", "URL"}
CUSTOMER_SHARED = "(t.category = 'Customer' OR (t.category = 'Back-office' AND t.is_shared = 1))"


@dataclass(frozen=True)
class Reply:
    by_contact: int | None
    author_name: str
    body: str
    public: bool


@dataclass(frozen=True)
class Ticket:
    ticket_id: str
    title: str
    description: str
    state_category: str
    creator: int
    creator_name: str
    company: int | None
    customer_shared: bool
    parts: tuple[Reply, ...]

    @property
    def public(self) -> list[Reply]:
        return [part for part in self.parts if part.public]


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    opened = await SQLiteStore.open(tmp_path / "portal.db")
    assert await seed_if_empty(opened, int(time.time())) is True
    yield opened
    await opened.close()


async def read(store: SQLiteStore, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    return await store.transaction(lambda connection: connection.execute(sql, params).fetchall())


async def tickets(store: SQLiteStore) -> list[Ticket]:
    rows = await read(
        store,
        "SELECT t.ticket_id, t.title, t.description, s.category, t.creator_id, p.name, t.company_id,"  # noqa: S608
        f" {CUSTOMER_SHARED}, t.conversation_id FROM tickets t JOIN ticket_states s ON s.id = t.state_id"
        " JOIN contacts p ON p.id = t.creator_id ORDER BY t.id",
    )
    parts: dict[int, list[Reply]] = {}
    for conversation, *fields in await read(
        store,
        "SELECT conversation_id, author_contact_id, author_name, body, is_public FROM conversation_parts"
        " ORDER BY created_at, id",
    ):
        parts.setdefault(conversation, []).append(Reply(fields[0], fields[1], fields[2], bool(fields[3])))
    return [
        Ticket(
            ticket_id=row[0],
            title=row[1],
            description=row[2],
            state_category=row[3],
            creator=row[4],
            creator_name=row[5],
            company=row[6],
            customer_shared=bool(row[7]),
            parts=tuple(parts.get(row[8], ())),
        )
        for row in rows
    ]


def filter_of(contact: Contact, *, own_only: bool = False) -> TicketFilter:
    return TicketFilter(frozenset(company.id for company in contact.companies), contact.id, own_only)


# --- what the portal shows ------------------------------------------------------------------------


async def test_every_customer_facing_state_shows_tickets_to_every_demo_person(store: SQLiteStore) -> None:
    """Each state of the filter (Resolved too) lists tickets for everyone, in the All tab and in "Created by me"."""
    states = {state.external_label: state.id for state in await store.ticket_states()}
    assert sorted(states) == ["In progress", "Resolved", "Submitted", "Waiting on you"]
    for contact in await store.contacts():
        for label, state_id in states.items():
            for own_only in (False, True):
                page = await store.list_tickets(filter_of(contact, own_only=own_only), TicketQuery(state_id=state_id))
                assert page.total > 0, (contact.user_id, label, own_only)


async def test_customers_ask_and_support_answers(store: SQLiteStore) -> None:
    """The creator (a customer of the ticket's company) writes the description and the customer's side;
    teammates write every other part, notes included; no text is said by both sides."""
    members = {(contact.id, company.id) for contact in await store.contacts() for company in contact.companies}
    said_by: dict[bool, set[str]] = {True: set(), False: set()}
    for ticket in await tickets(store):
        assert ticket.company is None or (ticket.creator, ticket.company) in members, ticket.ticket_id
        # The description is the creator's own words, not support's account of them.
        assert ticket.creator_name not in ticket.description, ticket.ticket_id
        for part in ticket.parts:
            assert part.by_contact in (None, ticket.creator), (ticket.ticket_id, part)
            if part.by_contact is None:
                assert part.author_name in TEAMMATES, (ticket.ticket_id, part)
            else:
                assert part.public, "a customer never writes an internal note"
            said_by[part.by_contact is not None].add(part.body)
        if ticket.public:  # the customer asked in the description: support speaks first
            assert ticket.public[0].by_contact is None, ticket.ticket_id
    assert said_by[True]
    assert said_by[False]
    assert not said_by[True] & said_by[False], "the same words written by a customer and by support"


async def test_the_conversation_goes_as_far_as_the_state(store: SQLiteStore) -> None:
    """Submitted: nobody has answered yet. Waiting on you: support's question is the last word.
    Resolved: support has answered."""
    seen = set()
    for ticket in await tickets(store):
        support = [part for part in ticket.public if part.by_contact is None]
        if ticket.state_category == "submitted":
            assert support == [], ticket.ticket_id
        elif ticket.state_category == "waiting_on_customer":
            assert ticket.public[-1].by_contact is None, ticket.ticket_id
            assert "?" in ticket.public[-1].body, ticket.ticket_id  # a question for the customer
        else:
            assert support, ticket.ticket_id
        seen.add(ticket.state_category)
    assert seen == {"submitted", "in_progress", "waiting_on_customer", "resolved"}


async def test_titles_are_in_proper_case_and_descriptions_restate_them(store: SQLiteStore) -> None:
    for ticket in await tickets(store):
        title = ticket.title
        assert title[0].isupper(), title
        assert not title.endswith("."), title
        miscased = [word for word in re.findall(r"[A-Za-z]+", title) if word.upper() in ACRONYMS and not word.isupper()]
        assert miscased == [], title
        assert title.casefold() in ticket.description.casefold(), (title, ticket.description)
        assert ticket.description.endswith((".", "!", "?", '"')), ticket.description


async def test_the_search_words_are_where_the_readme_says(store: SQLiteStore) -> None:
    """``zephyr`` only in public replies (of tickets customers see), ``quokka`` only in internal notes."""
    everything = await tickets(store)
    places: dict[str, set[str]] = {PUBLIC_WORD: set(), INTERNAL_WORD: set()}
    for ticket in everything:
        for word, found in places.items():
            if word in (ticket.title + ticket.description).casefold():
                found.add("ticket")
            for part in ticket.parts:
                if word in part.body.casefold():
                    found.add("reply" if part.public else "note")
    assert places == {PUBLIC_WORD: {"reply"}, INTERNAL_WORD: {"note"}}
    assert any(ticket.customer_shared and PUBLIC_WORD in part.body for ticket in everything for part in ticket.public)


async def test_no_two_tickets_of_a_company_share_a_title(store: SQLiteStore) -> None:
    titles = Counter((ticket.company, ticket.title) for ticket in await tickets(store))
    assert [title for title, count in titles.items() if count > 1] == []


def test_the_demo_is_deterministic() -> None:
    assert demo_lines(1_767_225_600) == demo_lines(1_767_225_600)


# --- the README's table of demo people ------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    person: str
    user_id: str
    companies: list[str]
    shows: str


def readme_people() -> list[Row]:
    """The rows of the README's table of whom to pick on the dev login page."""
    lines = README.read_text(encoding="utf-8").splitlines()
    start = lines.index("| Person | `user_id` | Companies | Shows |")
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        person, user_id, companies, shows = (cell.strip() for cell in line.strip("|").split("|"))
        listed = [] if companies == "none" else [name.strip() for name in companies.split(",")]
        rows.append(Row(person, user_id.strip("`"), listed, shows))
    return rows


def readme_visibility_environment() -> dict[str, str]:
    """The environment the README gives for turning the visibility restriction on."""
    text = README.read_text(encoding="utf-8")
    found = re.findall(r"^(PORTAL_GATEWAY__PORTAL__VISIBILITY__\w+)=('[^']*'|\S+)", text, re.MULTILINE)
    assert found, "the README says how to turn visibility on"
    return {name: value.strip("'") for name, value in found}


async def test_the_readme_names_the_demo_people_truthfully(store: SQLiteStore) -> None:
    rows = readme_people()
    contacts = {contact.user_id: contact for contact in await store.contacts()}
    bundled = load_config(None, environ=SECRETS)
    access = compile_rules(bundled.portal.access, "portal.access")
    assert not bundled.portal.visibility.enabled, "the README says the bundled visibility is off"
    visibility = VisibilityPolicy(
        load_config(None, environ={**SECRETS, **readme_visibility_environment()}).portal.visibility
    )
    kinds = set()
    for row in rows:
        contact = contacts[row.user_id]
        assert contact.name == row.person
        assert [company.name for company in contact.companies] == row.companies, row
        visitor = Visitor(Identity(user_id=row.user_id, method="jwt"), contact)
        refused = "refused" in row.shows
        assert access(visitor.facts()).allowed is not refused, row
        if refused:
            assert contact.email is not None
            assert f"`{contact.email}`" in row.shows
            kinds.add("refused")
        if re.search(r"\bonly (his|her|their) own\b", row.shows):
            assert visibility.decide(visitor).restricted, row
            own = await store.list_tickets(filter_of(contact, own_only=True), TicketQuery())
            assert own.total > 0
            kinds.add("own")
        if row.shows.startswith("all of"):
            assert not visibility.decide(visitor).restricted, row
            kinds.add("all")
        if "two companies" in row.shows:
            assert len(contact.companies) == 2, row
            kinds.add("two")
        role = re.search(r"role `(\w+)`", row.shows)
        if role:
            assert contact.custom_attributes.get("role") == role[1], row
    assert kinds == {"all", "own", "two", "refused"}, "the table names one person of each kind"

"""The search corpus the store contract and the SQLite search tests share: a few tickets chosen to rank,
match and snippet in telling ways, and the visitors who look at them."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from gateway.store.models import TicketFilter, TicketPage, TicketQuery
from gateway.store.protocol import Store
from gateway.store.search import MARK_END, MARK_START

DAY = 86_400


T0 = 1_767_225_600


WORD = "falcon"  # in 1001's title, 1002's description, 1003's reply, and 2001's title (another company)


NOTE_ONLY = "wombat"  # only ever in internal notes


SUPPORT = "Sam (support)"


LONG = " ".join(["lorem ipsum dolor sit amet"] * 40)


def line(**fields: Any) -> str:
    return json.dumps(fields)


def part(body: str, *, public: bool = True, at: int = T0, author: str | None = None) -> dict[str, Any]:
    who = {"author": author} if author else {"author_name": SUPPORT}
    return {**who, "body": body, "public": public, "created_at": at}


def ticket(ticket_id: str, title: str, description: str = "", **overrides: Any) -> str:
    fields: dict[str, Any] = {
        "kind": "ticket",
        "ticket_id": ticket_id,
        "type": "Bug report",
        "state": "New",
        "category": "Customer",
        "company": "acme",
        "creator": "u-ann",
        "title": title,
        "description": description,
        "created_at": T0,
        "updated_at": T0 + DAY,
        "parts": [],
    }
    fields.update(overrides)
    return json.dumps(fields)


LINES = [
    line(kind="company", company_id="acme", name="Acme"),
    line(kind="company", company_id="globex", name="Globex"),
    line(kind="contact", user_id="u-ann", name="Ann Archer", companies=["acme"]),
    line(kind="contact", user_id="u-cho", name="Cho Chen", companies=["acme"]),
    line(kind="contact", user_id="u-ben", name="Ben Baxter", companies=["globex"]),
    line(kind="ticket_state", category="submitted", internal_label="New", external_label="Submitted"),
    line(kind="ticket_state", category="resolved", internal_label="Fixed", external_label="Resolved"),
    # The title match is diluted on purpose (long description, many replies), and the reply match is short
    # and repeats the word: bm25 alone would put 1003 first; the tiers must not.
    ticket(
        "1001",
        f"The {WORD} export",
        LONG,
        created_at=T0 + 10,
        parts=[part(LONG, at=T0 + 20 + n) for n in range(5)],
    ),
    ticket("1002", "Login page", f"Since Monday the {WORD} job fails", created_at=T0 + 30, state="Fixed"),
    ticket(
        "1003",
        "Slow invoices",
        "Invoices take a minute",
        creator="u-cho",
        created_at=T0 + 40,
        parts=[
            part("Hello, any news on this one?", author="u-cho", at=T0 + 100),
            part(f"{WORD} {WORD} {WORD}", at=T0 + 200),
            part(f"Escalated to the {NOTE_ONLY} team", public=False, at=T0 + 300),
            part("Thanks, all good now.", author="u-cho", at=T0 + 400),
        ],
    ),
    ticket("1004", "Webhooks", "Webhooks retry forever", parts=[part(f"{NOTE_ONLY} knows", public=False)]),
    ticket("2001", f"Globex {WORD} outage", company="globex", creator="u-ben"),
    ticket("2002", f"Globex {WORD} tracker", company="globex", creator="u-ben", category="Tracker"),
]


@dataclass(frozen=True)
class People:
    """Filters for the visitors of the fixture store."""

    ann: TicketFilter  # acme, sees all acme tickets
    cho_own: TicketFilter  # acme, restricted to their own
    ben: TicketFilter  # globex
    ghost: TicketFilter  # nobody the store knows


async def people_of(store: Store) -> People:
    """The visitors' filters, their row ids read through the store's own interface."""
    known = {contact.user_id: contact for contact in await store.contacts()}
    contacts = {user_id: contact.id for user_id, contact in known.items()}
    companies = {company.company_id: company.id for contact in known.values() for company in contact.companies}
    return People(
        ann=TicketFilter(frozenset({companies["acme"]}), contacts["u-ann"], own_only=False),
        cho_own=TicketFilter(frozenset({companies["acme"]}), contacts["u-cho"], own_only=True),
        ben=TicketFilter(frozenset({companies["globex"]}), contacts["u-ben"], own_only=False),
        ghost=TicketFilter(frozenset(), None, own_only=False),
    )


async def search(store: Store, visible: TicketFilter, q: str | None, **query: Any) -> TicketPage:
    return await store.list_tickets(visible, TicketQuery(q=q, page_size=query.pop("page_size", 100), **query))


async def found(store: Store, visible: TicketFilter, q: str | None, **query: Any) -> list[str]:
    return [item.ticket_id for item in (await search(store, visible, q, **query)).items]


HOSTILE = [
    '"',
    '""',
    f'"{WORD}',
    f'{WORD}"',
    f'"{WORD}" OR "export"',
    "AND",
    f"{WORD} AND",
    f"OR {WORD}",
    f"NOT {WORD}",
    f"NEAR({WORD} export, 2)",
    "NEAR(",
    "*",
    f"{WORD}*",
    f"*{WORD}",
    f"^{WORD}",
    f"title:{WORD}",
    f"{{title description}}: {WORD}",
    f"-{WORD}",
    f"+{WORD}",
    "(((",
    ")))",
    f"({WORD}",
    f"{WORD})",
    "😀",
    f"😀{WORD}😀",
    "x" * 10_240,
    f"{WORD} " * 2_000,
    " " * 10_000,
    "",
    "\t\n\r",
    "'; DROP TABLE tickets; --",
    "\x00",
    f"{MARK_START}{WORD}{MARK_END}",
    "ǅ \u0301 \ufeff \u200b",
    "\U0001d523\U0001d51e\U0001d529",  # fraktur letters: words, but not "fal"
    "\ud7ff\ue000",
    "%_%",
    "\\",
]

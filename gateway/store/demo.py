"""The demo store that ``serve`` seeds for the bundled config: four companies, twelve people, 200 tickets.

Deterministic for a given ``now``; written through the importer's own line
types, so the demo exercises the same path as ``portal-gateway import``.
"""

from __future__ import annotations

import random
import sqlite3

from gateway.store.importer import CompanyLine, ContactLine, Line, PartLine, StateLine, TicketLine, write_line
from gateway.store.models import TicketCategory
from gateway.store.sqlite import SQLiteStore

DAY = 86_400
TICKETS = 200
SUPPORT = "Sam (support)"
# A word only in public replies and one only in internal notes, for trying search.
PUBLIC_WORD = "zephyr"
INTERNAL_WORD = "quokka"

COMPANIES = [
    CompanyLine(kind="company", company_id="acme", name="Acme Corp", plan="pro", size=120, monthly_spend=2400),
    CompanyLine(kind="company", company_id="globex", name="Globex", plan="enterprise", size=800, monthly_spend=12000),
    CompanyLine(kind="company", company_id="initech", name="Initech", plan="starter", size=15, monthly_spend=99),
    CompanyLine(kind="company", company_id="umbrella", name="Umbrella Health", plan="pro", size=60, monthly_spend=1500),
]
PEOPLE = [
    ("u-ann", "Ann Archer", "ann@acme.example.com", ["acme"]),
    ("u-ben", "Ben Baxter", "ben@acme.example.com", ["acme", "globex"]),
    ("u-cho", "Cho Chen", "cho@globex.example.com", ["globex"]),
    ("u-dev", "Dev Desai", "dev@globex.example.com", ["globex", "initech"]),
    ("u-eve", "Eve Evans", "eve@initech.example.com", ["initech"]),
    ("u-fin", "Finn Fox", "finn@initech.example.com", ["initech"]),
    ("u-gia", "Gia Greco", "gia@umbrella.example.com", ["umbrella"]),
    ("u-hal", "Hal Hughes", "hal@umbrella.example.com", ["umbrella", "acme"]),
    ("u-ivy", "Ivy Ito", "ivy@acme.example.com", ["acme"]),
    ("u-jon", "Jon Jones", "jon@globex.example.com", ["globex"]),
    ("u-lee", "Lee Lopez", "lee@umbrella.example.com", ["umbrella"]),
    ("u-kim", "Kim Kowalski", "kim@freelance.example.net", []),
]
STATES = [
    StateLine(kind="ticket_state", category="submitted", internal_label="New", external_label="Submitted"),
    StateLine(
        kind="ticket_state", category="in_progress", internal_label="Investigating", external_label="In progress"
    ),
    StateLine(
        kind="ticket_state",
        category="in_progress",
        internal_label="Waiting on engineering",
        external_label="In progress",
    ),
    StateLine(
        kind="ticket_state",
        category="waiting_on_customer",
        internal_label="Needs customer",
        external_label="Waiting on you",
    ),
    StateLine(kind="ticket_state", category="resolved", internal_label="Fixed", external_label="Resolved"),
]
TYPES: list[tuple[str, TicketCategory]] = [
    ("Bug report", "Customer"),
    ("Feature request", "Customer"),
    ("Billing question", "Customer"),
    ("Account review", "Back-office"),
    ("Engineering tracker", "Tracker"),
]
SUBJECTS = [
    "CSV export",
    "single sign-on",
    "invoice PDF",
    "webhooks",
    "mobile app",
    "search",
    "user roles",
    "API limits",
]
PROBLEMS = ["fails with an error", "is slow since Monday", "shows the wrong totals", "times out", "needs a new option"]
REPLIES = [
    "Thanks, we can reproduce this and are on it.",
    "Could you send a screenshot of what you see?",
    "Here it is, the error appears right after login.",
    "A fix is rolling out today; please try again tomorrow.",
    f"We traced it to the {PUBLIC_WORD} import job and fixed it.",
    "Still happening for two of our users.",
]
NOTES = [
    f"Escalated to the {INTERNAL_WORD} team, do not promise a date.",
    "Customer is on a renewal call next week.",
    "Duplicate of an older engineering issue.",
]


def demo_lines(now: int, seed: int = 7) -> list[Line]:
    """Every line of the demo store, in import order."""
    rng = random.Random(seed)  # noqa: S311 (demo data, not a secret)
    lines: list[Line] = [*COMPANIES]
    lines += [
        ContactLine(kind="contact", user_id=user_id, name=name, email=email, companies=companies)
        for user_id, name, email, companies in PEOPLE
    ]
    lines += STATES
    for number in range(TICKETS):
        user_id, name, _, companies = PEOPLE[number % len(PEOPLE)]
        type_name, category = TYPES[number % len(TYPES)]
        created = now - rng.randint(1, 120) * DAY - rng.randint(0, DAY)
        updated = min(now - 60, created + rng.randint(0, 30 * DAY))
        parts = []
        for reply in range(rng.randint(1, 4)):
            by_customer = reply % 2 == 1
            parts.append(
                PartLine(
                    author=user_id if by_customer else None,
                    author_name=None if by_customer else SUPPORT,
                    body=rng.choice(REPLIES),
                    public=True,
                    created_at=created + (reply + 1) * 3600,
                )
            )
        for note in range(rng.randint(0, 2)):
            parts.append(
                PartLine(author_name=SUPPORT, body=rng.choice(NOTES), public=False, created_at=created + note * 1800)
            )
        subject = rng.choice(SUBJECTS)
        lines.append(
            TicketLine(
                kind="ticket",
                ticket_id=str(1001 + number),
                type=type_name,
                state=STATES[number % len(STATES)].internal_label,
                category=category,
                is_shared=category == "Back-office" and number % 2 == 0,
                company=companies[number % len(companies)] if companies else None,
                creator=user_id,
                title=f"{subject.capitalize()} {rng.choice(PROBLEMS)}",
                description=f"{name} reports that {subject} {rng.choice(PROBLEMS)}. Seen by several users.",
                created_at=created,
                updated_at=updated,
                parts=parts,
                participants=[user_id],
            )
        )
    return lines


async def seed_if_empty(store: SQLiteStore, now: int) -> bool:
    """Write the demo store unless the store already holds contacts; return whether it did."""

    def seed(connection: sqlite3.Connection) -> bool:
        if connection.execute("SELECT 1 FROM contacts LIMIT 1").fetchone():
            return False
        for line in demo_lines(now):
            write_line(connection, line)
        return True

    return await store.transaction(seed)

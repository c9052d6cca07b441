"""The embedded store: migrations, WAL, the JSON-lines importer (line by line and strict), the demo seed, the CLI."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.errors import StoreUnavailable
from gateway.store.demo import INTERNAL_WORD, seed_if_empty
from gateway.store.importer import import_lines
from gateway.store.models import STATE_CATEGORIES, Contact, TicketFilter
from gateway.store.sqlite import SQLiteStore
from gateway.store.sqlite.schema import MIGRATIONS, migrate
from tests.conftest import CertFiles, config_dict

TABLES = (
    "companies",
    "contacts",
    "memberships",
    "ticket_types",
    "ticket_states",
    "tickets",
    "conversation_parts",
    "participants",
)
NOTE_WORD = "platypusnote"

Table = list[tuple[Any, ...]]


def line(**fields: Any) -> str:
    return json.dumps(fields)


def ticket(ticket_id: str, **overrides: Any) -> dict[str, Any]:
    """A valid ticket line's fields; ``overrides`` replace them (None removes one)."""
    fields: dict[str, Any] = {
        "kind": "ticket",
        "ticket_id": ticket_id,
        "type": "Bug report",
        "state": "New",
        "category": "Customer",
        "is_shared": False,
        "company": "acme",
        "creator": "u-ann",
        "title": f"Ticket {ticket_id}",
        "description": f"Description of {ticket_id}",
        "created_at": 1_767_225_600,
        "updated_at": 1_767_312_000,
        "parts": [
            {"author": "u-ann", "body": f"public question {ticket_id}", "public": True, "created_at": 1_767_300_000},
            {"author_name": "Sam (support)", "body": f"{NOTE_WORD} {ticket_id}", "public": False, "created_at": 1},
            {"author_name": "Sam (support)", "body": f"public answer {ticket_id}", "public": True, "created_at": 2},
        ],
        "participants": ["u-ann"],
    }
    fields.update(overrides)
    return {key: value for key, value in fields.items() if value is not None}


# Line numbers (1-based) matter: the bad-line tests insert at a known position.
GOOD: list[str] = [
    line(kind="company", company_id="acme", name="Acme", plan="pro", size=40, monthly_spend=990.5),  # 1
    line(kind="company", company_id="globex", name="Globex", custom_attributes={"region": "eu"}),  # 2
    line(kind="contact", user_id="u-ann", email="ann@acme.example", name="Ann", companies=["acme"]),  # 3
    line(
        kind="contact",
        user_id="u-ben",
        email="ben@globex.example",
        name="Ben",
        companies=["acme", "globex"],
        custom_attributes={"tier": "gold"},
    ),  # 4
    line(kind="contact", user_id="u-kim", email="kim@free.example", name="Kim"),  # 5
    line(kind="ticket_state", category="submitted", internal_label="New", external_label="Submitted"),  # 6
    line(kind="ticket_state", category="in_progress", internal_label="Investigating", external_label="In progress"),
    line(kind="ticket_state", category="resolved", internal_label="Fixed", external_label="Resolved"),  # 8
    "",  # 9: blank lines are skipped but still counted
    json.dumps(ticket("1001", participants=["u-ann", "u-ben"])),  # 10
    json.dumps(
        ticket(
            "1002",
            type="Account review",
            state="Investigating",
            category="Back-office",
            is_shared=True,
            company="globex",
            creator="u-ben",
            parts=[{"author": "u-ben", "body": "ben asks", "public": True, "created_at": 5}],
            participants=[],
        )
    ),  # 11
    json.dumps(ticket("1003", company=None, creator="u-kim", state="Fixed", participants=["u-kim"])),  # 12
]
BAD_AT = 9  # index in GOOD where a bad line goes: it becomes line 10, before every ticket


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    opened = await SQLiteStore.open(tmp_path / "portal.db")
    yield opened
    await opened.close()


async def rows(store: SQLiteStore, sql: str, params: tuple[Any, ...] = ()) -> Table:
    return await store.transaction(lambda connection: connection.execute(sql, params).fetchall())


async def dump(store: SQLiteStore) -> dict[str, Table]:
    """Every row of every table, in a stable order: two stores hold the same data iff their dumps are equal."""

    def read(connection: sqlite3.Connection) -> dict[str, Table]:
        return {
            table: sorted(connection.execute(f"SELECT * FROM {table}").fetchall(), key=repr)  # noqa: S608
            for table in TABLES
        }

    return await store.transaction(read)


def sees_everything(store_ids: frozenset[int], contact_id: int | None) -> TicketFilter:
    return TicketFilter(company_ids=store_ids, contact_id=contact_id, own_only=False)


# --- migrations and pragmas -------------------------------------------------------------------


def user_version(path: Path) -> int:
    with closing(sqlite3.connect(path)) as connection:
        return int(connection.execute("PRAGMA user_version").fetchone()[0])


async def test_fresh_database_is_migrated_to_the_latest_version(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "portal.db"
    store = await SQLiteStore.open(path)
    try:
        names = {row[0] for row in await rows(store, "SELECT name FROM sqlite_master WHERE type = 'table'")}
    finally:
        await store.close()
    assert set(TABLES) <= names
    assert len(MIGRATIONS) >= 1
    assert user_version(path) == len(MIGRATIONS)


async def test_reopening_a_migrated_database_is_a_no_op(tmp_path: Path) -> None:
    path = tmp_path / "portal.db"
    store = await SQLiteStore.open(path)
    try:
        report = await import_lines(store, GOOD)
        assert report.errors == []
        before = await dump(store)
    finally:
        await store.close()

    store = await SQLiteStore.open(path)
    try:
        assert await dump(store) == before
    finally:
        await store.close()
    assert user_version(path) == len(MIGRATIONS)
    with closing(sqlite3.connect(path, isolation_level=None)) as connection:
        assert migrate(connection) == len(MIGRATIONS)
        assert connection.execute("SELECT count(*) FROM tickets").fetchone()[0] == 3


async def test_a_database_from_a_newer_gateway_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "portal.db"
    newer = len(MIGRATIONS) + 1
    with closing(sqlite3.connect(path)) as connection:
        connection.execute(f"PRAGMA user_version = {newer}")
    with pytest.raises(RuntimeError, match="newer"):
        await SQLiteStore.open(path)
    assert user_version(path) == newer
    with closing(sqlite3.connect(path)) as connection:
        assert connection.execute("SELECT count(*) FROM sqlite_master WHERE type = 'table'").fetchone()[0] == 0


async def test_the_database_is_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "portal.db"
    store = await SQLiteStore.open(path)
    try:
        assert (await rows(store, "PRAGMA journal_mode"))[0][0] == "wal"
        assert (await rows(store, "PRAGMA foreign_keys"))[0][0] == 1
    finally:
        await store.close()
    with closing(sqlite3.connect(path)) as connection:  # WAL is persistent: a fresh connection sees it too
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


# --- the importer ------------------------------------------------------------------------------


async def test_a_documented_format_file_imports(store: SQLiteStore) -> None:
    report = await import_lines(store, GOOD)
    assert (report.written, report.errors) == (len(GOOD) - 1, [])

    ben = await store.contact_by_user_id("u-ben")
    assert ben is not None
    assert (ben.email, ben.name, ben.custom_attributes) == ("ben@globex.example", "Ben", {"tier": "gold"})
    assert sorted(company.company_id for company in ben.companies) == ["acme", "globex"]
    acme = next(company for company in ben.companies if company.company_id == "acme")
    assert (acme.name, acme.plan, acme.size, acme.monthly_spend) == ("Acme", "pro", 40, 990.5)
    globex = next(company for company in ben.companies if company.company_id == "globex")
    assert globex.custom_attributes == {"region": "eu"}
    kim = await store.contact_by_user_id("u-kim")
    assert kim is not None
    assert kim.companies == ()
    ann = await store.contact_by_user_id("u-ann")
    assert ann is not None

    states = await store.ticket_states()
    assert [(s.category, s.internal_label, s.external_label) for s in states] == [
        ("submitted", "New", "Submitted"),
        ("in_progress", "Investigating", "In progress"),
        ("resolved", "Fixed", "Resolved"),
    ]

    companies = frozenset(company.id for company in ben.companies)
    detail = await store.get_ticket(sees_everything(companies, ben.id), "1001")
    assert detail is not None
    assert (detail.summary.title, detail.summary.type_name, detail.summary.state_label) == (
        "Ticket 1001",
        "Bug report",
        "Submitted",
    )
    assert (detail.summary.company_name, detail.summary.creator_name) == ("Acme", "Ann")
    assert detail.description == "Description of 1001"
    # Public parts only, in time order; a contact author is named after the contact.
    assert [(p.author_name, p.body) for p in detail.parts] == [
        ("Sam (support)", "public answer 1001"),
        ("Ann", "public question 1001"),
    ]
    assert detail.participant is True  # ben is a participant of 1001
    assert (await rows(store, "SELECT count(*) FROM conversation_parts WHERE body LIKE ?", (f"{NOTE_WORD}%",)))[0][
        0
    ] == 2

    shared = await store.get_ticket(sees_everything(companies, ben.id), "1002")
    assert shared is not None
    assert (shared.summary.state_label, shared.summary.state_category, shared.participant) == (
        "In progress",
        "in_progress",
        False,
    )
    # 1003 has no company: only its creator sees it.
    assert await store.get_ticket(sees_everything(companies, ben.id), "1003") is None
    assert await store.get_ticket(sees_everything(frozenset(), kim.id), "1003") is not None
    assert [row[0] for row in await rows(store, "SELECT ticket_id FROM tickets WHERE company_id IS NULL")] == ["1003"]


async def test_a_contact_line_replaces_memberships_and_upserts(store: SQLiteStore) -> None:
    await import_lines(store, GOOD)
    report = await import_lines(
        store, [line(kind="contact", user_id="u-ben", email="ben@new.example", name="Benjamin", companies=["globex"])]
    )
    assert report.errors == []
    ben = await store.contact_by_user_id("u-ben")
    assert ben is not None
    assert (ben.email, ben.name, [c.company_id for c in ben.companies]) == ("ben@new.example", "Benjamin", ["globex"])
    assert (await rows(store, "SELECT count(*) FROM contacts WHERE user_id = 'u-ben'"))[0][0] == 1


BAD_LINES = [
    pytest.param('{"kind": "company", "company_id": "x"', "not JSON", id="bad-json"),
    pytest.param(line(kind="widget", name="x"), "'widget'", id="unknown-kind"),
    pytest.param(line(kind="company", name="No id"), "company.company_id: Field required", id="missing-field"),
    pytest.param(json.dumps(ticket("9001", title=None)), "ticket.title: Field required", id="ticket-missing-title"),
    pytest.param(json.dumps(ticket("9001", category="Secret")), "ticket.category", id="bad-category"),
    pytest.param(line(kind="company", company_id="x", name="X", owner="me"), "company.owner", id="unknown-field"),
    pytest.param(
        line(kind="contact", user_id="u-zed", name="Zed", companies=["acme", "nope"]),
        "company 'nope' is not in the store",
        id="contact-unknown-company",
    ),
    pytest.param(
        json.dumps(ticket("9001", type="Novel type", company="nope")),
        "company 'nope' is not in the store",
        id="ticket-unknown-company",
    ),
    pytest.param(
        json.dumps(ticket("9001", type="Novel type", creator="u-ghost")),
        "creator 'u-ghost' is not in the store",
        id="ticket-unknown-creator",
    ),
    pytest.param(
        json.dumps(ticket("9001", type="Novel type", state="Limbo")),
        "ticket state 'Limbo' is not in the store",
        id="ticket-unknown-state",
    ),
    pytest.param(
        json.dumps(
            ticket(
                "9001",
                type="Novel type",
                parts=[
                    {"author": "u-ann", "body": "first part is fine", "public": True, "created_at": 1},
                    {"author": "u-ghost", "body": "second part is not", "public": True, "created_at": 2},
                ],
            )
        ),
        "part author 'u-ghost' is not in the store",
        id="ticket-second-part-unknown-author",
    ),
    pytest.param(
        json.dumps(ticket("9001", type="Novel type", participants=["u-ann", "u-ghost"])),
        "participant 'u-ghost' is not in the store",
        id="ticket-unknown-participant",
    ),
    pytest.param(
        json.dumps(ticket("9001", parts=[{"author": "u-ann", "public": True, "created_at": 1}])),
        "ticket.parts.0.body: Field required",
        id="part-missing-body",
    ),
]


@pytest.mark.parametrize(("bad", "reason"), BAD_LINES)
async def test_a_bad_line_is_reported_and_nothing_of_it_is_written(
    tmp_path: Path, store: SQLiteStore, bad: str, reason: str
) -> None:
    report = await import_lines(store, [*GOOD[:BAD_AT], bad, *GOOD[BAD_AT:]])
    assert report.written == len(GOOD) - 1
    assert len(report.errors) == 1
    number, said = report.errors[0]
    assert number == BAD_AT + 1
    assert reason in said

    reference = await SQLiteStore.open(tmp_path / "reference.db")
    try:
        assert (await import_lines(reference, GOOD)).errors == []
        expected = await dump(reference)
    finally:
        await reference.close()
    # Byte for byte what the file without the bad line gives: no ticket, part, type, contact or membership of it.
    assert await dump(store) == expected
    assert await rows(store, "SELECT id FROM tickets WHERE ticket_id = '9001'") == []
    assert await rows(store, "SELECT id FROM ticket_types WHERE name = 'Novel type'") == []


async def test_a_duplicate_ticket_id_is_refused_and_the_first_one_kept(tmp_path: Path, store: SQLiteStore) -> None:
    duplicate = json.dumps(ticket("1001", title="Impostor", type="Novel type", creator="u-ben"))
    report = await import_lines(store, [*GOOD, duplicate])
    assert report.written == len(GOOD) - 1
    assert report.errors == [
        (len(GOOD) + 1, "ticket 1001 already exists with another type, creator, title; the stored ticket is kept")
    ]

    reference = await SQLiteStore.open(tmp_path / "reference.db")
    try:
        await import_lines(reference, GOOD)
        expected = await dump(reference)
    finally:
        await reference.close()
    assert await dump(store) == expected
    assert await rows(store, "SELECT title FROM tickets WHERE ticket_id = '1001'") == [("Ticket 1001",)]


async def test_several_bad_lines_are_each_reported(store: SQLiteStore) -> None:
    lines = [*GOOD, "not json", json.dumps(ticket("9002", creator="u-ghost")), json.dumps(ticket("9003"))]
    report = await import_lines(store, lines)
    assert [number for number, _ in report.errors] == [len(GOOD) + 1, len(GOOD) + 2]
    assert report.written == len(GOOD) - 1 + 1
    ids = [row[0] for row in await rows(store, "SELECT ticket_id FROM tickets ORDER BY ticket_id")]
    assert ids == ["1001", "1002", "1003", "9003"]


async def test_strict_import_reports_every_bad_line_and_writes_nothing(store: SQLiteStore) -> None:
    lines = [*GOOD[:BAD_AT], "{broken", *GOOD[BAD_AT:], json.dumps(ticket("9009", creator="u-ghost"))]
    report = await import_lines(store, lines, strict=True)
    assert report.written == 0
    assert [number for number, _ in report.errors] == [BAD_AT + 1, len(lines)]
    assert "not JSON" in report.errors[0][1]
    assert report.errors[1][1] == "creator 'u-ghost' is not in the store"
    assert all(table == [] for table in (await dump(store)).values())


async def test_strict_import_refused_by_a_late_reference_error_writes_nothing(store: SQLiteStore) -> None:
    report = await import_lines(store, [*GOOD, json.dumps(ticket("1001", title="Impostor"))], strict=True)
    assert report.written == 0
    assert [number for number, _ in report.errors] == [len(GOOD) + 1]
    assert "ticket 1001 already exists with another title" in report.errors[0][1]
    assert all(table == [] for table in (await dump(store)).values())


async def test_importing_the_same_file_again_changes_nothing(tmp_path: Path, store: SQLiteStore) -> None:
    assert (await import_lines(store, GOOD)).errors == []
    once = await dump(store)
    again = await import_lines(store, GOOD)
    assert (again.written, again.errors) == (len(GOOD) - 1, [])
    assert await dump(store) == once  # no ticket, part or participant twice
    # A later export of the same ticket adds only what is new in its conversation.
    later = ticket("1001", participants=["u-ann", "u-kim"])
    later["parts"] = [*later["parts"], {"author": "u-ann", "body": "one more thing", "public": True, "created_at": 3}]
    assert (await import_lines(store, [json.dumps(later)])).errors == []
    parts = await rows(
        store,
        "SELECT body FROM conversation_parts JOIN tickets USING (conversation_id)"
        " WHERE ticket_id = '1001' ORDER BY conversation_parts.id",
    )
    assert parts == [("public question 1001",), (f"{NOTE_WORD} 1001",), ("public answer 1001",), ("one more thing",)]


async def test_strict_import_of_a_good_file_writes_it_all(tmp_path: Path, store: SQLiteStore) -> None:
    report = await import_lines(store, GOOD, strict=True)
    assert (report.written, report.errors) == (len(GOOD) - 1, [])
    reference = await SQLiteStore.open(tmp_path / "reference.db")
    try:
        await import_lines(reference, GOOD)
        assert await dump(store) == await dump(reference)
    finally:
        await reference.close()


# --- the demo seed -----------------------------------------------------------------------------


async def test_demo_seed_covers_what_the_portal_needs(store: SQLiteStore) -> None:
    assert await seed_if_empty(store, int(time.time())) is True

    contacts = await store.contacts()
    assert len({c.company_id for contact in contacts for c in contact.companies}) >= 3
    assert (await rows(store, "SELECT count(*) FROM companies"))[0][0] >= 3
    assert len(contacts) >= 10
    assert sum(len(contact.companies) >= 2 for contact in contacts) >= 2
    assert sum(len(contact.companies) == 0 for contact in contacts) == 1
    assert all(contact.user_id and contact.email and contact.name for contact in contacts)

    assert (await rows(store, "SELECT count(*) FROM tickets"))[0][0] == 200
    used_states = await rows(
        store, "SELECT DISTINCT s.category FROM tickets t JOIN ticket_states s ON s.id = t.state_id"
    )
    assert sorted(row[0] for row in used_states) == sorted(STATE_CATEGORIES)
    unused_states = await rows(store, "SELECT id FROM ticket_states WHERE id NOT IN (SELECT state_id FROM tickets)")
    assert unused_states == []
    unused_types = await rows(store, "SELECT id FROM ticket_types WHERE id NOT IN (SELECT type_id FROM tickets)")
    assert unused_types == []
    assert (await rows(store, "SELECT count(*) FROM ticket_types"))[0][0] >= 2

    kinds = await rows(store, "SELECT category, is_shared, count(*) FROM tickets GROUP BY category, is_shared")
    by_kind = {(category, bool(shared)): count for category, shared, count in kinds}
    assert by_kind.get(("Customer", False), 0) > 0
    assert by_kind.get(("Back-office", True), 0) > 0
    assert by_kind.get(("Back-office", False), 0) > 0
    assert sum(count for (category, _), count in by_kind.items() if category == "Tracker") > 0

    # Public replies and internal notes, both on tickets customers can see.
    parts = await rows(
        store,
        "SELECT p.is_public, count(*) FROM conversation_parts p JOIN tickets t ON t.conversation_id = p.conversation_id"
        " WHERE (t.category = 'Customer' OR (t.category = 'Back-office' AND t.is_shared = 1)) GROUP BY p.is_public",
    )
    by_public: dict[int, int] = {int(public): int(count) for public, count in parts}
    assert by_public.get(1, 0) > 0
    assert by_public.get(0, 0) > 0
    notes = await rows(
        store, "SELECT count(*) FROM conversation_parts WHERE is_public = 0 AND body LIKE ?", (f"%{INTERNAL_WORD}%",)
    )
    assert notes[0][0] > 0

    # Every ticket belongs to one of its creator's companies (or none, when the creator has none).
    orphans = await rows(
        store,
        "SELECT t.ticket_id FROM tickets t WHERE NOT ("
        " (t.company_id IS NULL AND NOT EXISTS (SELECT 1 FROM memberships m WHERE m.contact_id = t.creator_id))"
        " OR EXISTS (SELECT 1 FROM memberships m WHERE m.contact_id = t.creator_id AND m.company_id = t.company_id))",
    )
    assert orphans == []


async def test_demo_seed_is_not_repeated(store: SQLiteStore) -> None:
    now = int(time.time())
    assert await seed_if_empty(store, now) is True
    before = await dump(store)
    assert await seed_if_empty(store, now + 3600) is False
    assert await dump(store) == before


async def test_demo_seed_leaves_a_store_with_contacts_alone(store: SQLiteStore) -> None:
    await import_lines(store, GOOD)
    before = await dump(store)
    assert await seed_if_empty(store, int(time.time())) is False
    assert await dump(store) == before


# --- the contact cache ---------------------------------------------------------------------------


def companies_of(contact: Contact | None) -> list[str]:
    assert contact is not None
    return [company.company_id for company in contact.companies]


async def test_a_contact_is_served_from_memory_while_nothing_is_committed(store: SQLiteStore) -> None:
    await seed_if_empty(store, int(time.time()))
    first = await store.contact_by_user_id("u-ben")
    assert await store.contact_by_user_id("u-ben") is first
    assert await store.contact_by_user_id("nobody") is None
    await store.transaction(lambda connection: connection.execute("SELECT 1").fetchall())  # a read commits nothing
    assert await store.contact_by_user_id("u-ben") is first


async def test_a_commit_from_another_process_empties_the_contact_cache(store: SQLiteStore, tmp_path: Path) -> None:
    """Another worker or ``portal-gateway import`` writes through a connection of its own."""
    await seed_if_empty(store, int(time.time()))
    assert companies_of(await store.contact_by_user_id("u-ben")) == ["acme", "globex"]
    assert await store.contact_by_user_id("u-new") is None
    with closing(sqlite3.connect(tmp_path / "portal.db", isolation_level=None)) as other:
        other.execute("DELETE FROM memberships WHERE contact_id = (SELECT id FROM contacts WHERE user_id = 'u-ben')")
        other.execute("INSERT INTO contacts (user_id, email, name) VALUES ('u-new', 'new@acme.example.com', 'New')")
    assert companies_of(await store.contact_by_user_id("u-ben")) == []
    assert companies_of(await store.contact_by_user_id("u-new")) == []


async def test_requests_that_arrived_before_a_check_share_it_and_later_ones_check_again(
    store: SQLiteStore, tmp_path: Path
) -> None:
    """The freshness check is made once for all the requests that had arrived before it (those one read of
    the loop brings in): a request arriving after a commit never shares a check older than its arrival."""
    await seed_if_empty(store, int(time.time()))
    assert companies_of(await store.contact_by_user_id("u-ben")) == ["acme", "globex"]  # now in memory
    arrived = time.monotonic_ns()
    assert companies_of(await store.contact_by_user_id("u-ann", arrived)) == ["acme"]  # checks: after its arrival
    with closing(sqlite3.connect(tmp_path / "portal.db", isolation_level=None)) as other:
        other.execute("DELETE FROM memberships WHERE contact_id = (SELECT id FROM contacts WHERE user_id = 'u-ben')")
    # Arrived before that check (with u-ann's request), so the check serves it: as of before the commit.
    assert companies_of(await store.contact_by_user_id("u-ben", arrived)) == ["acme", "globex"]
    # SECURITY: arrived after the commit, so it checks again and the membership is gone.
    assert companies_of(await store.contact_by_user_id("u-ben", time.monotonic_ns())) == []
    assert companies_of(await store.contact_by_user_id("u-ben")) == []


async def test_a_store_file_put_in_the_place_of_the_old_one_is_read_not_the_cache(
    store: SQLiteStore, tmp_path: Path
) -> None:
    """A restore swaps the file: the cache belonged to the old one."""
    await seed_if_empty(store, int(time.time()))
    assert companies_of(await store.contact_by_user_id("u-ben")) == ["acme", "globex"]
    restored = tmp_path / "restored.db"
    with closing(sqlite3.connect(tmp_path / "portal.db")) as current:
        current.execute(f"VACUUM INTO '{restored}'")
    with closing(sqlite3.connect(restored, isolation_level=None)) as copy:
        copy.execute("DELETE FROM memberships")
    for suffix in ("-wal", "-shm"):
        (tmp_path / f"portal.db{suffix}").unlink(missing_ok=True)
    restored.replace(tmp_path / "portal.db")
    assert companies_of(await store.contact_by_user_id("u-ben")) == []
    with closing(sqlite3.connect(tmp_path / "portal.db", isolation_level=None)) as other:  # and its commits count
        other.execute(
            "INSERT INTO memberships (contact_id, company_id) SELECT p.id, c.id FROM contacts p, companies c"
            " WHERE p.user_id = 'u-ben' AND c.company_id = 'acme'"
        )
    assert companies_of(await store.contact_by_user_id("u-ben")) == ["acme"]


async def test_a_missing_store_file_is_unavailable_not_served_from_the_cache(
    store: SQLiteStore, tmp_path: Path
) -> None:
    await seed_if_empty(store, int(time.time()))
    assert await store.contact_by_user_id("u-ben") is not None
    (tmp_path / "portal.db").rename(tmp_path / "away.db")
    with pytest.raises(StoreUnavailable):
        await store.contact_by_user_id("u-ben")
    assert not (tmp_path / "portal.db").exists()  # the cache's watcher never creates the file


# --- the command line --------------------------------------------------------------------------


def run_import(tmp_path: Path, cert_files: CertFiles, *args: str) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "cfg.yaml"
    config.write_text(yaml.safe_dump(config_dict(cert_files, tmp_path, "http://127.0.0.1:9")), encoding="utf-8")
    env = {key: value for key, value in os.environ.items() if not key.startswith("PORTAL_GATEWAY__")}
    return subprocess.run(
        [sys.executable, "-m", "gateway", "import", *args, "-c", str(config)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def table_counts(path: Path) -> dict[str, int]:
    with closing(sqlite3.connect(path)) as connection:
        return {
            table: int(connection.execute(f"SELECT count(*) FROM {table}").fetchone()[0])  # noqa: S608
            for table in TABLES
        }


def test_cli_import_reports_refused_lines_and_exits_1(tmp_path: Path, cert_files: CertFiles) -> None:
    data = tmp_path / "data.jsonl"
    data.write_text("\n".join([*GOOD[:BAD_AT], "{oops", *GOOD[BAD_AT:]]) + "\n", encoding="utf-8")
    result = run_import(tmp_path, cert_files, "data.jsonl")
    assert result.returncode == 1, result.stderr
    assert f"imported {len(GOOD) - 1} lines, refused 1" in result.stdout
    refused = [text for text in result.stderr.splitlines() if "data.jsonl:" in text]
    assert len(refused) == 1
    assert f"data.jsonl:{BAD_AT + 1}: not JSON" in refused[0]
    assert table_counts(tmp_path / "portal.db")["tickets"] == 3


def test_cli_import_of_a_good_file_exits_0(tmp_path: Path, cert_files: CertFiles) -> None:
    data = tmp_path / "data.jsonl"
    data.write_text("\n".join(GOOD) + "\n", encoding="utf-8")
    result = run_import(tmp_path, cert_files, "data.jsonl")
    assert result.returncode == 0, result.stderr
    assert f"imported {len(GOOD) - 1} lines" in result.stdout
    assert "refused" not in result.stdout
    counts = table_counts(tmp_path / "portal.db")
    assert (counts["companies"], counts["contacts"], counts["tickets"], counts["memberships"]) == (2, 3, 3, 3)


def test_cli_import_of_the_same_file_twice_exits_0_both_times(tmp_path: Path, cert_files: CertFiles) -> None:
    data = tmp_path / "data.jsonl"
    data.write_text("\n".join(GOOD) + "\n", encoding="utf-8")
    for _ in range(2):
        result = run_import(tmp_path, cert_files, "data.jsonl")
        assert result.returncode == 0, result.stderr
        assert result.stderr == ""
        assert result.stdout == f"imported {len(GOOD) - 1} lines\n"
    counts = table_counts(tmp_path / "portal.db")
    assert (counts["tickets"], counts["conversation_parts"]) == (3, 7)


def test_cli_strict_import_imports_nothing(tmp_path: Path, cert_files: CertFiles) -> None:
    data = tmp_path / "data.jsonl"
    bad = json.dumps(ticket("9001", creator="u-ghost"))
    data.write_text("\n".join([*GOOD, bad]) + "\n", encoding="utf-8")
    result = run_import(tmp_path, cert_files, "--strict", "data.jsonl")
    assert result.returncode == 1
    assert "nothing imported" in result.stderr
    assert f"data.jsonl:{len(GOOD) + 1}: creator 'u-ghost' is not in the store" in result.stderr
    assert "imported" not in result.stdout
    assert set(table_counts(tmp_path / "portal.db").values()) == {0}


# Tickets written before the counts existed: two Customer and one shared Back-office ticket of company 1, one
# company-less ticket of contact 2 (scope -2), and a Tracker and an unshared Back-office ticket, never counted.
BEFORE_THE_COUNTS = """
    INSERT INTO companies (id, company_id, name) VALUES (1, 'acme', 'Acme');
    INSERT INTO contacts (id, user_id) VALUES (1, 'u-ann'), (2, 'u-kim');
    INSERT INTO ticket_types (id, name) VALUES (1, 'Bug');
    INSERT INTO ticket_states (id, category, internal_label, external_label) VALUES (1, 'submitted', 'New', 'New');
    INSERT INTO tickets (ticket_id, type_id, state_id, category, is_shared, company_id, creator_id, title,
        created_at, updated_at, conversation_id) VALUES
        ('1', 1, 1, 'Customer', 0, 1, 1, 'a', 0, 0, 1), ('2', 1, 1, 'Customer', 0, 1, 1, 'b', 0, 0, 2),
        ('3', 1, 1, 'Back-office', 1, 1, 1, 'c', 0, 0, 3), ('4', 1, 1, 'Customer', 0, NULL, 2, 'd', 0, 0, 4),
        ('5', 1, 1, 'Tracker', 0, 1, 1, 'e', 0, 0, 5), ('6', 1, 1, 'Back-office', 0, 1, 1, 'f', 0, 0, 6);
"""
COUNTS_MIGRATION = 6
"""The SQLite migration that made ticket_scope_counts."""


def migrated_before(path: Path, version: int) -> sqlite3.Connection:
    """A connection to a new store at ``path`` with the migrations before ``version`` applied, as then."""
    connection = sqlite3.connect(path, isolation_level=None)
    for number, script in enumerate(MIGRATIONS[: version - 1], start=1):
        connection.executescript(f"BEGIN;\n{script}\nPRAGMA user_version = {number};\nCOMMIT;")
    return connection


COUNTED = [(-2, 2, 1, 1), (1, 1, 1, 3)]


async def test_a_store_from_before_the_scope_counts_has_them_filled_at_its_next_open(tmp_path: Path) -> None:
    path = tmp_path / "portal.db"
    with closing(migrated_before(path, COUNTS_MIGRATION)) as connection:
        connection.executescript(BEFORE_THE_COUNTS)
    store = await SQLiteStore.open(path)
    try:
        counts = await rows(store, "SELECT scope, creator_id, type_id, tickets FROM ticket_scope_counts ORDER BY 1")
    finally:
        await store.close()
    assert counts == COUNTED


REMOVALS_MIGRATION = next(number for number, script in enumerate(MIGRATIONS, 1) if "'removed'" in script)
"""The SQLite migration that let the feed record a removed ticket (the changes table made again); found by its text,
since its number moves when branches merge."""


async def test_a_store_from_before_removals_keeps_its_feed_and_its_newest_id_at_its_next_open(tmp_path: Path) -> None:
    path = tmp_path / "portal.db"
    with closing(migrated_before(path, REMOVALS_MIGRATION)) as connection:
        connection.executescript(BEFORE_THE_COUNTS)  # each ticket records its change
        connection.execute("DELETE FROM changes WHERE id = (SELECT max(id) FROM changes)")  # the newest id is kept
        kept = connection.execute("SELECT id, kind, ticket_id, contact_id FROM changes ORDER BY id").fetchall()
    store = await SQLiteStore.open(path)
    try:
        batch = await store.changes_after(0, 100)
        assert [(c.id, c.kind, c.ticket_id, c.contact_id, c.scope) for c in batch.changes] == [
            (*row, None) for row in kept
        ]
        assert batch.latest == len(kept) + 1
        await store.update_ticket("1", {"title": "after"}, 1)
        await store.transaction(
            lambda c: c.execute(
                "INSERT INTO changes (kind, ticket_id, scope, contact_id) VALUES ('removed', '2', 1, 1)"
            )
        )
        newer = await store.changes_after(batch.latest, 100)
        assert [(c.id, c.kind, c.scope) for c in newer.changes] == [
            (batch.latest + 1, "updated", None),
            (batch.latest + 2, "removed", 1),
        ]
    finally:
        await store.close()

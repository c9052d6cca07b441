"""``portal-gateway store copy``: SQLite to PostgreSQL and back, every table verified by counts and checksums,
the copy serving the same answers as its source (the sync's state and the change feed included), and the
refusals (a destination with data, a schema the copy does not know, a bad store)."""

from __future__ import annotations

import asyncio
import re
import sqlite3
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.cli import main
from gateway.config import StoreConfig
from gateway.intercom.client import IntercomClient
from gateway.intercom.sync import CHECKPOINT, LEASE, Syncer
from gateway.store.copy import FEED_STATE, KNOWN, REBUILT
from gateway.store.demo import seed_if_empty
from gateway.store.importer import import_lines
from gateway.store.models import TicketFilter, TicketQuery
from gateway.store.protocol import Store, open_store
from tests.intercom.conftest import no_wait, running
from tests.intercom.fake import TOKEN, FakeIntercom
from tests.intercom.test_sync import populate
from tests.pgserver import PostgresServer
from tests.store.contract.conftest import BACKENDS

NOW = 1_767_225_600
SUMMARY = re.compile(r"^(\w+): (\d+) rows, sha256 [0-9a-f]{64}( \(rebuilt by the destination\))?$")


async def _with(config: StoreConfig, work: Any) -> Any:
    store = await open_store(config)
    try:
        return await work(store)
    finally:
        await store.close()


async def _fill(store: Store) -> None:
    """Every table with rows: the demo seed, a sync of a fake Intercom, admin writes, a lease another node holds."""
    assert await seed_if_empty(store, NOW)
    # A text no backend may take apart: the snippet markers and the reply separator, blanked in every snippet.
    tricky = '{"kind": "company", "company_id": "odd", "name": "Odd \\u0002 \\u001e Co", "monthly_spend": 0.1}'
    assert (await import_lines(store, [tricky])).errors == []
    fake = FakeIntercom()
    populate(fake)
    async with running(fake) as intercom, aiohttp.ClientSession() as session:
        client = IntercomClient(session, intercom.url, TOKEN, sleep=no_wait, attempts=3)
        assert await Syncer(client, store).run() is not None
    ticket = (await store.find_tickets(None, None, 1, 1)).items[0].ticket_id
    await store.update_ticket(ticket, {"state": "Investigating", "title": "Renamed after the sync"}, NOW + 60)
    await store.add_part(ticket, {"author_name": "Sam", "body": "A public answer", "public": True}, NOW + 120)
    await store.add_part(ticket, {"author_name": "Sam", "body": "An internal note", "public": False}, NOW + 180)
    await store.update_company("odd", {"plan": "pro"})
    assert await store.acquire_lease(LEASE, "node-b", 3_600, NOW)


async def _answers(store: Store) -> list[Any]:
    """What the store answers visitors, the admin API, the sync and the live pages."""
    answers: list[Any] = []
    for contact in await store.contacts():
        visible = TicketFilter(frozenset(company.id for company in contact.companies), contact.id, own_only=False)
        for q in (None, "zephyr", "quokka", "export fails", "dark mode", "1042", "renamed"):
            # An explicit sort: within a tier, relevance is each backend's own (bm25, ts_rank).
            answers.append(await store.list_tickets(visible, TicketQuery(q=q, sort="updated", page_size=500)))
        answers.append(await store.creators(visible))
        answers.append(await store.contact_by_user_id(contact.user_id or ""))
    admin = await store.find_tickets(None, None, 1, 1_000)
    answers += [await store.support_ticket(ticket.ticket_id) for ticket in admin.items]
    answers += [await store.remote_ids(kind) for kind in ("company", "contact", "ticket")]
    answers += [await store.sync_checkpoint(CHECKPOINT), await store.changes_after(0, 10_000)]
    return [*answers, await store.contacts(), await store.ticket_states()]


def _copy(source: str, destination: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str], str]:
    code = main(["store", "copy", "--from", source, "--to", destination])
    out, err = capsys.readouterr()
    return code, out.splitlines(), err


def test_a_copy_there_and_back_serves_the_same_answers_and_rows(
    tmp_path: Path, postgres: PostgresServer, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A short retention, so the feed has dropped changes: the copy keeps where it stands, not only its rows.
    original = StoreConfig(path=tmp_path / "original.db", change_retention=100)
    asyncio.run(_with(original, _fill))
    feed = asyncio.run(_with(original, lambda store: store.changes_after(0, 0)))
    assert feed.dropped_through > 0
    dsn = postgres.database()
    monkeypatch.setenv("PORTAL_COPY_DSN", dsn)  # the DSN as the config holds it: a secret, named
    code, there, _ = _copy(f"sqlite:{original.path}", "postgres:env:PORTAL_COPY_DSN", capsys)
    assert code == 0, there
    summaries = {match[1]: int(match[2]) for match in map(SUMMARY.match, there[:-2]) if match}
    assert len(summaries) == len(there) - 2, there
    # Every table of the schema but the feed's position (compared below) is copied, or rebuilt and compared ...
    assert summaries.keys() == KNOWN - {FEED_STATE}
    # ... and the store filled above holds rows in every one, so a table copied wrong would show.
    assert [name for name, rows in summaries.items() if rows == 0] == []
    assert summaries["tickets"] == 203  # the demo's 200 and the fake's 3
    assert there[-2:] == [
        f"change feed: newest id {feed.latest}, dropped through {feed.dropped_through}",
        f"copied {sum(n for name, n in summaries.items() if name not in REBUILT)} rows; counts and checksums match",
    ]
    copied = StoreConfig(backend="postgres", dsn=dsn, change_retention=100)
    assert asyncio.run(_with(copied, _answers)) == asyncio.run(_with(original, _answers))

    code, back, _ = _copy(f"postgres:{dsn}", f"sqlite:{tmp_path / 'back.db'}", capsys)
    assert (code, back) == (0, there)  # the same rows, the same checksums, table by table
    returned = StoreConfig(path=tmp_path / "back.db", change_retention=100)
    assert asyncio.run(_with(returned, _answers)) == asyncio.run(_with(original, _answers))

    async def write_more(store: Store) -> tuple[str, list[int], bool]:
        """The copy's next ids follow the copied ones, a ticket's and the feed's; the lease is still held."""
        await store.create_company({"company_id": "new", "name": "New", "custom_attributes": {}})
        raised = await store.create_ticket(
            {"ticket_type": "Bug report", "state": "New", "category": "Customer", "is_shared": False}
            | {"creator": "u-ann", "title": "After the copy", "description": "", "ticket_id": None}
            | {"company": None, "created_at": None},
            NOW,
        )
        news = await store.changes_after(feed.latest, 10)
        taken = await store.acquire_lease(LEASE, "node-c", 60, NOW + 1)
        return raised.ticket.ticket_id, [change.id for change in news.changes], taken

    after_there, after_back = asyncio.run(_with(copied, write_more)), asyncio.run(_with(returned, write_more))
    assert after_there == after_back
    assert after_there[1] == [feed.latest + 1]  # Last-Event-ID stays monotonic across the move
    assert after_there[2] is False  # node-b's lease came along


@pytest.mark.parametrize("backend", BACKENDS)
async def test_the_copy_knows_every_table_of_each_schema(
    backend: str, tmp_path: Path, postgres: PostgresServer
) -> None:
    config = (
        StoreConfig(backend="postgres", dsn=postgres.database())
        if backend == "postgres"
        else StoreConfig(path=tmp_path / "portal.db")
    )
    store = await open_store(config)
    try:
        assert (await store.tables()).keys() == KNOWN  # a migration's new table must be told to the copy
    finally:
        await store.close()


@pytest.mark.parametrize(
    ("change", "said"),
    [
        ("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)", "does not know the table notes (of the source)"),
        ("ALTER TABLE tickets ADD COLUMN priority TEXT", "tickets has columns on one side only (priority)"),
    ],
)
def test_a_schema_the_copy_does_not_know_is_refused_before_any_write(
    tmp_path: Path, postgres: PostgresServer, capsys: pytest.CaptureFixture[str], change: str, said: str
) -> None:
    source = StoreConfig(path=tmp_path / "source.db")
    asyncio.run(_with(source, lambda store: seed_if_empty(store, NOW)))
    with sqlite3.connect(source.path) as connection:  # a newer gateway's table or column, or a hand-made one
        connection.execute(change)
    dsn = postgres.database()
    code, out, err = _copy(f"sqlite:{source.path}", f"postgres:{dsn}", capsys)
    assert (code, out) == (1, [])
    assert said in err
    target = StoreConfig(backend="postgres", dsn=dsn)
    assert asyncio.run(_with(target, lambda store: store.contacts())) == []


def test_a_destination_holding_data_is_refused_and_kept(
    tmp_path: Path, postgres: PostgresServer, capsys: pytest.CaptureFixture[str]
) -> None:
    source = StoreConfig(path=tmp_path / "source.db")
    asyncio.run(_with(source, lambda store: seed_if_empty(store, NOW)))
    dsn = postgres.database()
    target = StoreConfig(backend="postgres", dsn=dsn)

    async def one_company(store: Store) -> None:
        await store.create_company({"company_id": "kept", "name": "Kept", "custom_attributes": {}})

    asyncio.run(_with(target, one_company))
    code, out, err = _copy(f"sqlite:{source.path}", f"postgres:{dsn}", capsys)
    assert (code, out) == (1, [])
    assert "store copy: the destination is not empty (1 companies); copy into a new, empty store" in err
    assert [c.user_id for c in asyncio.run(_with(target, lambda store: store.contacts()))] == []


@pytest.mark.parametrize(
    ("spec", "said"),
    [
        ("mysql:db", "'mysql:db': a store is sqlite:PATH or postgres:DSN"),
        ("postgres:", "'postgres:': a store is sqlite:PATH or postgres:DSN"),
        ("postgres:env:PORTAL_NOT_SET", "postgres: environment variable PORTAL_NOT_SET is not set"),
    ],
)
def test_a_store_that_is_not_one_is_a_config_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], spec: str, said: str
) -> None:
    code, out, err = _copy(f"sqlite:{tmp_path / 'a.db'}", spec, capsys)
    assert (code, out) == (2, [])
    assert said in err

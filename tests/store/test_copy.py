"""``portal-gateway store copy``: SQLite to PostgreSQL and back, every row verified by counts and checksums,
the copy serving the same answers as its source, and the refusals (a destination with data, a bad store)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from gateway.cli import main
from gateway.config import StoreConfig
from gateway.store.demo import seed_if_empty
from gateway.store.importer import import_lines
from gateway.store.models import TicketFilter, TicketQuery
from gateway.store.protocol import Store, open_store
from tests.pgserver import PostgresServer

NOW = 1_767_225_600


async def _with(config: StoreConfig, work: Any) -> Any:
    store = await open_store(config)
    try:
        return await work(store)
    finally:
        await store.close()


async def _fill(store: Store) -> None:
    assert await seed_if_empty(store, NOW)
    # A text no backend may take apart: the snippet markers and the reply separator, blanked in every snippet.
    tricky = '{"kind": "company", "company_id": "odd", "name": "Odd \\u0002 \\u001e Co", "monthly_spend": 0.1}'
    assert (await import_lines(store, [tricky])).errors == []


async def _answers(store: Store) -> list[Any]:
    """What the store answers visitors and the admin API: contacts, pages, searches with snippets, whole tickets."""
    answers: list[Any] = []
    for contact in await store.contacts():
        visible = TicketFilter(frozenset(company.id for company in contact.companies), contact.id, own_only=False)
        for q in (None, "zephyr", "quokka", "export fails", "dark mode", "1042"):
            # An explicit sort: within a tier, relevance is each backend's own (bm25, ts_rank).
            answers.append(await store.list_tickets(visible, TicketQuery(q=q, sort="updated", page_size=500)))
        answers.append(await store.creators(visible))
        answers.append(await store.contact_by_user_id(contact.user_id or ""))
    admin = await store.find_tickets(None, None, 1, 1_000)
    answers += [await store.support_ticket(ticket.ticket_id) for ticket in admin.items]
    return [*answers, await store.contacts(), await store.ticket_states()]


def _copy(source: str, destination: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str], str]:
    code = main(["store", "copy", "--from", source, "--to", destination])
    out, err = capsys.readouterr()
    return code, out.splitlines(), err


def test_a_copy_there_and_back_serves_the_same_answers_and_rows(
    tmp_path: Path, postgres: PostgresServer, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    original = StoreConfig(path=tmp_path / "original.db")
    asyncio.run(_with(original, _fill))
    dsn = postgres.database()
    monkeypatch.setenv("PORTAL_COPY_DSN", dsn)  # the DSN as the config holds it: a secret, named
    code, there, _ = _copy(f"sqlite:{original.path}", "postgres:env:PORTAL_COPY_DSN", capsys)
    assert code == 0, there
    assert there[-1].endswith(" rows; counts and checksums match")
    assert "tickets: 200 rows" in " ".join(there)
    copied = StoreConfig(backend="postgres", dsn=dsn)
    assert asyncio.run(_with(copied, _answers)) == asyncio.run(_with(original, _answers))

    code, back, _ = _copy(f"postgres:{dsn}", f"sqlite:{tmp_path / 'back.db'}", capsys)
    assert (code, back) == (0, there)  # the same rows, the same checksums, table by table
    returned = StoreConfig(path=tmp_path / "back.db")
    assert asyncio.run(_with(returned, _answers)) == asyncio.run(_with(original, _answers))

    async def write_more(store: Store) -> str:  # the copy's next ids follow the copied ones
        await store.create_company({"company_id": "new", "name": "New", "custom_attributes": {}})
        raised = await store.create_ticket(
            {"ticket_type": "Bug report", "state": "New", "category": "Customer", "is_shared": False}
            | {"creator": "u-ann", "title": "After the copy", "description": "", "ticket_id": None}
            | {"company": None, "created_at": None},
            NOW,
        )
        return raised.ticket.ticket_id

    assert asyncio.run(_with(copied, write_more)) == asyncio.run(_with(returned, write_more))


def test_a_destination_holding_data_is_refused_and_kept(
    tmp_path: Path, postgres: PostgresServer, capsys: pytest.CaptureFixture[str]
) -> None:
    source = StoreConfig(path=tmp_path / "source.db")
    asyncio.run(_with(source, _fill))
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

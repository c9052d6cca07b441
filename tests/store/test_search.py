"""Ticket search in the store: the FTS5 index kept in step with every write, ranking, snippets, hostile input."""

from __future__ import annotations

import asyncio
import re
import sqlite3
from collections.abc import AsyncIterator, Coroutine, Iterator
from contextlib import closing
from dataclasses import dataclass
from html import unescape
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.store.demo import INTERNAL_WORD, PUBLIC_WORD, seed_if_empty
from gateway.store.importer import import_lines
from gateway.store.models import TicketFilter, TicketQuery
from gateway.store.search import (
    CUT,
    ELLIPSIS,
    MARK_END,
    MARK_START,
    MAX_TERMS,
    PART_SEPARATOR,
    RESERVED,
    SNIPPET_CHARS,
    TEXT_COLUMNS,
    clean,
    excerpt,
    fts_query,
    search_terms,
    unmarked,
)
from gateway.store.sqlite import SQLiteStore, writes
from gateway.store.sqlite.schema import MIGRATIONS
from routes.highlight import highlight
from tests.store.contract.corpus import (
    DAY,
    LINES,
    LONG,
    NOTE_ONLY,
    SUPPORT,
    T0,
    WORD,
    People,
    found,
    part,
    people_of,
    search,
    ticket,
)
from tests.store.test_store import BEFORE_THE_COUNTS

T = TypeVar("T")


async def ids_of(store: SQLiteStore, sql: str, *params: Any) -> dict[str, int]:
    rows = await store.transaction(lambda connection: connection.execute(sql, params).fetchall())
    return {str(key): int(value) for key, value in rows}


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    opened = await SQLiteStore.open(tmp_path / "portal.db")
    assert (await import_lines(opened, LINES, strict=True)).errors == []
    yield opened
    await opened.close()


@pytest.fixture
async def people(store: SQLiteStore) -> People:
    return await people_of(store)


async def execute(store: SQLiteStore, sql: str, *params: Any) -> None:
    await store.transaction(lambda connection: connection.execute(sql, params))


async def index_matches_source(store: SQLiteStore) -> None:
    """The index holds exactly what a rebuild from the tables would, and FTS5 finds it consistent."""

    def check(connection: sqlite3.Connection) -> tuple[list[Any], list[Any]]:
        connection.execute("INSERT INTO ticket_search (ticket_search) VALUES ('integrity-check')")
        indexed = connection.execute("SELECT rowid, * FROM ticket_search ORDER BY rowid").fetchall()
        source = connection.execute("SELECT * FROM ticket_search_source ORDER BY id").fetchall()
        return indexed, source

    indexed, source = await store.transaction(check)
    assert indexed == source


# --- ranking --------------------------------------------------------------------------------------


async def test_title_ranks_before_description_before_reply(store: SQLiteStore, people: People) -> None:
    page = await search(store, people.ann, WORD)
    assert [item.ticket_id for item in page.items] == ["1001", "1002", "1003"]
    assert page.total == 3
    # Within a tier the most recently updated come first, but a tier beats recency: the reply match updated last
    # still comes after the title's and the description's.
    await execute(store, "UPDATE tickets SET updated_at = ? WHERE ticket_id = '1003'", T0 + 9 * DAY)
    assert await found(store, people.ann, WORD, sort="updated") == ["1003", "1002", "1001"]
    assert await found(store, people.ann, WORD) == ["1001", "1002", "1003"]


async def test_within_a_tier_the_most_recently_updated_come_first(store: SQLiteStore, people: People) -> None:
    titled = [ticket(f"600{n}", f"Kestrel {n}", updated_at=T0 + at * DAY) for n, at in ((1, 3), (2, 1), (3, 2))]
    assert (await import_lines(store, titled, strict=True)).errors == []
    assert await found(store, people.ann, "kestrel") == ["6001", "6003", "6002"]
    assert await found(store, people.ann, "kestrel", descending=False) == ["6002", "6003", "6001"]


def test_the_effective_order() -> None:
    assert TicketQuery().order == "updated"
    assert TicketQuery(q=WORD).order == "relevance"
    assert TicketQuery(q=WORD, sort="created").order == "created"
    assert TicketQuery(sort="relevance").order == "updated"  # nothing to rank by
    assert TicketQuery(q=' "()" ', sort="relevance").order == "updated"
    assert TicketQuery(q="  ").searching is False
    assert TicketQuery(q="x").searching is True


async def test_a_page_the_first_tier_fills_never_gives_every_hit_a_tier(store: SQLiteStore, people: People) -> None:
    titled = [ticket(f"700{n}", f"Plover {n}", updated_at=T0 + n * DAY) for n in range(1, 4)]
    replied = [ticket("7004", "Quiet", parts=[part("a plover here")], updated_at=T0 + 9 * DAY)]
    assert (await import_lines(store, [*titled, *replied], strict=True)).errors == []
    statements: list[str] = []
    await store.transaction(lambda connection: connection.set_trace_callback(statements.append))
    try:
        # Three title matches fill a page of two (or three): cut from the first tier alone, the total still all.
        for size in (2, 3):
            statements.clear()
            page = await search(store, people.ann, "plover", page_size=size)
            assert ([item.ticket_id for item in page.items], page.total) == (["7003", "7002", "7001"][:size], 4)
            assert not [sql for sql in statements if "tier1" in sql]
        # A page reaching past the first tier is cut from all the hits, each given its tier.
        statements.clear()
        assert await found(store, people.ann, "plover", page_size=4) == ["7003", "7002", "7001", "7004"]
        assert [sql for sql in statements if "tier1" in sql]
    finally:
        await store.transaction(lambda connection: connection.set_trace_callback(None))


async def test_a_ticket_id_finds_its_ticket_first(store: SQLiteStore, people: People) -> None:
    for q in ("1002", " #1002 ", "1002?"):
        page = await search(store, people.ann, q)
        assert [item.ticket_id for item in page.items] == ["1002"], q
        assert page.items[0].snippet == f"{MARK_START}1002{MARK_END}"
    # A prefix of several ids finds them all; the exact one comes first.
    await store.transaction(
        lambda connection: writes.add_ticket(
            connection,
            ticket_id="10020",
            type_id=1,
            state_id=1,
            category="Customer",
            is_shared=False,
            company_id=1,
            creator_id=1,
            title="Another",
            description="",
            created_at=T0 + 999,
            updated_at=T0 + 999,
        )
    )
    assert await found(store, people.ann, "1002") == ["1002", "10020"]
    assert sorted(await found(store, people.ann, "100")) == sorted(["1001", "1002", "1003", "1004", "10020"])


# --- a prefix the index holds one word for, asked for as that word ---------------------------------------


def marked(connection: sqlite3.Connection, match: str) -> list[tuple[str, ...]]:
    """Each match's ticket id and its four text columns highlighted (whoever may see it), straight from FTS5."""
    columns = ", ".join(f"highlight(ticket_search, {n}, '[', ']')" for n in range(4))
    return connection.execute(
        f"SELECT ticket_id, {columns} FROM ticket_search WHERE ticket_search MATCH ? ORDER BY rowid",  # noqa: S608
        (match,),
    ).fetchall()


async def test_a_prefix_of_one_indexed_word_matches_as_that_word(store: SQLiteStore, people: People) -> None:
    # The rewrite's premise: a phrase for the one word a prefix expands to has the prefix's instances.
    match = fts_query("FALC")
    assert match is not None
    prefix, whole = await store.transaction(
        lambda connection: (marked(connection, match), marked(connection, f'{TEXT_COLUMNS} : ("falcon")'))
    )
    assert len(prefix) == 5
    assert prefix == whole
    # A prefix, a word, any case: the same tickets, order and snippets as the whole word.
    pages = [await search(store, people.ann, q) for q in ("falc", "FALCON", "Falco")]
    assert [item.ticket_id for item in pages[0].items] == ["1001", "1002", "1003"]
    assert pages[1:] == [pages[0]] * 2
    assert all(f"{MARK_START}{WORD}{MARK_END}" in (item.snippet or "") for item in pages[0].items)


async def test_a_prefix_of_two_indexed_words_finds_both(store: SQLiteStore, people: People) -> None:
    # Once "falconry" is indexed too, "falc" and even "falcon" are prefixes of two words: both must still find it.
    newest = ticket("1005", "Falconry club", updated_at=T0 + 2 * DAY)
    assert (await import_lines(store, [newest], strict=True)).errors == []
    for q in ("falc", "falcon"):
        page = await search(store, people.ann, q)
        assert [item.ticket_id for item in page.items] == ["1005", "1001", "1002", "1003"]
        assert page.items[0].snippet == f"{MARK_START}Falconry{MARK_END} club"
    assert await found(store, people.ann, "falconr") == ["1005"]  # its own one word again
    assert await found(store, people.ann, "falconx") == []  # no word at all


async def test_a_prefix_outside_ascii_is_left_to_fts5(store: SQLiteStore, people: People) -> None:
    # unicode61 folds "Fälc" to "falc"; only FTS5 knows its folding, so the prefix is asked for as typed.
    assert await found(store, people.ann, "Fälc") == ["1001", "1002", "1003"]


# --- what is indexed -------------------------------------------------------------------------------


async def test_a_word_only_in_internal_notes_matches_nothing(store: SQLiteStore, people: People) -> None:
    for visible in (people.ann, people.cho_own, people.ben):
        page = await search(store, visible, NOTE_ONLY)
        assert (page.items, page.total) == ((), 0)
    # Not in the index at all, in any column.
    rows = await store.transaction(
        lambda connection: connection.execute(
            "SELECT count(*) FROM ticket_search WHERE title || description || ticket_id || coalesce(replies, '')"
            " LIKE ?",
            (f"%{NOTE_ONLY}%",),
        ).fetchone()
    )
    assert rows[0] == 0


async def test_a_part_made_internal_leaves_the_index_and_comes_back(store: SQLiteStore, people: People) -> None:
    await execute(store, "UPDATE conversation_parts SET is_public = 0 WHERE body = ?", f"{WORD} {WORD} {WORD}")
    assert await found(store, people.ann, WORD) == ["1001", "1002"]
    await index_matches_source(store)
    await execute(store, "UPDATE conversation_parts SET is_public = 1 WHERE body = ?", f"{WORD} {WORD} {WORD}")
    assert await found(store, people.ann, WORD) == ["1001", "1002", "1003"]
    # The other way round: a note made public becomes searchable.
    await execute(store, "UPDATE conversation_parts SET is_public = 1 WHERE body LIKE ?", f"%{NOTE_ONLY} team")
    assert await found(store, people.ann, NOTE_ONLY) == ["1003"]
    await index_matches_source(store)


async def test_edits_and_deletes_of_parts_reindex(store: SQLiteStore, people: People) -> None:
    await execute(store, "UPDATE conversation_parts SET body = 'a kestrel now' WHERE body = ?", f"{WORD} {WORD} {WORD}")
    assert await found(store, people.ann, WORD) == ["1001", "1002"]
    assert await found(store, people.ann, "kestrel") == ["1003"]
    await execute(store, "DELETE FROM conversation_parts WHERE body = 'a kestrel now'")
    assert await found(store, people.ann, "kestrel") == []
    # A part written later (through the store's own write path) is found at once.
    conversation = await ids_of(store, "SELECT ticket_id, conversation_id FROM tickets")
    await store.transaction(
        lambda connection: writes.add_part(connection, conversation["1004"], None, SUPPORT, "osprey sighted", True, T0)
    )
    await store.transaction(
        lambda connection: writes.add_part(connection, conversation["1004"], None, SUPPORT, "heron note", False, T0)
    )
    assert await found(store, people.ann, "osprey") == ["1004"]
    assert await found(store, people.ann, "heron") == []
    # Moving a reply to another conversation moves its words.
    await execute(
        store, "UPDATE conversation_parts SET conversation_id = ? WHERE body = 'osprey sighted'", conversation["1002"]
    )
    assert await found(store, people.ann, "osprey") == ["1002"]
    await index_matches_source(store)


async def test_ticket_updates_reindex(store: SQLiteStore, people: People) -> None:
    await execute(store, "UPDATE tickets SET title = 'Pelican export' WHERE ticket_id = '1001'")
    assert await found(store, people.ann, "pelican") == ["1001"]
    assert await found(store, people.ann, WORD) == ["1002", "1003"]  # 1001 held it only in its title
    await execute(store, "UPDATE tickets SET description = 'pelican too' WHERE ticket_id = '1002'")
    assert await found(store, people.ann, "pelican") == ["1001", "1002"]
    await execute(store, "UPDATE tickets SET ticket_id = '7777' WHERE ticket_id = '1004'")
    assert await found(store, people.ann, "7777") == ["7777"]
    assert await found(store, people.ann, "1004") == []
    # Changing a state (not indexed) leaves the index alone, and filters still apply on top of the search.
    await execute(store, "UPDATE tickets SET state_id = 2 WHERE ticket_id = '1003'")
    assert await found(store, people.ann, WORD, state_id=2) == ["1003"]
    assert await found(store, people.ann, WORD, state_id=1) == []
    assert await found(store, people.ann, "pelican", state_id=1) == ["1001"]  # 1002 is resolved
    await index_matches_source(store)


async def test_deleting_a_ticket_removes_it(store: SQLiteStore, people: People) -> None:
    await execute(store, "DELETE FROM tickets WHERE ticket_id = '1003'")
    assert await found(store, people.ann, WORD) == ["1001", "1002"]
    count = await store.transaction(
        lambda connection: connection.execute("SELECT count(*) FROM ticket_search").fetchone()
    )
    assert count[0] == len([text for text in LINES if '"kind": "ticket"' in text]) - 1
    await index_matches_source(store)


# --- visibility and counts -------------------------------------------------------------------------


# --- snippets -------------------------------------------------------------------------------------


async def test_snippets_of_long_text_are_cut_with_ellipses(store: SQLiteStore, people: People) -> None:
    await execute(store, "UPDATE tickets SET description = ? WHERE ticket_id = '1004'", f"{LONG} gannet {LONG}")
    [item] = (await search(store, people.ann, "gannet")).items
    assert item.snippet is not None
    assert item.snippet.startswith("…")
    assert item.snippet.endswith("…")
    assert f"{MARK_START}gannet{MARK_END}" in item.snippet
    assert len(item.snippet) < 200


async def add_replies(store: SQLiteStore, ticket_id: str, bodies: list[str]) -> None:
    """Public replies by support on the ticket, the n-th (from 1) at T0 + n."""
    conversation = (await ids_of(store, "SELECT ticket_id, conversation_id FROM tickets"))[ticket_id]

    def write(connection: sqlite3.Connection) -> None:
        for at, body in enumerate(bodies, start=T0 + 1):
            writes.add_part(connection, conversation, None, SUPPORT, body, True, at)

    await store.transaction(write)


async def test_a_reply_matching_many_times_gives_one_snippet_of_that_reply(store: SQLiteStore, people: People) -> None:
    first = f"{LONG} gannet {LONG} gannet {LONG} gannet {LONG}"
    await add_replies(store, "1004", ["Opening words", first, "gannet once more, gannet.", LONG])
    [item] = (await search(store, people.ann, "gannet")).items
    assert item.snippet is not None
    assert (item.snippet_author, item.snippet_at) == (SUPPORT, T0 + 2)  # the earliest reply holding the word
    # One cut of that one reply: its words, in order, with an ellipsis each side (it goes on both ways).
    assert item.snippet.startswith(ELLIPSIS)
    assert item.snippet.endswith(ELLIPSIS)
    body = unmarked(item.snippet)[1:-1]
    assert body in first
    assert ELLIPSIS not in body
    assert PART_SEPARATOR not in body
    assert set(body.split()) <= {*LONG.split(), "gannet"}  # whole words only, none cut in two
    assert item.snippet.count(MARK_START) == 1  # the three matches are far apart: the first one is shown


async def test_a_short_reply_is_shown_whole_without_ellipses(store: SQLiteStore, people: People) -> None:
    await add_replies(store, "1004", [LONG, "  The gannet landed.  ", LONG])
    [item] = (await search(store, people.ann, "gannet")).items
    assert (item.snippet, item.snippet_at) == (f"The {MARK_START}gannet{MARK_END} landed.", T0 + 2)


async def test_stored_text_cannot_forge_markers(store: SQLiteStore, people: People) -> None:
    forged = f"{MARK_START}fake{MARK_END} {CUT}{PART_SEPARATOR} grebe"
    await execute(store, "UPDATE tickets SET title = ? WHERE ticket_id = '1004'", forged)
    [item] = (await search(store, people.ann, "grebe")).items
    assert item.snippet is not None
    assert item.snippet.count(MARK_START) == item.snippet.count(MARK_END) == 1
    assert f"{MARK_START}grebe{MARK_END}" in item.snippet
    assert CUT not in item.snippet
    assert PART_SEPARATOR not in item.snippet
    await index_matches_source(store)


# --- hostile input --------------------------------------------------------------------------------


def test_terms_are_capped_and_quoted() -> None:
    assert search_terms(None) == ()
    assert search_terms('say "hi" AND (bye)*') == ("say", "hi", "AND", "bye")
    assert search_terms("Hi hi HI") == ("Hi",)
    assert len(search_terms(" ".join(f"w{n}" for n in range(100)))) == MAX_TERMS
    assert search_terms("a" * 1_000 + " b") == ("a" * 64,)
    assert search_terms("x " * 5_000 + "tail") == ("x",)  # only the first 1,000 characters are read
    assert fts_query('NEAR(a b) "x"*') == f'{TEXT_COLUMNS} : ("NEAR"* AND "a" AND "b" AND "x")'
    assert fts_query("  ") is None
    assert fts_query("😀 ^ * :") is None


def indexed(connection: sqlite3.Connection, title: str) -> None:
    """An FTS5 table ``f`` with ticket_search's columns and tokenizer, holding one row of that title."""
    connection.execute(
        "CREATE VIRTUAL TABLE f USING fts5(title, description, ticket_id, replies, scope,"
        " tokenize = 'unicode61 remove_diacritics 2')"
    )
    connection.execute("INSERT INTO f (title) VALUES (?)", (title,))


SAFE_QUERY = re.compile(re.escape(TEXT_COLUMNS) + r' : \("[^"\s]+"\*?( AND "[^"\s]+"\*?)*\)')


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_any_text_makes_a_well_formed_query(text: str) -> None:
    query = fts_query(text)
    if query is None:
        assert search_terms(text) == ()
        return
    assert SAFE_QUERY.fullmatch(query), query
    with closing(sqlite3.connect(":memory:")) as connection:
        indexed(connection, text)
        connection.execute("SELECT rowid, snippet(f, 0, '[', ']', '~', 8) FROM f WHERE f MATCH ?", (query,)).fetchall()


# --- properties over a real store ------------------------------------------------------------------


@dataclass(frozen=True)
class Loaded:
    """A store opened once for the property tests, on its own event loop (hypothesis drives it synchronously)."""

    loop: asyncio.AbstractEventLoop
    store: SQLiteStore
    people: People

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coroutine)


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Loaded]:
    loop = asyncio.new_event_loop()

    async def build() -> tuple[SQLiteStore, People]:
        store = await SQLiteStore.open(tmp_path_factory.mktemp("search") / "portal.db")
        assert (await import_lines(store, LINES, strict=True)).errors == []
        return store, await people_of(store)

    store, visitors = loop.run_until_complete(build())
    try:
        yield Loaded(loop, store, visitors)
    finally:
        loop.run_until_complete(store.close())
        loop.close()


hostile_text = st.one_of(
    st.text(),
    st.lists(st.sampled_from([*'"*^:(){}+-., ', "AND", "OR", "NOT", "NEAR", WORD, "😀", "\x00"])).map("".join),
    st.lists(st.sampled_from([WORD, "export", "slow", "1002", "AND", "OR", '"', "*", "("]), max_size=12).map(" ".join),
)


@settings(max_examples=150, deadline=None)
@given(q=hostile_text, page=st.integers(min_value=1, max_value=3), size=st.integers(min_value=1, max_value=4))
def test_any_query_lists_a_consistent_page(loaded: Loaded, q: str, page: int, size: int) -> None:
    result = loaded.run(search(loaded.store, loaded.people.ann, q, page=page, page_size=size))
    everything = loaded.run(search(loaded.store, loaded.people.ann, q))
    assert result.total == everything.total == len(everything.items)
    assert [item.ticket_id for item in result.items] == [
        item.ticket_id for item in everything.items[(page - 1) * size : page * size]
    ]
    assert {item.ticket_id for item in everything.items} <= {"1001", "1002", "1003", "1004"}
    for item in result.items:
        if item.snippet is not None:
            assert item.snippet.count(MARK_START) == item.snippet.count(MARK_END)
            assert NOTE_ONLY not in item.snippet


# --- the index against a rebuild, and the pure helpers --------------------------------------------

operations = st.lists(
    st.tuples(
        st.sampled_from(["reply", "note", "flip", "edit", "delete_part", "title", "delete_ticket", "new_ticket"]),
        st.integers(min_value=0, max_value=50),
        st.text(max_size=12),
    ),
    max_size=12,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=operations)
def test_the_index_always_equals_a_rebuild(tmp_path_factory: pytest.TempPathFactory, steps: list[Any]) -> None:
    """Any sequence of writes leaves the index exactly as re-indexing the tables from scratch would."""

    def apply(connection: sqlite3.Connection) -> None:
        for step, (what, number, text) in enumerate(steps):
            parts = [row[0] for row in connection.execute("SELECT id FROM conversation_parts ORDER BY id")]
            tickets = [row[0] for row in connection.execute("SELECT conversation_id FROM tickets ORDER BY id")]
            some_part = parts[number % len(parts)] if parts else None
            conversation = tickets[number % len(tickets)] if tickets else 1
            if what in ("reply", "note"):
                writes.add_part(connection, conversation, None, SUPPORT, text, what == "reply", number)
            elif what == "flip" and some_part:
                connection.execute("UPDATE conversation_parts SET is_public = 1 - is_public WHERE id = ?", (some_part,))
            elif what == "edit" and some_part:
                connection.execute("UPDATE conversation_parts SET body = ? WHERE id = ?", (text, some_part))
            elif what == "delete_part" and some_part:
                connection.execute("DELETE FROM conversation_parts WHERE id = ?", (some_part,))
            elif what == "title":
                connection.execute("UPDATE tickets SET title = ? WHERE conversation_id = ?", (text, conversation))
            elif what == "delete_ticket":
                connection.execute("DELETE FROM tickets WHERE conversation_id = ?", (conversation,))
            elif what == "new_ticket":
                writes.add_ticket(
                    connection,
                    ticket_id=f"new-{step}",
                    type_id=1,
                    state_id=1,
                    category="Customer",
                    is_shared=False,
                    company_id=None,
                    creator_id=1,
                    title=text,
                    description=text,
                    created_at=number,
                    updated_at=number,
                )

    async def run() -> None:
        store = await SQLiteStore.open(tmp_path_factory.mktemp("rebuild") / "portal.db")
        try:
            assert (await import_lines(store, LINES, strict=True)).errors == []
            await store.transaction(apply)
            await index_matches_source(store)
        finally:
            await store.close()

    asyncio.run(run())


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_the_sql_cleaning_and_the_python_cleaning_agree(text: str) -> None:
    with closing(sqlite3.connect(":memory:")) as connection:
        connection.executescript(MIGRATIONS[0])
        connection.executescript(MIGRATIONS[1])
        writes.upsert_contact(connection, "u", None, "U")
        writes.add_ticket(
            connection,
            ticket_id="1",
            type_id=writes.ticket_type_id(connection, "t"),
            state_id=writes.upsert_ticket_state(connection, "submitted", "New", "New"),
            category="Customer",
            is_shared=False,
            company_id=None,
            creator_id=1,
            title=text,
            description=text,
            created_at=0,
            updated_at=0,
        )
        writes.add_part(connection, 1, None, "S", text, True, 0)
        writes.add_part(connection, 1, None, "S", text, True, 1)
        row = connection.execute("SELECT title, description, replies FROM ticket_search").fetchone()
    assert row == (clean(text), clean(text), f"{clean(text)}{PART_SEPARATOR}{clean(text)}")
    assert not set(RESERVED) & set(row[0])


M = f"{MARK_START}gannet{MARK_END}"


def test_an_excerpt_cuts_between_words_and_marks_only_real_cuts() -> None:
    words = " ".join(f"w{n}" for n in range(100))
    middle = excerpt(words.replace("w50 ", f"{MARK_START}w50{MARK_END} "))
    assert middle.startswith(f"{ELLIPSIS}w")
    assert middle.endswith(ELLIPSIS)
    assert f"{MARK_START}w50{MARK_END}" in middle
    assert len(unmarked(middle)) <= SNIPPET_CHARS + 2
    start = excerpt(f"{M} {words}")
    assert start.startswith(M)  # nothing before the match: no ellipsis there
    assert start.endswith(ELLIPSIS)
    end = excerpt(f"{words} it. {M}.")
    assert end.startswith(ELLIPSIS)
    assert end.endswith(f"it. {M}.")  # the text's own end: no "it.…"
    assert excerpt(f"  A short {M} reply.\n") == f"A short {M} reply."
    assert excerpt("") == ""
    # A mark the input left open is closed; a stray closing mark is dropped.
    assert excerpt(f"{MARK_START}open") == f"{MARK_START}open{MARK_END}"
    assert excerpt(f"stray{MARK_END} end") == "stray end"


def test_an_excerpt_of_one_enormous_word_is_cut_inside_it() -> None:
    snippet = excerpt("x" * 5_000 + M + "y" * 5_000)
    assert snippet.startswith(ELLIPSIS)
    assert snippet.endswith(ELLIPSIS)
    assert M in snippet
    assert len(snippet) <= SNIPPET_CHARS + 10
    huge_match = excerpt(f"{MARK_START}{'z' * 5_000}{MARK_END} tail")
    assert huge_match == f"{MARK_START}{'z' * SNIPPET_CHARS}{MARK_END}{ELLIPSIS}"


def fts_marked(text: str, term: str) -> str | None:
    """``text`` with the matches of ``term`` marked by FTS5 itself (the index's tokenizer), or None if none."""
    query = fts_query(term)
    if query is None:
        return None
    with closing(sqlite3.connect(":memory:")) as connection:
        indexed(connection, clean(text))
        row = connection.execute("SELECT highlight(f, 0, char(2), char(3)) FROM f WHERE f MATCH ?", (query,)).fetchone()
    return None if row is None else str(row[0])


words = st.text(
    st.characters(codec="utf-8", exclude_categories=("Cs", "Zs", "Zl", "Zp", "Cc"), exclude_characters=ELLIPSIS),
    max_size=20,
)
spaces = st.sampled_from([" ", "  ", "\n", " \t"])
texts = st.lists(st.tuples(words, spaces), max_size=80).map(lambda pairs: "".join(w + s for w, s in pairs))


@settings(max_examples=300, deadline=None)
@given(text=texts, pick=st.integers(min_value=0), cut=st.integers(min_value=1, max_value=20))
def test_any_excerpt_is_one_window_cut_at_word_boundaries(text: str, pick: int, cut: int) -> None:
    """For any text and term: one piece of the text, whole words, an ellipsis exactly where text was left out."""
    tokens = search_terms(text)
    term = tokens[pick % len(tokens)][:cut] if tokens else "zz"
    marked = fts_marked(text, term)
    if marked is None:
        return
    snippet = excerpt(marked)
    plain = unmarked(marked)
    # As HTML: the matches in <mark>, everything else escaped (no tag, no entity of the text's own).
    shown = str(highlight(snippet))
    assert shown.count("<mark>") == shown.count("</mark>") == snippet.count(MARK_START)
    outside = re.sub("</?mark>", "", shown)
    assert "<" not in outside
    assert ">" not in outside
    assert unescape(outside) == unmarked(snippet)
    low, high = len(plain) - len(plain.lstrip()), len(plain.rstrip())
    assert snippet.count(MARK_START) == snippet.count(MARK_END) >= 1
    cut_before, cut_after = snippet.startswith(ELLIPSIS), snippet.endswith(ELLIPSIS) and len(snippet) > 1
    body = unmarked(snippet)[1 if cut_before else None : -1 if cut_after else None]
    if high - low <= SNIPPET_CHARS:  # it fits: the whole text, no ellipsis
        assert (cut_before, cut_after, body) == (False, False, plain[low:high])
        return
    assert 0 < len(body) <= SNIPPET_CHARS
    first_match = marked.index(MARK_START)
    # Some place of the text where the body sits between two word boundaries, cut exactly where it says.
    assert any(
        (start == low or plain[start - 1].isspace())
        and (start + len(body) == high or plain[start + len(body)].isspace())
        and cut_before == (start > low)
        and cut_after == (start + len(body) < high)
        and start <= first_match < start + len(body)
        for start in range(low, high)
        if plain.startswith(body, start)
    ), (snippet, plain)


# --- migrating an existing database -----------------------------------------------------------------


async def test_migrating_a_version_1_database_indexes_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "portal.db"
    with closing(sqlite3.connect(path, isolation_level=None)) as connection:
        connection.executescript(f"BEGIN; {MIGRATIONS[0]}; PRAGMA user_version = 1; COMMIT;")
        connection.execute("BEGIN")
        company = writes.upsert_company(connection, "acme", "Acme")
        ann = writes.upsert_contact(connection, "u-ann", None, "Ann")
        writes.set_memberships(connection, ann, [company])
        state = writes.upsert_ticket_state(connection, "submitted", "New", "Submitted")
        kind = writes.ticket_type_id(connection, "Bug report")
        for number, title in enumerate(("Old falcon export", "Old login")):
            conversation = writes.add_ticket(
                connection,
                ticket_id=f"50{number}",
                type_id=kind,
                state_id=state,
                category="Customer",
                is_shared=False,
                company_id=company,
                creator_id=ann,
                title=title,
                description="",
                created_at=T0,
                updated_at=T0,
            )
            writes.add_part(connection, conversation, None, SUPPORT, f"kestrel reply {number}", True, T0 + number)
            writes.add_part(connection, conversation, None, SUPPORT, f"{NOTE_ONLY} note", False, T0 + 5)
        connection.execute("COMMIT")
        assert connection.execute("SELECT name FROM sqlite_master WHERE name = 'ticket_search'").fetchone() is None

    store = await SQLiteStore.open(path)
    try:
        visible = TicketFilter(frozenset({company}), ann, own_only=False)
        assert await found(store, visible, WORD) == ["500"]
        assert sorted(await found(store, visible, "kestrel")) == ["500", "501"]
        assert await found(store, visible, NOTE_ONLY) == []
        page = await search(store, visible, "kestrel reply 1")
        assert [(i.ticket_id, i.snippet_author, i.snippet_at) for i in page.items] == [("501", SUPPORT, T0 + 1)]
        await index_matches_source(store)
    finally:
        await store.close()
    with closing(sqlite3.connect(path)) as connection:
        assert connection.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)


# --- the demo store ------------------------------------------------------------------------------


async def test_the_demo_store_finds_its_public_word_and_hides_its_internal_one(tmp_path: Path) -> None:
    store = await SQLiteStore.open(tmp_path / "demo.db")
    try:
        await seed_if_empty(store, T0)
        companies = await ids_of(store, "SELECT company_id, id FROM companies")
        everyone = TicketFilter(frozenset(companies.values()), None, own_only=False)
        page = await search(store, everyone, PUBLIC_WORD, page_size=1000)
        assert page.total == len(page.items) > 0
        assert all(item.snippet and f"{MARK_START}{PUBLIC_WORD}{MARK_END}" in item.snippet for item in page.items)
        assert all(item.snippet_author and item.snippet_at for item in page.items)
        assert (await search(store, everyone, INTERNAL_WORD)).total == 0
        await index_matches_source(store)
    finally:
        await store.close()


SCOPED_MIGRATION = 7
"""The SQLite migration that gave ticket_search its scope column."""
# Each ticket's scope token: its company (1), or minus its creator without one (-2); none where no visitor looks.
SCOPED = [(1, "k1"), (2, "k1"), (3, "k1"), (4, "kn2"), (5, None), (6, None)]


def scope_tokens(path: Path) -> list[tuple[int, str | None]]:
    with closing(sqlite3.connect(path)) as connection:
        return connection.execute("SELECT rowid, scope FROM ticket_search ORDER BY rowid").fetchall()


async def test_a_store_from_before_the_scoped_search_has_it_filled_and_kept_by_every_write(tmp_path: Path) -> None:
    path = tmp_path / "portal.db"
    with closing(sqlite3.connect(path, isolation_level=None)) as connection:
        for number, script in enumerate(MIGRATIONS[: SCOPED_MIGRATION - 1], start=1):
            connection.executescript(f"BEGIN;\n{script}\nPRAGMA user_version = {number};\nCOMMIT;")
        connection.executescript(BEFORE_THE_COUNTS)
    store = await SQLiteStore.open(path)
    await store.close()
    assert scope_tokens(path) == SCOPED
    with closing(sqlite3.connect(path, isolation_level=None)) as connection:
        connection.executescript(
            """
            UPDATE tickets SET company_id = NULL WHERE id = 3;
            UPDATE tickets SET is_shared = 1 WHERE id = 6;
            UPDATE tickets SET category = 'Tracker' WHERE id = 4;
            UPDATE tickets SET title = 'renamed' WHERE id = 2;
            """
        )
        assert connection.execute("SELECT title FROM ticket_search WHERE rowid = 2").fetchone() == ("renamed",)
    assert scope_tokens(path) == [(1, "k1"), (2, "k1"), (3, "kn1"), (4, None), (5, None), (6, "k1")]

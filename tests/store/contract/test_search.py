"""Search through the store's interface: ranking, sorts, visibility, totals and snippets, for every backend."""

from __future__ import annotations

import pytest

from gateway.store.importer import import_lines
from gateway.store.models import SORT_KEYS, TicketFilter
from gateway.store.protocol import Store
from gateway.store.search import MARK_END, MARK_START, search_terms
from tests.store.contract.corpus import (
    DAY,
    HOSTILE,
    LINES,
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


@pytest.fixture
async def store(store: Store) -> Store:
    """The contract's empty store, holding the search corpus."""
    assert (await import_lines(store, LINES, strict=True)).errors == []
    return store


@pytest.fixture
async def people(store: Store) -> People:
    return await people_of(store)


async def test_relevance_ascending_is_the_reverse(store: Store, people: People) -> None:
    assert await found(store, people.ann, WORD, descending=False) == ["1003", "1002", "1001"]
    assert await found(store, people.ann, WORD, sort="relevance", descending=False) == ["1003", "1002", "1001"]


async def test_an_explicit_sort_wins_over_relevance(store: Store, people: People) -> None:
    assert await found(store, people.ann, WORD, sort="created") == ["1003", "1002", "1001"]
    assert await found(store, people.ann, WORD, sort="created", descending=False) == ["1001", "1002", "1003"]
    assert await found(store, people.ann, WORD, sort="id", descending=False) == ["1001", "1002", "1003"]
    assert await found(store, people.ann, WORD, sort="state") == ["1002", "1003", "1001"]
    for key in SORT_KEYS:  # every sort keeps the search filter and the snippets
        page = await search(store, people.ann, WORD, sort=key)
        assert sorted(item.ticket_id for item in page.items) == ["1001", "1002", "1003"]
        assert all(item.snippet and f"{MARK_START}{WORD}{MARK_END}" in item.snippet for item in page.items)


async def test_relevance_without_words_is_the_plain_list(store: Store, people: People) -> None:
    plain = await found(store, people.ann, None)
    assert await found(store, people.ann, None, sort="relevance") == plain
    assert await found(store, people.ann, "   ", sort="relevance") == plain
    assert plain == await found(store, people.ann, None, sort="updated")


async def test_words_are_anded_across_fields(store: Store, people: People) -> None:
    # "slow" is in 1003's title, "falcon" in one of its replies: both words, different fields.
    assert await found(store, people.ann, f"slow {WORD}") == ["1003"]
    assert await found(store, people.ann, f"slow {WORD} nowhere") == []


async def test_words_match_as_prefixes_and_without_case_or_accents(store: Store, people: People) -> None:
    assert await found(store, people.ann, "FALC") == ["1001", "1002", "1003"]
    assert await found(store, people.ann, "fälcon") == ["1001", "1002", "1003"]
    assert (await search(store, people.ann, "falc")).items[0].snippet == f"The {MARK_START}{WORD}{MARK_END} export"
    assert await found(store, people.ann, "alcon") == []  # a prefix, not a substring


async def test_visibility_still_applies(store: Store, people: People) -> None:
    assert await found(store, people.ben, WORD) == ["2001"]  # not the Tracker ticket 2002, nor acme's
    assert "2001" not in await found(store, people.ann, WORD)
    assert await found(store, people.ann, "globex") == []
    assert await found(store, people.cho_own, WORD) == ["1003"]  # restricted: only their own
    assert await found(store, people.cho_own, "export") == []  # 1001 is ann's
    assert await found(store, people.ghost, WORD) == []
    assert (await search(store, people.ghost, WORD)).total == 0


async def test_the_total_counts_the_matches_on_every_page(store: Store, people: People) -> None:
    seen: list[str] = []
    for page_number in (1, 2, 3):
        page = await search(store, people.ann, WORD, page=page_number, page_size=1)
        assert page.total == 3
        seen += [item.ticket_id for item in page.items]
    assert seen == ["1001", "1002", "1003"]
    past = await search(store, people.ann, WORD, page=9, page_size=2)
    assert (past.items, past.total, past.pages) == ((), 3, 2)
    assert (await search(store, people.cho_own, WORD)).total == 1
    assert (await search(store, people.ann, NOTE_ONLY, page=3)).total == 0


async def test_snippets_mark_the_term_and_name_who_wrote_it_when(store: Store, people: People) -> None:
    by_id = {item.ticket_id: item for item in (await search(store, people.ann, WORD)).items}
    marked = f"{MARK_START}{WORD}{MARK_END}"
    title, description, reply = by_id["1001"], by_id["1002"], by_id["1003"]
    assert (title.snippet, title.snippet_author, title.snippet_at) == (f"The {marked} export", "Ann Archer", T0 + 10)
    assert description.snippet == f"Since Monday the {marked} job fails"
    assert (description.snippet_author, description.snippet_at) == ("Ann Archer", T0 + 30)
    # The reply, cut out of the ticket's other replies: its author and time, not the first reply's.
    assert reply.snippet == f"{marked} {marked} {marked}"  # a short reply whole, no ellipsis
    assert (reply.snippet_author, reply.snippet_at) == (SUPPORT, T0 + 200)
    # Without a search there is no snippet.
    assert all(item.snippet is None for item in (await search(store, people.ann, None)).items)


async def test_a_reply_by_a_contact_is_credited_to_them(store: Store, people: People) -> None:
    page = await search(store, people.ann, "news")
    assert [(i.ticket_id, i.snippet, i.snippet_author, i.snippet_at) for i in page.items] == [
        ("1003", f"Hello, any {MARK_START}news{MARK_END} on this one?", "Cho Chen", T0 + 100)
    ]


@pytest.mark.parametrize("q", HOSTILE, ids=lambda q: repr(q[:20]) + (f"+{len(q)}" if len(q) > 20 else ""))
async def test_hostile_queries_give_results_or_nothing_never_an_error(store: Store, people: People, q: str) -> None:
    page = await search(store, people.ann, q)
    listed = [item.ticket_id for item in page.items]
    assert page.total == len(listed)
    assert set(listed) <= {"1001", "1002", "1003", "1004"}
    words = {term.casefold() for term in search_terms(q)}
    if words == {WORD}:  # the operators were dropped, the word kept
        assert listed == ["1001", "1002", "1003"], q
    if not words:  # nothing to search for: the plain list
        assert listed == await found(store, people.ann, None)
        assert all(item.snippet is None for item in page.items)


async def test_a_ticket_moved_hidden_or_retitled_is_found_by_its_new_scope_and_words_only(
    store: Store, people: People
) -> None:
    # PostgreSQL narrows the match to the visitor's scope keys inside its index (tickets.scoped, kept by
    # triggers): the index must follow every write that changes a ticket's scope, category or words.
    await store.add_membership("u-ann", "globex")
    await store.update_ticket("1001", {"company": "globex"}, T0 + 1)  # acme -> globex
    await store.update_ticket("1002", {"category": "Tracker"}, T0 + 1)  # hidden from everyone
    await store.update_ticket("2001", {"company": None}, T0 + 1)  # globex -> ben's own company-less tickets
    await store.update_ticket("1004", {"title": "Webhooks and the heron"}, T0 + 1)
    await store.add_part("1004", {"body": "a plover reply", "public": True}, T0 + 2)
    await store.add_part("1004", {"body": "an ibis note", "public": False}, T0 + 3)
    assert await found(store, people.ann, WORD) == ["1003"]
    assert await found(store, people.ben, WORD) == ["2001", "1001"]
    assert await found(store, people.ben, "export") == ["1001"]
    assert await found(store, people.ann, "export") == []
    assert (await search(store, people.ann, "login")).total == 0
    assert await found(store, people.ann, "heron") == ["1004"]
    assert await found(store, people.ann, "plover") == ["1004"]
    assert await found(store, people.ann, "ibis") == []


async def test_a_visitor_of_two_companies_and_their_own_tickets_finds_every_scope_never_a_note(
    store: Store, people: People
) -> None:
    both = TicketFilter(people.ann.company_ids | people.ben.company_ids, people.ann.contact_id, own_only=False)
    assert sorted(await found(store, both, WORD)) == ["1001", "1002", "1003", "2001"]  # never the Tracker 2002
    assert (await search(store, both, WORD)).total == 4
    assert await found(store, both, f"{WORD} globex") == ["2001"]
    assert await found(store, both, NOTE_ONLY) == []
    own = [ticket("3001", f"My own {WORD} question", company=None, creator="u-cho")]
    assert (await import_lines(store, own, strict=True)).errors == []
    assert await found(store, people.cho_own, WORD) == ["3001", "1003"]  # their company-less ticket first (title)
    assert "3001" not in await found(store, both, WORD)  # another contact's company-less ticket


async def test_a_visitors_words_never_match_a_scope_key(store: Store, people: People) -> None:
    # SQLite's index holds each ticket's scope key as a token (k1, kn7) beside its words: never a match.
    (acme,) = people.ann.company_ids
    for word in (f"k{acme}", f"kn{people.ann.contact_id}", "k"):
        assert await found(store, people.ann, word) == []
        assert (await store.find_tickets(None, word, 1, 25)).total == 0


async def test_the_order_holds_across_tiers_and_pages(store: Store, people: People) -> None:
    # Five title matches, most recently updated first (two updated at once: the later ticket first), no
    # description match (an empty tier), two matches only in a reply (the newest of all last: a tier beats
    # recency), and an exact ticket id ahead of a title: the order of one long page must be the order of every
    # short page, whichever way the store finds a page's rows.
    bird = "osprey"
    titled = [
        ticket(f"400{n}", " ".join([bird] * n) + " nest", updated_at=T0 + days * DAY)
        for n, days in zip(range(1, 6), (3, 5, 2, 4, 2), strict=True)
    ]
    replied = [
        ticket("4006", "Quiet nest", parts=[part(f"{bird} {bird} again")], updated_at=T0 + DAY),
        ticket("4007", "Another nest", parts=[part(f"an {bird}")], updated_at=T0 + 6 * DAY),
        ticket("4009", "Ref 40070 and 40070"),
    ]
    assert (await import_lines(store, [*titled, *replied], strict=True)).errors == []
    expected = ["4002", "4004", "4001", "4005", "4003", "4007", "4006"]
    assert await found(store, people.ann, bird) == expected
    seen: list[str] = []
    for page_number in (1, 2, 3, 4):
        page = await search(store, people.ann, bird, page=page_number, page_size=2)
        assert page.total == len(expected)
        seen += [item.ticket_id for item in page.items]
    assert seen == expected
    for page_number, size in ((5, 2), (9, 100)):  # past the end, near and far
        assert (await search(store, people.ann, bird, page=page_number, page_size=size)).total == len(expected)
    assert await found(store, people.ann, bird, page_size=5) == expected[:5]  # the first tier exactly fills it
    for size in (1, 25):  # the exact id first, alone on its page or not
        assert await found(store, people.ann, "4007", page_size=size) == ["4007", "4009"][:size]
    assert await found(store, people.ann, bird, descending=False) == expected[::-1]


async def test_a_term_the_parser_splits_is_counted_as_it_is_listed(store: Store, people: People) -> None:
    # PostgreSQL's parser splits 'ab²c' into the phrase 'ab' <-> 'c', which its scope-keyed index (no positions)
    # cannot match: whatever a backend finds for it, its total counts exactly the rows it lists.
    assert (await import_lines(store, [ticket("5001", "Heron ab²c nest")], strict=True)).errors == []
    for size in (1, 25):
        page = await search(store, people.ann, "heron ab²c", page_size=size)
        assert page.total == len(page.items) == len(await found(store, people.ann, "heron ab²c"))

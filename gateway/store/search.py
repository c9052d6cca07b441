"""Ticket search: a visitor's words turned into a safe FTS5 query, and each result's one snippet cut between words.

The index (schema migration 2, table ``ticket_search``) holds one row per ticket:
title, description, ticket id and ``replies``, the ticket's public replies joined
by :data:`PART_SEPARATOR`, and (migration 7) ``scope``, the ticket's scope key as a
token. Internal notes are never in it. Snippets wrap each matched term in
:data:`MARK_START` … :data:`MARK_END`, control characters no indexed text contains
(the index blanks them), so a page can HTML-escape a snippet first and then turn
the markers into ``<mark>`` and ``</mark>``.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping

MARK_START = "\x02"
MARK_END = "\x03"
ELLIPSIS = "…"
PART_SEPARATOR = "\x1e"
# Blanked in every indexed text by schema migration 2 (once the cut mark of FTS5's snippet()); still reserved so
# that clean() mirrors the migration's SQL.
CUT = "\x04"
# How long a snippet is, about: some twenty words.
SNIPPET_CHARS = 140
# Characters the index blanks in everything it stores; must match _clean() in schema migration 2.
RESERVED = (MARK_START, MARK_END, CUT, PART_SEPARATOR)

TEXT_COLUMNS = "{title description ticket_id replies}"
"""The index's columns a visitor's words may match: all but ``scope``, the scope key tokens."""

# SECURITY: bounds on the work one query can ask of the index (a 10 KB query is cut, not run).
MAX_QUERY_CHARS = 1_000
MAX_TERMS = 8
MAX_TERM_CHARS = 64
# Shorter words match only whole words: a one-letter prefix would expand to most of the vocabulary.
MIN_PREFIX_CHARS = 2


def _word_char(char: str) -> bool:
    # unicode61 keeps letters, numbers and private-use characters in tokens; everything else separates.
    return char.isalnum() or unicodedata.category(char) == "Co"


def search_terms(text: str | None) -> tuple[str, ...]:
    """The distinct words of a visitor's query, in order: at most MAX_TERMS, each at most MAX_TERM_CHARS."""
    if not text:
        return ()
    terms: dict[str, str] = {}
    word: list[str] = []
    for char in (*text[:MAX_QUERY_CHARS], " "):
        if _word_char(char):
            word.append(char)
            continue
        if word:
            term = "".join(word)[:MAX_TERM_CHARS]
            terms.setdefault(term.casefold(), term)
            word.clear()
            if len(terms) == MAX_TERMS:
                break
    return tuple(terms.values())


def _phrases(terms: tuple[str, ...], whole: Mapping[str, str]) -> list[str]:
    """Each term as an FTS5 phrase: the one indexed word it is a prefix of, else a prefix (a whole word if short)."""
    return [
        f'"{whole[term]}"' if term in whole else f'"{term}"*' if len(term) >= MIN_PREFIX_CHARS else f'"{term}"'
        for term in terms
    ]


def fts_query(text: str | None, whole: Mapping[str, str] | None = None) -> str | None:
    """An FTS5 query matching tickets that hold every word of ``text`` (as a word prefix); None if it has none.

    ``whole`` maps a term to the one indexed word it is a prefix of: that term is asked for as that word,
    which matches the same instances (and so highlights the same) without expanding a prefix.
    SECURITY: every term is only letters and digits, quoted as an FTS5 string, so
    nothing a visitor types (quotes, AND/OR/NOT/NEAR, ``*``, ``^``, ``column:``,
    parentheses) is ever read as FTS5 syntax.
    """
    terms = search_terms(text)
    if not terms:
        return None
    # SECURITY: the words match the text columns only, never the scope key tokens (schema migration 7).
    return f"{TEXT_COLUMNS} : ({' AND '.join(_phrases(terms, whole or {}))})"


def fts_any(text: str | None, columns: str, whole: Mapping[str, str] | None = None) -> str | None:
    """An FTS5 query matching tickets that hold any word of ``text`` in ``columns`` (a column filter such as
    ``{title ticket_id}``): a relevance tier. None if ``text`` has no word. Quoted as in :func:`fts_query`."""
    terms = search_terms(text)
    if not terms:
        return None
    return f"{columns} : ({' OR '.join(_phrases(terms, whole or {}))})"


def clean(text: str) -> str:
    """``text`` as the index stores it: the reserved control characters blanked (mirrors the migration's SQL)."""
    for char in RESERVED:
        text = text.replace(char, " ")
    return text


def _marked_spans(marked: str) -> tuple[str, list[tuple[int, int]]]:
    """``marked`` without its markers, and the (start, end) of each marked run in that plain text.

    A mark left open is closed at the end and a stray closing mark is ignored, so any input gives balanced spans.
    """
    plain: list[str] = []
    spans: list[tuple[int, int]] = []
    opened: int | None = None
    length = 0
    for char in marked:
        if char == MARK_START:
            opened = length if opened is None else opened
        elif char == MARK_END:
            if opened is not None and length > opened:
                spans.append((opened, length))
            opened = None
        else:
            plain.append(char)
            length += 1
    if opened is not None and length > opened:
        spans.append((opened, length))
    return "".join(plain), spans


def unmarked(marked: str) -> str:
    """``marked`` without its markers: the text as stored."""
    return marked.replace(MARK_START, "").replace(MARK_END, "")


def _marked_terms(marked: str) -> frozenset[str]:
    """The distinct marked words of ``marked``, case-folded: how many of the query's terms a text shows."""
    plain, spans = _marked_spans(marked)
    return frozenset(plain[start:end].casefold() for start, end in spans)


def _window(plain: str, low: int, high: int, match: tuple[int, int], limit: int) -> tuple[int, int]:
    """The ``plain[start:end]`` to show: about ``limit`` characters around ``match``, cut between words."""

    def word_start(i: int) -> bool:
        return not plain[i].isspace() and (i == low or plain[i - 1].isspace())

    def word_end(i: int) -> bool:
        return not plain[i - 1].isspace() and (i == high or plain[i].isspace())

    first_start, first_end = match
    # About a third of the window before the match, the rest after it (where its sentence goes on).
    wanted = max(low, min(first_start - limit // 3, high - limit))
    start = next((i for i in range(wanted, first_start + 1) if word_start(i)), None)
    if start is None:  # the match's own word begins before the wanted start: from there
        start = next((i for i in range(first_start, low - 1, -1) if word_start(i)), low)
    end = next((i for i in range(min(high, start + limit), start, -1) if word_end(i)), start)
    if end < first_end:  # the match's whole word, however long
        end = next((i for i in range(first_end, high + 1) if word_end(i)), high)
    if end - start > 2 * limit:  # one enormous word: cut inside it, around the match
        start = max(start, first_start - limit // 3)
        end = min(end, start + limit)
    return start, end


def excerpt(marked: str, limit: int = SNIPPET_CHARS) -> str:
    """``marked`` (a text with its matches between the markers) cut to about ``limit`` characters around
    its first match, at word boundaries, with an ellipsis on a side only where text was left out there.

    A text that fits is returned whole (without its outer whitespace). Only a single word longer than
    twice the window (a run with no space in it) is cut inside.
    """
    plain, spans = _marked_spans(marked)
    low = len(plain) - len(plain.lstrip())
    high = len(plain.rstrip())
    if high - low <= limit:
        start, end = low, high
    else:
        start, end = _window(plain, low, high, spans[0] if spans else (low, low), limit)
    pieces = [ELLIPSIS] if start > low else []
    at = start
    for span_start, span_end in spans:
        span_start, span_end = max(span_start, start), min(span_end, end)
        if span_start >= span_end:
            continue
        pieces += [plain[at:span_start], MARK_START, plain[span_start:span_end], MARK_END]
        at = span_end
    pieces.append(plain[at:end])
    if end < high:
        pieces.append(ELLIPSIS)
    return "".join(pieces)


def best_reply(marked_replies: str) -> tuple[int, str]:
    """The reply of a highlighted ``replies`` column showing the most distinct terms (the earliest of equals),
    as (its position among the :data:`PART_SEPARATOR`-joined replies, its highlighted text)."""
    replies = marked_replies.split(PART_SEPARATOR)
    counts = [len(_marked_terms(reply)) for reply in replies]
    index = counts.index(max(counts))
    return index, replies[index]

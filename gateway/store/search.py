"""Ticket search: a visitor's words turned into a safe FTS5 query, and snippets traced back to their reply.

The index (schema migration 2, table ``ticket_search``) holds one row per ticket:
title, description, ticket id and ``replies``, the ticket's public replies joined
by :data:`PART_SEPARATOR`. Internal notes are never in it. Snippets wrap each
matched term in :data:`MARK_START` … :data:`MARK_END`, control characters no
indexed text contains (the index blanks them), so a page can HTML-escape a
snippet first and then turn the markers into ``<mark>`` and ``</mark>``.
"""

from __future__ import annotations

import unicodedata

MARK_START = "\x02"
MARK_END = "\x03"
ELLIPSIS = "…"
PART_SEPARATOR = "\x1e"
# What snippet() writes where it cut the text; a control character so it cannot be confused with text.
CUT = "\x04"
# Characters the index blanks in everything it stores; must match _clean() in schema migration 2.
RESERVED = (MARK_START, MARK_END, CUT, PART_SEPARATOR)

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


def fts_query(text: str | None) -> str | None:
    """An FTS5 query matching tickets that hold every word of ``text`` (as a word prefix); None if it has none.

    SECURITY: every term is only letters and digits, quoted as an FTS5 string, so
    nothing a visitor types (quotes, AND/OR/NOT/NEAR, ``*``, ``^``, ``column:``,
    parentheses) is ever read as FTS5 syntax.
    """
    terms = search_terms(text)
    if not terms:
        return None
    return " AND ".join(f'"{term}"*' if len(term) >= MIN_PREFIX_CHARS else f'"{term}"' for term in terms)


def clean(text: str) -> str:
    """``text`` as the index stores it: the reserved control characters blanked (mirrors the migration's SQL)."""
    for char in RESERVED:
        text = text.replace(char, " ")
    return text


def finish(snippet: str) -> str:
    """A snippet as callers get it: the cut marks made ellipses."""
    return snippet.replace(CUT, ELLIPSIS)


def locate_reply(snippet: str, replies: str) -> tuple[int, str] | None:
    """Which reply a ``snippet()`` of the ``replies`` column falls in, and the snippet cut to that reply.

    Returns the reply's position among the column's :data:`PART_SEPARATOR`-joined
    replies, or None when the snippet's text is not in the column (it always is,
    unless the index and the snippet disagree).
    """
    cut_before, cut_after = snippet.startswith(CUT), snippet.endswith(CUT)
    body = snippet[1 if cut_before else 0 : -1 if cut_after else None]
    plain = body.replace(MARK_START, "").replace(MARK_END, "")
    start = replies.find(plain)
    if start < 0 or not plain:
        return None
    first_mark = body.find(MARK_START)
    hit = body[:first_mark].count(PART_SEPARATOR) if first_mark >= 0 else 0
    pieces = body.split(PART_SEPARATOR)
    piece = pieces[hit]
    # A highlighted phrase may straddle two replies: close or reopen its mark at the cut.
    opened_before = sum(p.count(MARK_START) - p.count(MARK_END) for p in pieces[:hit])
    if opened_before > 0:
        piece = MARK_START + piece
    if piece.count(MARK_START) > piece.count(MARK_END):
        piece += MARK_END
    if hit > 0 or cut_before:
        piece = CUT + piece
    if hit < len(pieces) - 1 or cut_after:
        piece += CUT
    return replies.count(PART_SEPARATOR, 0, start) + hit, piece

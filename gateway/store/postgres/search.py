"""Ticket search for PostgreSQL: a visitor's words as safe ``to_tsquery`` text, and the weights that tell
a match's relevance tier and its snippet's field.

``tickets.search`` (schema migration 2) weighs the title A, the ticket id B, the description C and the
public replies D. SECURITY: every term comes from :func:`gateway.store.search.search_terms` (letters and
digits only) and is quoted, so nothing a visitor types (``&``, ``|``, ``!``, ``<->``, ``:*``, quotes,
parentheses) is read as tsquery syntax.
"""

from __future__ import annotations

from gateway.store.search import MARK_END, MARK_START, MIN_PREFIX_CHARS, search_terms
from gateway.store.visibility import SCOPE, SHOWN

HEADLINE_OPTIONS = f"HighlightAll=true, StartSel={MARK_START}, StopSel={MARK_END}"
"""ts_headline marks every match of the whole text; ``excerpt()`` then cuts the snippet, as for SQLite."""
FIRST_TIER = f"portal_first_scoped(t.search, {SCOPE}, {SHOWN})"
"""A ticket ``t``'s title and ticket id lexemes (the first tier of relevance) behind its scope key, none where no
visitor may see it: the expression schema migration 10 indexes (tickets_scoped_first), so the planner reads it."""


def _term(term: str, weights: str = "") -> str:
    prefix = "*" if len(term) >= MIN_PREFIX_CHARS else ""
    return f"'{term}'" + (f":{prefix}{weights}" if prefix or weights else "")


def ts_match(text: str | None) -> str | None:
    """A tsquery matching tickets that hold every word of ``text`` (as a word prefix); None if it has none."""
    terms = search_terms(text)
    return " & ".join(map(_term, terms)) if terms else None


def ts_any(text: str | None, weights: str) -> str:
    """A tsquery matching any word of ``text`` in the fields of ``weights`` (A title, B id, C description)."""
    return " | ".join(_term(term, weights) for term in search_terms(text))

"""Search snippets as safe HTML, for the Preview column and the API."""

from __future__ import annotations

from markupsafe import Markup, escape

from gateway.store.search import MARK_END, MARK_START


def highlight(snippet: str) -> Markup:
    """Everything escaped; then only the store's own markers become ``<mark>``."""
    escaped = str(escape(snippet))
    return Markup(escaped.replace(MARK_START, "<mark>").replace(MARK_END, "</mark>"))  # noqa: S704 (escaped above)

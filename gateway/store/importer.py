"""``portal-gateway import FILE``: companies, contacts, ticket states and tickets from JSON lines.

One object per line, told apart by ``kind``::

    {"kind": "company", "company_id": "acme", "name": "Acme", "plan": "pro", "size": 40, "monthly_spend": 990}
    {"kind": "contact", "user_id": "u-1", "email": "ann@acme.example", "name": "Ann", "companies": ["acme"]}
    {"kind": "ticket_state", "category": "in_progress", "internal_label": "Investigating",
     "external_label": "In progress"}
    {"kind": "ticket", "ticket_id": "1001", "type": "Bug report", "state": "Investigating", "category": "Customer",
     "is_shared": false, "company": "acme", "creator": "u-1", "title": "Export fails", "description": "...",
     "created_at": 1767225600, "updated_at": 1767312000,
     "parts": [{"author": "u-1", "body": "Any news?", "public": true, "created_at": 1767300000},
               {"author_name": "Sam (support)", "body": "Looking at logs", "public": false, "created_at": 1767301000}],
     "participants": ["u-1"]}

Companies and contacts are upserted by their external ids; a ticket's type is
created by name when new; its state is named by ``internal_label`` and must
exist. A ticket already in the store is matched by ``ticket_id``: when the line
says the same of it (type, state, category, sharing, company, creator, title,
description, creation time) only its parts and participants not there yet are
added, so importing a file again changes nothing; a line that says otherwise is
refused and the stored ticket kept (the admin API may have changed it since, and
an old export must not silently undo that). Each line is written in its own
transaction: a bad line is reported with its number and reason and nothing of
it is written.

Lines are read and validated here (their models are in ``lines.py``) and written
by the store (``Store.import_lines``), so every backend runs this same importer.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field

from pydantic import ValidationError

from gateway.store.lines import (
    LINE,
    CompanyLine,
    ContactLine,
    Line,
    LineError,
    PartLine,
    StateLine,
    TicketLine,
)
from gateway.store.protocol import ImportMode, Store

__all__ = [
    "CompanyLine",
    "ContactLine",
    "ImportReport",
    "Line",
    "LineError",
    "PartLine",
    "StateLine",
    "TicketLine",
    "import_lines",
    "parse_line",
]


@dataclass
class ImportReport:
    """What an import did: lines written, and each refused line with its reason."""

    written: int = 0
    errors: list[tuple[int, str]] = field(default_factory=list)


def parse_line(text: str) -> Line:
    """Validate one JSON line; ValueError names the field and the reason."""
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON ({exc.msg} at column {exc.colno})") from None
    try:
        return LINE.validate_python(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise ValueError(f"{where}: {first['msg']}" if where else str(first["msg"])) from None


async def import_lines(store: Store, lines: Iterable[str], *, strict: bool = False) -> ImportReport:
    """Import every line in its own transaction; ``strict``: all lines in one, refused whole at the first error."""
    numbered = [(number, text) for number, text in enumerate(lines, start=1) if text.strip()]
    parsed: list[tuple[int, Line]] = []
    errors: list[tuple[int, str]] = []
    for number, text in numbered:
        try:
            parsed.append((number, parse_line(text)))
        except ValueError as exc:
            errors.append((number, str(exc)))
    # Strict: every parsed line is still tried, so each bad one is reported; a line that did not parse
    # already refuses the file, so then the store only checks the others and keeps nothing.
    mode: ImportMode = "each" if not strict else "check" if errors else "all"
    errors = sorted([*errors, *await store.import_lines(parsed, mode=mode)])
    written = len(numbered) - len(errors) if not strict else 0 if errors else len(numbered)
    return ImportReport(written, errors)

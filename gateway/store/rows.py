"""The SQL both backends state alike (``?`` placeholders) for summaries, companies and admin tickets, and
the models each of its rows becomes: one text, one reading, whichever driver handed the row over."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any, Protocol, overload

from gateway.store.models import AdminTicket, ChangedTicket, Company, Part, TicketDetail, TicketState, TicketSummary
from gateway.store.visibility import SCOPE

STATE_ORDER = (
    "CASE {category} WHEN 'submitted' THEN 0 WHEN 'in_progress' THEN 1 WHEN 'waiting_on_customer' THEN 2 ELSE 3 END"
)
"""States in workflow order, for the list's sort and the state dropdown alike (``{category}``: the column)."""
SUMMARY_COLUMNS = """
    t.ticket_id, t.title, ty.name, s.external_label, s.category, c.name, p.name, t.created_at, t.updated_at
"""
"""The columns a :class:`TicketSummary` is read from, in its fields' order (see :func:`summary`)."""
SUMMARY_LOOKUPS = """
    JOIN ticket_types ty ON ty.id = t.type_id
    JOIN ticket_states s ON s.id = t.state_id
    LEFT JOIN companies c ON c.id = t.company_id
    LEFT JOIN contacts p ON p.id = t.creator_id
"""
"""The joins :data:`SUMMARY_COLUMNS` reads through, from tickets ``t``."""
SUMMARY_JOINS = f"FROM tickets t {SUMMARY_LOOKUPS}"
"""The FROM clause of a summary read."""
DETAIL_SELECT = f"SELECT {SUMMARY_COLUMNS}, t.description, t.conversation_id {SUMMARY_JOINS}"
"""A ticket's detail (see :func:`ticket_detail`); a WHERE clause follows."""
CHANGED_SELECT = (
    f"SELECT {SUMMARY_COLUMNS}, t.description, t.conversation_id, t.category, t.is_shared, {SCOPE}, t.creator_id"
    f" {SUMMARY_JOINS} WHERE t.ticket_id = ?"
)
"""A changed ticket by its customer-facing id, no visibility applied (see :func:`changed_ticket`)."""
PUBLIC_PARTS = (
    "SELECT author_name, body, created_at, author_contact_id IS NULL FROM conversation_parts"
    " WHERE conversation_id = ? AND is_public = 1 ORDER BY created_at, id"
)
"""The public parts of the conversation ``?``, oldest first (see :func:`ticket_detail`)."""
PARTICIPANT = "SELECT 1 FROM participants WHERE conversation_id = ? AND contact_id = ?"
"""A row when the contact takes part in the conversation."""
TICKET_SELECT = """
    SELECT t.id, t.ticket_id, t.title, t.description, ty.name, s.internal_label, s.external_label, s.category,
        t.category, t.is_shared, c.company_id, p.user_id, t.created_at, t.updated_at, t.conversation_id, s.id
    FROM tickets t
    JOIN ticket_types ty ON ty.id = t.type_id
    JOIN ticket_states s ON s.id = t.state_id
    LEFT JOIN companies c ON c.id = t.company_id
    JOIN contacts p ON p.id = t.creator_id
"""
"""The admin API's read of tickets, every field (see :func:`admin_ticket`); a WHERE clause follows."""


class Row(Protocol):
    """A row as either driver hands it over (a tuple, an asyncpg Record): its columns by position."""

    @overload
    def __getitem__(self, index: int, /) -> Any: ...
    @overload
    def __getitem__(self, index: slice, /) -> Sequence[Any]: ...


def summary(row: Row) -> TicketSummary:
    """The summary from a row starting with :data:`SUMMARY_COLUMNS`."""
    return TicketSummary(*row[:9])


def ticket_detail(row: Row, parts: Iterable[Row], participant: bool) -> TicketDetail:
    """The detail from a row of :data:`DETAIL_SELECT` and the rows of its :data:`PUBLIC_PARTS`."""
    return TicketDetail(
        summary=summary(row),
        description=row[9],
        conversation_id=row[10],
        parts=tuple(Part(part[0], part[1], part[2], bool(part[3])) for part in parts),
        participant=participant,
    )


def changed_ticket(row: Row, parts: Iterable[Row]) -> ChangedTicket:
    """The changed ticket from a row of :data:`CHANGED_SELECT` and the rows of its :data:`PUBLIC_PARTS`."""
    return ChangedTicket(ticket_detail(row, parts, False), row[11], bool(row[12]), int(row[13]), int(row[14]))


def company(row: Row) -> Company:
    """The company from a row of its id, company_id, name, plan, size, monthly_spend and custom_attributes."""
    return Company(row[0], row[1], row[2], row[3], row[4], row[5], json.loads(row[6]))


def admin_ticket(row: Row) -> AdminTicket:
    """The admin API's ticket from a row of :data:`TICKET_SELECT`."""
    return AdminTicket(
        ticket_id=row[1],
        title=row[2],
        ticket_type=row[4],
        state=TicketState(row[15], row[7], row[5], row[6]),
        category=row[8],
        is_shared=bool(row[9]),
        company_id=row[10],
        creator=row[11],
        created_at=row[12],
        updated_at=row[13],
    )

"""Visibility and the list's filters as SQL: the one clause builder every backend's store uses.

The clauses take ``?`` placeholders and name the tickets table ``t``; the PostgreSQL store numbers the
placeholders (``$1``, ...) as it sends them. Flags are 0/1 integers in both schemas, so the text is the same.
"""

from __future__ import annotations

from typing import Any

from gateway.store.models import TicketFilter, TicketQuery


def visible_clause(visible: TicketFilter) -> tuple[str, list[Any]]:
    """The WHERE clause of everything a visitor may see: shared tickets of their companies, maybe only their own.

    SECURITY: the one place visibility becomes SQL. Tracker tickets and unshared
    Back-office tickets never match; a visitor with no company and no contact
    matches nothing (deny by default).
    """
    # A ticket's scope key is its company, or minus its creator when it has no company (company ids are
    # positive, so the two never meet); one IN over that key, served by the tickets_by_scope index.
    keys: list[Any] = sorted(visible.company_ids)
    if visible.contact_id is not None:
        keys.append(-visible.contact_id)
    in_scope = f"coalesce(t.company_id, -t.creator_id) IN ({','.join('?' * len(keys))})" if keys else "FALSE"
    clause = f"(t.category = 'Customer' OR (t.category = 'Back-office' AND t.is_shared = 1)) AND {in_scope}"
    params = keys
    if visible.own_only:
        clause += " AND t.creator_id = ?"
        params.append(visible.contact_id if visible.contact_id is not None else -1)
    return clause, params


def query_clause(query: TicketQuery) -> tuple[str, list[Any]]:
    """The list's own filters as `` AND ...`` conditions (empty when none), with their parameters."""
    conditions, params = [], []
    for column, value in (
        # Customers see external labels only: a state stands for every state that shares its label.
        (
            "t.state_id IN (SELECT id FROM ticket_states WHERE external_label ="
            " (SELECT external_label FROM ticket_states WHERE id = ?))",
            query.state_id,
        ),
        ("t.type_id = ?", query.type_id),
        ("t.creator_id = ?", query.creator_id),
        ("t.created_at >= ?", query.created_after),
        ("t.created_at < ?", query.created_before),
        ("t.updated_at >= ?", query.updated_after),
        ("t.updated_at < ?", query.updated_before),
    ):
        if value is not None:
            conditions.append(column)
            params.append(value)
    return "".join(f" AND {condition}" for condition in conditions), params

"""Visibility and the list's filters as SQL: the one clause builder every backend's store uses.

The clauses take ``?`` placeholders and name the tickets table ``t``; the PostgreSQL store numbers the
placeholders (``$1``, ...) as it sends them. Flags are 0/1 integers in both schemas, so the text is the same.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from gateway.store.models import ChangedTicket, TicketFilter, TicketQuery

SHOWN = "(t.category = 'Customer' OR (t.category = 'Back-office' AND t.is_shared = 1))"
"""The categories a visitor may ever see. SECURITY: ticket_scope_counts (both schemas) counts exactly these."""
SCOPE = "coalesce(t.company_id, -t.creator_id)"
"""A ticket's scope key (see scope_keys)."""


def scope_keys(visible: TicketFilter) -> list[Any]:
    """The visitor's scope keys: their companies, and minus their contact id (their company-less tickets)."""
    # A ticket's scope key is its company, or minus its creator when it has no company (company ids are
    # positive, so the two never meet): the leading column of the tickets_by_scope_update index.
    keys: list[Any] = sorted(visible.company_ids)
    if visible.contact_id is not None:
        keys.append(-visible.contact_id)
    return keys


def fts_scope(visible: TicketFilter) -> str | None:
    """The FTS5 query of the visitor's scope keys in ticket_search's ``scope`` column; None without a key.

    The tokens are SQLite's migration 7's: ``k1`` for company 1, ``kn7`` for contact 7's company-less tickets.
    """
    keys = scope_keys(visible)
    if not keys:
        return None
    return "scope : (" + " OR ".join(f'"k{str(key).replace("-", "n")}"' for key in keys) + ")"


def _own(visible: TicketFilter, column: str) -> tuple[str, list[Any]]:
    """`` AND column = ?`` for a visitor who sees only the tickets they created (nothing without a contact)."""
    if not visible.own_only:
        return "", []
    return f" AND {column} = ?", [visible.contact_id if visible.contact_id is not None else -1]


def visible_clause(visible: TicketFilter) -> tuple[str, list[Any]]:
    """The WHERE clause of everything a visitor may see: shared tickets of their companies, maybe only their own.

    SECURITY: the one place visibility becomes SQL. Tracker tickets and unshared
    Back-office tickets never match; a visitor with no company and no contact
    matches nothing (deny by default).
    """
    keys = scope_keys(visible)
    in_scope = f"{SCOPE} IN ({','.join('?' * len(keys))})" if keys else "FALSE"
    own, own_params = _own(visible, "t.creator_id")
    return f"{SHOWN} AND {in_scope}{own}", [*keys, *own_params]


def shows_scope(visible: TicketFilter, scope: int | None, creator_id: int | None) -> bool:
    """Whether visible_clause() matched a shown ticket with this scope key and creator: for a ticket no longer there
    to match it (a "removed" change). SECURITY: the same keys and the same own-only rule as the SQL; nothing known,
    nothing shown."""
    if scope is None or creator_id is None:
        return False
    if visible.own_only and creator_id != visible.contact_id:  # without a contact: no creator is theirs
        return False
    return scope in scope_keys(visible)


def shows_ticket(visible: TicketFilter, ticket: ChangedTicket) -> bool:
    """Whether visible_clause() matches this ticket, decided without the store: one read of a change for every
    visitor. SECURITY: SHOWN's categories, then the same keys and own-only rule as the SQL (shows_scope); any other
    category, nothing shown."""
    shown = ticket.category == "Customer" or (ticket.category == "Back-office" and ticket.is_shared)
    return shown and shows_scope(visible, ticket.scope, ticket.creator_id)


def visible_arms(visible: TicketFilter) -> list[tuple[str, list[Any]]]:
    """visible_clause's set cut by scope key: one clause per key, whose union is exactly that set.

    A list ordered and limited inside each arm walks that key's stretch of tickets_by_scope_update in the
    list's order and stops at the limit, where one IN over all the keys reads and sorts every visible ticket.
    No key: one arm that matches nothing (deny by default).
    """
    own, own_params = _own(visible, "t.creator_id")
    return [(f"{SHOWN} AND {SCOPE} = ?{own}", [key, *own_params]) for key in scope_keys(visible)] or [("FALSE", [])]


def _counted(visible: TicketFilter, query: TicketQuery | None = None) -> tuple[str, list[Any]]:
    """The WHERE of the visitor's rows of ticket_scope_counts (narrowed to ``query``'s creator and type)."""
    keys = scope_keys(visible)
    in_scope = f"scope IN ({','.join('?' * len(keys))})" if keys else "FALSE"
    conditions, params = _own(visible, "creator_id")
    for column, value in (("creator_id", query and query.creator_id), ("type_id", query and query.type_id)):
        if value is not None:
            conditions += f" AND {column} = ?"
            params.append(value)
    return f"{in_scope}{conditions} AND tickets > 0", [*keys, *params]


def page_sql(visible: TicketFilter, query: TicketQuery, order: str) -> tuple[str, list[Any]]:
    """A SELECT of the ids (``page_id``) among which the (unsearched) list's page lies, and its parameters.

    ``order`` is the backend's ORDER BY for the list's sort (over ``t``, ``ty`` and ``s``). Each arm of
    :func:`visible_arms` is ordered and limited to the page's end on its own; the caller orders their
    union again and cuts the page out of it.
    """
    extra, extra_params = query_clause(query)
    end = query.page * query.page_size
    arms, params = [], []
    for number, (clause, arm_params) in enumerate(visible_arms(visible)):
        arms.append(
            "SELECT page_id FROM (SELECT t.id AS page_id FROM tickets t JOIN ticket_types ty ON ty.id = t.type_id"  # noqa: S608
            f" JOIN ticket_states s ON s.id = t.state_id WHERE {clause}{extra} ORDER BY {order} LIMIT ?) AS arm{number}"
        )
        params += [*arm_params, *extra_params, end]
    return " UNION ALL ".join(arms), params


def count_sql(visible: TicketFilter, query: TicketQuery) -> tuple[str, list[Any]]:
    """The SQL of how many tickets the (unsearched) list holds, and its parameters.

    Filtered by creator and type at most, the sum of the visitor's rows of ticket_scope_counts (a row per
    key, creator and type, however many tickets); else a count of the visible tickets that pass the filters.
    """
    if query_clause(replace(query, creator_id=None, type_id=None))[0]:
        where, params = visible_clause(visible)
        extra, extra_params = query_clause(query)
        return f"SELECT count(*) FROM tickets t WHERE {where}{extra}", [*params, *extra_params]  # noqa: S608
    where, params = _counted(visible, query)
    return f"SELECT coalesce(sum(tickets), 0) FROM ticket_scope_counts WHERE {where}", params  # noqa: S608


def counted_sql(visible: TicketFilter, column: str) -> tuple[str, list[Any]]:
    """A SELECT of ``column`` (creator_id or type_id) of every ticket the visitor may see, and its parameters."""
    where, params = _counted(visible)
    return f"SELECT {column} FROM ticket_scope_counts WHERE {where}", params  # noqa: S608


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

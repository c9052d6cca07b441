"""Writes to the store, as plain functions on a connection; callers own the transaction."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from typing import Any


def upsert_company(
    connection: sqlite3.Connection,
    company_id: str,
    name: str,
    plan: str | None = None,
    size: int | None = None,
    monthly_spend: float | None = None,
    custom_attributes: dict[str, Any] | None = None,
) -> int:
    """Insert or update the company with that external id; return its row id."""
    row = connection.execute(
        "INSERT INTO companies (company_id, name, plan, size, monthly_spend, custom_attributes)"
        " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (company_id) DO UPDATE SET name = excluded.name,"
        " plan = excluded.plan, size = excluded.size, monthly_spend = excluded.monthly_spend,"
        " custom_attributes = excluded.custom_attributes RETURNING id",
        (company_id, name, plan, size, monthly_spend, json.dumps(custom_attributes or {})),
    ).fetchone()
    return int(row[0])


def upsert_contact(
    connection: sqlite3.Connection,
    user_id: str,
    email: str | None = None,
    name: str | None = None,
    custom_attributes: dict[str, Any] | None = None,
) -> int:
    """Insert or update the contact with that external user id; return its row id."""
    row = connection.execute(
        "INSERT INTO contacts (user_id, email, name, custom_attributes) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (user_id) DO UPDATE SET email = excluded.email, name = excluded.name,"
        " custom_attributes = excluded.custom_attributes RETURNING id",
        (user_id, email, name, json.dumps(custom_attributes or {})),
    ).fetchone()
    return int(row[0])


def set_remote_id(connection: sqlite3.Connection, table: str, row_id: int, remote_id: str | None) -> None:
    """Record Intercom's id for the row of ``table`` (companies, contacts), when the line gave one."""
    if remote_id is not None:
        connection.execute(f"UPDATE {table} SET remote_id = ? WHERE id = ?", (remote_id, row_id))  # noqa: S608 (ours)


def set_remote_ticket(
    connection: sqlite3.Connection, conversation_id: int, remote_id: str | None, remote_conversation: str | None
) -> None:
    """Record Intercom's ids for the ticket of this conversation and for its linked conversation, when given."""
    if remote_id is not None or remote_conversation is not None:
        connection.execute(
            "UPDATE tickets SET remote_id = ?, remote_conversation = ? WHERE conversation_id = ?",
            (remote_id, remote_conversation, conversation_id),
        )


def set_memberships(connection: sqlite3.Connection, contact_id: int, company_ids: Iterable[int]) -> None:
    """Make the contact a member of exactly these companies."""
    connection.execute("DELETE FROM memberships WHERE contact_id = ?", (contact_id,))
    connection.executemany(
        "INSERT INTO memberships (contact_id, company_id) VALUES (?, ?)",
        [(contact_id, company_id) for company_id in dict.fromkeys(company_ids)],
    )


def upsert_ticket_state(connection: sqlite3.Connection, category: str, internal_label: str, external_label: str) -> int:
    """Insert or update the state with that internal label; return its row id."""
    row = connection.execute("SELECT id FROM ticket_states WHERE internal_label = ?", (internal_label,)).fetchone()
    if row:
        connection.execute(
            "UPDATE ticket_states SET category = ?, external_label = ? WHERE id = ?", (category, external_label, row[0])
        )
        return int(row[0])
    cursor = connection.execute(
        "INSERT INTO ticket_states (category, internal_label, external_label) VALUES (?, ?, ?)",
        (category, internal_label, external_label),
    )
    return int(cursor.lastrowid or 0)


def ticket_type_id(connection: sqlite3.Connection, name: str) -> int:
    """The id of the ticket type with that name, created when new."""
    row = connection.execute(
        "INSERT INTO ticket_types (name) VALUES (?) ON CONFLICT (name) DO UPDATE SET name = excluded.name RETURNING id",
        (name,),
    ).fetchone()
    return int(row[0])


def add_ticket(
    connection: sqlite3.Connection,
    *,
    ticket_id: str,
    type_id: int,
    state_id: int,
    category: str,
    is_shared: bool,
    company_id: int | None,
    creator_id: int,
    title: str,
    description: str,
    created_at: int,
    updated_at: int,
) -> int:
    """Insert a ticket with a new linked conversation; return the conversation id."""
    conversation = int(connection.execute("SELECT coalesce(max(conversation_id), 0) + 1 FROM tickets").fetchone()[0])
    connection.execute(
        "INSERT INTO tickets (ticket_id, type_id, state_id, category, is_shared, company_id, creator_id, title,"
        " description, created_at, updated_at, conversation_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            ticket_id,
            type_id,
            state_id,
            category,
            int(is_shared),
            company_id,
            creator_id,
            title,
            description,
            created_at,
            updated_at,
            conversation,
        ),
    )
    return conversation


def add_part(
    connection: sqlite3.Connection,
    conversation_id: int,
    author_contact_id: int | None,
    author_name: str,
    body: str,
    public: bool,
    created_at: int,
    *,
    once: bool = False,
) -> None:
    """Append a public reply or an internal note to a conversation; ``once``: unless it holds this very part."""
    values = (conversation_id, author_contact_id, author_name, body, int(public), created_at)
    # ``once`` is for an import read again: the same part, by the same author at the same time, is not added twice.
    unless_there = (
        " WHERE NOT EXISTS (SELECT 1 FROM conversation_parts WHERE conversation_id = ? AND author_contact_id IS ?"
        " AND author_name = ? AND body = ? AND is_public = ? AND created_at = ?)"
    )
    connection.execute(
        "INSERT INTO conversation_parts (conversation_id, author_contact_id, author_name, body, is_public, created_at)"
        " SELECT ?, ?, ?, ?, ?, ?" + (unless_there if once else ""),
        values * 2 if once else values,
    )


def add_participant(connection: sqlite3.Connection, conversation_id: int, contact_id: int) -> None:
    """Make the contact a participant of the conversation (idempotent)."""
    connection.execute(
        "INSERT OR IGNORE INTO participants (conversation_id, contact_id) VALUES (?, ?)", (conversation_id, contact_id)
    )

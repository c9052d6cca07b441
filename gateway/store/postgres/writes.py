"""Writes to the PostgreSQL store, as async functions on one connection; callers own the transaction.

The same writes as ``gateway/store/sqlite/writes.py``, in PostgreSQL's SQL.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from gateway.store.postgres.db import Sql


async def upsert_company(
    sql: Sql,
    company_id: str,
    name: str,
    plan: str | None = None,
    size: int | None = None,
    monthly_spend: float | None = None,
    custom_attributes: dict[str, Any] | None = None,
) -> int:
    """Insert or update the company with that external id; return its row id."""
    return int(
        await sql.value(
            "INSERT INTO companies (company_id, name, plan, size, monthly_spend, custom_attributes)"
            " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (company_id) DO UPDATE SET name = excluded.name,"
            " plan = excluded.plan, size = excluded.size, monthly_spend = excluded.monthly_spend,"
            " custom_attributes = excluded.custom_attributes RETURNING id",
            company_id,
            name,
            plan,
            size,
            monthly_spend,
            json.dumps(custom_attributes or {}),
        )
    )


async def upsert_contact(
    sql: Sql,
    user_id: str,
    email: str | None = None,
    name: str | None = None,
    custom_attributes: dict[str, Any] | None = None,
) -> int:
    """Insert or update the contact with that external user id; return its row id."""
    return int(
        await sql.value(
            "INSERT INTO contacts (user_id, email, name, custom_attributes) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (user_id) DO UPDATE SET email = excluded.email, name = excluded.name,"
            " custom_attributes = excluded.custom_attributes RETURNING id",
            user_id,
            email,
            name,
            json.dumps(custom_attributes or {}),
        )
    )


async def set_remote_id(sql: Sql, table: str, row_id: int, remote_id: str | None) -> None:
    """Record Intercom's id for the row of ``table`` (companies, contacts), when the line gave one."""
    if remote_id is not None:
        await sql.execute(f"UPDATE {table} SET remote_id = ? WHERE id = ?", remote_id, row_id)  # noqa: S608 (ours)


async def set_remote_ticket(
    sql: Sql, conversation_id: int, remote_id: str | None, remote_conversation: str | None
) -> None:
    """Record Intercom's ids for the ticket of this conversation and for its linked conversation, when given."""
    if remote_id is not None or remote_conversation is not None:
        await sql.execute(
            "UPDATE tickets SET remote_id = ?, remote_conversation = ? WHERE conversation_id = ?",
            remote_id,
            remote_conversation,
            conversation_id,
        )


async def set_memberships(sql: Sql, contact_id: int, company_ids: Iterable[int]) -> None:
    """Make the contact a member of exactly these companies."""
    await sql.execute("DELETE FROM memberships WHERE contact_id = ?", contact_id)
    await sql.many(
        "INSERT INTO memberships (contact_id, company_id) VALUES (?, ?)",
        [(contact_id, company_id) for company_id in dict.fromkeys(company_ids)],
    )


async def upsert_ticket_state(sql: Sql, category: str, internal_label: str, external_label: str) -> int:
    """Insert or update the state with that internal label; return its row id."""
    found = await sql.value("SELECT id FROM ticket_states WHERE internal_label = ? ORDER BY id LIMIT 1", internal_label)
    if found is not None:
        await sql.execute(
            "UPDATE ticket_states SET category = ?, external_label = ? WHERE id = ?", category, external_label, found
        )
        return int(found)
    return int(
        await sql.value(
            "INSERT INTO ticket_states (category, internal_label, external_label) VALUES (?, ?, ?) RETURNING id",
            category,
            internal_label,
            external_label,
        )
    )


async def ticket_type_id(sql: Sql, name: str) -> int:
    """The id of the ticket type with that name, created when new."""
    return int(
        await sql.value(
            "INSERT INTO ticket_types (name) VALUES (?) ON CONFLICT (name) DO UPDATE SET name = excluded.name"
            " RETURNING id",
            name,
        )
    )


async def add_ticket(
    sql: Sql,
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
    # Two writers must not take the same conversation id: the next one is chosen under a transaction lock.
    await sql.execute("SELECT pg_advisory_xact_lock(hashtext('portal_conversation_ids'))")
    conversation = int(await sql.value("SELECT coalesce(max(conversation_id), 0) + 1 FROM tickets"))
    await sql.execute(
        "INSERT INTO tickets (ticket_id, type_id, state_id, category, is_shared, company_id, creator_id, title,"
        " description, created_at, updated_at, conversation_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
    )
    return conversation


async def add_part(
    sql: Sql,
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
        " WHERE NOT EXISTS (SELECT 1 FROM conversation_parts WHERE conversation_id = ?"
        " AND author_contact_id IS NOT DISTINCT FROM ? AND author_name = ? AND body = ? AND is_public = ?"
        " AND created_at = ?)"
    )
    await sql.execute(
        "INSERT INTO conversation_parts (conversation_id, author_contact_id, author_name, body, is_public, created_at)"
        " SELECT ?::bigint, ?::bigint, ?, ?, ?::smallint, ?::bigint" + (unless_there if once else ""),
        *(values * 2 if once else values),
    )


async def add_participant(sql: Sql, conversation_id: int, contact_id: int) -> None:
    """Make the contact a participant of the conversation (idempotent)."""
    await sql.execute(
        "INSERT INTO participants (conversation_id, contact_id) VALUES (?, ?) ON CONFLICT DO NOTHING",
        conversation_id,
        contact_id,
    )

"""The support side of the PostgreSQL store, for the admin API: every record, internal notes included.

Async functions on one :class:`~gateway.store.postgres.db.Sql` connection, run by the caller inside one
transaction (``PostgresStore.transaction``), with the semantics of ``gateway/store/sqlite/support.py``.
SECURITY: nothing here applies visibility; only the store's admin methods call it, and only
``routes/admin.py``, behind the admin token, calls those. Memberships change here and nowhere else.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import asyncpg

from gateway.errors import Conflict, Invalid, Missing
from gateway.policy.associations import company_for_new_ticket, company_for_ticket
from gateway.store.models import (
    COMPANY_FIELDS,
    CONTACT_FIELDS,
    AdminCompany,
    AdminContact,
    AdminPart,
    AdminTicketDetail,
    AdminTicketPage,
    merged_fields,
)
from gateway.store.postgres import writes
from gateway.store.postgres.db import Sql
from gateway.store.postgres.search import ts_match
from gateway.store.rows import TICKET_SELECT, admin_ticket

R = TypeVar("R", AdminCompany, AdminContact)
# Only plain numbers short enough to stay exact integers, as the SQLite store counts them.
_NEXT_TICKET_ID = "SELECT coalesce(max(ticket_id::bigint), 0) + 1 FROM tickets WHERE ticket_id ~ '^[0-9]{1,18}$'"


async def _one(sql: Sql, query: str, key: object, what: str) -> asyncpg.Record:
    row = await sql.row(query, key)
    if row is None:
        raise Missing(f"{what} {key!r} does not exist")
    return row


# --- companies -------------------------------------------------------------------------------------------


async def _company_row(sql: Sql, company_id: str) -> asyncpg.Record:
    return await _one(
        sql,
        "SELECT id, company_id, name, plan, size, monthly_spend, custom_attributes FROM companies WHERE company_id = ?",
        company_id,
        "company",
    )


async def get_company(sql: Sql, company_id: str) -> AdminCompany:
    """A company as the admin API shows it."""
    row = await _company_row(sql, company_id)
    members = await sql.value("SELECT count(*) FROM memberships WHERE company_id = ?", row[0])
    return AdminCompany(row[1], row[2], row[3], row[4], row[5], json.loads(row[6]), int(members))


async def delete_company(sql: Sql, company_id: str) -> None:
    """Delete a company and its memberships; 409 while tickets belong to it (they would lose their company)."""
    row_id = (await _company_row(sql, company_id))[0]
    tickets = await sql.value("SELECT count(*) FROM tickets WHERE company_id = ?", row_id)
    if tickets:
        raise Conflict(f"company {company_id!r} has {tickets} tickets; move them to another company first")
    await sql.execute("DELETE FROM companies WHERE id = ?", row_id)


# --- contacts and memberships ----------------------------------------------------------------------------


async def _contact_row(sql: Sql, user_id: str) -> asyncpg.Record:
    return await _one(
        sql, "SELECT id, user_id, email, name, custom_attributes FROM contacts WHERE user_id = ?", user_id, "contact"
    )


async def member_of(sql: Sql, contact_id: int) -> list[str]:
    """The ``company_id`` of each company the contact belongs to, in order."""
    rows = await sql.fetch(
        "SELECT c.company_id FROM memberships m JOIN companies c ON c.id = m.company_id"
        ' WHERE m.contact_id = ? ORDER BY c.company_id COLLATE "C"',
        contact_id,
    )
    return [row[0] for row in rows]


async def get_contact(sql: Sql, user_id: str) -> AdminContact:
    """A contact with the ``company_id`` of each company they belong to."""
    row = await _contact_row(sql, user_id)
    return AdminContact(row[1], row[2], row[3], json.loads(row[4]), tuple(await member_of(sql, row[0])))


async def delete_contact(sql: Sql, user_id: str) -> None:
    """Delete a contact and their memberships; 409 while tickets or replies are theirs (they would be lost)."""
    row_id = (await _contact_row(sql, user_id))[0]
    created = await sql.value("SELECT count(*) FROM tickets WHERE creator_id = ?", row_id)
    written = await sql.value("SELECT count(*) FROM conversation_parts WHERE author_contact_id = ?", row_id)
    if created or written:
        raise Conflict(f"contact {user_id!r} created {created} tickets and wrote {written} replies; they are kept")
    await sql.execute("DELETE FROM contacts WHERE id = ?", row_id)


@dataclass(frozen=True)
class Kind(Generic[R]):
    """Companies or contacts: their external id, their fields, and how one is written, read and deleted."""

    what: str
    key: str
    fields: tuple[str, ...]
    upsert: Callable[..., Awaitable[int]]
    get: Callable[[Sql, str], Awaitable[R]]

    async def create(self, sql: Sql, fields: Mapping[str, Any]) -> R:
        """Add one (a contact with no company); 409 when its external id is taken."""
        key = fields[self.key]
        try:
            await self.get(sql, key)
        except Missing:
            await self.upsert(sql, **fields)
            return await self.get(sql, key)
        raise Conflict(f"{self.what} {key!r} already exists")

    async def update(self, sql: Sql, key: str, fields: Mapping[str, Any]) -> R:
        """Write ``fields`` over one's current values, custom attributes merged; its external id stays."""
        current = await self.get(sql, key)
        await self.upsert(sql, **merged_fields(current, self.fields, fields))
        return await self.get(sql, key)


COMPANIES = Kind("company", "company_id", COMPANY_FIELDS, writes.upsert_company, get_company)
CONTACTS = Kind("contact", "user_id", CONTACT_FIELDS, writes.upsert_contact, get_contact)


async def add_membership(sql: Sql, user_id: str, company_id: str) -> AdminContact:
    """Make the contact a member of the company (no change if they already are)."""
    contact, company = (await _contact_row(sql, user_id))[0], (await _company_row(sql, company_id))[0]
    await sql.execute(
        "INSERT INTO memberships (contact_id, company_id) VALUES (?, ?) ON CONFLICT DO NOTHING", contact, company
    )
    return await get_contact(sql, user_id)


async def remove_membership(sql: Sql, user_id: str, company_id: str) -> AdminContact:
    """End the contact's membership of the company; 404 when they are not a member."""
    contact, company = (await _contact_row(sql, user_id))[0], (await _company_row(sql, company_id))[0]
    status = await sql.execute("DELETE FROM memberships WHERE contact_id = ? AND company_id = ?", contact, company)
    if status == "DELETE 0":
        raise Missing(f"contact {user_id!r} is not a member of company {company_id!r}")
    return await get_contact(sql, user_id)


# --- tickets ---------------------------------------------------------------------------------------------


async def get_ticket(sql: Sql, ticket_id: str) -> AdminTicketDetail:
    """A ticket with its whole conversation: public replies and internal notes, oldest first."""
    row = await _one(sql, f"{TICKET_SELECT} WHERE t.ticket_id = ?", ticket_id, "ticket")
    parts = await sql.fetch(
        "SELECT author_name, body, is_public, created_at FROM conversation_parts WHERE conversation_id = ?"
        " ORDER BY created_at, id",
        row[14],
    )
    return AdminTicketDetail(
        admin_ticket(row), row[3], tuple(AdminPart(name, body, bool(public), at) for name, body, public, at in parts)
    )


_NAMED_COLUMNS = (("state", "state_id"), ("ticket_type", "type_id"))


async def _named_ids(sql: Sql, fields: Mapping[str, Any]) -> dict[str, int]:
    """The row ids of the ``state`` (internal label) and ``ticket_type`` named in ``fields``; one 422 for all
    that name nothing (types, like states, come from ``import``)."""
    ids, problems = {}, []
    for field, query, what in (
        ("state", "SELECT id FROM ticket_states WHERE internal_label = ? ORDER BY id", "no ticket state is labelled"),
        ("ticket_type", "SELECT id FROM ticket_types WHERE name = ?", "no ticket type is named"),
    ):
        if field in fields:
            found = await sql.value(query, fields[field])
            if found is None:
                problems.append((field, f"{what} {fields[field]!r}"))
            else:
                ids[field] = int(found)
    if problems:
        raise Invalid(*problems)
    return ids


async def _company_row_id(sql: Sql, company_id: str | None) -> int | None:
    if company_id is None:
        return None
    return int((await _company_row(sql, company_id))[0])


async def create_ticket(sql: Sql, fields: Mapping[str, Any], now: int) -> AdminTicketDetail:
    """Raise a ticket for a contact, associated with a company by the rules of ``associations.py``."""
    creator = await sql.value("SELECT id FROM contacts WHERE user_id = ?", fields["creator"])
    if creator is None:
        raise Invalid(("creator", f"no contact has user_id {fields['creator']!r}"))
    named = await _named_ids(sql, fields)
    company = company_for_new_ticket(await member_of(sql, creator), fields.get("company"))
    ticket_id = fields.get("ticket_id") or str(await sql.value(_NEXT_TICKET_ID))
    if await sql.value("SELECT 1 FROM tickets WHERE ticket_id = ?", ticket_id):
        raise Conflict(f"ticket {ticket_id!r} already exists")
    created = now if fields.get("created_at") is None else fields["created_at"]
    await writes.add_ticket(
        sql,
        ticket_id=ticket_id,
        type_id=named["ticket_type"],
        state_id=named["state"],
        category=fields["category"],
        is_shared=fields["is_shared"],
        company_id=await _company_row_id(sql, company),
        creator_id=creator,
        title=fields["title"],
        description=fields["description"],
        created_at=created,
        updated_at=created,
    )
    return await get_ticket(sql, ticket_id)


async def update_ticket(sql: Sql, ticket_id: str, fields: Mapping[str, Any], now: int) -> AdminTicketDetail:
    """Change a ticket's state, type, sharing, text or company; its company must be one its creator is in."""
    row_id, creator = await _one(sql, "SELECT id, creator_id FROM tickets WHERE ticket_id = ?", ticket_id, "ticket")
    named = await _named_ids(sql, fields)
    columns: dict[str, Any] = {column: named[field] for field, column in _NAMED_COLUMNS if field in named}
    if "company" in fields:
        company = company_for_ticket(await member_of(sql, creator), fields["company"])
        columns["company_id"] = await _company_row_id(sql, company)
    for name in ("title", "description", "category"):
        if name in fields:
            columns[name] = fields[name]
    if "is_shared" in fields:
        columns["is_shared"] = int(fields["is_shared"])
    columns["updated_at"] = now
    assignments = ", ".join(f"{name} = ?" for name in columns)
    await sql.execute(f"UPDATE tickets SET {assignments} WHERE id = ?", *columns.values(), row_id)  # noqa: S608
    return await get_ticket(sql, ticket_id)


async def add_ticket_part(sql: Sql, ticket_id: str, fields: Mapping[str, Any], now: int) -> AdminTicketDetail:
    """Add a public reply or an internal note to a ticket's conversation."""
    row_id, conversation = await _one(
        sql, "SELECT id, conversation_id FROM tickets WHERE ticket_id = ?", ticket_id, "ticket"
    )
    author_id = None
    name = fields.get("author_name")
    if fields.get("author") is not None:
        author = await sql.row(
            "SELECT id, coalesce(name, email, user_id) FROM contacts WHERE user_id = ?", fields["author"]
        )
        if author is None:
            raise Invalid(("author", f"no contact has user_id {fields['author']!r}"))
        author_id, name = author[0], name or author[1]
    at = now if fields.get("created_at") is None else fields["created_at"]
    await writes.add_part(sql, conversation, author_id, name or "Support", fields["body"], fields["public"], at)
    await sql.execute("UPDATE tickets SET updated_at = greatest(updated_at, ?) WHERE id = ?", at, row_id)
    return await get_ticket(sql, ticket_id)


async def find_tickets(sql: Sql, company_id: str | None, q: str | None, page: int, page_size: int) -> AdminTicketPage:
    """Tickets to check for a duplicate before raising a new one: of one company or all, matching ``q``."""
    where, params = "TRUE", []
    if company_id is not None:
        where, params = "t.company_id = ?", [(await _company_row(sql, company_id))[0]]
    match = ts_match(q)
    if match is not None:
        where += " AND t.search @@ to_tsquery('portal_search', ?)"
        params.append(match)
    total = await sql.value(f"SELECT count(*) FROM tickets t WHERE {where}", *params)  # noqa: S608
    rows = await sql.fetch(
        f"{TICKET_SELECT} WHERE {where} ORDER BY t.updated_at DESC, t.id DESC LIMIT ? OFFSET ?",
        *params,
        page_size,
        (page - 1) * page_size,
    )
    return AdminTicketPage(tuple(map(admin_ticket, rows)), int(total), page, page_size)

"""The support side of the store, for the admin API: every record, internal notes included.

Plain functions on a connection, run by the caller inside one transaction
(``SQLiteStore.transaction``). They return the admin API's records and
raise the :class:`~gateway.errors.ChangeRefused` family when a change cannot
be made. SECURITY: nothing here applies visibility; only the store's admin
methods call it, and only ``routes/admin.py``, behind the admin token, calls
those. Memberships change here and nowhere else.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

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
from gateway.store.rows import TICKET_SELECT, admin_ticket
from gateway.store.search import fts_query
from gateway.store.sqlite import writes

R = TypeVar("R", AdminCompany, AdminContact)

# Only plain numbers short enough for CAST and + 1 to stay exact integers: a given id like "T-42" or
# "9223372036854775807" must not make the next one "9.223372036854776e+18", and then the same again (409).
_NEXT_TICKET_ID = (
    "SELECT coalesce(max(CAST(ticket_id AS INTEGER)), 0) + 1 FROM tickets"
    " WHERE ticket_id NOT GLOB '*[^0-9]*' AND length(ticket_id) <= 18"
)


def _one(connection: sqlite3.Connection, sql: str, key: object, what: str) -> Sequence[Any]:
    row = connection.execute(sql, (key,)).fetchone()
    if row is None:
        raise Missing(f"{what} {key!r} does not exist")
    return tuple(row)


# --- companies -------------------------------------------------------------------------------------------


def _company_row(connection: sqlite3.Connection, company_id: str) -> Sequence[Any]:
    return _one(
        connection,
        "SELECT id, company_id, name, plan, size, monthly_spend, custom_attributes FROM companies WHERE company_id = ?",
        company_id,
        "company",
    )


def get_company(connection: sqlite3.Connection, company_id: str) -> AdminCompany:
    """A company as the admin API shows it."""
    row = _company_row(connection, company_id)
    members = connection.execute("SELECT count(*) FROM memberships WHERE company_id = ?", (row[0],)).fetchone()[0]
    return AdminCompany(row[1], row[2], row[3], row[4], row[5], json.loads(row[6]), int(members))


def delete_company(connection: sqlite3.Connection, company_id: str) -> None:
    """Delete a company and its memberships; 409 while tickets belong to it (they would lose their company)."""
    row_id = _company_row(connection, company_id)[0]
    tickets = connection.execute("SELECT count(*) FROM tickets WHERE company_id = ?", (row_id,)).fetchone()[0]
    if tickets:
        raise Conflict(f"company {company_id!r} has {tickets} tickets; move them to another company first")
    connection.execute("DELETE FROM companies WHERE id = ?", (row_id,))


# --- contacts and memberships ----------------------------------------------------------------------------


def _contact_row(connection: sqlite3.Connection, user_id: str) -> Sequence[Any]:
    return _one(
        connection,
        "SELECT id, user_id, email, name, custom_attributes FROM contacts WHERE user_id = ?",
        user_id,
        "contact",
    )


def _member_of(connection: sqlite3.Connection, contact_id: int) -> list[str]:
    return [
        row[0]
        for row in connection.execute(
            "SELECT c.company_id FROM memberships m JOIN companies c ON c.id = m.company_id"
            " WHERE m.contact_id = ? ORDER BY c.company_id",
            (contact_id,),
        )
    ]


def get_contact(connection: sqlite3.Connection, user_id: str) -> AdminContact:
    """A contact with the ``company_id`` of each company they belong to."""
    row = _contact_row(connection, user_id)
    return AdminContact(row[1], row[2], row[3], json.loads(row[4]), tuple(_member_of(connection, row[0])))


def delete_contact(connection: sqlite3.Connection, user_id: str) -> None:
    """Delete a contact and their memberships; 409 while tickets or replies are theirs (they would be lost)."""
    row_id = _contact_row(connection, user_id)[0]
    created = connection.execute("SELECT count(*) FROM tickets WHERE creator_id = ?", (row_id,)).fetchone()[0]
    written = connection.execute(
        "SELECT count(*) FROM conversation_parts WHERE author_contact_id = ?", (row_id,)
    ).fetchone()[0]
    if created or written:
        raise Conflict(f"contact {user_id!r} created {created} tickets and wrote {written} replies; they are kept")
    connection.execute("DELETE FROM contacts WHERE id = ?", (row_id,))


@dataclass(frozen=True)
class Kind(Generic[R]):
    """Companies or contacts: their external id, their fields, and how one is written, read and deleted."""

    what: str
    key: str
    fields: tuple[str, ...]
    upsert: Callable[..., int]
    get: Callable[[sqlite3.Connection, str], R]
    delete: Callable[[sqlite3.Connection, str], None]

    def create(self, connection: sqlite3.Connection, fields: Mapping[str, Any]) -> R:
        """Add one (a contact with no company); 409 when its external id is taken."""
        key = fields[self.key]
        try:
            self.get(connection, key)
        except Missing:
            self.upsert(connection, **fields)
            return self.get(connection, key)
        raise Conflict(f"{self.what} {key!r} already exists")

    def update(self, connection: sqlite3.Connection, key: str, fields: Mapping[str, Any]) -> R:
        """Write ``fields`` over one's current values, custom attributes merged; its external id stays (and a
        contact's companies too)."""
        current = self.get(connection, key)
        values = merged_fields(current, self.fields, fields)
        self.upsert(connection, **values)
        return self.get(connection, key)


COMPANIES = Kind("company", "company_id", COMPANY_FIELDS, writes.upsert_company, get_company, delete_company)
CONTACTS = Kind("contact", "user_id", CONTACT_FIELDS, writes.upsert_contact, get_contact, delete_contact)


def add_membership(connection: sqlite3.Connection, user_id: str, company_id: str) -> AdminContact:
    """Make the contact a member of the company (no change if they already are)."""
    contact, company = _contact_row(connection, user_id)[0], _company_row(connection, company_id)[0]
    connection.execute("INSERT OR IGNORE INTO memberships (contact_id, company_id) VALUES (?, ?)", (contact, company))
    return get_contact(connection, user_id)


def remove_membership(connection: sqlite3.Connection, user_id: str, company_id: str) -> AdminContact:
    """End the contact's membership of the company; 404 when they are not a member."""
    contact, company = _contact_row(connection, user_id)[0], _company_row(connection, company_id)[0]
    removed = connection.execute(
        "DELETE FROM memberships WHERE contact_id = ? AND company_id = ?", (contact, company)
    ).rowcount
    if not removed:
        raise Missing(f"contact {user_id!r} is not a member of company {company_id!r}")
    return get_contact(connection, user_id)


# --- tickets ---------------------------------------------------------------------------------------------


def get_ticket(connection: sqlite3.Connection, ticket_id: str) -> AdminTicketDetail:
    """A ticket with its whole conversation: public replies and internal notes, oldest first."""
    row = _one(connection, f"{TICKET_SELECT} WHERE t.ticket_id = ?", ticket_id, "ticket")
    parts = connection.execute(
        "SELECT author_name, body, is_public, created_at FROM conversation_parts WHERE conversation_id = ?"
        " ORDER BY created_at, id",
        (row[14],),
    ).fetchall()
    return AdminTicketDetail(
        admin_ticket(row), row[3], tuple(AdminPart(name, body, bool(public), at) for name, body, public, at in parts)
    )


_NAMED_COLUMNS = (("state", "state_id"), ("ticket_type", "type_id"))


def _named_ids(connection: sqlite3.Connection, fields: Mapping[str, Any]) -> dict[str, int]:
    """The row ids of the ``state`` (internal label) and ``ticket_type`` named in ``fields``; one 422 for all
    that name nothing. A misspelt type must not become a new one: types, like states, come from ``import``."""
    ids, problems = {}, []
    for field, sql, what in (
        ("state", "SELECT id FROM ticket_states WHERE internal_label = ?", "no ticket state is labelled"),
        ("ticket_type", "SELECT id FROM ticket_types WHERE name = ?", "no ticket type is named"),
    ):
        if field in fields:
            row = connection.execute(sql, (fields[field],)).fetchone()
            if row is None:
                problems.append((field, f"{what} {fields[field]!r}"))
            else:
                ids[field] = int(row[0])
    if problems:
        raise Invalid(*problems)
    return ids


def _company_row_id(connection: sqlite3.Connection, company_id: str | None) -> int | None:
    if company_id is None:
        return None
    return int(_company_row(connection, company_id)[0])


def create_ticket(connection: sqlite3.Connection, fields: Mapping[str, Any], now: int) -> AdminTicketDetail:
    """Raise a ticket for a contact, associated with a company by the rules of ``associations.py``."""
    creator = connection.execute("SELECT id FROM contacts WHERE user_id = ?", (fields["creator"],)).fetchone()
    if creator is None:
        raise Invalid(("creator", f"no contact has user_id {fields['creator']!r}"))
    named = _named_ids(connection, fields)
    company = company_for_new_ticket(_member_of(connection, creator[0]), fields.get("company"))
    ticket_id = fields.get("ticket_id") or str(connection.execute(_NEXT_TICKET_ID).fetchone()[0])
    if connection.execute("SELECT 1 FROM tickets WHERE ticket_id = ?", (ticket_id,)).fetchone():
        raise Conflict(f"ticket {ticket_id!r} already exists")
    created = now if fields.get("created_at") is None else fields["created_at"]
    writes.add_ticket(
        connection,
        ticket_id=ticket_id,
        type_id=named["ticket_type"],
        state_id=named["state"],
        category=fields["category"],
        is_shared=fields["is_shared"],
        company_id=_company_row_id(connection, company),
        creator_id=creator[0],
        title=fields["title"],
        description=fields["description"],
        created_at=created,
        updated_at=created,
    )
    return get_ticket(connection, ticket_id)


def update_ticket(
    connection: sqlite3.Connection, ticket_id: str, fields: Mapping[str, Any], now: int
) -> AdminTicketDetail:
    """Change a ticket's state, type, sharing, text or company; its company must be one its creator is in."""
    row_id, creator = _one(connection, "SELECT id, creator_id FROM tickets WHERE ticket_id = ?", ticket_id, "ticket")
    named = _named_ids(connection, fields)
    columns: dict[str, Any] = {column: named[field] for field, column in _NAMED_COLUMNS if field in named}
    if "company" in fields:
        company = company_for_ticket(_member_of(connection, creator), fields["company"])
        columns["company_id"] = _company_row_id(connection, company)
    for name in ("title", "description", "is_shared", "category"):
        if name in fields:
            columns[name] = fields[name]
    columns["updated_at"] = now
    assignments = ", ".join(f"{name} = ?" for name in columns)
    connection.execute(f"UPDATE tickets SET {assignments} WHERE id = ?", [*columns.values(), row_id])  # noqa: S608
    return get_ticket(connection, ticket_id)


def add_ticket_part(
    connection: sqlite3.Connection, ticket_id: str, fields: Mapping[str, Any], now: int
) -> AdminTicketDetail:
    """Add a public reply or an internal note to a ticket's conversation."""
    row_id, conversation = _one(
        connection, "SELECT id, conversation_id FROM tickets WHERE ticket_id = ?", ticket_id, "ticket"
    )
    author_id = None
    name = fields.get("author_name")
    if fields.get("author") is not None:
        author = connection.execute(
            "SELECT id, coalesce(name, email, user_id) FROM contacts WHERE user_id = ?", (fields["author"],)
        ).fetchone()
        if author is None:
            raise Invalid(("author", f"no contact has user_id {fields['author']!r}"))
        author_id, name = author[0], name or author[1]
    at = now if fields.get("created_at") is None else fields["created_at"]
    writes.add_part(connection, conversation, author_id, name or "Support", fields["body"], fields["public"], at)
    connection.execute("UPDATE tickets SET updated_at = max(updated_at, ?) WHERE id = ?", (at, row_id))
    return get_ticket(connection, ticket_id)


def _ticket_page(
    connection: sqlite3.Connection, where: str, params: list[Any], q: str | None, page: int, page_size: int
) -> AdminTicketPage:
    match = fts_query(q)
    if match is not None:
        where += " AND t.id IN (SELECT rowid FROM ticket_search WHERE ticket_search MATCH ?)"
        params = [*params, match]
    total = connection.execute(f"SELECT count(*) FROM tickets t WHERE {where}", params).fetchone()[0]  # noqa: S608
    rows = connection.execute(
        f"{TICKET_SELECT} WHERE {where} ORDER BY t.updated_at DESC, t.id DESC LIMIT ? OFFSET ?",
        [*params, page_size, (page - 1) * page_size],
    ).fetchall()
    return AdminTicketPage(tuple(map(admin_ticket, rows)), int(total), page, page_size)


def find_tickets(
    connection: sqlite3.Connection, company_id: str | None, q: str | None, page: int, page_size: int
) -> AdminTicketPage:
    """Tickets to check for a duplicate before raising a new one: of one company or all, matching ``q``."""
    if company_id is None:
        return _ticket_page(connection, "1", [], q, page, page_size)
    row_id = _company_row(connection, company_id)[0]
    return _ticket_page(connection, "t.company_id = ?", [row_id], q, page, page_size)

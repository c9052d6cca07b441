"""The store methods that only hand a call to the backend's own module, written once for both backends.

The admin API (each backend's ``support.py``), the importer and the demo (its ``lines.py``) and the
connector's writes (its ``mirror.py``) are functions of the same names and keywords in each backend, taking
the backend's connection first: SQLite's plain functions run in its worker thread, PostgreSQL's awaited on
a pooled connection. :class:`Delegating` calls each in one transaction of its own through the backend's
:meth:`Delegating.transaction`, which knows how; the modules are checked against the protocols below.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping, Sequence
from functools import partial
from typing import Any, Protocol

from gateway.store import mirror as programs
from gateway.store.lines import Line, TakenBack
from gateway.store.models import AdminCompany, AdminContact, AdminTicketDetail, AdminTicketPage
from gateway.store.protocol import ImportMode, RemoteKind

Call = Callable[..., Any]
"""A backend function: its connection first, then keywords; what it returns (or, on PostgreSQL, awaits)."""


class Kind(Protocol):
    """The create and update of one kind of record (``support.COMPANIES``, ``support.CONTACTS``)."""

    @property
    def create(self) -> Call:
        """Add a record of ``fields``."""

    @property
    def update(self) -> Call:
        """Write ``fields`` over the record with this ``key``."""


class Support(Protocol):
    """A backend's ``support.py``: the admin API's reads and writes."""

    @property
    def COMPANIES(self) -> Kind:
        """Companies."""

    @property
    def CONTACTS(self) -> Kind:
        """Contacts."""

    get_company: Call
    delete_company: Call
    get_contact: Call
    delete_contact: Call
    add_membership: Call
    remove_membership: Call
    find_tickets: Call
    get_ticket: Call
    create_ticket: Call
    update_ticket: Call
    add_ticket_part: Call


class Imports(Protocol):
    """A backend's ``lines.py``: the importer's and the demo's writes."""

    @property
    def REFUSED(self) -> tuple[type[Exception], ...]:
        """What refuses one line (and only that line)."""

    write_all: Call
    write_line: Call
    seed: Call

    def reason(self, exc: Exception) -> str:
        """Why a line was refused, as the import report says it."""


class Mirror(Protocol):
    """A backend's ``mirror.py``: ``gateway/store/mirror.py``'s programs run on a connection."""

    mirror_lines: Call
    run: Call


class Delegating(ABC):
    """The admin API, the importer's writes and the connector's, each one call of the backend's modules."""

    _support: Support
    _imports: Imports
    _mirror: Mirror

    @abstractmethod
    def transaction(self, work: Callable[[Any], Any], /) -> Awaitable[Any]:
        """Run ``work`` on the backend's connection inside one transaction; what it returns (or awaits)."""

    # --- the admin API (support.py, each call one transaction) ------------------------------------------

    async def company(self, company_id: str) -> AdminCompany:
        """The company with this external id; Missing when there is none."""
        found: AdminCompany = await self.transaction(partial(self._support.get_company, company_id=company_id))
        return found

    async def create_company(self, fields: Mapping[str, Any]) -> AdminCompany:
        """Add a company; Conflict when its ``company_id`` is taken."""
        created: AdminCompany = await self.transaction(partial(self._support.COMPANIES.create, fields=fields))
        return created

    async def update_company(self, company_id: str, fields: Mapping[str, Any]) -> AdminCompany:
        """Write the fields given over the company's, custom attributes merged; Missing."""
        update = self._support.COMPANIES.update
        updated: AdminCompany = await self.transaction(partial(update, key=company_id, fields=fields))
        return updated

    async def delete_company(self, company_id: str) -> None:
        """Delete the company and its memberships; Missing, or Conflict while tickets belong to it."""
        await self.transaction(partial(self._support.delete_company, company_id=company_id))

    async def contact(self, user_id: str) -> AdminContact:
        """The contact with this external id; Missing when there is none."""
        found: AdminContact = await self.transaction(partial(self._support.get_contact, user_id=user_id))
        return found

    async def create_contact(self, fields: Mapping[str, Any]) -> AdminContact:
        """Add a contact of no company; Conflict when its ``user_id`` is taken."""
        created: AdminContact = await self.transaction(partial(self._support.CONTACTS.create, fields=fields))
        return created

    async def update_contact(self, user_id: str, fields: Mapping[str, Any]) -> AdminContact:
        """Write the fields given over the contact's, custom attributes merged; Missing."""
        update = self._support.CONTACTS.update
        updated: AdminContact = await self.transaction(partial(update, key=user_id, fields=fields))
        return updated

    async def delete_contact(self, user_id: str) -> None:
        """Delete the contact and their memberships; Missing, or Conflict while tickets or replies are theirs."""
        await self.transaction(partial(self._support.delete_contact, user_id=user_id))

    async def add_membership(self, user_id: str, company_id: str) -> AdminContact:
        """Make the contact a member of the company (no change if they are); Missing."""
        add = self._support.add_membership
        member: AdminContact = await self.transaction(partial(add, user_id=user_id, company_id=company_id))
        return member

    async def remove_membership(self, user_id: str, company_id: str) -> AdminContact:
        """End the contact's membership of the company; Missing."""
        remove = self._support.remove_membership
        contact: AdminContact = await self.transaction(partial(remove, user_id=user_id, company_id=company_id))
        return contact

    async def find_tickets(self, company_id: str | None, q: str | None, page: int, page_size: int) -> AdminTicketPage:
        """Tickets of one company or all, matching ``q``, latest update first."""
        find = partial(self._support.find_tickets, company_id=company_id, q=q, page=page, page_size=page_size)
        found: AdminTicketPage = await self.transaction(find)
        return found

    async def support_ticket(self, ticket_id: str) -> AdminTicketDetail:
        """The ticket with its whole conversation, internal notes included; Missing."""
        ticket: AdminTicketDetail = await self.transaction(partial(self._support.get_ticket, ticket_id=ticket_id))
        return ticket

    async def create_ticket(self, fields: Mapping[str, Any], now: int) -> AdminTicketDetail:
        """Raise a ticket for a contact; Invalid, Conflict."""
        ticket: AdminTicketDetail = await self.transaction(partial(self._support.create_ticket, fields=fields, now=now))
        return ticket

    async def update_ticket(self, ticket_id: str, fields: Mapping[str, Any], now: int) -> AdminTicketDetail:
        """Change the fields given of a ticket; Missing, Invalid."""
        update = partial(self._support.update_ticket, ticket_id=ticket_id, fields=fields, now=now)
        ticket: AdminTicketDetail = await self.transaction(update)
        return ticket

    async def add_part(self, ticket_id: str, fields: Mapping[str, Any], now: int) -> AdminTicketDetail:
        """Append a reply or a note to the ticket's conversation; Missing, Invalid."""
        add = partial(self._support.add_ticket_part, ticket_id=ticket_id, fields=fields, now=now)
        ticket: AdminTicketDetail = await self.transaction(add)
        return ticket

    # --- the importer and the demo (lines.py) -------------------------------------------------------------

    async def import_lines(self, lines: Sequence[tuple[int, Line]], *, mode: ImportMode) -> list[tuple[int, str]]:
        """Write the numbered lines: each in its own transaction, or all in one (taken back on a refusal)."""
        if mode != "each":
            try:
                await self.transaction(partial(self._imports.write_all, lines=lines, mode=mode))
            except TakenBack as back:
                return back.refused
            return []
        refused = []
        for number, line in lines:
            try:
                await self.transaction(partial(self._imports.write_line, line=line))
            except self._imports.REFUSED as exc:
                refused.append((number, self._imports.reason(exc)))
        return refused

    async def seed(self, lines: Sequence[Line]) -> bool:
        """Write the lines in one transaction unless the store holds a contact; whether it did."""
        return bool(await self.transaction(partial(self._imports.seed, lines=lines)))

    # --- the Intercom connector (gateway/store/mirror.py's programs, run by the backend's mirror.py) -------

    async def mirror(self, lines: Sequence[Line]) -> None:
        """Write the lines as Intercom holds them, in one transaction."""
        await self.transaction(partial(self._mirror.mirror_lines, lines=lines))

    async def forget(self, kind: RemoteKind, remote_id: str) -> bool:
        """Delete what Intercom deleted; whether there was such a record."""
        return bool(await self.transaction(partial(self._mirror.run, program=programs.forget(kind, remote_id))))

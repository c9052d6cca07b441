"""The one interface to the portal's data, that every backend implements, and :func:`open_store` to get one.

Every backend keeps these semantics (``tests/store/contract/`` holds it to them):

- any method raises :class:`~gateway.errors.StoreUnavailable` when the data cannot be reached (a lock held
  past the busy timeout, the file or server gone): the caller answers 503, never stale or partial data;
- a visitor's read or write takes a :class:`TicketFilter` and applies it: only Customer tickets and shared
  Back-office tickets of the filter's companies (or, without a company, the filter's contact's own), and
  only the contact's own with ``own_only``; never a Tracker ticket, never an internal note;
- SECURITY: the admin methods apply no visibility (only the admin API, behind its token, calls them);
  each is one transaction, all written or none, and refuses with the :class:`~gateway.errors.ChangeRefused` family:
  ``Missing`` (404) for an unknown id, ``Conflict`` (409), ``Invalid`` (422) naming the fields.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal, Protocol, assert_never

from gateway.config import StoreConfig
from gateway.errors import StoreUnavailable
from gateway.store.copy import Copyable
from gateway.store.lines import Line
from gateway.store.models import (
    AdminCompany,
    AdminContact,
    AdminTicketDetail,
    AdminTicketPage,
    ChangeBatch,
    ChangedTicket,
    Contact,
    TicketDetail,
    TicketFilter,
    TicketPage,
    TicketQuery,
    TicketState,
    TicketType,
)

RemoteKind = Literal["company", "contact", "ticket"]
"""The records the Intercom connector mirrors, each named by Intercom's id for it (``remote_id``)."""
ImportMode = Literal["each", "all", "check"]
"""How :meth:`Store.import_lines` commits: each line alone; all or none; or none at all (only the report)."""


class Store(Copyable, Protocol):
    """What the handlers, the CLI, the importer and the demo seed ask of the store (and ``store copy``, its rows)."""

    async def close(self) -> None:
        """Release connections and threads; the store is not used afterwards."""

    async def ping(self) -> None:
        """Return only when the store can be read and written now; else StoreUnavailable (``/readyz``)."""

    # --- visitors ----------------------------------------------------------------------------------------

    async def contact_by_user_id(self, user_id: str, arrived_ns: int | None = None) -> Contact | None:
        """The contact with this external id and their companies by name; never older than a commit made before
        ``arrived_ns`` (``time.monotonic_ns()`` by which the asking request had arrived; None: this call)."""

    async def contacts(self) -> list[Contact]:
        """Every contact with their companies, by name then id (previews and the dev login)."""

    async def ticket_states(self) -> list[TicketState]:
        """Every ticket state in workflow order (submitted, in progress, waiting on customer, resolved), then id."""

    async def list_tickets(self, visible: TicketFilter, query: TicketQuery) -> TicketPage:
        """One page of the visible tickets matching ``query`` in its order, the total counting every page;
        searching: ranked title and id first, each with a snippet of public text only."""

    async def get_ticket(self, visible: TicketFilter, ticket_id: str) -> TicketDetail | None:
        """The visible ticket with this id and its public replies oldest first; None when not visible."""

    async def creators(self, visible: TicketFilter) -> list[tuple[int, str]]:
        """(contact id, shown name) of each creator of a visible ticket, by name without case."""

    async def visible_types(self, visible: TicketFilter) -> list[TicketType]:
        """The types of the visible tickets (never a type only invisible tickets have), by name."""

    async def join(self, visible: TicketFilter, ticket_id: str, contact_id: int) -> bool:
        """Make the contact a participant of the visible ticket's conversation (idempotent); False if not visible."""

    async def tickets_space(self, visible: TicketFilter, query: TicketQuery) -> TicketPage:
        """One page of the visible tickets the filter's contact takes part in, most recently updated first."""

    # --- the change feed: written in each write's own transaction, read by every worker's ChangeHub -------

    async def changes_after(self, after: int, limit: int) -> ChangeBatch:
        """Up to ``limit`` changes with ids above ``after``, oldest first, the newest id and the newest dropped one
        (retention keeps ``store.change_retention`` changes); a change is never visible before its commit."""

    async def changed_ticket(self, ticket_id: str) -> ChangedTicket | None:
        """The ticket with this id as every visitor's detail page shows it, and what visibility tests of it; None when
        there is none. SECURITY: no visibility applied: the event streams decide each visitor's with
        ``visibility.shows_ticket``; the detail holds the public replies only, like get_ticket's."""

    async def changes_pending(self) -> bool:
        """Whether something may have been committed (by anyone) since the last call, without waiting: a cheap
        check a worker's watcher makes every ``store.change_poll`` seconds (SQLite's ``data_version``; a
        LISTEN/NOTIFY backend answers whether a notification came). True when unsure: it costs one read."""

    # --- the admin API: every record, no visibility ------------------------------------------------------

    async def company(self, company_id: str) -> AdminCompany:
        """The company with this external id; Missing when there is none."""

    async def create_company(self, fields: Mapping[str, Any]) -> AdminCompany:
        """Add a company from every field of the admin API's CompanyIn; Conflict when its ``company_id`` is taken."""

    async def update_company(self, company_id: str, fields: Mapping[str, Any]) -> AdminCompany:
        """Write the fields given over the company's, ``custom_attributes`` merged (null removes one); Missing."""

    async def delete_company(self, company_id: str) -> None:
        """Delete the company and its memberships; Missing, or Conflict while tickets belong to it."""

    async def contact(self, user_id: str) -> AdminContact:
        """The contact with this external id; Missing when there is none."""

    async def create_contact(self, fields: Mapping[str, Any]) -> AdminContact:
        """Add a contact of no company from every field of ContactIn; Conflict when its ``user_id`` is taken."""

    async def update_contact(self, user_id: str, fields: Mapping[str, Any]) -> AdminContact:
        """Write the fields given over the contact's, ``custom_attributes`` merged, companies kept; Missing."""

    async def delete_contact(self, user_id: str) -> None:
        """Delete the contact and their memberships; Missing, or Conflict while tickets or replies are theirs."""

    async def add_membership(self, user_id: str, company_id: str) -> AdminContact:
        """Make the contact a member of the company (no change if they are); Missing for either."""

    async def remove_membership(self, user_id: str, company_id: str) -> AdminContact:
        """End the contact's membership of the company; Missing for either, or when they are not a member."""

    async def find_tickets(self, company_id: str | None, q: str | None, page: int, page_size: int) -> AdminTicketPage:
        """Tickets of one company (Missing if unknown) or all, holding every word of ``q``, latest update first."""

    async def support_ticket(self, ticket_id: str) -> AdminTicketDetail:
        """The ticket with its whole conversation, internal notes included, oldest part first; Missing."""

    async def create_ticket(self, fields: Mapping[str, Any], now: int) -> AdminTicketDetail:
        """Raise a ticket from every field of TicketIn, its company by ``associations.py``, the next free numeric id
        when none is given; Invalid for an unknown creator, state or type; Conflict for a taken id."""

    async def update_ticket(self, ticket_id: str, fields: Mapping[str, Any], now: int) -> AdminTicketDetail:
        """Change the fields given (a company must be one the creator is in), ``updated_at`` to ``now``;
        Missing, Invalid."""

    async def add_part(self, ticket_id: str, fields: Mapping[str, Any], now: int) -> AdminTicketDetail:
        """Append a reply or note from every field of PartIn (by a contact, else a teammate, else "Support"),
        moving ``updated_at`` forward to it; Missing, Invalid for an unknown author."""

    # --- the importer and the demo -----------------------------------------------------------------------

    async def import_lines(self, lines: Sequence[tuple[int, Line]], *, mode: ImportMode) -> list[tuple[int, str]]:
        """Write the numbered lines in order as ``importer.py`` says (upserts; a ticket read again only adds parts
        and participants); the refused lines' numbers and reasons, a refused line writing nothing."""

    async def seed(self, lines: Sequence[Line]) -> bool:
        """Write the lines in one transaction unless the store holds a contact; whether it did; LineError if
        a line is refused (then nothing is written)."""

    # --- the Intercom connector: the store as a mirror of the workspace ------------------------------------

    async def mirror(self, lines: Sequence[Line]) -> None:
        """Write the lines as Intercom holds them, in one transaction (LineError: none written): records found by
        ``remote_id`` first, else by their own id; a ticket's fields, parts and participants replaced by the
        line's, its company its creator's only one (none with several); a contact's tickets follow their
        memberships."""

    async def forget(self, kind: RemoteKind, remote_id: str) -> bool:
        """Delete what Intercom deleted: a ticket with its conversation; a contact with their memberships and
        tickets (their replies kept, unsigned); a company with its memberships (its tickets keep no company).
        Whether there was such a record."""

    async def remote_ids(self, kind: RemoteKind) -> set[str]:
        """The Intercom ids of every mirrored record of that kind (a full sync forgets those Intercom lacks)."""

    async def remote_id(self, kind: RemoteKind, key: str) -> str | None:
        """Intercom's id of the record with this id of the store's (``company_id``, ``user_id``, ``ticket_id``)."""

    async def remote_conversation(self, ticket_id: str) -> str | None:
        """Intercom's id of the ticket's linked conversation, None when it has none (or is no mirrored ticket)."""

    async def sync_checkpoint(self, name: str) -> str | None:
        """The checkpoint saved under ``name``, or None when there is none."""

    async def save_sync_checkpoint(self, name: str, value: str) -> None:
        """Save (replace) the checkpoint under ``name``."""

    async def acquire_lease(self, name: str, holder: str, ttl: float, now: float) -> bool:
        """Take or renew the lease ``name`` for ``holder`` until ``now + ttl``; False while another holder's lease
        has not expired."""

    async def release_lease(self, name: str, holder: str) -> None:
        """Give the lease up if ``holder`` holds it (no change otherwise)."""


async def open_store(config: StoreConfig) -> Store:
    """Open (creating and migrating) the configured backend's store."""
    match config.backend:
        case "sqlite":
            # Imported here: each backend's driver loads only when it is the one configured.
            from gateway.store.sqlite import SQLiteStore

            return await SQLiteStore.open(
                config.path, busy_timeout=config.busy_timeout, change_retention=config.change_retention
            )
        case "postgres":
            from gateway.store.postgres import PostgresStore

            if config.dsn is None:  # the config refuses this already; kept for the type checker
                raise StoreUnavailable("store.dsn is not set")
            return await PostgresStore.open(
                config.dsn.get_secret_value(),
                pool_size=config.pool_size,
                statement_timeout=config.statement_timeout,
                change_retention=config.change_retention,
                migration_wait=config.migration_wait,
            )
        case unknown:
            assert_never(unknown)

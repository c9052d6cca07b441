"""The sync: the workspace's ticket states, companies, contacts and tickets mirrored into the store.

One run reads, in this order (each kind needs the ones before it): ticket
states; companies through ``/companies/scroll`` (restarted from the top when a
scroll expires: the upserts make reading a company twice harmless); contacts
through ``/contacts`` cursor pages, with ``/contacts/{id}/companies`` for one
whose object shows only its first ten; tickets through ``POST /tickets/search``
on ``updated_at``, from the checkpoint less an overlap window (Intercom's date
filters are coarse, and a ticket changed while a run reads is read again by the
next), in cursor pages. Every page is written in one transaction; the
checkpoint moves only when the tickets are all read, so a run killed midway is
done again from the old checkpoint and, the writes being upserts, duplicates
nothing. Contacts and companies are read whole every run, so those Intercom no
longer has are forgotten every run; ``--full`` reads every ticket too, and
forgets the tickets Intercom no longer has (webhooks tell of the rest).

Only the holder of the store's lease syncs: with several workers or nodes, the
others find it taken and skip their turn.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from gateway.errors import IntercomNotFound, IntercomRefused, IntercomUnauthorized
from gateway.intercom import objects
from gateway.intercom.client import JSON, IntercomClient
from gateway.observe.metrics import Metrics
from gateway.store.lines import Line, LineError
from gateway.store.protocol import RemoteKind, Store

log = logging.getLogger(__name__)
LEASE = "intercom-sync"
CHECKPOINT = "intercom-tickets-updated-at"
OVERLAP_SECONDS = 300
LEASE_SECONDS = 120.0
PAGE_SIZE = 150  # the most /tickets/search and /contacts give in one page
EMBEDDED_COMPANIES = 10  # a contact object lists at most this many of its companies
_LINE_KIND = {"ticket_states": "ticket_state", "companies": "company", "contacts": "contact", "tickets": "ticket"}


class Progress(Protocol):
    """Where a run reports how far it got: a bar on a terminal, log lines otherwise."""

    def advance(self, kind: str, count: int) -> None:
        """``count`` more items of ``kind`` written."""


class LogProgress:
    """Progress as JSON log lines, one per page written."""

    def __init__(self) -> None:
        self.done: dict[str, int] = {}

    def advance(self, kind: str, count: int) -> None:
        """Count and log the page."""
        self.done[kind] = self.done.get(kind, 0) + count
        log.info("intercom sync: %d %s written", self.done[kind], kind, extra={"kind": kind, "done": self.done[kind]})


@dataclass
class SyncReport:
    """What one run wrote and forgot, by kind, and the checkpoint it left."""

    written: dict[str, int] = field(default_factory=dict)
    forgotten: dict[str, int] = field(default_factory=dict)
    skipped: int = 0
    checkpoint: int | None = None


def holder_name() -> str:
    """This process's name as a lease holder: host, pid and a nonce (a pid is reused across restarts)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Syncer:
    """Mirrors one workspace into the store, alone among its peers thanks to the lease."""

    def __init__(
        self,
        client: IntercomClient,
        store: Store,
        metrics: Metrics | None = None,
        *,
        holder: str | None = None,
        clock: Callable[[], float] = time.time,
        progress: Progress | None = None,
    ) -> None:
        self.client = client
        self.store = store
        self.metrics = metrics
        self.holder = holder or holder_name()
        self.clock = clock
        self.progress: Progress = progress or LogProgress()

    async def run(self, *, full: bool = False) -> SyncReport | None:
        """One sync; None when another holder has the lease. IntercomUnauthorized stops it (and is counted)."""
        if not await self._renew():
            log.info("intercom sync skipped: another worker holds the lease")
            return None
        started = self.clock()
        report = SyncReport()
        try:
            await self._run(report, full=full)
        except IntercomUnauthorized:
            self._outcome("unauthorized")
            raise
        except Exception:
            self._outcome("failed")
            raise
        finally:
            await self.store.release_lease(LEASE, self.holder)
        self._outcome("ok")
        if self.metrics is not None:
            now = self.clock()
            self.metrics.intercom_last_sync.set(now)
            self.metrics.intercom_lag.set(now - started)
        return report

    async def _run(self, report: SyncReport, *, full: bool) -> None:
        states = await self.client.get("/ticket_states")
        await self._write(report, "ticket_states", [objects.state_line(state) for state in states.get("data") or []])
        companies = await self._companies(report)
        contacts = await self._contacts(report, companies)
        saved = await self.store.sync_checkpoint(CHECKPOINT)
        since = 0 if full or saved is None else max(0, int(saved) - OVERLAP_SECONDS)
        tickets, newest = await self._tickets(report, since)
        if full:  # only a full run reads every ticket; contacts and companies are read whole every run
            await self._forget_missing(report, "ticket", tickets)
        # Tickets first: forgetting a contact forgets their tickets, which must not count twice.
        await self._forget_missing(report, "contact", contacts)
        await self._forget_missing(report, "company", set(companies))
        checkpoint = max(newest, int(saved or 0))
        await self.store.save_sync_checkpoint(CHECKPOINT, str(checkpoint))
        report.checkpoint = checkpoint

    async def _companies(self, report: SyncReport) -> dict[str, str]:
        """Every company, written; Intercom id -> company_id. An expired scroll starts again from the top."""
        known: dict[str, str] = {}
        for attempt in range(3):
            try:
                async for page in self._scroll():
                    lines = [objects.company_line(company) for company in page]
                    known.update((line.remote_id or "", line.company_id) for line in lines)
                    await self._write(report, "companies", lines)
                return known
            except IntercomNotFound:
                log.warning("intercom sync: the company scroll expired; starting it again (%d)", attempt + 1)
        raise IntercomRefused("the company scroll kept expiring")

    async def _scroll(self) -> AsyncIterator[list[JSON]]:
        param: str | None = None
        while True:
            page = await self.client.get("/companies/scroll", {"scroll_param": param} if param else None)
            data = page.get("data") or []
            if not data:
                return
            yield data
            param = page.get("scroll_param")
            if not param:
                return
            await self._renew()

    async def _contacts(self, report: SyncReport, companies: dict[str, str]) -> set[str]:
        """Every contact with an external id, written with their companies; their Intercom ids."""
        seen: set[str] = set()
        after: str | None = None
        while True:
            params = {"per_page": str(PAGE_SIZE), **({"starting_after": after} if after else {})}
            page = await self.client.get("/contacts", params)
            lines: list[Line] = []
            for contact in page.get("data") or []:
                member_of, more = await self.companies_of(contact, companies)
                line = objects.contact_line(contact, member_of)
                if line is None:
                    report.skipped += 1
                    continue
                lines += [*more, line]
                seen.add(str(contact["id"]))
            await self._write(report, "contacts", lines)
            after = ((page.get("pages") or {}).get("next") or {}).get("starting_after")
            if not after:
                return seen
            await self._renew()

    async def companies_of(self, contact: JSON, known: dict[str, str]) -> tuple[list[str], list[Line]]:
        """The contact's companies (their ``company_id``), and lines for those the run had not written yet."""
        embedded = contact.get("companies") or {}
        refs = embedded.get("data") or []
        complete = not embedded.get("has_more") and len(refs) <= EMBEDDED_COMPANIES
        if complete and all(str(ref.get("id")) in known for ref in refs):
            return [known[str(ref["id"])] for ref in refs], []
        # More than the object shows, or a company newer than the scroll: the full list, page by page.
        member_of: list[str] = []
        lines: list[Line] = []
        url: str | None = f"/contacts/{contact['id']}/companies"
        while url:
            page = await self.client.get(url)
            for company in page.get("companies") or []:
                line = objects.company_line(company)
                known[line.remote_id or ""] = line.company_id
                member_of.append(line.company_id)
                lines.append(line)
            next_page = (page.get("pages") or {}).get("next")
            url = next_page if isinstance(next_page, str) and next_page else None
        return member_of, lines

    async def _tickets(self, report: SyncReport, since: int) -> tuple[set[str], int]:
        """Tickets updated at or after ``since``, written; their Intercom ids and the newest update seen."""
        seen: set[str] = set()
        newest = 0
        query: dict[str, Any] = {"query": {"field": "updated_at", "operator": ">", "value": since}}

        def search(after: str | None) -> asyncio.Task[JSON]:
            pagination: dict[str, Any] = {"per_page": PAGE_SIZE, **({"starting_after": after} if after else {})}
            return asyncio.ensure_future(self.client.post("/tickets/search", {**query, "pagination": pagination}))

        # The next page is asked for while this one is written (the store works in its own thread), so the run
        # waits on the API or the store, not on both in turn.
        fetch = search(None)
        try:
            while True:
                page = await fetch
                after = ((page.get("pages") or {}).get("next") or {}).get("starting_after")
                if after:
                    fetch = search(after)
                lines: list[Line] = []
                for ticket in page.get("tickets") or []:
                    found = objects.ticket_lines(ticket)
                    if not found:
                        report.skipped += 1
                        continue
                    lines += found
                    seen.add(str(ticket["id"]))
                    newest = max(newest, int(ticket.get("updated_at") or 0))
                await self._write(report, "tickets", lines)
                if not after:
                    return seen, newest
                await self._renew()
        finally:
            # A failed write or a lost lease: the page asked for ahead is not wanted, nor is its outcome.
            fetch.cancel()
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await fetch

    # --- one item, as a webhook names it ------------------------------------------------------------------

    async def refresh(self, kind: RemoteKind | None, remote_id: str | None) -> None:
        """Read one item again from the API and mirror it, or forget it when Intercom no longer has it."""
        if kind is None or remote_id is None:
            return
        path = {"ticket": "/tickets/", "contact": "/contacts/", "company": "/companies/"}[kind] + remote_id
        try:
            item = await self.client.get(path)
        except IntercomNotFound:
            await self.store.forget(kind, remote_id)
            return
        if kind == "company":
            await self.store.mirror([objects.company_line(item)])
        elif kind == "contact":
            await self._refresh_contact(item)
        else:
            await self._refresh_ticket(item)

    async def _refresh_contact(self, contact: JSON) -> None:
        member_of, companies = await self.companies_of(contact, {})
        line = objects.contact_line(contact, member_of)
        await self.store.mirror([*companies, *([line] if line else [])])

    async def _refresh_ticket(self, ticket: JSON) -> None:
        lines = objects.ticket_lines(ticket)
        try:
            await self.store.mirror(lines)
        except LineError:
            # A contact the store does not have yet (new since the last sync): read them, then the ticket.
            for reference in (ticket.get("contacts") or {}).get("contacts") or []:
                await self.refresh("contact", str(reference["id"]))
            await self.store.mirror(lines)

    async def _forget_missing(self, report: SyncReport, kind: RemoteKind, seen: set[str]) -> None:
        for remote_id in await self.store.remote_ids(kind) - seen:
            if await self.store.forget(kind, remote_id):
                report.forgotten[kind] = report.forgotten.get(kind, 0) + 1

    async def _write(self, report: SyncReport, kind: str, lines: Sequence[Line]) -> None:
        """Write one page in one transaction; a line the store refuses is skipped, the rest written."""
        try:
            await self.store.mirror(lines)
        except LineError:
            # One bad line (a part by a contact the store lacks) must not hold up its page: each alone.
            for line in lines:
                try:
                    await self.store.mirror([line])
                except LineError as exc:
                    log.warning("intercom sync: a %s was not written: %s", line.kind, exc)
                    report.skipped += 1
        counted = sum(1 for line in lines if line.kind == _LINE_KIND[kind])
        report.written[kind] = report.written.get(kind, 0) + counted
        if self.metrics is not None:
            self.metrics.count(self.metrics.intercom_synced, kind, amount=counted)
        self.progress.advance(kind, counted)

    async def _renew(self) -> bool:
        return await self.store.acquire_lease(LEASE, self.holder, LEASE_SECONDS, self.clock())

    def _outcome(self, outcome: str) -> None:
        if self.metrics is not None:
            self.metrics.count(self.metrics.intercom_syncs, outcome)

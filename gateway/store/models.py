"""The store's objects, modelled on Intercom's: contacts, companies, tickets and their conversation."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from gateway.store.search import search_terms

TicketCategory = Literal["Customer", "Back-office", "Tracker"]
StateCategory = Literal["submitted", "in_progress", "waiting_on_customer", "resolved"]
STATE_CATEGORIES: tuple[StateCategory, ...] = ("submitted", "in_progress", "waiting_on_customer", "resolved")
TICKET_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
"""What a ticket id may look like: it stands in URL paths as it is."""
_NOT_IN_SLUG = re.compile(r"[\W_]+")


@dataclass(frozen=True)
class Company:
    """A customer company; ``company_id`` is the customer's own id for it."""

    id: int
    company_id: str
    name: str
    plan: str | None = None
    size: int | None = None
    monthly_spend: float | None = None
    custom_attributes: dict[str, Any] = field(default_factory=dict)

    def attributes(self) -> dict[str, Any]:
        """The facts audience rules see about this company."""
        return {
            **self.custom_attributes,
            "company_id": self.company_id,
            "name": self.name,
            "plan": self.plan,
            "size": self.size,
            "monthly_spend": self.monthly_spend,
        }


@dataclass(frozen=True)
class Contact:
    """A person at a customer company; ``user_id`` is the external id their tokens carry."""

    id: int
    user_id: str | None
    email: str | None
    name: str | None
    custom_attributes: dict[str, Any] = field(default_factory=dict)
    companies: tuple[Company, ...] = ()


@dataclass(frozen=True)
class TicketType:
    """A kind of ticket, e.g. "Bug report"."""

    id: int
    name: str


@dataclass(frozen=True)
class TicketState:
    """A ticket state; customers only ever see ``external_label``."""

    id: int
    category: StateCategory
    internal_label: str
    external_label: str

    @property
    def slug(self) -> str:
        """The customer-facing label as it stands in a URL: "Waiting on you" is ``waiting-on-you``."""
        # A label of symbols only has no words to spell: its id stands in (a number is read as an id).
        return _NOT_IN_SLUG.sub("-", self.external_label.casefold()).strip("-") or str(self.id)


@dataclass(frozen=True)
class TicketSummary:
    """One row of the ticket list, already reduced to what a customer may see."""

    ticket_id: str
    title: str
    type_name: str
    state_label: str
    state_category: StateCategory
    company_name: str | None
    creator_name: str | None
    created_at: int
    updated_at: int
    snippet: str | None = None
    """While searching: one piece of the best-matching text (a field, or one reply), cut between words with an
    ellipsis where text was left out, each matched term between ``search.MARK_START`` and ``MARK_END``."""
    snippet_author: str | None = None
    """Who wrote the snippet's text: the reply's author, or the ticket's creator for its title or description."""
    snippet_at: int | None = None
    """When the snippet's text was written (the reply's time, or the ticket's ``created_at``)."""


@dataclass(frozen=True)
class Part:
    """A public reply of a ticket's conversation (internal notes never leave the store)."""

    author_name: str
    body: str
    created_at: int
    by_support: bool = False  # written by a teammate (no contact authored it), not by the customer's side


@dataclass(frozen=True)
class TicketDetail:
    """A ticket as the detail page shows it."""

    summary: TicketSummary
    description: str
    conversation_id: int
    parts: tuple[Part, ...]
    participant: bool


@dataclass(frozen=True)
class ChangedTicket:
    """A changed ticket as every visitor's detail page shows it, with what visibility tests of it (the event streams
    decide per visitor with ``visibility.shows_ticket``, never through a second read)."""

    detail: TicketDetail
    """No visitor's own: ``participant`` is False (the events do not carry it)."""
    category: TicketCategory
    is_shared: bool
    scope: int
    """Its scope key: its company, or minus its creator when it has none (``visibility.SCOPE``)."""
    creator_id: int


class _Paged:
    """A page of a list cut ``page_size`` at a time from ``total`` items."""

    total: int
    page_size: int

    @property
    def pages(self) -> int:
        """How many pages the total makes (at least one)."""
        return max(1, -(-self.total // self.page_size))


@dataclass(frozen=True)
class TicketPage(_Paged):
    """One page of the list and the total it was cut from."""

    items: tuple[TicketSummary, ...]
    total: int
    page: int
    page_size: int


SortKey = Literal["id", "type", "state", "created", "updated", "relevance"]
SORT_KEYS: tuple[SortKey, ...] = ("id", "type", "state", "created", "updated", "relevance")


@dataclass(frozen=True)
class TicketFilter:
    """The tickets one visitor may see in one scope (built by ``policy/visibility.py``); every backend applies it."""

    company_ids: frozenset[int]
    contact_id: int | None
    own_only: bool


ChangeKind = Literal["created", "updated", "state", "reply", "removed", "access"]
"""What a change did: raised a ticket, changed its fields, moved its state, added a public reply, removed it (the
Intercom sync forgot it); or ("access") changed a contact's memberships or attributes, or a company's (then for
everyone), which may change who sees what."""


@dataclass(frozen=True)
class Change:
    """One entry of the change feed: which ticket (or, for access, which contact) and what happened, no text."""

    id: int
    """Monotonic: a later commit's changes have greater ids."""
    kind: ChangeKind
    ticket_id: str | None = None
    """The customer-facing ticket id, for every kind but access."""
    contact_id: int | None = None
    """For access: the contact whose access to check again, None meaning every contact's; for removed: the ticket's
    creator."""
    scope: int | None = None
    """For removed: the scope key the ticket had (its company, or minus its creator), since it is gone."""


@dataclass(frozen=True)
class ChangeBatch:
    """Changes after a reader's cursor, oldest first, with what the reader needs to tell whether it missed some."""

    changes: tuple[Change, ...]
    latest: int
    """The newest change id recorded (0 before the first)."""
    dropped_through: int
    """The newest change id no longer retained (0 when none was dropped): resuming from below it misses changes."""

    def missed(self, after: int) -> bool:
        """Whether a reader whose last change was ``after`` has missed changes the store no longer holds."""
        return after < self.dropped_through


@dataclass(frozen=True)
class TicketQuery:
    """What the visitor asked the list for: filters, sort and page (visibility comes separately)."""

    state_id: int | None = None
    type_id: int | None = None
    creator_id: int | None = None
    created_after: int | None = None
    created_before: int | None = None
    updated_after: int | None = None
    updated_before: int | None = None
    q: str | None = None
    """Search words: only tickets holding all of them (a query with no words in it filters nothing)."""
    sort: SortKey | None = None
    """None: by relevance while searching, else by last update. "relevance" without a search is by last update."""
    descending: bool = True
    """Largest first; for relevance, the best match first."""
    page: int = 1
    page_size: int = 25

    @property
    def searching(self) -> bool:
        """Whether ``q`` holds at least one word to search for."""
        return bool(search_terms(self.q))

    @property
    def order(self) -> SortKey:
        """The sort the list is actually in (``sort`` with its defaults resolved)."""
        if self.sort == "relevance" or self.sort is None:
            return "relevance" if self.searching else "updated"
        return self.sort


# --- the admin API's view: every record, internal notes included -----------------------------------------


@dataclass(frozen=True)
class AdminCompany:
    """A company as the admin API shows it, with how many contacts are its members."""

    company_id: str
    name: str
    plan: str | None
    size: int | None
    monthly_spend: float | None
    custom_attributes: dict[str, Any]
    user_count: int


@dataclass(frozen=True)
class AdminContact:
    """A contact as the admin API shows it, with the ``company_id`` of each company they belong to, sorted."""

    user_id: str
    email: str | None
    name: str | None
    custom_attributes: dict[str, Any]
    companies: tuple[str, ...]


@dataclass(frozen=True)
class AdminTicket:
    """A ticket as the admin API lists it: its internal state label and category too."""

    ticket_id: str
    title: str
    ticket_type: str
    state: TicketState
    category: TicketCategory
    is_shared: bool
    company_id: str | None
    creator: str | None
    created_at: int
    updated_at: int


@dataclass(frozen=True)
class AdminPart:
    """A part of a ticket's conversation: a public reply or an internal note."""

    author_name: str
    body: str
    public: bool
    created_at: int


@dataclass(frozen=True)
class AdminTicketDetail:
    """A ticket with its description and whole conversation, oldest part first."""

    ticket: AdminTicket
    description: str
    parts: tuple[AdminPart, ...]


@dataclass(frozen=True)
class AdminTicketPage(_Paged):
    """One page of the admin API's ticket list (most recently updated first) and the total it was cut from."""

    items: tuple[AdminTicket, ...]
    total: int
    page: int
    page_size: int


COMPANY_FIELDS = ("company_id", "name", "plan", "size", "monthly_spend", "custom_attributes")
"""What a company's upsert writes, as the admin API and the importer name it."""
CONTACT_FIELDS = ("user_id", "email", "name", "custom_attributes")
"""What a contact's upsert writes (their companies are memberships, apart)."""


def merged_fields(
    current: AdminCompany | AdminContact, names: tuple[str, ...], fields: Mapping[str, Any]
) -> dict[str, Any]:
    """``fields`` written over ``current``'s values of ``names``, custom attributes merged as Intercom's API does
    (an attribute set to null is removed)."""
    values = {name: getattr(current, name) for name in names} | dict(fields)
    if "custom_attributes" in fields:
        patch = fields["custom_attributes"]
        kept = {name: value for name, value in current.custom_attributes.items() if name not in patch}
        values["custom_attributes"] = kept | {name: value for name, value in patch.items() if value is not None}
    return values

"""Which tickets a visitor may see: the one function every read path goes through.

The product's semantics, exactly:

- toggle off: everyone sees all tickets of their companies (saved conditions are kept, inactive);
- on, no conditions: everyone sees only the tickets they created;
- on, with conditions: visitors matching them see only their own, everyone else all company tickets.

Restricted visitors get only the "mine" scope; the others get "all" and "mine".
Only customer-shared tickets are ever visible (category Customer, or
Back-office with ``is_shared``): never Tracker tickets, never internal notes;
the store enforces that part for every :class:`TicketFilter`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from gateway.config import VisibilityConfig
from gateway.policy.identity import Identity
from gateway.policy.rules import Decision, Facts, Policy, compile_conditions
from gateway.store.models import Company, Contact, TicketFilter

Scope = Literal["all", "mine"]
ALL_SCOPES: tuple[Scope, ...] = ("all", "mine")
OWN_SCOPE: tuple[Scope, ...] = ("mine",)


@dataclass(frozen=True)
class Visitor:
    """A verified visitor: their identity, and their contact and companies when the store knows them."""

    identity: Identity
    contact: Contact | None

    @property
    def companies(self) -> tuple[Company, ...]:
        """The companies the visitor is a member of (none when not in the store)."""
        return self.contact.companies if self.contact else ()

    @property
    def email(self) -> str | None:
        """The signed email, else the store's."""
        return self.identity.email or (self.contact.email if self.contact else None)

    @property
    def name(self) -> str | None:
        """The signed name, else the store's."""
        return self.identity.name or (self.contact.name if self.contact else None)

    def facts(self) -> Facts:
        """What audience rules see: the store's attributes, overridden by signed claims."""
        contact = self.contact
        person: dict[str, object] = {}
        if contact is not None:
            person.update(contact.custom_attributes)
            person.update({"user_id": contact.user_id, "email": contact.email, "name": contact.name})
        person.update(
            {key: value for key, value in self.identity.claims.items() if isinstance(value, str | int | float)}
        )
        person["user_id"] = self.identity.user_id
        for key, value in (("email", self.identity.email), ("name", self.identity.name)):
            if value is not None:
                person[key] = value
        return Facts(person=person, companies=[company.attributes() for company in self.companies])


@dataclass(frozen=True)
class VisibilityDecision:
    """Whether the visitor is restricted to their own tickets, the scopes they get, and why."""

    restricted: bool
    scopes: tuple[Scope, ...]
    rule: str


class VisibilityPolicy:
    """The compiled ``portal.visibility`` settings."""

    def __init__(self, config: VisibilityConfig, path: str = "portal.visibility.conditions") -> None:
        self.enabled = config.enabled
        self._conditions: Policy | None = compile_conditions(config.conditions, path) if config.conditions else None

    def decide(self, visitor: Visitor) -> VisibilityDecision:
        """Restricted or not, per the product's three cases."""
        if not self.enabled:
            return VisibilityDecision(False, ALL_SCOPES, "portal.visibility off")
        if self._conditions is None:
            return VisibilityDecision(True, OWN_SCOPE, "portal.visibility on, no conditions")
        decision: Decision = self._conditions(visitor.facts())
        return VisibilityDecision(decision.allowed, OWN_SCOPE if decision.allowed else ALL_SCOPES, decision.rule)

    def ticket_filter(self, visitor: Visitor, scope: Scope) -> TicketFilter:
        """The one filter every read path uses; a scope the visitor may not use falls back to "mine"."""
        decision = self.decide(visitor)
        own_only = decision.restricted or scope == "mine"
        return TicketFilter(
            company_ids=frozenset(company.id for company in visitor.companies),
            contact_id=visitor.contact.id if visitor.contact else None,
            own_only=own_only,
        )

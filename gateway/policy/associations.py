"""Which company a ticket belongs to: the association rules, as pure functions that deny by default.

- A new ticket with no company given is associated with its creator's company
  when the creator belongs to exactly one; with several (or none), with none
  until one is chosen.
- A company given for a ticket, new or existing, must be one its creator
  belongs to; anything else is refused (422), never silently dropped.
"""

from __future__ import annotations

from collections.abc import Collection

from gateway.errors import Invalid


def _member_company(member_of: Collection[str], requested: str) -> str:
    # SECURITY: a ticket in a company its creator is not in would show that company's people someone else's ticket.
    if requested not in member_of:
        raise Invalid(("company", f"the creator is not a member of company {requested!r}"))
    return requested


def company_for_new_ticket(member_of: Collection[str], requested: str | None) -> str | None:
    """The company a new ticket is associated with, given its creator's companies and the one asked for."""
    if requested is not None:
        return _member_company(member_of, requested)
    return next(iter(member_of)) if len(member_of) == 1 else None


def company_for_ticket(member_of: Collection[str], requested: str | None) -> str | None:
    """The company an existing ticket is moved to (None takes it out of every company)."""
    return None if requested is None else _member_company(member_of, requested)

"""Intercom's objects (2.16) as the store's lines: pure functions, one per kind, no I/O.

- a company keeps Intercom's id and the customer's own ``company_id``;
- a contact is mirrored only with an ``external_id``: that is the ``user_id`` their tokens carry, and a
  contact without one can never sign in to the portal;
- a ticket's parts: ``note`` is internal, ``comment`` and ``quick_reply`` are public, every other part
  (assignments, state changes) is no reply and is left out; bodies are HTML, kept as their text;
- a ticket's creator is its first contact, its participants all of them, its linked conversation the first
  conversation among ``linked_objects``; its company is the store's to decide (the creator's only one).
"""

from __future__ import annotations

from html.parser import HTMLParser
from typing import Any

from gateway.store.lines import CompanyLine, ContactLine, PartLine, StateLine, TicketLine

JSON = dict[str, Any]
PUBLIC_PARTS = frozenset({"comment", "quick_reply"})
INTERNAL_PARTS = frozenset({"note"})
_BLOCKS = frozenset({"p", "br", "div", "li", "ul", "ol", "h1", "h2", "h3", "h4", "pre", "blockquote"})


class _Text(HTMLParser):
    """The text of an HTML fragment, a line break for each block."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.pieces: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _BLOCKS and self.pieces:
            self.pieces.append("\n")

    def handle_data(self, data: str) -> None:
        self.pieces.append(data)


def text_of(html: str) -> str:
    """The plain text of a part's HTML body (the portal escapes what it shows, and searches text)."""
    parser = _Text()
    parser.feed(html)
    parser.close()
    lines = "".join(parser.pieces).splitlines()
    return "\n".join(line.strip() for line in lines if line.strip())


def company_line(company: JSON) -> CompanyLine:
    """A company object as a line."""
    plan = company.get("plan")
    return CompanyLine(
        kind="company",
        remote_id=str(company["id"]),
        company_id=str(company.get("company_id") or company["id"]),
        name=str(company.get("name") or company.get("company_id") or company["id"]),
        plan=plan.get("name") if isinstance(plan, dict) else None,
        size=company.get("size"),
        monthly_spend=company.get("monthly_spend"),
        custom_attributes=dict(company.get("custom_attributes") or {}),
    )


def contact_line(contact: JSON, companies: list[str]) -> ContactLine | None:
    """A contact object as a line, members of the companies (their ``company_id``); None without an external id."""
    external_id = contact.get("external_id")
    if not external_id:
        return None
    return ContactLine(
        kind="contact",
        remote_id=str(contact["id"]),
        user_id=str(external_id),
        email=contact.get("email"),
        name=contact.get("name"),
        companies=companies,
        custom_attributes=dict(contact.get("custom_attributes") or {}),
    )


def state_line(state: JSON) -> StateLine:
    """A ticket state object as a line."""
    return StateLine(
        kind="ticket_state",
        category=state["category"],
        internal_label=str(state["internal_label"]),
        external_label=str(state.get("external_label") or state["internal_label"]),
    )


def _part(part: JSON, people: dict[str, str]) -> PartLine | None:
    kind, body = part.get("part_type"), part.get("body")
    if kind not in PUBLIC_PARTS | INTERNAL_PARTS or not body:
        return None
    author = part.get("author") or {}
    user_id = people.get(str(author.get("id"))) if author.get("type") in ("user", "lead") else None
    return PartLine(
        author=user_id,
        author_name=None if user_id else (author.get("name") or "Support"),
        body=text_of(str(body)),
        # SECURITY: only the kinds Intercom shows the customer are public; a note, or any kind not known
        # here, never is.
        public=kind in PUBLIC_PARTS,
        created_at=int(part.get("created_at") or 0),
    )


def ticket_lines(ticket: JSON) -> list[StateLine | TicketLine]:
    """A ticket object as its state's line and its own; empty when none of its contacts has an external id."""
    references = (ticket.get("contacts") or {}).get("contacts") or []
    people = {str(ref["id"]): str(ref["external_id"]) for ref in references if ref.get("external_id")}
    if not people:
        return []
    attributes = ticket.get("ticket_attributes") or {}
    linked = (ticket.get("linked_objects") or {}).get("data") or []
    conversation = next((str(item["id"]) for item in linked if item.get("type") == "conversation"), None)
    parts = [_part(part, people) for part in (ticket.get("ticket_parts") or {}).get("ticket_parts") or []]
    state = state_line(ticket["ticket_state"])
    return [
        state,
        TicketLine(
            kind="ticket",
            remote_id=str(ticket["id"]),
            conversation=conversation,
            ticket_id=str(ticket.get("ticket_id") or ticket["id"]),
            type=str((ticket.get("ticket_type") or {}).get("name") or "Ticket"),
            state=state.internal_label,
            category=ticket.get("category") or "Customer",
            is_shared=bool(ticket.get("is_shared")),
            creator=next(iter(people.values())),
            title=str(attributes.get("_default_title_") or f"Ticket {ticket.get('ticket_id')}"),
            description=str(attributes.get("_default_description_") or ""),
            created_at=int(ticket.get("created_at") or 0),
            updated_at=int(ticket.get("updated_at") or 0),
            parts=[part for part in parts if part is not None],
            participants=list(dict.fromkeys(people.values())),
        ),
    ]

"""The portal's JSON API under /api/v1/: the same visitor, the same visibility filter as the pages."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gateway.config import CONFIG
from gateway.guard import GUARD, STORE, VISITOR
from gateway.store.models import TicketDetail, TicketSummary
from routes.listing import parse_list


def ticket_json(ticket: TicketSummary) -> dict[str, Any]:
    """A ticket as the list shows it: customer-facing state label only."""
    return {
        "type": "ticket",
        "ticket_id": ticket.ticket_id,
        "title": ticket.title,
        "ticket_type": ticket.type_name,
        "state": {"category": ticket.state_category, "label": ticket.state_label},
        "company": ticket.company_name,
        "creator": ticket.creator_name,
        "created_at": ticket.created_at,
        "updated_at": ticket.updated_at,
    }


def detail_json(detail: TicketDetail) -> dict[str, Any]:
    """A ticket with its description and public conversation."""
    return {
        **ticket_json(detail.summary),
        "description": detail.description,
        "participant": detail.participant,
        "parts": [
            {"author": part.author_name, "body": part.body, "created_at": part.created_at} for part in detail.parts
        ],
    }


async def me(request: web.Request) -> web.Response:
    """Who the visitor is, their companies and the scopes they may use."""
    visitor = request[VISITOR]
    decision = request.app[GUARD].visibility.decide(visitor)
    return web.json_response(
        {
            "type": "visitor",
            "user_id": visitor.identity.user_id,
            "email": visitor.identity.email or (visitor.contact.email if visitor.contact else None),
            "name": visitor.identity.name or (visitor.contact.name if visitor.contact else None),
            "companies": [{"company_id": c.company_id, "name": c.name} for c in visitor.companies],
            "scopes": list(decision.scopes),
            "restricted": decision.restricted,
        }
    )


async def list_tickets(request: web.Request) -> web.Response:
    """One page of the tickets the visitor may see."""
    visitor = request[VISITOR]
    visibility = request.app[GUARD].visibility
    wanted = parse_list(request.query, visibility.decide(visitor), request.app[CONFIG].portal.page_size)
    page = await request.app[STORE].list_tickets(visibility.ticket_filter(visitor, wanted.scope), wanted.query)
    return web.json_response(
        {
            "type": "ticket.list",
            "scope": wanted.scope,
            "tickets": [ticket_json(ticket) for ticket in page.items],
            "total_count": page.total,
            "pages": {"page": page.page, "per_page": page.page_size, "total_pages": page.pages},
        }
    )


async def get_ticket(request: web.Request) -> web.Response:
    """One ticket; one the visitor may not see answers exactly like one that does not exist."""
    visitor = request[VISITOR]
    visibility = request.app[GUARD].visibility
    detail = await request.app[STORE].get_ticket(
        visibility.ticket_filter(visitor, "all"), request.match_info["ticket_id"]
    )
    if detail is None:
        raise web.HTTPNotFound()
    return web.json_response(detail_json(detail))


async def not_found(request: web.Request) -> web.Response:
    """Anything else under /api/v1/, whatever the method: the API's own 404, never the upstream."""
    raise web.HTTPNotFound()


def add_routes(app: web.Application) -> None:
    """Register the JSON API; the rest of its namespace answers 404 instead of falling through to the proxy."""
    app.router.add_get("/api/v1/me", me, name="api_me")
    app.router.add_get("/api/v1/tickets", list_tickets, name="api_tickets")
    app.router.add_get("/api/v1/tickets/{ticket_id}", get_ticket, name="api_ticket")
    # SECURITY: another method or sub-path of a ticket must not reach upstream with the visitor's X-Portal-*.
    app.router.add_route("*", "/api/v1/{tail:.*}", not_found, name="api_not_found")

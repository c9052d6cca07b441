"""The portal's JSON API under /api/v1/: the same visitor, the same visibility filter as the pages."""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web

from gateway.config import CONFIG
from gateway.edge.guard import STORE, VISIBILITY, VISITOR
from gateway.errors import BadRequest
from gateway.intercom import writes as intercom_writes
from gateway.intercom.connector import INTERCOM
from gateway.namespace import API_DESCRIPTION_PATH, API_PREFIX
from gateway.store.models import TICKET_ID_PATTERN, TicketDetail, TicketFilter, TicketPage, TicketSummary
from routes.fallback import namespace_fallback
from routes.highlight import highlight
from routes.listing import parse_list
from routes.openapi import openapi

_TICKET_ID = re.compile(TICKET_ID_PATTERN)


def _ticket_id(request: web.Request) -> str:
    """The path's ticket id; one no ticket can have is a 404 without asking the store."""
    ticket_id = request.match_info["ticket_id"]
    if not _TICKET_ID.fullmatch(ticket_id):
        raise web.HTTPNotFound()
    return ticket_id


def ticket_json(ticket: TicketSummary) -> dict[str, Any]:
    """A ticket as the list shows it: customer-facing state label only; while searching, its snippet."""
    snippet = (
        {"html": str(highlight(ticket.snippet)), "author": ticket.snippet_author, "created_at": ticket.snippet_at}
        if ticket.snippet
        else None
    )
    return {
        "snippet": snippet,
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
    decision = request.app[VISIBILITY].decide(visitor)
    return web.json_response(
        {
            "type": "visitor",
            "user_id": visitor.identity.user_id,
            "email": visitor.email,
            "name": visitor.name,
            "companies": [{"company_id": c.company_id, "name": c.name} for c in visitor.companies],
            "scopes": list(decision.scopes),
            "restricted": decision.restricted,
        }
    )


async def list_tickets(request: web.Request) -> web.Response:
    """One page of the tickets the visitor may see."""
    visitor = request[VISITOR]
    visibility = request.app[VISIBILITY]
    store = request.app[STORE]
    page_size = request.app[CONFIG].portal.page_size
    wanted = parse_list(request.query, visibility.decide(visitor), page_size, await store.ticket_states())
    page = await store.list_tickets(visibility.ticket_filter(visitor, wanted.scope), wanted.query)
    return _list_response(wanted.scope, page)


def _list_response(scope: str, page: TicketPage) -> web.Response:
    return web.json_response(
        {
            "type": "ticket.list",
            "scope": scope,
            "tickets": [ticket_json(ticket) for ticket in page.items],
            "total_count": page.total,
            "pages": {"page": page.page, "per_page": page.page_size, "total_pages": page.pages},
        }
    )


async def tickets_space(request: web.Request) -> web.Response:
    """The tickets whose conversations the visitor takes part in (still only those they may see)."""
    visitor = request[VISITOR]
    visibility = request.app[VISIBILITY]
    page_size = request.app[CONFIG].portal.page_size
    wanted = parse_list({"page": request.query.get("page", "")}, visibility.decide(visitor), page_size)
    page = await request.app[STORE].tickets_space(visibility.ticket_filter(visitor, "all"), wanted.query)
    return _list_response("all", page)


async def join_conversation(request: web.Request, ticket_id: str) -> TicketFilter:
    """The one join flow, for the page and the API: the visitor joins the ticket's conversation (idempotent);
    a ticket they may not see is a 404, as one that does not exist. Returns the filter the ticket was seen by."""
    visitor = request[VISITOR]
    visible = request.app[VISIBILITY].ticket_filter(visitor, "all")
    store = request.app[STORE]
    if visitor.contact is None:
        raise web.HTTPNotFound()
    if INTERCOM in request.app:
        # Intercom first: the store records the join only once Intercom holds it (nothing half-done).
        detail = await store.get_ticket(visible, ticket_id)
        if detail is None:
            raise web.HTTPNotFound()
        if not detail.participant:
            await intercom_writes.join(request.app[INTERCOM], store, ticket_id, visitor.contact.user_id)
    if not await store.join(visible, ticket_id, visitor.contact.id):
        raise web.HTTPNotFound()
    return visible


async def join_ticket(request: web.Request) -> web.Response:
    """Join a ticket's conversation (idempotent); answers the ticket as it now stands."""
    # SECURITY: with cookie credentials a cross-site page could post here; a form cannot send JSON or a
    # bearer token without a CORS preflight, which the gateway never grants.
    if "Authorization" not in request.headers and request.content_type != "application/json":
        raise BadRequest("send Content-Type: application/json or an Authorization header")
    ticket_id = _ticket_id(request)
    visible = await join_conversation(request, ticket_id)
    detail = await request.app[STORE].get_ticket(visible, ticket_id)
    if detail is None:
        raise web.HTTPNotFound()
    return web.json_response(detail_json(detail))


async def get_ticket(request: web.Request) -> web.Response:
    """One ticket; one the visitor may not see answers exactly like one that does not exist."""
    visitor = request[VISITOR]
    visibility = request.app[VISIBILITY]
    detail = await request.app[STORE].get_ticket(visibility.ticket_filter(visitor, "all"), _ticket_id(request))
    if detail is None:
        raise web.HTTPNotFound()
    return web.json_response(detail_json(detail))


async def not_found(request: web.Request) -> web.Response:
    """A path the gateway keeps to itself but does not serve, whatever the method: its own 404, never the upstream."""
    raise web.HTTPNotFound()


def add_routes(app: web.Application) -> None:
    """Register the JSON API; the rest of its namespace answers 404 instead of falling through to the proxy."""
    app.router.add_get(API_DESCRIPTION_PATH, openapi, name="api_openapi")
    app.router.add_get(API_PREFIX + "/me", me, name="api_me")
    app.router.add_get(API_PREFIX + "/me/tickets-space", tickets_space, name="api_tickets_space")
    app.router.add_get(API_PREFIX + "/tickets", list_tickets, name="api_tickets")
    app.router.add_get(API_PREFIX + "/tickets/{ticket_id}", get_ticket, name="api_ticket")
    app.router.add_post(API_PREFIX + "/tickets/{ticket_id}/join", join_ticket, name="api_join")
    # SECURITY: another method or sub-path of a ticket must not reach upstream with the visitor's X-Portal-*.
    # Another method on one of the paths above is a 405 naming the methods it takes; anything else a 404.
    app.router.add_route("*", API_PREFIX + "/{tail:.*}", namespace_fallback(API_PREFIX + "/"), name="api_not_found")

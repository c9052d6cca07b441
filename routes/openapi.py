"""The OpenAPI description of /api/v1/, served at /api/v1/openapi.json and checked against real responses in tests.

It states every bound the handlers enforce, so a client (or schemathesis, in the tests) can tell a
request the API takes from one it refuses; the ``state`` slugs are the store's, read as it is served.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from aiohttp import web

from gateway.edge.guard import STORE
from gateway.store.models import SORT_KEYS, TICKET_ID_PATTERN, TicketState
from routes.listing import MAX_ID, MAX_PAGE

STRING_OR_NULL = {"type": ["string", "null"]}


def pages_schema(page: dict[str, Any], per_page: dict[str, Any]) -> dict[str, Any]:
    """The ``pages`` object of a list answer: which page this is, of how many, and their size."""
    return {
        "type": "object",
        "required": ["page", "per_page", "total_pages"],
        "properties": {"page": page, "per_page": per_page, "total_pages": {"type": "integer", "minimum": 1}},
    }


_TIME = {"type": "integer", "description": "Unix seconds."}

SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["status", "title", "detail", "request_id"],
                "properties": {
                    "status": {"type": "integer", "minimum": 400, "maximum": 599},
                    "title": {"type": "string"},
                    "detail": {"type": "string", "description": "What was wrong; for a 400, the parameter and why."},
                    "request_id": {"type": "string", "description": "Quote it to find the request's audit record."},
                    "fields": {
                        "type": "array",
                        "description": "Each refused input field (admin API): its path and why.",
                        "items": {
                            "type": "object",
                            "required": ["path", "reason"],
                            "properties": {"path": {"type": "string"}, "reason": {"type": "string"}},
                        },
                    },
                },
            }
        },
    },
    "Visitor": {
        "type": "object",
        "required": ["type", "user_id", "email", "name", "companies", "scopes", "restricted"],
        "properties": {
            "type": {"const": "visitor"},
            "user_id": {"type": "string"},
            "email": STRING_OR_NULL,
            "name": STRING_OR_NULL,
            "companies": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["company_id", "name"],
                    "properties": {"company_id": {"type": "string"}, "name": {"type": "string"}},
                },
            },
            "scopes": {"type": "array", "items": {"enum": ["all", "mine"]}},
            "restricted": {"type": "boolean"},
        },
    },
    "Ticket": {
        "type": "object",
        "required": ["type", "ticket_id", "title", "ticket_type", "state", "company", "creator", "created_at"],
        "properties": {
            "type": {"const": "ticket"},
            "ticket_id": {"type": "string", "pattern": TICKET_ID_PATTERN},
            "title": {"type": "string"},
            "ticket_type": {"type": "string"},
            "state": {
                "type": "object",
                "required": ["category", "label"],
                "properties": {
                    "category": {"enum": ["submitted", "in_progress", "waiting_on_customer", "resolved"]},
                    "label": {"type": "string", "description": "The customer-facing (external) label."},
                },
            },
            "company": STRING_OR_NULL,
            "creator": STRING_OR_NULL,
            "created_at": _TIME,
            "updated_at": _TIME,
            "snippet": {
                "type": ["object", "null"],
                "description": "While searching: the best match, the term between <mark> and </mark>, text escaped.",
                "required": ["html", "author", "created_at"],
                "properties": {"html": {"type": "string"}, "author": STRING_OR_NULL, "created_at": _TIME},
            },
        },
    },
    "TicketList": {
        "type": "object",
        "required": ["type", "scope", "tickets", "total_count", "pages"],
        "properties": {
            "type": {"const": "ticket.list"},
            "scope": {"enum": ["all", "mine"]},
            "tickets": {"type": "array", "items": {"$ref": "#/components/schemas/Ticket"}},
            "total_count": {"type": "integer", "minimum": 0},
            "pages": pages_schema(
                {"type": "integer", "minimum": 1, "maximum": MAX_PAGE}, {"type": "integer", "minimum": 1}
            ),
        },
    },
    "TicketDetail": {
        "allOf": [
            {"$ref": "#/components/schemas/Ticket"},
            {
                "type": "object",
                "required": ["description", "participant", "parts"],
                "properties": {
                    "description": {"type": "string"},
                    "participant": {"type": "boolean"},
                    "parts": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["author", "body", "created_at"],
                            "properties": {
                                "author": {"type": "string"},
                                "body": {"type": "string"},
                                "created_at": _TIME,
                            },
                        },
                    },
                },
            },
        ]
    },
}


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    # Empty is the same as left out: the list page's form sends every field, filled in or not.
    return {
        "name": name,
        "in": "query",
        "required": False,
        "allowEmptyValue": True,
        "schema": schema,
        "description": description,
    }


def json_answer(ref: str, description: str) -> dict[str, Any]:
    """An answer whose JSON body is the schema ``ref`` of the document's components."""
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}},
    }


def _error(description: str) -> dict[str, Any]:
    return json_answer("Error", description)


ALLOW = {"Allow": {"description": "The methods the path takes.", "schema": {"type": "string"}}}
METHOD_NOT_ALLOWED = {**_error("A method the path does not take; Allow names those it does."), "headers": ALLOW}
"""The answer to any method a described path does not take (OpenAPI has no place for it on an operation)."""
ERRORS_DESCRIPTION = (
    "Errors are JSON (the Error schema), each with a request id. Any method a described path does not take "
    "answers 405 with an Allow header naming those it does; any other path under the prefix answers 404."
)
_UNREADABLE = _error("A parameter could not be read; detail names it and says why.")
_UNAUTHENTICATED = _error("No valid identity.")
_OUTSIDE = _error("Signed in, but not in the portal's audience.")
_NO_TICKET = _error("No such ticket, or not one I may see.")
_BAD_PATH = _error("A path the gateway refuses to read (control characters, encoded slashes, dot segments).")
_TICKET_ID = {
    "name": "ticket_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": TICKET_ID_PATTERN},
}
_ID = {"type": "integer", "minimum": 1, "maximum": MAX_ID}
_PAGE = _query("page", {"type": "integer", "minimum": 1, "maximum": MAX_PAGE}, "1-based; past the last page: none.")


def _list_parameters(states: Sequence[TicketState]) -> list[dict[str, Any]]:
    slugs = list(dict.fromkeys(state.slug for state in states))
    state = {"anyOf": [{"enum": slugs}, _ID]} if slugs else _ID
    return [
        _query("scope", {"enum": ["all", "mine"]}, "all: the companies' tickets (when allowed); mine: created by me."),
        _query(
            "state",
            state,
            "A customer-facing state label as a slug (lower case, words joined by -: in-progress), or a state id"
            " as older links carry; either matches every state with that label.",
        ),
        _query("type", _ID, "A ticket type id."),
        _query("creator", _ID, "The creator's contact id."),
        *(
            _query(name, {"type": "string", "format": "date"}, "YYYY-MM-DD, UTC; before-dates include their day.")
            for name in ("created_after", "created_before", "updated_after", "updated_before")
        ),
        _query("q", {"type": "string"}, "Search title, description, ticket ID and public replies."),
        _query("sort", {"enum": list(SORT_KEYS)}, "Default: relevance while searching, else updated."),
        _query("order", {"enum": ["asc", "desc"]}, "Default: desc."),
        _PAGE,
    ]


def document(states: Sequence[TicketState]) -> dict[str, Any]:
    """The OpenAPI document, with the ``state`` slugs of ``states``."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Customer tickets portal API",
            "version": "1",
            "description": "The tickets a signed-in visitor may see, under the same visibility rules as the pages. "
            + ERRORS_DESCRIPTION,
        },
        "components": {
            "schemas": SCHEMAS,
            "responses": {"MethodNotAllowed": METHOD_NOT_ALLOWED},
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
                "cookie": {"type": "apiKey", "in": "cookie", "name": "portal-jwt"},
            },
        },
        "security": [{"bearer": []}, {"cookie": []}],
        "paths": {
            "/api/v1/me": {
                "get": {
                    "summary": "Who I am",
                    "responses": {
                        "200": json_answer("Visitor", "The visitor."),
                        "401": _UNAUTHENTICATED,
                        "403": _OUTSIDE,
                    },
                }
            },
            "/api/v1/me/tickets-space": {
                "get": {
                    "summary": "Tickets whose conversation I take part in",
                    "parameters": [_PAGE],
                    "responses": {
                        "200": json_answer("TicketList", "One page."),
                        "400": _UNREADABLE,
                        "401": _UNAUTHENTICATED,
                        "403": _OUTSIDE,
                    },
                }
            },
            "/api/v1/tickets": {
                "get": {
                    "summary": "Tickets I may see",
                    "parameters": _list_parameters(states),
                    "responses": {
                        "200": json_answer("TicketList", "One page."),
                        "400": _UNREADABLE,
                        "401": _UNAUTHENTICATED,
                        "403": _OUTSIDE,
                    },
                }
            },
            "/api/v1/tickets/{ticket_id}": {
                "get": {
                    "summary": "One ticket",
                    "parameters": [_TICKET_ID],
                    "responses": {
                        "200": json_answer("TicketDetail", "The ticket."),
                        "400": _BAD_PATH,
                        "401": _UNAUTHENTICATED,
                        "403": _OUTSIDE,
                        "404": _NO_TICKET,
                    },
                }
            },
            "/api/v1/tickets/{ticket_id}/join": {
                "post": {
                    "summary": "Join the ticket's conversation (idempotent)",
                    "description": "With cookie credentials, send Content-Type: application/json (CSRF defence).",
                    "parameters": [_TICKET_ID],
                    "responses": {
                        "200": json_answer("TicketDetail", "The ticket, now with participant true."),
                        "400": _error("Cookie credentials without Content-Type: application/json, or a bad path."),
                        "401": _UNAUTHENTICATED,
                        "403": _OUTSIDE,
                        "404": _NO_TICKET,
                    },
                }
            },
        },
    }


async def openapi(request: web.Request) -> web.Response:
    """The OpenAPI document (public: it describes, it does not reveal; state labels are the customers' own)."""
    return web.json_response(document(await request.app[STORE].ticket_states()))

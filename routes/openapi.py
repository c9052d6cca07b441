"""The OpenAPI description of /api/v1/, served at /api/v1/openapi.json and checked against real responses in tests."""

from __future__ import annotations

from typing import Any

from aiohttp import web

_STRING_OR_NULL = {"type": ["string", "null"]}
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
                    "status": {"type": "integer"},
                    "title": {"type": "string"},
                    "detail": {"type": "string"},
                    "request_id": {"type": "string"},
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
            "email": _STRING_OR_NULL,
            "name": _STRING_OR_NULL,
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
            "ticket_id": {"type": "string"},
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
            "company": _STRING_OR_NULL,
            "creator": _STRING_OR_NULL,
            "created_at": _TIME,
            "updated_at": _TIME,
            "snippet": {
                "type": ["object", "null"],
                "description": "While searching: the best match, the term between <mark> and </mark>, text escaped.",
                "required": ["html", "author", "created_at"],
                "properties": {"html": {"type": "string"}, "author": _STRING_OR_NULL, "created_at": _TIME},
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
            "total_count": {"type": "integer"},
            "pages": {
                "type": "object",
                "required": ["page", "per_page", "total_pages"],
                "properties": {
                    "page": {"type": "integer"},
                    "per_page": {"type": "integer"},
                    "total_pages": {"type": "integer"},
                },
            },
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
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


def _json(ref: str, description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}},
    }


_ERRORS = {
    "400": _json("Error", "A parameter could not be read; detail names it."),
    "401": _json("Error", "No valid identity."),
    "403": _json("Error", "Signed in, but not in the portal's audience."),
}
_TICKET_ID = {"name": "ticket_id", "in": "path", "required": True, "schema": {"type": "string"}}
_LIST_PARAMETERS = [
    _query("scope", {"enum": ["all", "mine"]}, "all: the companies' tickets (when allowed); mine: created by me."),
    _query("state", {"type": "integer"}, "A state id; matches every state with the same customer-facing label."),
    _query("type", {"type": "integer"}, "A ticket type id."),
    _query("creator", {"type": "integer"}, "The creator's contact id."),
    *(
        _query(name, {"type": "string", "format": "date"}, "YYYY-MM-DD, UTC; before-dates include their day.")
        for name in ("created_after", "created_before", "updated_after", "updated_before")
    ),
    _query("q", {"type": "string"}, "Search title, description, ticket ID and public replies."),
    _query("sort", {"enum": ["relevance", "id", "type", "state", "created", "updated"]}, "Default: updated."),
    _query("order", {"enum": ["asc", "desc"]}, "Default: desc."),
    _query("page", {"type": "integer", "minimum": 1}, "1-based."),
]

DOCUMENT: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "Customer tickets portal API",
        "version": "1",
        "description": "The tickets a signed-in visitor may see, under the same visibility rules as the pages.",
    },
    "components": {
        "schemas": SCHEMAS,
        "securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
            "cookie": {"type": "apiKey", "in": "cookie", "name": "portal-jwt"},
        },
    },
    "security": [{"bearer": []}, {"cookie": []}],
    "paths": {
        "/api/v1/me": {
            "get": {"summary": "Who I am", "responses": {"200": _json("Visitor", "The visitor."), **_ERRORS}}
        },
        "/api/v1/me/tickets-space": {
            "get": {
                "summary": "Tickets whose conversation I take part in",
                "parameters": [_LIST_PARAMETERS[-1]],
                "responses": {"200": _json("TicketList", "One page."), **_ERRORS},
            }
        },
        "/api/v1/tickets": {
            "get": {
                "summary": "Tickets I may see",
                "parameters": _LIST_PARAMETERS,
                "responses": {"200": _json("TicketList", "One page."), **_ERRORS},
            }
        },
        "/api/v1/tickets/{ticket_id}": {
            "get": {
                "summary": "One ticket",
                "parameters": [_TICKET_ID],
                "responses": {
                    "200": _json("TicketDetail", "The ticket."),
                    "404": _json("Error", "No such ticket, or not one I may see."),
                    **_ERRORS,
                },
            }
        },
        "/api/v1/tickets/{ticket_id}/join": {
            "post": {
                "summary": "Join the ticket's conversation (idempotent)",
                "parameters": [_TICKET_ID],
                "responses": {
                    "200": _json("TicketDetail", "The ticket, now with participant true."),
                    "404": _json("Error", "No such ticket, or not one I may see."),
                    **_ERRORS,
                },
            }
        },
    },
}


async def openapi(request: web.Request) -> web.Response:
    """The OpenAPI document (public: it describes, it does not reveal)."""
    return web.json_response(DOCUMENT)

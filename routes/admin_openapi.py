"""The OpenAPI description of the admin API, served at /admin/api/openapi.json to a caller with the admin token.

Request bodies and list queries are the pydantic models of ``routes/admin.py`` as JSON Schema
(``model_json_schema``), so the description cannot drift from what the handlers accept; the answers are
the JSON objects ``routes/admin.py`` shapes from the store's records, written out here.
"""

from __future__ import annotations

from typing import Any, get_args

from aiohttp import web
from pydantic import BaseModel

from gateway.namespace import ADMIN_PREFIX
from gateway.store.models import STATE_CATEGORIES, TICKET_ID_PATTERN, TicketCategory
from routes import admin
from routes.openapi import ERRORS_DESCRIPTION, METHOD_NOT_ALLOWED, SCHEMAS, STRING_OR_NULL, json_answer, pages_schema

_REF = "#/components/schemas/{model}"
_TIME = {"type": "integer", "minimum": 0, "description": "Unix seconds."}
_TICKET_CATEGORIES = list(get_args(TicketCategory))


def _body_schema(model: type[BaseModel], *, patch: bool = False) -> dict[str, Any]:
    """The model's JSON Schema; for a patch, without defaults (a field left out stays as it is)."""
    schema = model.model_json_schema(ref_template=_REF)
    if patch:
        for field in schema["properties"].values():
            field.pop("default", None)
    return schema


def _not_null(schema: dict[str, Any]) -> dict[str, Any]:
    """A query parameter's schema: a query string has no null, only a parameter left out."""
    options = [option for option in schema.get("anyOf", []) if option != {"type": "null"}]
    kept = {key: value for key, value in schema.items() if key not in ("anyOf", "default", "title")}
    return {**kept, **options[0]} if len(options) == 1 else kept


_LIST_QUERY = admin.ListQuery.model_json_schema()["properties"]
_RECORD = {"custom_attributes": {"type": "object", "description": "As set; the audience rules read them."}}

SCHEMAS_ADMIN: dict[str, Any] = {
    "Error": SCHEMAS["Error"],
    "CompanyIn": _body_schema(admin.CompanyIn),
    "CompanyPatch": _body_schema(admin.CompanyPatch, patch=True),
    "ContactIn": _body_schema(admin.ContactIn),
    "ContactPatch": _body_schema(admin.ContactPatch, patch=True),
    "TicketIn": _body_schema(admin.TicketIn),
    "TicketPatch": _body_schema(admin.TicketPatch, patch=True),
    "PartIn": _body_schema(admin.PartIn),
    "Company": {
        "type": "object",
        "required": ["type", "company_id", "name", "plan", "size", "monthly_spend", "custom_attributes", "user_count"],
        "properties": {
            "type": {"const": "company"},
            "company_id": {"type": "string"},
            "name": {"type": "string"},
            "plan": STRING_OR_NULL,
            "size": {"type": ["integer", "null"], "minimum": 0},
            "monthly_spend": {"type": ["number", "null"], "minimum": 0},
            **_RECORD,
            "user_count": {"type": "integer", "minimum": 0},
        },
    },
    "Contact": {
        "type": "object",
        "required": ["type", "user_id", "email", "name", "custom_attributes", "companies"],
        "properties": {
            "type": {"const": "contact"},
            "user_id": {"type": "string"},
            "email": STRING_OR_NULL,
            "name": STRING_OR_NULL,
            **_RECORD,
            "companies": {"type": "array", "items": {"type": "string"}, "description": "company_id of each."},
        },
    },
    "Ticket": {
        "type": "object",
        "required": [
            *("type", "ticket_id", "title", "ticket_type", "state", "category", "is_shared"),
            *("company_id", "creator", "created_at", "updated_at"),
        ],
        "properties": {
            "type": {"const": "ticket"},
            "ticket_id": {"type": "string"},
            "title": {"type": "string"},
            "ticket_type": {"type": "string"},
            "state": {
                "type": "object",
                "required": ["internal_label", "external_label", "category"],
                "properties": {
                    "internal_label": {"type": "string"},
                    "external_label": {"type": "string", "description": "What customers see."},
                    "category": {"enum": list(STATE_CATEGORIES)},
                },
            },
            "category": {"enum": _TICKET_CATEGORIES},
            "is_shared": {"type": "boolean"},
            "company_id": STRING_OR_NULL,
            "creator": STRING_OR_NULL,
            "created_at": _TIME,
            "updated_at": _TIME,
        },
    },
    "TicketDetail": {
        "allOf": [
            {"$ref": "#/components/schemas/Ticket"},
            {
                "type": "object",
                "required": ["description", "parts"],
                "properties": {
                    "description": {"type": "string"},
                    "parts": {
                        "type": "array",
                        "description": "Public replies and internal notes, oldest first.",
                        "items": {
                            "type": "object",
                            "required": ["author_name", "body", "public", "created_at"],
                            "properties": {
                                "author_name": {"type": "string"},
                                "body": {"type": "string"},
                                "public": {"type": "boolean"},
                                "created_at": _TIME,
                            },
                        },
                    },
                },
            },
        ]
    },
    "TicketList": {
        "type": "object",
        "required": ["type", "data", "total_count", "pages"],
        "properties": {
            "type": {"const": "list"},
            "data": {"type": "array", "items": {"$ref": "#/components/schemas/Ticket"}},
            "total_count": {"type": "integer", "minimum": 0},
            "pages": pages_schema(_not_null(_LIST_QUERY["page"]), _not_null(_LIST_QUERY["per_page"])),
        },
    },
    **{
        f"{what.capitalize()}Deleted": {
            "type": "object",
            "required": ["type", key, "deleted"],
            "properties": {"type": {"const": what}, key: {"type": "string"}, "deleted": {"const": True}},
        }
        for what, key in ((records.what, records.key) for records in (admin.COMPANIES, admin.CONTACTS))
    },
}


def _body(ref: str) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}}}


def _path(name: str, pattern: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string", "pattern": pattern}}


def _query(name: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": _not_null(_LIST_QUERY[name])}


# Every answer may also be a 401 (no admin token) or a 400 (a path the gateway refuses to read).
_ALWAYS = {
    "400": json_answer("Error", "A path the gateway refuses to read, or a body that is not JSON."),
    "401": json_answer("Error", "No admin token, or the wrong one."),
}
_MISSING = {"404": json_answer("Error", "Something the request names does not exist; detail says what.")}
_REFUSED = {"422": json_answer("Error", "Input fields refused; fields names each (path and reason).")}
_CONFLICT = {"409": json_answer("Error", "It would duplicate something or lose data; detail says what.")}
_COMPANY_ID, _USER_ID = _path("company_id", admin.RECORD_KEY), _path("user_id", admin.RECORD_KEY)
_TICKET_ID = _path("ticket_id", TICKET_ID_PATTERN)


def _operation(
    summary: str, answer: tuple[str, str, str], *errors: dict[str, Any], body: str | None = None, **more: Any
) -> dict[str, Any]:
    status, ref, description = answer
    operation: dict[str, Any] = {
        "summary": summary,
        **more,
        "responses": {status: json_answer(ref, description), **_ALWAYS, **{k: v for e in errors for k, v in e.items()}},
    }
    if body is not None:
        operation["requestBody"] = _body(body)
    return operation


def _records(what: str, collection: str, key: dict[str, Any]) -> dict[str, Any]:
    """The four routes of companies or contacts: create, read, change, delete."""
    name = what.capitalize()
    one = ("200", name, f"The {what}.")
    return {
        collection: {
            "post": _operation(
                f"Create a {what}", ("201", name, f"The new {what}."), _REFUSED, _CONFLICT, body=f"{name}In"
            ),
        },
        f"{collection}/{{{key['name']}}}": {
            "parameters": [key],
            "get": _operation(f"One {what}", one, _MISSING),
            "patch": _operation(f"Change a {what}'s fields", one, _MISSING, _REFUSED, body=f"{name}Patch"),
            "delete": _operation(
                f"Delete a {what} nothing depends on",
                ("200", f"{name}Deleted", "Deleted."),
                _MISSING,
                _CONFLICT,
            ),
        },
    }


_PATHS: dict[str, Any] = {
    **_records("company", "/companies", _COMPANY_ID),
    "/companies/{company_id}/tickets": {
        "parameters": [_COMPANY_ID],
        "get": _operation(
            "The company's tickets (its Tickets tab)",
            ("200", "TicketList", "One page, most recently updated first."),
            _MISSING,
            _REFUSED,
            parameters=[_query("q"), _query("page"), _query("per_page")],
        ),
    },
    **_records("contact", "/contacts", _USER_ID),
    "/contacts/{user_id}/companies/{company_id}": {
        "parameters": [_USER_ID, _COMPANY_ID],
        "put": _operation(
            "Make the contact a member of the company (idempotent)", ("200", "Contact", "The contact."), _MISSING
        ),
        "delete": _operation(
            "End the contact's membership",
            ("200", "Contact", "The contact."),
            _MISSING,
            description="404 when the contact is not a member.",
        ),
    },
    "/tickets": {
        "get": _operation(
            "Tickets of one company or all, matching q",
            ("200", "TicketList", "One page, most recently updated first."),
            _MISSING,
            _REFUSED,
            parameters=[_query("company_id"), _query("q"), _query("page"), _query("per_page")],
        ),
        "post": _operation(
            "Raise a ticket for a contact",
            ("201", "TicketDetail", "The new ticket."),
            _MISSING,
            _REFUSED,
            _CONFLICT,
            body="TicketIn",
            description="company left out follows the association rules: the creator's one company, else none.",
        ),
    },
    "/tickets/{ticket_id}": {
        "parameters": [_TICKET_ID],
        "get": _operation("One ticket, internal notes included", ("200", "TicketDetail", "The ticket."), _MISSING),
        "patch": _operation(
            "Change a ticket's state, type, sharing, text or company",
            ("200", "TicketDetail", "The ticket."),
            _MISSING,
            _REFUSED,
            body="TicketPatch",
        ),
    },
    "/tickets/{ticket_id}/parts": {
        "parameters": [_TICKET_ID],
        "post": _operation(
            "Add a public reply or an internal note",
            ("201", "TicketDetail", "The ticket with the new part."),
            _MISSING,
            _REFUSED,
            body="PartIn",
        ),
    },
}

DOCUMENT: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "Portal gateway admin API",
        "version": "1",
        "description": "Companies, contacts, memberships and tickets, behind the admin bearer token. "
        + ERRORS_DESCRIPTION,
    },
    "components": {
        "schemas": SCHEMAS_ADMIN,
        "responses": {"MethodNotAllowed": METHOD_NOT_ALLOWED},
        "securitySchemes": {"admin": {"type": "http", "scheme": "bearer", "description": "admin.token"}},
    },
    "security": [{"admin": []}],
    "paths": {ADMIN_PREFIX + path: item for path, item in _PATHS.items()},
}


async def openapi(request: web.Request) -> web.Response:
    """The admin API's OpenAPI document (behind the admin token like the rest of /admin/api)."""
    return web.json_response(DOCUMENT)

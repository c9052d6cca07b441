"""Reading the ticket list's URL parameters, shared by the portal pages and the JSON API."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from gateway.errorpages import BadRequest
from gateway.store.models import SORT_KEYS, SortKey, TicketQuery
from gateway.visibility import Scope, VisibilityDecision

MAX_PAGE = 10_000


class BadParameter(BadRequest):
    """A list parameter that cannot be read; the detail names the parameter."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"{name}: {reason}")


@dataclass(frozen=True)
class ListRequest:
    """The scope and query a list request asked for, after checking them."""

    scope: Scope
    query: TicketQuery


def _int(params: Mapping[str, str], name: str, *, minimum: int = 0, maximum: int | None = None) -> int | None:
    raw = params.get(name, "").strip()
    if not raw:
        return None
    if not raw.isdigit() or len(raw) > 12:
        raise BadParameter(name, "must be a whole number")
    value = int(raw)
    if value < minimum or (maximum is not None and value > maximum):
        raise BadParameter(name, f"must be between {minimum} and {maximum}")
    return value


def parse_list(params: Mapping[str, str], decision: VisibilityDecision, page_size: int) -> ListRequest:
    """Scope (a scope the visitor lacks becomes their own), state, page; anything unreadable is a 400."""
    scope_name = params.get("scope", "") or decision.scopes[0]
    if scope_name not in ("all", "mine"):
        raise BadParameter("scope", "must be all or mine")
    scope: Scope = "all" if scope_name == "all" and "all" in decision.scopes else "mine"
    sort = params.get("sort", "") or "updated"
    if sort not in SORT_KEYS:
        raise BadParameter("sort", f"must be one of {', '.join(SORT_KEYS)}")
    order = params.get("order", "") or "desc"
    if order not in ("asc", "desc"):
        raise BadParameter("order", "must be asc or desc")
    sort_key: SortKey = sort
    query = TicketQuery(
        state_id=_int(params, "state", minimum=1),
        sort=sort_key,
        descending=order == "desc",
        page=_int(params, "page", minimum=1, maximum=MAX_PAGE) or 1,
        page_size=page_size,
    )
    return ListRequest(scope=scope, query=query)

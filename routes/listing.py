"""Reading the ticket list's URL parameters, shared by the portal pages and the JSON API."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time

from gateway.edge.errorpages import BadRequest
from gateway.policy.visibility import Scope, VisibilityDecision
from gateway.store.models import SORT_KEYS, SortKey, TicketQuery

MAX_PAGE = 10_000
DAY = 86_400
DATE_FILTERS = ("created_after", "created_before", "updated_after", "updated_before")
FILTER_NAMES = ("q", "state", "type", "creator", *DATE_FILTERS)


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
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 12:
        raise BadParameter(name, "must be a whole number")
    value = int(raw)
    if value < minimum or (maximum is not None and value > maximum):
        raise BadParameter(name, f"must be between {minimum} and {maximum}")
    return value


def _day(params: Mapping[str, str], name: str) -> int | None:
    """A ``YYYY-MM-DD`` date as the unix time of its first second (UTC); a ``*_before`` date includes its day."""
    raw = params.get(name, "").strip()
    if not raw:
        return None
    try:
        day = date.fromisoformat(raw)
    except ValueError:
        raise BadParameter(name, "must be a date written YYYY-MM-DD") from None
    start = int(datetime.combine(day, time(), UTC).timestamp())
    return start + DAY if name.endswith("_before") else start


def parse_list(params: Mapping[str, str], decision: VisibilityDecision, page_size: int) -> ListRequest:
    """Scope (a scope the visitor lacks becomes their own), filters, search, sort, page; unreadable input is a 400."""
    scope_name = params.get("scope", "") or decision.scopes[0]
    if scope_name not in ("all", "mine"):
        raise BadParameter("scope", "must be all or mine")
    scope: Scope = "all" if scope_name == "all" and "all" in decision.scopes else "mine"
    sort = params.get("sort", "")
    sort_key: SortKey | None = next((key for key in SORT_KEYS if key == sort), None)
    if sort and sort_key is None:
        raise BadParameter("sort", f"must be one of {', '.join(SORT_KEYS)}")
    order = params.get("order", "") or "desc"
    if order not in ("asc", "desc"):
        raise BadParameter("order", "must be asc or desc")
    q = params.get("q", "").strip() or None
    query = TicketQuery(
        state_id=_int(params, "state", minimum=1),
        type_id=_int(params, "type", minimum=1),
        creator_id=_int(params, "creator", minimum=1),
        created_after=_day(params, "created_after"),
        created_before=_day(params, "created_before"),
        updated_after=_day(params, "updated_after"),
        updated_before=_day(params, "updated_before"),
        q=q,
        sort=sort_key,
        descending=order == "desc",
        page=_int(params, "page", minimum=1, maximum=MAX_PAGE) or 1,
        page_size=page_size,
    )
    return ListRequest(scope=scope, query=query)

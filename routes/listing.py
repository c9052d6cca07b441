"""Reading the ticket list's URL parameters, shared by the portal pages and the JSON API."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time

from gateway.errors import BadRequest
from gateway.policy.visibility import Scope, VisibilityDecision
from gateway.store.models import SORT_KEYS, SortKey, TicketQuery, TicketState

MAX_PAGE = 10_000
MAX_ID = 999_999_999_999  # twelve digits: far past any store, and never an integer SQLite cannot hold
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


def _int(params: Mapping[str, str], name: str, maximum: int) -> int | None:
    """A whole number from 1 to ``maximum``; None when the parameter is absent or empty."""
    raw = params.get(name, "").strip()
    if not raw:
        return None
    if not (raw.isascii() and raw.isdigit()):
        raise BadParameter(name, "must be a whole number")
    # Measured before it is converted: a thousand-digit number costs nothing to refuse.
    value = int(raw) if len(raw.lstrip("0")) <= len(str(maximum)) else maximum + 1
    if value > maximum:
        raise BadParameter(name, f"must be at most {maximum}")
    if value < 1:
        raise BadParameter(name, "must be at least 1")
    return value


def _state_by_slug(states: Sequence[TicketState], slug: str) -> TicketState | None:
    """The first state (in workflow order) whose customer-facing label reads as ``slug``."""
    return next((state for state in states if state.slug == slug), None)


def _state(params: Mapping[str, str], states: Sequence[TicketState]) -> int | None:
    """``state``: the slug of a customer-facing label (``in-progress``), or a state id as older links carry."""
    raw = params.get("state", "").strip()
    if raw.isascii() and raw.isdigit():
        return _int(params, "state", MAX_ID)
    if not raw:
        return None
    state = _state_by_slug(states, raw)
    if state is None:
        slugs = ", ".join(dict.fromkeys(state.slug for state in states))
        raise BadParameter("state", f"must be one of {slugs}" if slugs else "no ticket states exist")
    return state.id


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


def parse_list(
    params: Mapping[str, str], decision: VisibilityDecision, page_size: int, states: Sequence[TicketState] = ()
) -> ListRequest:
    """Scope (a scope the visitor lacks becomes their own), filters, search, sort, page; unreadable input is a 400.

    ``states`` are the store's ticket states, for reading a ``state`` slug.
    """
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
        state_id=_state(params, states),
        type_id=_int(params, "type", MAX_ID),
        creator_id=_int(params, "creator", MAX_ID),
        created_after=_day(params, "created_after"),
        created_before=_day(params, "created_before"),
        updated_after=_day(params, "updated_after"),
        updated_before=_day(params, "updated_before"),
        q=q,
        sort=sort_key,
        descending=order == "desc",
        page=_int(params, "page", MAX_PAGE) or 1,
        page_size=page_size,
    )
    return ListRequest(scope=scope, query=query)


def canonical_query(params: Iterable[tuple[str, str]], states: Sequence[TicketState]) -> list[tuple[str, str]]:
    """The list's query as its one URL: no empty fields, a state id as its slug, the rest as sent and in order."""
    # A submitted filter form sends every field, filled in or not; older links name a state by its id.
    by_id = {str(state.id): state.slug for state in states}
    return [
        (name, by_id.get(value.strip(), value) if name == "state" else value) for name, value in params if value.strip()
    ]

"""The Help Center home and the tickets portal pages, rendered by the gateway (``portal.mode: render``)."""

from __future__ import annotations

import re
from typing import Any

import aiohttp_jinja2
from aiohttp import web

from gateway.config import CONFIG, GatewayConfig
from gateway.edge.guard import CLOCK, STORE, VISIBILITY, VISITOR
from gateway.edge.secure import content_security_policy
from gateway.errors import Forbidden, Link
from gateway.namespace import EVENTS_SUFFIX
from gateway.policy.csrf import csrf_token, csrf_valid, derive_key
from gateway.policy.messengerboot import boot, messenger_sources
from routes.api import join_conversation, not_found
from routes.health import help_center_problem
from routes.highlight import highlight
from routes.listing import FILTER_NAMES, canonical_query, parse_list
from routes.timefmt import exact, iso, relative

COLUMNS = (
    ("id", "ID"),
    ("", "Title"),
    ("type", "Type"),
    ("state", "State"),
    ("", "Company"),
    ("", "Created by"),
    ("updated", "Updated"),
)
SORT_LABELS = {"id": "ID", "type": "type", "state": "state", "created": "creation date", "updated": "last update"}
TABS = {"all": "All", "mine": "Created by me"}
FILTER_LABELS = {
    "created_after": "Created from",
    "created_before": "Created to",
    "updated_after": "Updated from",
    "updated_before": "Updated to",
}
PAGE_WINDOW = 2  # page links shown each side of the current page, besides the first and the last
CSRF_KEY = web.AppKey("csrf_key", bytes)
BOOT_POLICY = web.AppKey("boot_policy", str)  # the CSP of a ticket page that boots the Messenger


async def _help_center_missing(request: web.Request) -> bool:
    """Demo mode (``identity.dev_login`` on) with no hosted help center answering: its links can only fail."""
    # Probed only in demo mode, so a real deployment's pages never wait on the upstream.
    return request.app[CONFIG].identity.dev_login and await help_center_problem(request.app) is not None


@aiohttp_jinja2.template("home.html")
async def home(request: web.Request) -> dict[str, Any]:
    """The Help Center home: the configured sections, in order."""
    config = request.app[CONFIG]
    return {
        "sections": config.help_center.sections,
        "portal_enabled": config.portal.enabled,
        "portal_path": config.portal.path,
        "help_center_missing": "articles" in config.help_center.sections and await _help_center_missing(request),
    }


def initials(name: str) -> str:
    """One or two letters for an avatar: the first and last words' first letters ("Ann Archer" -> "AA");
    a part in parentheses is a role, not a name ("Sam (support)" -> "S")."""
    words = re.sub(r"\([^)]*\)", " ", name).split()
    return "".join(word[0] for word in words[:1] + words[1:][-1:]).upper() or "?"


def page_numbers(current: int, last: int) -> list[int | None]:
    """The page links to show: the first, the last, and a window around ``current``; None where pages are left out."""
    shown = sorted({1, last, *range(max(1, current - PAGE_WINDOW), min(last, current + PAGE_WINDOW) + 1)})
    numbers: list[int | None] = []
    for number in shown:
        if numbers and number - (numbers[-1] or 0) > 1:
            numbers.append(None)
        numbers.append(number)
    return numbers


def events_url(config: GatewayConfig, scope: str) -> str | None:
    """Where the page's script follows its changes (routes/events.py); None when live updates are off."""
    if not config.portal.live:
        return None
    return config.portal.path + EVENTS_SUFFIX + ("?scope=mine" if scope == "mine" else "")


@aiohttp_jinja2.template("tickets.html")
async def ticket_list(request: web.Request) -> dict[str, Any]:
    """The visitor's tickets: tabs the visibility rules allow, filters, sort, search and pages."""
    visitor = request[VISITOR]
    visibility, config, store = request.app[VISIBILITY], request.app[CONFIG], request.app[STORE]
    all_states = await store.ticket_states()
    canonical = canonical_query(request.query.items(), all_states)
    if canonical != list(request.query.items()):
        # Not permanent: the slug follows the state's label, which may be renamed.
        raise web.HTTPFound(str(request.rel_url.with_query(canonical)))
    decision = visibility.decide(visitor)
    wanted = parse_list(request.query, decision, config.portal.page_size, all_states)
    visible = visibility.ticket_filter(visitor, wanted.scope)
    page = await store.list_tickets(visible, wanted.query)
    states = {state.external_label: state for state in reversed(all_states)}
    # A shared link may name any state behind a label; the dropdown shows the label it stands for.
    chosen = next((state.external_label for state in all_states if state.id == wanted.query.state_id), None)
    kept = {name: request.query[name] for name in ("scope", "sort", "order", *FILTER_NAMES) if request.query.get(name)}

    def link(**changes: object) -> str:
        query = {**kept, **{name: str(value) for name, value in changes.items() if value is not None}}
        for name, value in changes.items():
            if value is None:
                query.pop(name, None)
        return str(request.rel_url.with_query(query))

    show_creator = wanted.scope != "mine"  # all the visitor's own: the column would say their name on every row
    show_company = len(visitor.companies) != 1  # one company: the column would say its name on every row
    types = await store.visible_types(visible)
    creators = await store.creators(visible)
    names = {
        "q": lambda value: f"“{value}”",
        "state": lambda value: f"State: {chosen or value}",
        "type": lambda value: f"Type: {next((t.name for t in types if str(t.id) == value), value)}",
        "creator": lambda value: f"Created by: {next((n for i, n in creators if str(i) == value), value)}",
    }
    # Each chip links to the list without its filter.
    chips = [
        (names[name](value) if name in names else f"{FILTER_LABELS[name]} {value}", link(**{name: None, "page": None}))
        for name in FILTER_NAMES
        if (value := request.query.get(name))
    ]
    return {
        "portal_path": config.portal.path,
        "tabs": [(scope, TABS[scope]) for scope in decision.scopes],
        "chips": chips,
        "clear_all": link(**dict.fromkeys(FILTER_NAMES), page=None),
        # Open when the visitor chose something in it, so what they chose is in view.
        "panel_open": any(request.query.get(name) for name in FILTER_NAMES if name != "q"),
        "more_open": any(request.query.get(name) for name in FILTER_NAMES if name not in ("q", "state", "type")),
        "show_creator": show_creator,
        "show_company": show_company,
        "page_numbers": page_numbers(page.page, page.pages),
        "current_scope": wanted.scope,
        "params": {name: request.query.get(name) for name in FILTER_NAMES},
        "filtered": any(request.query.get(name) for name in FILTER_NAMES),
        "states": sorted(states.values(), key=lambda state: state.id),
        "chosen_state": chosen,
        "types": types,
        "creators": creators,
        "page": page,
        "columns": [
            (key, label)
            for key, label in COLUMNS
            if (label != "Company" or show_company) and (label != "Created by" or show_creator)
        ],
        "current_sort": wanted.query.order,
        "descending": wanted.query.descending,
        "sort_label": SORT_LABELS.get(wanted.query.order, "relevance"),
        "show_preview": bool(wanted.query.q) and config.portal.preview_column,
        "link": link,
        "ago": lambda timestamp: relative(timestamp, request.app[CLOCK]()),
        "highlight": highlight,
        "events_url": events_url(config, wanted.scope),
    }


async def ticket_detail(request: web.Request) -> web.Response:
    """One ticket; one the visitor may not see is a 404 like one that does not exist."""
    visitor = request[VISITOR]
    visibility, config = request.app[VISIBILITY], request.app[CONFIG]
    ticket_id = request.match_info["ticket_id"]
    detail = await request.app[STORE].get_ticket(visibility.ticket_filter(visitor, "all"), ticket_id)
    if detail is None:
        raise web.HTTPNotFound()
    # Only the button of a visitor in the conversation opens it; the Join form stays a form.
    booting = config.messenger_boots and detail.participant
    context = {
        "portal_path": config.portal.path,
        "ticket": detail,
        # SECURITY: api_base is this page's own origin, whose host the host stage checked against the served
        # names: the Messenger's calls come back through the gateway's proxy and its company-update policy.
        "messenger": (
            boot(config, visitor.identity, detail.conversation_id, request.url.origin(), request.app[CLOCK]())
            if booting
            else None
        ),
        "csrf": csrf_token(request.app[CSRF_KEY], visitor.identity.user_id, f"join:{ticket_id}"),
        "ago": lambda timestamp: relative(timestamp, request.app[CLOCK]()),
        "initials": initials,
        "events_url": events_url(config, "all"),
        # Set by the join's redirect: the page says what the button did.
        "joined": request.query.get("joined") == "1" and detail.participant,
        "help_center_missing": detail.participant and await _help_center_missing(request),
    }
    response = aiohttp_jinja2.render_template("ticket.html", request, context)
    if booting:
        # Intercom's hosts only on the page that boots the Messenger; every other page keeps the strict policy.
        response.headers["Content-Security-Policy"] = request.app[BOOT_POLICY]
        # SECURITY: the page carries the visitor's Messenger token: no cache (shared or the browser's) keeps it.
        response.headers["Cache-Control"] = "no-store"
    return response


async def join(request: web.Request) -> web.StreamResponse:
    """Join the ticket's conversation (idempotent); needs the form's CSRF token."""
    visitor = request[VISITOR]
    config = request.app[CONFIG]
    ticket_id = request.match_info["ticket_id"]
    form = await request.post()
    token = str(form.get("csrf_token", ""))
    ticket_path = f"{config.portal.path}/{ticket_id}"
    if not csrf_valid(request.app[CSRF_KEY], visitor.identity.user_id, f"join:{ticket_id}", token):
        # Not a refusal of the visitor: the page was made for another sign-in (or before a key rotation).
        raise Forbidden(
            "The form you sent has expired. Reload the ticket's page and send it again.",
            title="This form has expired",
            link=Link(ticket_path, "Back to the ticket"),
        )
    await join_conversation(request, ticket_id)
    raise web.HTTPSeeOther(f"{ticket_path}?joined=1")


def add_routes(app: web.Application) -> None:
    """The home page always; the portal pages in render mode (in proxy mode upstream renders them)."""
    config = app[CONFIG]
    app[CSRF_KEY] = derive_key(config.identity.jwt.signing_secret)
    app[BOOT_POLICY] = content_security_policy(messenger_sources(config.intercom.region, config.messenger_script_url))
    aiohttp_jinja2.get_env(app).globals.update(iso=iso, exact=exact)
    app.router.add_get("/", home, name="home")
    if config.portal.enabled and config.portal.mode == "render":
        path = config.portal.path
        app.router.add_get(path, ticket_list, name="portal_list")
        app.router.add_get(path + "/{ticket_id}", ticket_detail, name="portal_ticket")
        app.router.add_post(path + "/{ticket_id}/join", join, name="portal_join")
        # SECURITY: other methods and sub-paths of the portal never fall through to the proxy.
        app.router.add_route("*", path, not_found, name="portal_other")
        app.router.add_route("*", path + "/{tail:.*}", not_found, name="portal_not_found")

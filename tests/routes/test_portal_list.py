"""The tickets portal over HTTP: the list (tabs, filters, sort, pages, columns, relative times).

Every test runs the real gateway (``gateway.run.server.start``) over TLS on loopback, on a store
written and an oracle built by ``tests.routes.portalkit`` (the expected answers never come from the gateway).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from yarl import URL

from gateway.store.demo import INTERNAL_WORD, PUBLIC_WORD
from gateway.store.models import TicketState
from routes.listing import DATE_FILTERS, canonical_query
from routes.timefmt import relative
from tests.conftest import StartGateway
from tests.routes.portalkit import (
    ANN,
    BEN,
    CHO,
    DAY,
    DISTINCT_INTERNAL,
    EVERYONE_IN,
    EXTERNAL_LABELS,
    HOUR,
    INTERNAL_LABELS,
    IVY,
    MINUTE,
    ONE_COMPANY_COLUMNS,
    STATE_RANK,
    TICKET_COLUMNS,
    Auth,
    Portal,
    Ticket,
    World,
    check_page_headers,
    day_of,
    day_start,
    iso,
    open_portal,
    parse_html,
    query_of,
)


@pytest.mark.parametrize("restricted", [False, True], ids=["visibility-off", "visibility-on-no-conditions"])
async def test_tabs_follow_the_visibility_rules(start_gateway: StartGateway, tmp_path: Path, restricted: bool) -> None:
    visibility = {"enabled": restricted, "conditions": []}
    portal = await open_portal(start_gateway, tmp_path, portal={"visibility": visibility})
    world = portal.world
    everything, own = world.ids(world.visible(ANN)), world.ids(world.visible(ANN, own_only=True))
    assert own
    assert own < everything

    first = await portal.page()
    if restricted:
        assert [(label, current) for label, _, current in first.tabs] == [("Created by me", True)]
    else:
        assert [(label, current) for label, _, current in first.tabs] == [("All", True), ("Created by me", False)]
        assert [query_of(href).get("scope") for _, href, _ in first.tabs] == ["all", "mine"]

    rows, _ = await portal.walk({})
    assert {row.ticket_id for row in rows} == (own if restricted else everything)
    mine, _ = await portal.walk({"scope": "mine"})
    assert {row.ticket_id for row in mine} == own
    # All Ann's own: no "Created by" column saying her name on each row, and no creator filter.
    assert {row.creator for row in mine} == {None}
    mine_page = await portal.page(params={"scope": "mine"})
    assert "Created by" not in [header.label for header in mine_page.headers]
    assert "creator" not in mine_page.selects
    # A restricted visitor asking for everything still gets only their own.
    asked_all, pages = await portal.walk({"scope": "all"})
    assert {row.ticket_id for row in asked_all} == (own if restricted else everything)
    assert [label for label, _, current in pages[0].tabs if current] == ["Created by me" if restricted else "All"]


STATE_SLUGS = ("submitted", "in-progress", "waiting-on-you", "resolved")  # the labels as they stand in URLs


@pytest.mark.parametrize(
    ("label", "slug"),
    [
        ("In progress", "in-progress"),
        ("Waiting on you", "waiting-on-you"),
        ("  On hold / waiting (3rd party)  ", "on-hold-waiting-3rd-party"),
        ("Résolu", "résolu"),
        ("snake_case", "snake-case"),
        ("✓✓", "7"),  # nothing to spell: the id stands in
    ],
)
def test_a_state_slug_is_its_label_in_lower_case_words_joined_by_hyphens(label: str, slug: str) -> None:
    assert TicketState(7, "in_progress", "internal", label).slug == slug


def test_the_canonical_query_drops_empty_fields_and_names_states_by_slug() -> None:
    states = [TicketState(1, "submitted", "New", "Submitted"), TicketState(3, "in_progress", "Dev", "In progress")]
    sent = [("q", ""), ("sort", "id"), ("state", "3"), ("type", " "), ("q", "x"), ("state", "9")]
    assert canonical_query(sent, states) == [("sort", "id"), ("state", "in-progress"), ("q", "x"), ("state", "9")]
    clean = [("scope", "all"), ("state", "submitted")]
    assert canonical_query(clean, states) == clean


async def test_state_filter_uses_customer_facing_labels(start_gateway: StartGateway, tmp_path: Path) -> None:
    portal = await open_portal(start_gateway, tmp_path)
    visible = portal.world.visible(ANN)
    first = await portal.page()
    options = [(value, label) for value, label, _ in first.selects["state"] if value]
    assert options == list(zip(STATE_SLUGS, EXTERNAL_LABELS, strict=True)), "each label once, in order, as a slug"
    pages_seen = [first.html]
    for value, label in options:
        rows, pages = await portal.walk({"state": value})
        pages_seen += [page.html for page in pages]
        assert {row.state for row in rows} <= {label}
        assert {row.ticket_id for row in rows} == {t.ticket_id for t in visible if t.state == label}, label
        assert [option_label for _, option_label, selected in pages[0].selects["state"] if selected] == [label]
        api = await portal.api("/api/v1/tickets", {"state": value})
        assert api["total_count"] == len(rows), f"the API reads state={value} as the page does"
    # "in-progress" finds every "In progress" ticket, whichever internal state (9001 is "Waiting on engineering").
    rows, _ = await portal.walk({"state": "in-progress"})
    in_progress = {t.ticket_id for t in visible if t.state == "In progress"}
    assert "9001" in in_progress
    assert {row.ticket_id for row in rows} == in_progress
    for html in pages_seen:
        for internal in DISTINCT_INTERNAL:
            assert internal not in html, f"internal state label {internal!r} in a page"
        texts = {element.text() for element in parse_html(html).iter()}
        assert not texts & set(INTERNAL_LABELS), f"internal state labels {texts & set(INTERNAL_LABELS)} shown"


async def test_an_old_numeric_state_link_redirects_to_its_slug(start_gateway: StartGateway, tmp_path: Path) -> None:
    # A shared link may carry the id of any state: it lands on the slug of that state's label, the other
    # parameters kept in their order, so the form shows the label chosen and Apply keeps the filter.
    portal = await open_portal(start_gateway, tmp_path)
    behind = str(portal.state_ids["Waiting on engineering"])
    moved = await portal.call("GET", "/tickets", params={"sort": "id", "state": behind, "order": "asc"})
    assert moved.status == 302
    assert moved.headers["Location"] == "/tickets?sort=id&state=in-progress&order=asc"
    page = await portal.page(moved.headers["Location"])
    assert {row.state for row in page.rows} == {"In progress"}
    assert [label for _, label, selected in page.selects["state"] if selected] == ["In progress"]
    # The JSON API takes both forms, with the same answer.
    by_id = await portal.api("/api/v1/tickets", {"state": behind})
    by_slug = await portal.api("/api/v1/tickets", {"state": "in-progress"})
    assert by_id == by_slug
    assert by_id["total_count"] == len([t for t in portal.world.visible(ANN) if t.state == "In progress"])
    # An id no state has is not redirected: it matches nothing, as before.
    unknown = await portal.page(params={"state": "999"})
    assert unknown.rows == []


async def test_an_unknown_state_slug_is_a_400_naming_the_slugs(start_gateway: StartGateway, tmp_path: Path) -> None:
    portal = await open_portal(start_gateway, tmp_path)
    cases: tuple[tuple[str, Auth], ...] = (("/tickets", "cookie"), ("/api/v1/tickets", "bearer"))
    for path, auth in cases:
        answer = await portal.call("GET", path, params={"state": "in-progres"}, auth=auth)
        assert answer.status == 400, (path, answer.status)
        assert "state: must be one of submitted, in-progress, waiting-on-you, resolved" in answer.text, path
        zero = await portal.call("GET", path, params={"state": "0"}, auth=auth)
        assert zero.status == 400
        assert "state: must be at least 1" in zero.text, path
        assert "None" not in zero.text


async def test_a_submitted_filter_form_lands_on_the_clean_url(start_gateway: StartGateway, tmp_path: Path) -> None:
    portal = await open_portal(start_gateway, tmp_path)
    form = parse_html((await portal.call("GET", "/tickets")).text).find("form", cls="filters")
    # Every field, in the order a browser submits them, as the form stands: all empty but the scope.
    fields = [
        (field.attrs["name"], field.attrs.get("value", "")) for field in form.iter() if field.tag in ("input", "select")
    ]
    assert [name for name, _ in fields] == ["scope", "q", "state", "type", "creator", *DATE_FILTERS]
    submitted = str(URL("/tickets").with_query(fields))
    clean = await portal.call("GET", submitted)
    assert clean.status == 302, submitted
    assert clean.headers["Location"] == "/tickets?scope=all"
    # Only the fields filled in are kept, in the order they came; a state id becomes its slug on the way.
    chosen = {"q": PUBLIC_WORD, "state": str(portal.state_ids["Investigating"]), "created_before": "2100-01-01"}
    filled = str(URL("/tickets").with_query([(name, chosen.get(name, value)) for name, value in fields]))
    moved = await portal.call("GET", filled)
    assert moved.status == 302
    expected = f"/tickets?scope=all&q={PUBLIC_WORD}&state=in-progress&created_before=2100-01-01"
    assert moved.headers["Location"] == expected
    landed = await portal.page(moved.headers["Location"])
    assert landed.inputs["q"] == PUBLIC_WORD
    # With nothing left, the bare list; and the clean URL itself is served as it is.
    assert (await portal.call("GET", "/tickets?q=&state=&type=")).headers["Location"] == "/tickets"
    assert (await portal.call("GET", expected)).status == 200
    # The JSON API reads an empty parameter as one left out (its document says so: allowEmptyValue).
    listed = await portal.api("/api/v1/tickets", {"q": "", "state": "", "page": ""})
    assert listed["total_count"] == len(portal.world.visible(ANN))


async def test_type_filter(start_gateway: StartGateway, tmp_path: Path) -> None:
    portal = await open_portal(start_gateway, tmp_path)
    visible = portal.world.visible(ANN)
    first = await portal.page()
    options = [(value, label) for value, label, _ in first.selects["type"] if value]
    assert {label for _, label in options} >= {t.type for t in visible}
    for value, label in options:
        assert value == str(portal.type_ids[label])
        rows, pages = await portal.walk({"type": value})
        assert {row.type for row in rows} <= {label}
        assert {row.ticket_id for row in rows} == {t.ticket_id for t in visible if t.type == label}, label
        assert [option for _, option, selected in pages[0].selects["type"] if selected] == [label]


async def test_creator_dropdown_lists_the_creators_by_name(start_gateway: StartGateway, tmp_path: Path) -> None:
    portal = await open_portal(start_gateway, tmp_path)
    creators = {t.creator for t in portal.world.visible(ANN)}
    expected = sorted(
        ((str(portal.contact_ids[user]), portal.world.names[user]) for user in creators), key=lambda c: c[1].lower()
    )
    page = await portal.page()
    assert [(value, label) for value, label, _ in page.selects["creator"] if value or label != "Anyone"] == expected
    chosen = await portal.page(params={"creator": expected[0][0]})
    assert [label for _, label, selected in chosen.selects["creator"] if selected] == [expected[0][1]]


async def test_creator_filter(start_gateway: StartGateway, tmp_path: Path) -> None:
    portal = await open_portal(start_gateway, tmp_path)
    visible = portal.world.visible(ANN)
    creators = sorted({t.creator for t in visible})
    assert len(creators) >= 3
    for user in creators:
        rows, _ = await portal.walk({"creator": str(portal.contact_ids[user])})
        assert {row.creator for row in rows} == {portal.world.names[user]}
        assert {row.ticket_id for row in rows} == {t.ticket_id for t in visible if t.creator == user}, user
    # A contact who created nothing Ann may see: an empty list, not an error.
    rows, _ = await portal.walk({"creator": str(portal.contact_ids[CHO])})
    assert rows == []


async def test_created_and_updated_date_ranges(start_gateway: StartGateway, tmp_path: Path) -> None:
    portal = await open_portal(start_gateway, tmp_path)
    visible = portal.world.visible(ANN)
    created = sorted(day_of(t.created) for t in visible)
    updated = sorted(day_of(t.updated) for t in visible)
    c1, c2 = created[len(created) // 4], created[3 * len(created) // 4]
    u1, u2 = updated[len(updated) // 4], updated[3 * len(updated) // 4]

    def between(value: int, after: date | None, before: date | None) -> bool:
        # YYYY-MM-DD in UTC; both ends include their whole day.
        return (after is None or value >= day_start(after)) and (before is None or value < day_start(before) + DAY)

    cases: list[tuple[dict[str, str], Callable[[Ticket], bool]]] = [
        ({"created_after": c1.isoformat()}, lambda t: between(t.created, c1, None)),
        ({"created_before": c1.isoformat()}, lambda t: between(t.created, None, c1)),
        ({"created_after": c1.isoformat(), "created_before": c2.isoformat()}, lambda t: between(t.created, c1, c2)),
        ({"created_after": c2.isoformat(), "created_before": c2.isoformat()}, lambda t: between(t.created, c2, c2)),
        ({"updated_after": u2.isoformat()}, lambda t: between(t.updated, u2, None)),
        ({"updated_before": u1.isoformat()}, lambda t: between(t.updated, None, u1)),
        ({"updated_after": u1.isoformat(), "updated_before": u2.isoformat()}, lambda t: between(t.updated, u1, u2)),
        (
            {"created_after": c1.isoformat(), "created_before": c2.isoformat(), "updated_after": u1.isoformat()},
            lambda t: between(t.created, c1, c2) and between(t.updated, u1, None),
        ),
        ({"created_after": "2100-01-01"}, lambda t: False),
    ]
    for params, keep in cases:
        expected = {t.ticket_id for t in visible if keep(t)}
        if params != {"created_after": "2100-01-01"}:
            assert expected, f"{params} keeps nothing: a weak case"
            assert expected != {t.ticket_id for t in visible}, f"{params} filters nothing: a weak case"
        rows, pages = await portal.walk(params)
        assert {row.ticket_id for row in rows} == expected, params
        assert all(pages[0].inputs[name] == value for name, value in params.items()), "the form shows the dates"


async def test_a_bad_list_parameter_is_a_400_naming_it(start_gateway: StartGateway) -> None:
    gateway = await start_gateway(portal={"access": EVERYONE_IN})
    portal = Portal(gateway, World(0, {}, {}, {}), {}, {}, {})
    problems = []
    cases = [
        *(
            (name, value)
            for name in ("created_after", "created_before", "updated_after", "updated_before")
            for value in ("2026-02-30", "yesterday", "2026/01/01", "01-02-2026")
        ),
        ("sort", "title"),
        ("order", "up"),
        ("scope", "everyone"),
    ]
    for name, value in cases:
        page = await portal.call("GET", "/tickets", params={name: value})
        if page.status != 400 or not page.headers["Content-Type"].startswith("text/html"):
            problems.append(f"page {name}={value}: {page.status} {page.headers['Content-Type']}")
            continue
        check_page_headers(page)
        detail = parse_html(page.text).find("section", cls="error").text()
        if name not in detail:
            problems.append(f"page {name}={value}: the 400 page does not name the parameter: {detail!r}")
        api = await portal.call("GET", "/api/v1/tickets", params={name: value}, auth="bearer")
        if api.status != 400 or not api.json()["error"]["detail"].startswith(name):
            problems.append(f"api {name}={value}: {api.status} {api.text[:200]}")
    assert problems == []


SORT_KEYS: dict[str, Callable[[Ticket], Any]] = {
    "id": lambda t: int(t.ticket_id),
    "type": lambda t: t.type.casefold(),
    "state": lambda t: STATE_RANK[t.state],
    "created": lambda t: t.created,
    "updated": lambda t: t.updated,
}


async def test_sort_by_each_column_both_ways(start_gateway: StartGateway, tmp_path: Path) -> None:
    portal = await open_portal(start_gateway, tmp_path)
    tickets = portal.world.tickets
    everything = portal.world.ids(portal.world.visible(ANN))
    default, _ = await portal.walk({})
    updated = [tickets[row.ticket_id].updated for row in default]
    assert updated == sorted(updated, reverse=True), "by default the most recently updated first"
    for key, value_of in SORT_KEYS.items():
        for order in ("asc", "desc"):
            rows, pages = await portal.walk({"sort": key, "order": order})
            assert len(rows) == len(everything)
            assert {row.ticket_id for row in rows} == everything
            values = [value_of(tickets[row.ticket_id]) for row in rows]
            assert values == sorted(values, reverse=order == "desc"), f"sort={key} order={order}: {values}"
            assert len(set(values)) > 1
            sorted_by = [header for header in pages[0].headers if header.sort]
            if key != "created":  # the list has no Created column to mark
                assert [(h.label, h.sort) for h in sorted_by] == [
                    (
                        {"id": "ID", "type": "Type", "state": "State", "updated": "Updated"}[key],
                        "ascending" if order == "asc" else "descending",
                    )
                ]
    # The rows show what they were sorted by: the state column in workflow order, the types alphabetically.
    rows, _ = await portal.walk({"sort": "state", "order": "asc"})
    shown = [STATE_RANK[row.state] for row in rows]
    assert shown == sorted(shown)


async def test_pagination_edges(start_gateway: StartGateway, tmp_path: Path) -> None:
    portal = await open_portal(start_gateway, tmp_path, portal={"page_size": 10})
    total = len(portal.world.visible(ANN))
    last = -(-total // 10)
    assert last >= 3
    assert total % 10, "the data should end in a partial page"

    first = await portal.page()
    assert len(first.rows) == 10
    assert first.previous is None
    assert first.next is not None
    assert first.pages_label == f"Page 1 of {last}"
    assert first.count == f"{total} tickets"
    explicit = await portal.page(params={"page": "1"})
    assert explicit.ids == first.ids

    rows, pages = await portal.walk({})
    assert len(pages) == last
    assert len(rows) == total
    assert len({row.ticket_id for row in rows}) == total, "pages overlap or skip"
    final = pages[-1]
    assert len(final.rows) == total % 10
    assert final.next is None
    assert final.previous is not None
    assert query_of(final.previous).get("page") == str(last - 1)
    assert final.pages_label == f"Page {last} of {last}"
    assert final.count == f"{total} tickets", "every page shows the whole total"

    for beyond in (str(last + 1), "10000"):
        past = await portal.page(params={"page": beyond})
        assert past.rows == [], f"page {beyond}"
        assert past.empty is not None, f"page {beyond}"
        assert past.count == f"{total} tickets"
        listed = await portal.api("/api/v1/tickets", {"page": beyond})
        assert listed["tickets"] == []
        assert listed["total_count"] == total


@pytest.mark.parametrize("value", ["0", "abc", "99999999", "10001", "-1", "1.5", "1e3", "²"])
async def test_an_unreadable_page_number_is_a_400(start_gateway: StartGateway, value: str) -> None:
    gateway = await start_gateway(portal={"access": EVERYONE_IN})
    portal = Portal(gateway, World(0, {}, {}, {}), {}, {}, {})
    page = await portal.call("GET", "/tickets", params={"page": value})
    assert page.status == 400, page.text[:300]
    assert "page" in parse_html(page.text).find("section", cls="error").text()
    api = await portal.call("GET", "/api/v1/tickets", params={"page": value}, auth="bearer")
    assert api.status == 400
    assert api.json()["error"]["detail"].startswith("page")


@pytest.mark.parametrize("name", ["state", "type", "creator"])
@pytest.mark.parametrize("value", ["0", "x", "²", "-2"])
async def test_an_unreadable_id_filter_is_a_400(start_gateway: StartGateway, name: str, value: str) -> None:
    gateway = await start_gateway(portal={"access": EVERYONE_IN})
    portal = Portal(gateway, World(0, {}, {}, {}), {}, {}, {})
    targets: tuple[tuple[str, Auth], ...] = (("/tickets", "cookie"), ("/api/v1/tickets", "bearer"))
    for path, auth in targets:
        answer = await portal.call("GET", path, params={name: value}, auth=auth)
        assert answer.status == 400, f"{path}?{name}={value}: {answer.status}"
        assert name in answer.text


async def test_total_count_text(start_gateway: StartGateway, tmp_path: Path) -> None:
    portal = await open_portal(start_gateway, tmp_path)
    total = len(portal.world.visible(ANN))
    assert (await portal.page()).count == f"{total} tickets"
    one = await portal.page(params={"q": "9004"})
    assert one.count == "1 ticket matching “9004”"
    assert one.ids == ["9004"]
    none = await portal.page(params={"q": INTERNAL_WORD})
    assert none.count == f"0 tickets matching “{INTERNAL_WORD}”"
    assert none.rows == []
    assert none.empty == "Search looks in the title, description, ID and public replies of the tickets you can see."


async def test_an_empty_search_says_what_was_searched_and_how_to_clear_it(
    start_gateway: StartGateway, tmp_path: Path
) -> None:
    portal = await open_portal(start_gateway, tmp_path)
    params = {"q": INTERNAL_WORD, "state": "resolved", "sort": "id"}
    none = await portal.page(params=params)
    state = none.root.find("section", cls="empty-state")
    assert state.find("h2").text() == f"No tickets match “{INTERNAL_WORD}”"
    assert "within the other filters" in state.find("p", cls="empty").text()
    actions = {link.text(): query_of(link.attrs["href"]) for link in state.find_all("a")}
    # Clearing the search keeps the rest of the view; clearing everything keeps the scope and the sort only.
    assert actions == {
        "Clear search": {"state": "resolved", "sort": "id"},
        "Clear all filters": {"sort": "id"},
    }
    cleared = await portal.page(params=actions["Clear search"])
    assert cleared.rows, "resolved tickets exist"


async def test_active_filters_are_chips_that_remove_themselves(start_gateway: StartGateway, tmp_path: Path) -> None:
    portal = await open_portal(start_gateway, tmp_path)
    creator = str(portal.contact_ids[IVY])
    params = {"q": "printing", "state": "waiting-on-you", "creator": creator, "updated_after": "2020-01-01"}
    page = await portal.page(params=params)
    chips = {
        link.text().replace("\u00d7", "").replace("(remove)", "").strip(): query_of(link.attrs["href"])
        for link in page.root.find("ul", cls="chips").find_all("a", cls="chip")
    }
    assert chips == {
        "“printing”": {name: value for name, value in params.items() if name != "q"},
        "State: Waiting on you": {name: value for name, value in params.items() if name != "state"},
        "Created by: Ivy Ito": {name: value for name, value in params.items() if name != "creator"},
        "Updated from 2020-01-01": {name: value for name, value in params.items() if name != "updated_after"},
    }
    clear_all = page.root.find("ul", cls="chips").find_all("a")[-1]
    assert (clear_all.text(), query_of(clear_all.attrs["href"])) == ("Clear all", {})
    # The panel holding the chosen filters stands open, so the choice is in view without JavaScript.
    assert "open" in page.root.find("details", cls="filter-panel").attrs
    assert page.root.find("details", cls="filter-panel").find("summary").text() == "Filters (3)"  # the search aside
    searched = await portal.page(params={"q": "printing"})
    assert searched.root.find("details", cls="filter-panel").find("summary").text() == "Filters"
    assert "open" in page.root.find("details", cls="more-filters").attrs
    plain = await portal.page()
    assert plain.root.maybe("ul", cls="chips") is None
    assert "open" not in plain.root.find("details", cls="filter-panel").attrs


async def test_the_pages_are_numbered(start_gateway: StartGateway, tmp_path: Path) -> None:
    portal = await open_portal(start_gateway, tmp_path, portal={"page_size": 1})
    total = len(portal.world.visible(ANN))
    assert total >= 8, "enough tickets for a gap on each side"
    middle = total // 2
    page = await portal.page(params={"page": str(middle)})
    numbers = page.root.find("ol", cls="page-numbers")
    shown = [item.text() for item in numbers.find_all("li")]
    window = [str(n) for n in range(middle - 2, middle + 3)]
    gap_before, gap_after = (["…"] if middle - 2 > 2 else []), (["…"] if middle + 2 < total - 1 else [])
    assert shown == ["1", *gap_before, *window, *gap_after, str(total)]
    current = numbers.find("a", aria_current="page")
    assert (current.text(), query_of(current.attrs["href"]).get("page")) == (str(middle), str(middle))


@pytest.mark.parametrize("page_size", [1, 100], ids=["several-pages", "one-page"])
async def test_a_page_past_the_last_says_so_and_links_to_the_last(
    start_gateway: StartGateway, tmp_path: Path, page_size: int
) -> None:
    portal = await open_portal(start_gateway, tmp_path, portal={"page_size": page_size})
    total = len(portal.world.visible(ANN))
    pages = -(-total // page_size)
    page = await portal.page(params={"page": "50", "sort": "id"})
    assert (page.rows, page.previous, page.next) == ([], None, None)
    main = page.root.find("main")
    assert main.find("h2", id="empty-title").text() == "There is no page 50"
    assert "No tickets" not in page.html
    assert page.empty == ("This list has one page." if pages == 1 else f"This list has {pages} pages.")
    last = query_of(main.find("p", cls="empty-actions").find("a").attrs["href"])
    assert last == ({"sort": "id"} if pages == 1 else {"sort": "id", "page": str(pages)})
    assert page.count == f"{total} tickets", "the count is still the list's"


FILTER_SETS = [
    pytest.param(
        {"scope": "all", "state": "in-progress", "created_after": "2000-01-01", "updated_before": "2100-12-31"},
        ("id", "asc"),
        id="state-and-dates",
    ),
    pytest.param({"q": PUBLIC_WORD, "updated_after": "2000-01-01"}, ("updated", "desc"), id="search"),
]


@pytest.mark.parametrize(("filters", "sort"), FILTER_SETS)
async def test_filters_and_sort_live_in_the_url(
    start_gateway: StartGateway, tmp_path: Path, filters: dict[str, str], sort: tuple[str, str]
) -> None:
    portal = await open_portal(start_gateway, tmp_path, portal={"page_size": 5})
    params = {**filters, "sort": sort[0], "order": sort[1]}
    kept = {name: value for name, value in params.items() if value}
    _rows, pages = await portal.walk(params)  # the Next links keep everything (checked in walk)
    assert len(pages) >= 2
    first, second = pages[0], pages[1]

    # The form is filled in from the URL, so Apply keeps the view.
    for name in ("q", "created_after", "created_before", "updated_after", "updated_before"):
        assert first.inputs[name] == filters.get(name, ""), name
    assert first.inputs["scope"] == "all"
    if "state" in filters:
        assert [value for value, _, selected in first.selects["state"] if selected] == [filters["state"]]

    # Sort links keep the filters, change only sort and order, and start again at page 1.
    for header in first.headers:
        if header.href is None:
            continue
        query = query_of(header.href)
        assert {name: query.get(name) for name in kept if name not in ("sort", "order")} == {
            name: value for name, value in kept.items() if name not in ("sort", "order")
        }, header
        assert "page" not in query
        assert query["sort"] in SORT_KEYS
        assert query["order"] in ("asc", "desc")
    current = next(h for h in first.headers if h.sort)
    assert current.href is not None
    assert query_of(current.href)["order"] == ("desc" if sort[1] == "asc" else "asc"), "the current column flips"

    # Tabs keep the filters too.
    for _, href, _ in first.tabs:
        query = query_of(href)
        assert {name: query.get(name) for name in kept if name != "scope"} == {
            name: value for name, value in kept.items() if name != "scope"
        }

    # The previous link of page 2 keeps them as well.
    assert second.previous is not None
    assert {name: value for name, value in query_of(second.previous).items() if name != "page"} == kept
    assert query_of(second.previous).get("page", "1") == "1"

    # Opening a shared link gives the same view.
    again = await portal.page(portal.path + "?" + str(URL.build(query=params).query_string))
    assert again.ids == first.ids


async def test_columns_show_the_ticket(start_gateway: StartGateway, tmp_path: Path) -> None:
    portal = await open_portal(start_gateway, tmp_path)
    now = portal.world.now
    rows, pages = await portal.walk({})
    assert [header.label for header in pages[0].headers] == ONE_COMPANY_COLUMNS
    by_id = {row.ticket_id: row for row in rows}
    expected = {
        "9001": ("Marmalade jar export", "Bug report", "In progress", "1 mo ago"),
        "9002": ("Dashboard question", "Billing question", "Submitted", "5 min ago"),
        "9003": ("Printing issue", "Bug report", "Waiting on you", "3 h ago"),
        "9004": ("Invoice <b>bold</b> & co", "Billing question", "Resolved", "3 d ago"),
    }
    for ticket_id, (title, type_name, state, updated) in expected.items():
        row = by_id[ticket_id]
        ticket = portal.world.tickets[ticket_id]
        assert (row.title, row.type, row.state, row.company, row.creator, row.updated) == (
            title,
            type_name,
            state,
            None,
            "Ivy Ito",
            updated,
        ), ticket_id
        assert row.updated_iso == iso(ticket.updated)
        # One link per row: the title (the ID beside it is text).
        assert row.links == (f"/tickets/{ticket_id}",)
    month_ago = datetime.fromtimestamp(now - 30 * DAY, UTC)
    title = next(time for time in pages[0].root.find_all("time") if time.text() == "1 mo ago").attrs["title"]
    assert title == f"{month_ago.day} {month_ago:%b %Y, %H:%M} UTC"
    assert "<b>bold</b>" not in pages[0].html
    assert "Invoice &lt;b&gt;bold&lt;/b&gt; &amp; co" in "".join(page.html for page in pages)
    for row in rows:
        ticket = portal.world.tickets[row.ticket_id]
        assert (row.type, row.state, row.creator) == (ticket.type, ticket.state, ticket.creator_name)


async def test_the_company_column_shows_for_a_member_of_two_companies(
    start_gateway: StartGateway, tmp_path: Path
) -> None:
    portal = await open_portal(start_gateway, tmp_path)
    rows, pages = await portal.walk({}, user=BEN)
    assert [header.label for header in pages[0].headers] == TICKET_COLUMNS
    assert {row.company for row in rows} == {ticket.company_name for ticket in portal.world.visible(BEN)}
    assert {row.company for row in rows} >= {"Acme Corp", "Globex"}


@pytest.mark.parametrize(
    ("age", "expected"),
    [
        (0, "now"),
        (-30, "now"),  # a clock a little behind the store
        (59, "now"),
        (60, "1 min ago"),
        (5 * MINUTE, "5 min ago"),
        (HOUR - 1, "59 min ago"),
        (HOUR, "1 h ago"),
        (3 * HOUR, "3 h ago"),
        (DAY - 1, "23 h ago"),
        (DAY, "1 d ago"),
        (29 * DAY, "29 d ago"),
        (30 * DAY, "1 mo ago"),  # "mo", never an "m" that could be minutes
        (100 * DAY, "3 mo ago"),
        (364 * DAY, "12 mo ago"),
        (400 * DAY, "1 y ago"),
    ],
)
def test_relative_time(age: int, expected: str) -> None:
    now = 1_700_000_000 + 7 * DAY  # 2023-11-21T22:13:20Z
    assert relative(now - age, now) == expected

"""The fake Intercom API itself: it pages, limits and fails as Intercom does; the spec check catches a bad answer."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
from yarl import URL

from tests.intercom.conftest import RunningFake
from tests.intercom.fake import TOKEN, FakeIntercom, Fault

HEADERS = {"Authorization": f"Bearer {TOKEN}", "Intercom-Version": "2.16", "Accept": "application/json"}


async def call(url: URL, method: str, path: str, **kwargs: Any) -> tuple[int, dict[str, str], Any]:
    """One API call: status, headers, JSON body (None when it is not JSON)."""
    headers = {**HEADERS, **kwargs.pop("headers", {})}
    target = url.join(URL(path))
    async with aiohttp.ClientSession() as session, session.request(method, target, headers=headers, **kwargs) as answer:
        try:
            body = await answer.json(content_type=None)
        except ValueError:
            body = None
        return answer.status, dict(answer.headers), body


def workspace(fake: FakeIntercom, companies: int = 0, tickets: int = 0) -> None:
    """Fill the fake with numbered companies and tickets of one contact."""
    company_ids = tuple(fake.add_company(f"co-{n}", f"Company {n}") for n in range(companies))
    contact = fake.add_contact("u-1", "Ann", "ann@example.com", company_ids)
    state, kind = fake.add_state("submitted", "New", "Submitted"), fake.add_type("Bug")
    for n in range(tickets):
        fake.add_ticket(contact, f"Ticket {n}", type_id=kind, state_id=state)


async def test_search_pages_by_cursor_on_updated_at(intercom: RunningFake) -> None:
    workspace(intercom.fake, tickets=5)
    since = intercom.fake.tickets[sorted(intercom.fake.tickets, key=int)[2]]["updated_at"]
    query = {"field": "updated_at", "operator": ">", "value": since}
    seen, after = [], None
    while True:
        pagination = {"per_page": 2, **({"starting_after": after} if after else {})}
        status, _, body = await call(
            intercom.url, "POST", "/tickets/search", json={"query": query, "pagination": pagination}
        )
        assert status == 200
        seen += [ticket["ticket_attributes"]["_default_title_"] for ticket in body["tickets"]]
        after = (body["pages"].get("next") or {}).get("starting_after")
        if after is None:
            break
    assert seen == ["Ticket 2", "Ticket 3", "Ticket 4"]  # ">" includes the value itself, as Intercom's does


async def test_a_search_query_off_the_description_is_refused(intercom: RunningFake) -> None:
    status, _, body = await call(intercom.url, "POST", "/tickets/search", json={"pagination": {"per_page": 2}})
    assert status == 400
    assert body["type"] == "error.list"


async def test_scroll_ends_empty_and_an_expired_parameter_is_refused(intercom: RunningFake) -> None:
    intercom.fake.scroll_page = 2
    workspace(intercom.fake, companies=3)
    _, _, first = await call(intercom.url, "GET", "/companies/scroll")
    assert [company["company_id"] for company in first["data"]] == ["co-0", "co-1"]
    intercom.fake.expire_scrolls()
    status, _, body = await call(
        intercom.url, "GET", "/companies/scroll", params={"scroll_param": first["scroll_param"]}
    )
    assert status == 404
    assert body["errors"][0]["code"] == "scroll_parameter_not_found"
    _, _, again = await call(intercom.url, "GET", "/companies/scroll")
    _, _, second = await call(intercom.url, "GET", "/companies/scroll", params={"scroll_param": again["scroll_param"]})
    _, _, end = await call(intercom.url, "GET", "/companies/scroll", params={"scroll_param": second["scroll_param"]})
    assert [c["company_id"] for c in second["data"]] == ["co-2"]
    assert end["data"] == []


async def test_contact_companies_page_past_ten(intercom: RunningFake) -> None:
    workspace(intercom.fake, companies=12)
    contact = next(iter(intercom.fake.contacts))
    _, _, shown = await call(intercom.url, "GET", f"/contacts/{contact}")
    assert len(shown["companies"]["data"]) == 10
    assert shown["companies"]["has_more"]
    _, _, first = await call(intercom.url, "GET", f"/contacts/{contact}/companies")
    status, _, second = await call(intercom.url, "GET", URL(first["pages"]["next"]).path_qs)
    assert status == 200
    assert len(first["companies"]) + len(second["companies"]) == 12
    assert "next" not in second["pages"]


async def test_rate_limit_headers_and_429_past_the_limit(intercom: RunningFake) -> None:
    intercom.fake.rate.limit, intercom.fake.rate.window = 2, 3600.0
    statuses = []
    for _ in range(3):
        status, headers, _ = await call(intercom.url, "GET", "/me")
        statuses.append((status, headers["X-RateLimit-Remaining"]))
        assert int(headers["X-RateLimit-Reset"]) > 0
    assert statuses == [(200, "1"), (200, "0"), (429, "0")]
    assert intercom.fake.limit_crossed == 1


@pytest.mark.parametrize(
    ("headers", "status"), [({"Authorization": "Bearer wrong"}, 401), ({"Intercom-Version": "2.9"}, 400)]
)
async def test_token_and_version_are_checked(intercom: RunningFake, headers: dict[str, str], status: int) -> None:
    answer, _, body = await call(intercom.url, "GET", "/me", headers=headers)
    assert answer == status
    assert body["type"] == "error.list"


async def test_faults_on_demand(intercom: RunningFake) -> None:
    intercom.fake.faults.extend([Fault("status", status=502), Fault("malformed")])
    status, _, _ = await call(intercom.url, "GET", "/me")
    assert status == 502
    status, _, body = await call(intercom.url, "GET", "/me")
    assert status == 200
    assert body is None
    intercom.fake.faults.append(Fault("reset"))
    with pytest.raises(aiohttp.ClientError):  # a POST, which aiohttp does not send again by itself
        await call(
            intercom.url, "POST", "/tickets/search", json={"query": {"field": "id", "operator": "=", "value": 1}}
        )


async def test_the_spec_check_catches_an_answer_off_the_description(intercom: RunningFake) -> None:
    workspace(intercom.fake, companies=1)
    company = next(iter(intercom.fake.companies))
    intercom.fake.companies[company]["size"] = "forty"
    await call(intercom.url, "GET", f"/companies/{company}")
    assert intercom.fake.invalid == [f"GET /companies/{company} 200: size: 'forty' is not of type 'integer'"]
    intercom.fake.invalid.clear()  # caught: the fixture would fail the test on it

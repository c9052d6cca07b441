"""The REST API client against the fake: bearer token and version, the rate limit kept, faults retried."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import aiohttp
import pytest

from gateway.errors import IntercomNotFound, IntercomRefused, IntercomUnauthorized, IntercomUnavailable
from gateway.intercom.client import IntercomClient
from gateway.observe.metrics import Metrics
from tests.intercom.conftest import RunningFake
from tests.intercom.fake import TOKEN, Fault

SEARCH = {"query": {"field": "updated_at", "operator": ">", "value": 0}}
MakeClient = Callable[..., IntercomClient]


class Waits:
    """A sleep that records what it was asked to wait and waits for real (the rate-limit tests need time)."""

    def __init__(self, *, real: bool = False) -> None:
        self.asked: list[float] = []
        self.real = real

    async def __call__(self, seconds: float) -> None:
        self.asked.append(seconds)
        await asyncio.sleep(seconds if self.real else 0)


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture
def make_client(intercom: RunningFake, session: aiohttp.ClientSession, metrics: Metrics) -> MakeClient:
    def make(**kwargs: object) -> IntercomClient:
        kwargs.setdefault("sleep", Waits())
        return IntercomClient(session, intercom.url, str(kwargs.pop("token", TOKEN)), metrics, **kwargs)  # type: ignore[arg-type]

    return make


def calls(metrics: Metrics, status: str) -> float:
    return metrics.registry.get_sample_value("gateway_intercom_calls_total", {"status": status}) or 0.0


async def test_a_call_carries_the_token_and_version(make_client: MakeClient, metrics: Metrics) -> None:
    # The fake answers 401 without the bearer token and 400 without Intercom-Version: 2.16.
    me = await make_client().get("/me")
    assert me["type"] == "admin"
    assert calls(metrics, "200") == 1


async def test_a_refused_token_stops_at_once_with_a_metric(make_client: MakeClient, metrics: Metrics) -> None:
    sleep = Waits()
    with pytest.raises(IntercomUnauthorized, match="401") as caught:
        await make_client(token="not-the-token", sleep=sleep).get("/me")
    assert "not-the-token" not in str(caught.value)
    assert sleep.asked == []
    assert calls(metrics, "401") == 1


async def test_sequential_calls_never_cross_the_limit(intercom: RunningFake, make_client: MakeClient) -> None:
    intercom.fake.rate.limit, intercom.fake.rate.window = 3, 1.0
    client = make_client(sleep=Waits(real=True))
    for _ in range(8):
        await client.get("/me")
    assert intercom.fake.limit_crossed == 0
    assert [status for _, _, status in intercom.fake.calls] == [200] * 8


async def test_concurrent_calls_never_cross_the_limit(intercom: RunningFake, make_client: MakeClient) -> None:
    intercom.fake.rate.limit, intercom.fake.rate.window = 3, 1.0
    client = make_client(sleep=Waits(real=True))
    await asyncio.gather(*(client.get("/me") for _ in range(8)))
    assert intercom.fake.limit_crossed == 0


async def test_a_429_waits_for_the_reset(intercom: RunningFake, make_client: MakeClient) -> None:
    # Another app on the same token spent the window: the first answer is a 429 with the reset time.
    intercom.fake.rate.limit, intercom.fake.rate.window = 1, 1.0
    intercom.fake.rate.take(time.time())
    sleep = Waits(real=True)
    assert (await make_client(sleep=sleep).get("/me"))["type"] == "admin"
    assert [status for _, _, status in intercom.fake.calls] == [429, 200]
    assert 0 < sleep.asked[0] <= 1.1


@pytest.mark.parametrize(
    "fault", [Fault("status", status=503), Fault("status", status=500), Fault("malformed"), Fault("reset")]
)
async def test_faults_are_retried_with_backoff_and_jitter(
    intercom: RunningFake, make_client: MakeClient, fault: Fault
) -> None:
    intercom.fake.add_state("submitted", "New", "Submitted")
    intercom.fake.faults.extend([fault, fault])
    sleep = Waits()
    answer = await make_client(sleep=sleep, jitter=lambda: 0.5, backoff=0.5).post("/tickets/search", SEARCH)
    assert answer["type"] == "ticket.list"
    assert sleep.asked == [0.25, 0.5]  # 0.5 * 2^n, times the jitter


async def test_a_slow_answer_times_out_and_is_retried(
    intercom: RunningFake, make_client: MakeClient, metrics: Metrics
) -> None:
    intercom.fake.faults.append(Fault("slow", seconds=2.0))
    assert (await make_client(timeout=0.3).get("/me"))["type"] == "admin"
    assert calls(metrics, "timeout") == 1


async def test_faults_past_every_try_are_unavailable(intercom: RunningFake, make_client: MakeClient) -> None:
    intercom.fake.faults.extend([Fault("status", status=502)] * 3)
    with pytest.raises(IntercomUnavailable, match="after 3 tries"):
        await make_client(attempts=3).get("/me")


async def test_not_found_and_refused_are_told_apart(make_client: MakeClient) -> None:
    client = make_client()
    with pytest.raises(IntercomNotFound):
        await client.get("/tickets/404")
    with pytest.raises(IntercomRefused, match="400"):
        await client.post("/tickets/search", {"pagination": {}})


async def test_a_next_page_elsewhere_is_not_followed(intercom: RunningFake, make_client: MakeClient) -> None:
    with pytest.raises(IntercomRefused, match="another origin"):
        await make_client().get("http://127.0.0.2:1/contacts?page=2")
    assert intercom.fake.calls == []

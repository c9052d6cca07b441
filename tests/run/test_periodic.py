"""gateway/run/periodic.py: work on a period, on a clock the test turns, cancelled cleanly, surviving failures."""

from __future__ import annotations

import asyncio
import logging

import pytest

from gateway.run.periodic import periodic


class Clock:
    """A ``sleep`` that returns only when the test lets one period pass."""

    def __init__(self) -> None:
        self.periods: asyncio.Queue[None] = asyncio.Queue()
        self.asked: list[float] = []

    async def sleep(self, seconds: float) -> None:
        self.asked.append(seconds)
        await self.periods.get()

    def tick(self) -> None:
        self.periods.put_nowait(None)


class Work:
    """Counts its runs and lets the test wait for the n-th; fails on the runs named in ``failing``."""

    def __init__(self, failing: frozenset[int] = frozenset()) -> None:
        self.runs = 0
        self.failing = failing
        self.ran = asyncio.Condition()

    async def __call__(self) -> None:
        async with self.ran:
            self.runs += 1
            self.ran.notify_all()
        if self.runs in self.failing:
            raise RuntimeError(f"run {self.runs} failed")

    async def until(self, runs: int) -> None:
        async with self.ran:
            await self.ran.wait_for(lambda: self.runs >= runs)


async def test_work_runs_once_per_period_and_not_before_the_first() -> None:
    clock, work = Clock(), Work()
    async with periodic(work, 600, name="test work", sleep=clock.sleep):
        await asyncio.sleep(0)
        assert work.runs == 0  # the first run is one period in
        for period in range(1, 4):
            clock.tick()
            await work.until(period)
            assert work.runs == period
    assert clock.asked[:3] == [600, 600, 600]


async def test_a_failing_run_is_logged_and_the_next_period_still_runs(caplog: pytest.LogCaptureFixture) -> None:
    clock, work = Clock(), Work(failing=frozenset({1, 2}))
    with caplog.at_level(logging.ERROR, logger="gateway.run.periodic"):
        async with periodic(work, 5, name="flaky work", sleep=clock.sleep):
            for _ in range(3):
                clock.tick()
            await work.until(3)
    failures = [record for record in caplog.records if record.name == "gateway.run.periodic"]
    assert [record.getMessage() for record in failures] == ["flaky work failed; trying again in 5 s"] * 2
    assert all(record.exc_info is not None for record in failures)


async def test_leaving_the_block_cancels_a_run_in_progress_and_no_run_follows() -> None:
    clock, started, release = Clock(), asyncio.Event(), asyncio.Event()
    finished: list[bool] = []

    async def slow() -> None:
        started.set()
        await release.wait()
        finished.append(True)

    async with periodic(slow, 1, name="slow work", sleep=clock.sleep):
        clock.tick()
        await started.wait()
    release.set()
    clock.tick()
    await asyncio.sleep(0)
    assert finished == []
    assert [task for task in asyncio.all_tasks() if task.get_name() == "slow work"] == []

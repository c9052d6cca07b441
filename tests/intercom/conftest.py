"""The fake Intercom API on loopback for the connector's tests; each test fails on any answer off the spec."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from yarl import URL

from gateway.intercom.client import IntercomClient
from tests.intercom.fake import TOKEN, FakeIntercom

# The sync's tests run on every backend, as the store contract does: the same fixtures, an empty store of each.
from tests.store.contract.conftest import store, store_config  # noqa: F401 (fixtures)


@dataclass(frozen=True)
class RunningFake:
    """The fake and where it listens."""

    fake: FakeIntercom
    url: URL


@contextlib.asynccontextmanager
async def running(fake: FakeIntercom) -> AsyncIterator[RunningFake]:
    """The fake on a loopback port while the block runs; every answer it sent is held to the 2.16 description."""
    server = TestServer(fake.app(), host="127.0.0.1")
    await server.start_server()
    try:
        yield RunningFake(fake, server.make_url("/"))
    finally:
        await server.close()
    assert fake.invalid == [], "the fake answered off the 2.16 description"


@pytest.fixture
async def intercom() -> AsyncIterator[RunningFake]:
    """A fresh fake workspace on a loopback port."""
    async with running(FakeIntercom()) as started:
        yield started


@pytest.fixture
async def client(intercom: RunningFake) -> AsyncIterator[IntercomClient]:
    """A client of the fake with the right token; faults retried without waiting."""
    async with aiohttp.ClientSession() as session:
        yield IntercomClient(session, intercom.url, TOKEN, sleep=no_wait, attempts=3)


async def no_wait(seconds: float) -> None:
    """A retry's sleep that lets the loop run but waits for nothing."""
    await asyncio.sleep(0)

"""The fake Intercom API on loopback for the connector's tests; each test fails on any answer off the spec."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from aiohttp.test_utils import TestServer
from yarl import URL

from tests.intercom.fake import FakeIntercom


@dataclass(frozen=True)
class RunningFake:
    """The fake and where it listens."""

    fake: FakeIntercom
    url: URL


@pytest.fixture
async def intercom() -> AsyncIterator[RunningFake]:
    """A fresh fake workspace on a loopback port; every answer it sent is held to the 2.16 description."""
    fake = FakeIntercom()
    server = TestServer(fake.app(), host="127.0.0.1")
    await server.start_server()
    try:
        yield RunningFake(fake, server.make_url("/"))
    finally:
        await server.close()
    assert fake.invalid == [], "the fake answered off the 2.16 description"

"""The Intercom REST API client: bearer token, ``Intercom-Version``, the rate limit kept, faults retried.

Intercom counts calls in windows and says on every answer how many are left
(``X-RateLimit-Remaining``) and when the window ends (``X-RateLimit-Reset``,
Unix seconds). The client spends that budget itself, counting the calls it has
in flight, and waits for the reset when it is spent, so it never sends a call
past the limit; a 429 (the token shared with another app) waits for the reset
too. 5xx answers, connection resets, timeouts and unreadable answers are tried
again with exponential backoff and full jitter; a 401 is never retried: the
token is wrong until someone fixes it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import aiohttp
from yarl import URL

from gateway.config import INTERCOM_VERSION
from gateway.errors import (
    IntercomError,
    IntercomNotFound,
    IntercomRefused,
    IntercomUnauthorized,
    IntercomUnavailable,
)
from gateway.observe.metrics import Metrics

log = logging.getLogger(__name__)
Sleep = Callable[[float], Awaitable[None]]
JSON = dict[str, Any]
RESET_MARGIN = 0.05  # past the window's end, so the next call lands in the new window on any rounding


class _Retry(Exception):
    """A fault worth another try; ``wait`` is set when the API said how long to wait."""

    def __init__(self, reason: str, wait: float | None = None) -> None:
        super().__init__(reason)
        self.wait = wait


class IntercomClient:
    """Calls to one workspace's REST API on a shared aiohttp session."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: URL,
        token: str,
        metrics: Metrics | None = None,
        *,
        attempts: int = 6,
        backoff: float = 0.5,
        timeout: float = 30.0,
        sleep: Sleep = asyncio.sleep,
        clock: Callable[[], float] = time.time,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self._session = session
        self._base = base_url
        # SECURITY: the token lives in this header only; no message, log line or metric carries it.
        self._headers = {
            "Authorization": f"Bearer {token}",
            "Intercom-Version": INTERCOM_VERSION,
            "Accept": "application/json",
        }
        self._metrics = metrics
        self._attempts = attempts
        self._backoff = backoff
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._sleep = sleep
        self._clock = clock
        self._jitter = jitter
        self._budget = asyncio.Condition()
        self._remaining: int | None = None  # calls left in the current window, less those in flight
        self._reset = 0.0
        self._in_flight = 0
        self.calls = 0
        """Calls sent, retries included (the benchmark's count)."""

    async def get(self, path: str, params: Mapping[str, str] | None = None) -> JSON:
        """GET ``path`` (relative to the API's base, or a full URL the API gave as a next page)."""
        return await self.call("GET", path, params=params)

    async def post(self, path: str, body: JSON) -> JSON:
        """POST ``body`` as JSON to ``path``."""
        return await self.call("POST", path, body=body)

    async def delete(self, path: str) -> JSON:
        """DELETE ``path``."""
        return await self.call("DELETE", path)

    async def call(
        self, method: str, path: str, *, params: Mapping[str, str] | None = None, body: JSON | None = None
    ) -> JSON:
        """One API call, tried again on faults; its JSON answer, or an :class:`IntercomError`."""
        url = self._url(path)
        for attempt in range(1, self._attempts + 1):
            try:
                return await self._once(method, url, params, body)
            except _Retry as fault:
                if attempt == self._attempts:
                    raise IntercomUnavailable(f"{method} {url.path}: {fault} (after {attempt} tries)") from None
                # Full jitter: retrying clients spread out instead of striking again together.
                wait = fault.wait if fault.wait is not None else self._backoff * 2 ** (attempt - 1) * self._jitter()
                log.warning("intercom %s %s: %s; try %d in %.2f s", method, url.path, fault, attempt + 1, wait)
                await self._sleep(wait)
        raise AssertionError("unreachable: the loop returns or raises")

    def _url(self, path: str) -> URL:
        target = URL(path)
        if target.is_absolute():
            # SECURITY: a next-page link is followed only on the API's own origin: the token goes nowhere else.
            if target.origin() != self._base.origin():
                raise IntercomRefused(f"a next page on another origin ({target.origin()}) is not followed")
            return target
        return self._base.join(URL(path.lstrip("/")))

    async def _once(self, method: str, url: URL, params: Mapping[str, str] | None, body: JSON | None) -> JSON:
        await self._take()
        try:
            async with self._session.request(
                method, url, params=params, json=body, headers=self._headers, timeout=self._timeout
            ) as answer:
                self._learn(answer.headers)
                self._count(str(answer.status))
                text = await answer.text()
                return self._read(method, url, answer.status, answer.headers, text)
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as exc:
            self._count("error")
            raise _Retry(f"connection failed ({type(exc).__name__})") from None
        except TimeoutError:
            self._count("timeout")
            raise _Retry(f"no answer within {self._timeout.total} s") from None
        finally:
            async with self._budget:
                self._in_flight -= 1
                self._budget.notify_all()

    def _read(self, method: str, url: URL, status: int, headers: Mapping[str, str], text: str) -> JSON:
        where = f"{method} {url.path}"
        if status == 429:
            raise _Retry("rate limited (429)", wait=max(0.0, self._reset - self._clock()) + RESET_MARGIN)
        if status >= 500:
            raise _Retry(f"Intercom answered {status}")
        if status == 401:
            raise IntercomUnauthorized(f"{where}: Intercom refused the access token (401); check intercom.access_token")
        try:
            data = json.loads(text)
        except ValueError:
            raise _Retry("the answer is not JSON") from None
        if not isinstance(data, dict):
            raise _Retry("the answer is not a JSON object")
        if status == 404:
            raise IntercomNotFound(f"{where}: not found")
        if status >= 400:
            raise IntercomRefused(f"{where}: Intercom refused it ({status}: {_message(data)})")
        return data

    async def _take(self) -> None:
        """Spend one call of the window's budget, waiting for the next window when none is left."""
        async with self._budget:
            while True:
                if self._remaining is None:
                    # The budget is unknown (the first call, or a new window): one call alone learns it.
                    if self._in_flight == 0:
                        break
                    await self._budget.wait()
                elif self._remaining > 0:
                    self._remaining -= 1
                    break
                elif (wait := self._reset - self._clock()) > 0:
                    await self._sleep(wait + RESET_MARGIN)
                else:
                    self._remaining = None
            self._in_flight += 1
            self.calls += 1

    def _learn(self, headers: Mapping[str, str]) -> None:
        """Take the budget the answer states, less the calls still in flight that it did not count yet."""
        try:
            remaining, reset = int(headers["X-RateLimit-Remaining"]), float(headers["X-RateLimit-Reset"])
        except (KeyError, ValueError):
            return
        others = self._in_flight - 1
        if reset != self._reset or self._remaining is None:
            self._reset, self._remaining = reset, remaining - others
        else:
            self._remaining = min(self._remaining, remaining - others)

    def _count(self, status: str) -> None:
        if self._metrics is not None:
            self._metrics.count(self._metrics.intercom_calls, status)


def _message(data: JSON) -> str:
    """Intercom's error message from an ``error.list`` answer."""
    errors = data.get("errors")
    if isinstance(errors, list) and errors and isinstance(errors[0], dict):
        return str(errors[0].get("message") or errors[0].get("code") or "no message")
    return "no message"


__all__ = ["JSON", "IntercomClient", "IntercomError"]

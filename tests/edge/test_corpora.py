"""Issue 20's public attack corpora through a real gateway, against an upstream that keeps the exact bytes.

``../shared/reference/attack-corpora`` (the tests skip, saying why, where it is absent): defparam/smuggler's
header mutations, PortSwigger param-miner's header names and PayloadsAllTheThings' traversal lists. Every
entry of each list goes through one gateway per list (a few connections at once), and the raw upstream's
record of what arrived is read as the most lenient server would read it: nothing of the class arrives, or
only in the canonical form the gateway guarded.
"""

from __future__ import annotations

import asyncio
import json
import re
import ssl
import time
from collections.abc import AsyncIterator, Iterable
from pathlib import Path

import pytest
from yarl import URL

from gateway.edge.headers import GATEWAY_PREFIXES, HOP_BY_HOP, STANDARD_REQUEST_HEADERS
from gateway.policy.identity import sign_token
from tests.conftest import CANARY, DOMAIN, SECRET, Gateway, RawAnswer, StartGateway, raw_exchange
from tests.edge.readings import guarded, readings
from tests.proxy.rawupstream import RawUpstream, answer_ok

REQUEST_END = f"Host: {DOMAIN}\r\nConnection: close\r\n"
CONNECTIONS = 8
"""Requests in flight at once."""
TARGETS = ("tickets", "tickets/1", "api/v1/me", "admin/api/contacts", "messenger/web/ping")
"""Where a traversal's ``{FILE}`` goes: a path of each namespace the gateway guards."""
WRITTEN_BY_THE_GATEWAY = frozenset({"host", "cookie", "content-length", "transfer-encoding"})
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
# Names the HTTP layer itself reads (framing, the connection; smuggler's corpus and test_smuggling.py send
# those), and the old hixie-76 handshake's, which aiohttp's parser refuses: with a canary for a value, each
# would only make its whole batch a 400.
PARSED = frozenset(
    {"host", "content-length", "transfer-encoding", "connection", "upgrade", "expect", "sec-websocket-key1"}
)
REPLACED = frozenset({"x-forwarded-for", "x-forwarded-proto", "x-forwarded-host"})
"""Sent by the gateway in place of the client's."""
UNAUDITED = HOP_BY_HOP | REPLACED | {"cookie"}
"""Not forwarded as sent, and no audit line: the connection's own, and those the gateway writes itself."""


@pytest.fixture
async def raw_upstream() -> AsyncIterator[RawUpstream]:
    """An upstream that answers 200 to everything and keeps every request head as it came."""
    upstream = await RawUpstream(answer_ok).start()
    yield upstream
    await upstream.stop()


def upstream_url(upstream: RawUpstream) -> str:
    return f"http://127.0.0.1:{upstream.port}"


async def exchange_all(gateway: Gateway, requests: Iterable[bytes], context: ssl.SSLContext) -> list[RawAnswer]:
    """Each request on its own TLS connection (so that a refused one cannot spoil the next), a few at once."""
    slots = asyncio.Semaphore(CONNECTIONS)

    async def one(data: bytes) -> RawAnswer:
        async with slots:
            return await raw_exchange(gateway, data, context, seconds=5.0)

    return await asyncio.gather(*(one(data) for data in requests))


def names_in(head: bytes) -> list[str]:
    """The header names of a raw request head, as spelled, in order."""
    return [line.partition(":")[0] for line in head.decode("latin-1").split("\r\n")[1:] if line]


def lenient_name(name: str) -> str:
    """A header name as the most lenient server reads it: without whitespace or controls, "_" as "-", any case."""
    return re.sub(r"[\x00-\x20\x7f-\xff]", "", name).replace("_", "-").lower()


def admitted(name: str) -> bool:
    """Whether a name that reached upstream is one the positive model lets through, as spelled."""
    lower = name.lower()
    return (
        lower in STANDARD_REQUEST_HEADERS
        or lower in WRITTEN_BY_THE_GATEWAY
        or lower.startswith((*GATEWAY_PREFIXES, "sec-fetch-", "sec-ch-"))
    )


def request_id(answer: RawAnswer) -> str:
    found = re.search(rb"\r\nX-Request-Id: ([^\r]+)\r\n", answer.data, re.IGNORECASE)
    assert found is not None, answer.data[:300]
    return found.group(1).decode()


# --- class 1: smuggler's header mutations ------------------------------------------------------


def smuggler_requests(reference: Path) -> list[bytes]:
    """Every mutation's gadget in smuggler's request, as UTF-8 (what smuggler sends) and as single bytes."""
    mutations = json.loads((reference / "attack-corpora" / "smuggler" / "mutations.json").read_text())
    gadgets: set[bytes] = set()
    for mutation in mutations["mutations"]:
        gadget: str = mutation["gadget"]
        gadgets.add(gadget.encode())
        if max(map(ord, gadget)) < 0x100:
            gadgets.add(gadget.encode("latin-1"))
    body = b"0\r\n\r\n"
    return [
        b"POST /front?cb=1 HTTP/1.1\r\nConnection: close\r\n"
        + gadget
        + f"\r\nHost: {DOMAIN}\r\nContent-type: application/x-www-form-urlencoded; charset=UTF-8\r\n".encode()
        + b"Content-Length: %d\r\n\r\n" % len(body)
        + body
        for gadget in sorted(gadgets)
    ]


async def test_no_smuggler_mutation_reaches_upstream_as_a_second_framing(
    start_gateway: StartGateway, raw_upstream: RawUpstream, client_ssl: ssl.SSLContext, reference: Path
) -> None:
    """Class 1 corpus: each of smuggler's ~3,000 gadgets (``Transfer_Encoding: chunked`` among them) is
    refused, or arrives upstream with one framing header (the gateway's own) and no name holding "_"."""
    gateway = await start_gateway(upstream={"url": upstream_url(raw_upstream)})
    requests = smuggler_requests(reference)
    answers = await exchange_all(gateway, requests, client_ssl)
    assert all(answer.statuses for answer in answers), "every mutation gets an answer"
    assert raw_upstream.requests, "the well-formed mutations are proxied"
    for seen in raw_upstream.requests:
        names = names_in(seen.head)
        assert not [name for name in names if "_" in name], seen.head
        framing = [name for name in map(lenient_name, names) if name in ("transfer-encoding", "content-length")]
        assert len(framing) <= 1, seen.head
        assert all(map(admitted, names)), seen.head
        assert seen.target == "/front?cb=1"


# --- class 2: param-miner's header names -------------------------------------------------------


def header_names(reference: Path) -> list[str]:
    text = (reference / "attack-corpora" / "payloadsallthethings" / "param_miner_lowercase_headers.txt").read_text()
    names = {line.strip() for line in text.splitlines() if _TOKEN.fullmatch(line.strip())}
    return sorted(names - PARSED)


def batches(names: list[str], size: int = 80) -> list[list[str]]:
    return [names[start : start + size] for start in range(0, len(names), size)]


@pytest.mark.parametrize("path", ["/articles/1", "/messenger/web/ping"])
async def test_no_param_miner_header_reaches_upstream_unless_standard(
    start_gateway: StartGateway, raw_upstream: RawUpstream, client_ssl: ssl.SSLContext, reference: Path, path: str
) -> None:
    """Class 2 corpus: all of param-miner's header names (X-Auth-User, IV-User, CF-Connecting-IP,
    X-Originating-IP, ...), sent with a canary value to the help center and to the Messenger API: only the
    standard ones arrive upstream; the audit names every other one, and holds no value."""
    url = upstream_url(raw_upstream)
    gateway = await start_gateway(upstream={"url": url}, messenger={"upstream": url})
    groups = batches(header_names(reference))
    requests = [
        f"GET {path} HTTP/1.1\r\n{REQUEST_END}".encode()
        + b"".join(f"{name}: {CANARY}\r\n".encode() for name in group)
        + b"\r\n"
        for group in groups
    ]
    answers = await exchange_all(gateway, requests, client_ssl)
    refused = [answer.data[-700:] for answer in answers if answer.statuses != [200]]
    assert not refused, refused[0].decode(errors="replace") if refused else ""
    arrived = {name.lower() for seen in raw_upstream.requests for name in names_in(seen.head)}
    sent = {name for group in groups for name in group}
    standard = {name for name in sent if name in STANDARD_REQUEST_HEADERS or name.startswith(("sec-fetch-", "sec-ch-"))}
    assert arrived & sent == standard | (REPLACED & sent)
    assert not [name for name in arrived if not admitted(name)]
    for seen in raw_upstream.requests:
        for name in REPLACED | {"x-portal-user-id"}:
            assert CANARY not in seen.headers.get(name, ""), name
    for group, answer in zip(groups, answers, strict=True):
        record = await gateway.audit_for(request_id(answer))
        expected = [name for name in group if name not in standard and name not in UNAUDITED]
        assert record["headers"]["dropped"] == expected
        assert CANARY not in json.dumps(record)


# --- class 3: the traversal lists, with a guarded path for {FILE} ---------------------------------


def traversals(reference: Path) -> list[str]:
    folder = reference / "attack-corpora" / "payloadsallthethings"
    entries = {
        line.strip()
        for name in ("traversals-8-deep-exotic-encoding.txt", "deep_traversal.txt")
        for line in (folder / name).read_text().splitlines()
        if line.strip()
    }
    return sorted(
        {
            ("" if entry.startswith("/") else "/") + entry.replace("{FILE}", target)
            for entry in entries
            for target in TARGETS
        }
    )


async def test_no_traversal_reaches_a_guarded_namespace_upstream(
    start_gateway: StartGateway, raw_upstream: RawUpstream, client_ssl: ssl.SSLContext, reference: Path
) -> None:
    """Class 3 corpus: every traversal of both lists (plain, %2f, %2e, double, %%32%66, overlong UTF-8, %u,
    full-width, 0x, backslash), ending in a portal, API, admin or Messenger path, sent in proxy mode by a
    signed-in visitor the access rules refuse: none reaches upstream where a lenient reader finds a guarded
    path in it."""
    gateway = await start_gateway(upstream={"url": upstream_url(raw_upstream)}, portal={"mode": "proxy"})
    token = sign_token(SECRET, user_id="outsider", email="outsider@elsewhere.test", now=time.time(), ttl=3600)
    paths = traversals(reference)
    slots = asyncio.Semaphore(CONNECTIONS)

    async def status(path: str) -> int:
        # Kept-alive connections: a refused path is answered by the error middleware, the connection kept.
        async with (
            slots,
            gateway.client.get(
                URL(f"{gateway.url}{path}", encoded=True), headers={"Host": DOMAIN, "Cookie": f"portal-jwt={token}"}
            ) as response,
        ):
            await response.read()
            return response.status

    statuses = set(await asyncio.gather(*map(status, paths)))
    assert len(paths) > 3000
    assert statuses <= {400, 403, 404, 200}, statuses
    for seen in raw_upstream.requests:
        assert not [reading for reading in readings(seen.target) if guarded(reading)], seen.target

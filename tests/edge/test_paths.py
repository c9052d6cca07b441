"""Path normalization (advisory class 2): the access decision and the path sent upstream always agree.

The portal runs in proxy mode, so a protected path that slipped past the
access stage would reach the upstream. Each target is refused (400), or
protected (401 without a visitor), or proxied; a proxied one must not be
read as a portal path by any upstream, however lenient.
"""

from __future__ import annotations

import ssl
from urllib.parse import unquote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.edge.paths import decision_path, target_problem
from gateway.namespace import NamespaceTable
from tests.conftest import DOMAIN, RecordingUpstream, StartGateway, raw_exchange

TABLE = NamespaceTable.for_portal("/tickets")
REFUSED = [
    "/tickets/../admin",
    "/admin/../tickets",
    "/x/./tickets",
    "/x/%2e%2e/tickets",
    "/x/.%2E/tickets",
    "/%2e%2e/tickets",
    "/x/..;/tickets",
    "/x/...;/tickets",
    "/tickets%2f1",
    "/x%2F..%2Ftickets",
    "/x%5c..%5ctickets",
    "/x\\..\\tickets",
    "/x/%252e%252e/tickets",
    "/%2574ickets",
    "/tickets%00",
    "/x%00/../tickets",
    "/tickets%0d%0aX-Injected:%201",
    "/tickets#fragment",
    "/x#/../tickets",
    "/api/v1/../../tickets",
    "/100%25done",  # a "%" left after one decode: some reader decodes it again
]
PROTECTED = [
    "/tickets",
    "/tickets/1",
    "/TICKETS",
    "/Tickets/1",
    "/tickets;jsessionid=1",
    "/tickets;/1",
    "/tickets.",
    "/tickets./1",
    "/tickets../1",
    "//tickets",
    "/tickets//1",
    "/%74ickets",
    "/%54ICKETS/1",
    "/API/V1/me",
    "/api/v1/me;x",
    "/api//v1/me",
]
PROXIED = ["/articles/1", "/tickets-help", "/ticketsx/1", "/x/tickets", "/a.b/c;d=1", "/caf%C3%A9"]


def interpretations(raw_path: str) -> set[str]:
    """How lenient servers may read a path: decoded (once or fully), backslashes as slashes, ``;`` params
    and trailing dots dropped, dot segments resolved, slashes merged, case folded."""
    readings = {raw_path, unquote(raw_path), unquote(unquote(raw_path))}
    out = set()
    for reading in readings:
        segments: list[str] = []
        for segment in reading.replace("\\", "/").split("/"):
            segment = segment.split(";")[0].rstrip(". ").lower()
            if segment == "" and not segments:
                continue
            if segment in ("", "."):
                continue
            if segment == "..":
                segments = segments[:-1]
                continue
            segments.append(segment)
        out.add("/" + "/".join(segments))
    return out


def portal_like(path: str) -> bool:
    return path in ("/tickets", "/api/v1") or path.startswith(("/tickets/", "/api/v1/"))


async def test_every_tricky_path_is_refused_protected_or_safely_proxied(
    start_gateway: StartGateway, upstream: RecordingUpstream, client_ssl: ssl.SSLContext
) -> None:
    """Class 2, path confusion (``..``, ``%2e``, ``%2f``, ``%5c``, double encoding, ``;``, ``#``, dots, case)."""
    gateway = await start_gateway(portal={"mode": "proxy"})
    expected = {**dict.fromkeys(REFUSED, 400), **dict.fromkeys(PROTECTED, 401), **dict.fromkeys(PROXIED, 200)}
    seen = {}
    for target in expected:
        head = f"GET {target} HTTP/1.1\r\nHost: {DOMAIN}\r\nConnection: close\r\n\r\n".encode()
        answer = await raw_exchange(gateway, head, client_ssl, seconds=2.0)
        seen[target] = answer.statuses[0] if answer.statuses else None
    assert seen == expected
    proxied = [recorded.raw_path for recorded in upstream.requests]
    assert proxied == PROXIED
    for raw_path in proxied:
        assert not any(portal_like(reading) for reading in interpretations(raw_path)), raw_path


async def test_encoded_slashes_pass_when_allowed(start_gateway: StartGateway, upstream: RecordingUpstream) -> None:
    """Class 2 knob: ``requests.allow_encoded_slashes`` forwards %2F and %5C as they came (and still protects)."""
    gateway = await start_gateway(requests={"allow_encoded_slashes": True}, portal={"mode": "proxy"})
    async with gateway.client.get(f"{gateway.url}/files/a%2Fb%5Cc", headers={"Host": DOMAIN}) as response:
        assert response.status == 200
    assert upstream.last.raw_path == "/files/a%2Fb%5Cc"
    async with gateway.client.get(f"{gateway.url}/x%2F..%2Ftickets", headers={"Host": DOMAIN}) as response:
        assert response.status == 400
    async with gateway.client.get(f"{gateway.url}/tickets%2F1", headers={"Host": DOMAIN}) as response:
        assert response.status == 401


# --- the pure functions ---------------------------------------------------------------------------

SEGMENT = st.text(alphabet="abtickesTICKES.;%25fF2cC5e0/\\#", max_size=12)


@given(st.lists(SEGMENT, max_size=5))
def test_a_forwarded_path_is_protected_whenever_a_lenient_upstream_reads_a_portal_path(parts: list[str]) -> None:
    """Class 2 property: a target that passes is decided as protected whenever any reading of it is a portal path."""
    raw_path = "/" + "/".join(parts)
    if target_problem(raw_path, allow_encoded_slashes=False, guarded=TABLE.guarded) is not None:
        return
    if any(portal_like(reading) for reading in interpretations(raw_path)):
        assert portal_like(decision_path(unquote(raw_path))), raw_path


@pytest.mark.parametrize("raw_path", REFUSED)
def test_refused_targets_name_their_reason(raw_path: str) -> None:
    """Class 2: every refused target says why, in words safe to show the client."""
    reason = target_problem(raw_path, allow_encoded_slashes=False, guarded=TABLE.guarded)
    assert reason is not None
    assert raw_path not in reason


@pytest.mark.parametrize(
    ("path", "decided"),
    [
        ("/tickets", "/tickets"),
        ("/TICKETS;x=1/", "/tickets"),
        ("//tickets.//1.", "/tickets/1"),
        ("/a.b/c;d", "/a.b/c"),
        ("/", "/"),
    ],
)
def test_decision_path_folds_what_upstreams_ignore(path: str, decided: str) -> None:
    """Class 2: case, ``;`` parameters, trailing dots and doubled slashes do not change the decision."""
    assert decision_path(path) == decided

"""Path normalization (advisory class 2): the access decision and the path sent upstream always agree.

The portal runs in proxy mode, so a protected path that slipped past the
access stage would reach the upstream. Each target is refused (400), or
protected (401 without a visitor), or proxied; a proxied one must not be
read as a portal path by any upstream, however lenient.
"""

from __future__ import annotations

import ssl
import uuid
from urllib.parse import unquote

import pytest
from hypothesis import given
from hypothesis import strategies as st
from yarl import URL

from gateway.edge import paths
from gateway.edge.paths import canonical, decision_path, target_problem
from gateway.namespace import NamespaceTable
from tests.conftest import DOMAIN, RecordingUpstream, StartGateway, raw_exchange
from tests.edge.readings import decode_once, guarded, readings

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


# --- issue 20, class 3: one canonical form ----------------------------------------------------

GUARDED_PATHS = ("/tickets", "/tickets/1", "/api/v1/me", "/admin/api/contacts", "/messenger/web/ping")


def _percent(data: bytes) -> str:
    return "".join(f"%{byte:02x}" for byte in data)


@st.composite
def spelling(draw: st.DrawFn, char: str) -> str:
    """One character of a path in one of the spellings lenient readers decode to it."""
    code = ord(char)
    forms = [char, char.upper(), _percent(char.encode()), _percent(char.encode()).upper()]
    forms += [f"%25{code:02x}", f"%%{ord(f'{code:02x}'[0]):02x}%{ord(f'{code:02x}'[1]):02x}", f"%u{code:04x}"]
    forms += [_percent(bytes([0xC0 | code >> 6, 0x80 | code & 0x3F]))]  # overlong UTF-8
    if char.isalpha():
        forms += [_percent(chr(code + 0xFEE0).encode()), chr(code + 0xFEE0)]  # full width, encoded and raw
        forms += {"i": ["%c4%b1"], "s": ["%c5%bf"], "k": ["%e2%84%aa"]}.get(char, [])  # dotless i, long s, Kelvin sign
    if char == "/":
        forms += ["%e2%88%95", "%ef%bc%8f", "\\", "%5c", "%2f"]  # division slash, full-width solidus
    return draw(st.sampled_from(forms))


@st.composite
def guarded_spelling(draw: st.DrawFn) -> str:
    """A guarded path, each character spelled its own way, perhaps behind a traversal or with a tail."""
    path = draw(st.sampled_from(GUARDED_PATHS))
    spelled = "".join(draw(spelling(char)) for char in path)
    prefix = draw(st.sampled_from(["", "/x/..", "/x/%2e%2e", "/x/.%2e", "/x/%c0%ae%c0%ae", "/x/%uff0e%uff0e"]))
    suffix = draw(st.sampled_from(["", "%3f", "%23", "%00", "?q=1", ";x", "."]))
    return prefix + spelled + suffix


@given(guarded_spelling())
def test_every_spelling_of_a_guarded_path_is_refused_or_decided_as_guarded(raw_path: str) -> None:
    """Class 3 property: a spelling of a portal, API, admin or Messenger path (percent, double, %%32%66,
    %u, overlong UTF-8, full-width, dotless i, long s, Kelvin sign, look-alike slashes, a decoded ?/#) is
    refused, or its canonical form (one strict decode) is itself guarded, so the access stage and the
    reserved check see it for what it is."""
    if target_problem(raw_path, allow_encoded_slashes=False, guarded=TABLE.guarded) is not None:
        return
    decoded = canonical(raw_path.partition("?")[0])
    assert decoded is not None
    if any(guarded(reading) for reading in readings(raw_path.partition("?")[0])):
        assert TABLE.guarded(decoded), raw_path


@given(st.text(alphabet="/tickes%0123456789abcdefABCDEFu\\.;\u0131\uff54", max_size=24))
def test_a_path_that_passes_has_one_reading(raw_path: str) -> None:
    """Class 3 property: a path that passes decodes once to UTF-8 with no "%" left, so any further decoding
    changes nothing, and no reading of it is guarded unless its canonical form is."""
    raw_path = "/" + raw_path
    if target_problem(raw_path, allow_encoded_slashes=False, guarded=TABLE.guarded) is not None:
        return
    decoded = canonical(raw_path)
    assert decoded is not None
    assert "%" not in decoded
    assert decode_once(decoded) == decoded or not decoded.isascii()
    if any(guarded(reading) for reading in readings(raw_path)):
        assert TABLE.guarded(decoded), raw_path


@pytest.mark.parametrize(
    ("raw_path", "reason"),
    [
        ("/..%%32%66..%%32%66tickets", "holding %"),
        ("/tickets%3fx", "? or #"),
        ("/tickets%23x", "? or #"),
        ("/%c0%aftickets", "UTF-8"),
        ("/tickets%ff", "UTF-8"),
        ("/%u0074ickets", "holding %"),
        ("/%ef%bd%94ickets", "Look-alikes"),
        ("/t%c4%b1ckets", "Look-alikes"),
        ("/%e2%88%95tickets", "Look-alikes"),
        ("/%EF%BD%81dmin/api/contacts", "Look-alikes"),
        ("/tickets%7f", "control"),
        ("/%ef%bc%8e%ef%bc%8e/tickets", "Dot segments"),
        ("/0x2e0x2e/tickets", "Dot segments"),
    ],
)
def test_each_rule_of_the_canonical_form_names_itself(raw_path: str, reason: str) -> None:
    """Class 3: issue 20's cases, each refused with its own reason."""
    problem = target_problem(raw_path, allow_encoded_slashes=False, guarded=TABLE.guarded)
    assert problem is not None
    assert reason in problem


@pytest.mark.parametrize(
    "raw_path",
    ["/caf%C3%A9", "/%E6%97%A5%E6%9C%AC", "/articles/%ef%bd%94", "/TICKETS", "/api/v1/%ef%bd%8de", "/tickets/%C2%BE"],
)
def test_unicode_that_names_no_other_guarded_namespace_passes(raw_path: str) -> None:
    """Class 3 control: a non-ASCII path passes when no reading takes it into a guarded namespace, or when
    it lies in that namespace already (the access stage guards it, as for the admin API's non-ASCII ids)."""
    assert target_problem(raw_path, allow_encoded_slashes=False, guarded=TABLE.guarded) is None


async def test_a_canonical_refusal_is_a_400_page_and_nothing_goes_upstream(
    start_gateway: StartGateway, upstream: RecordingUpstream
) -> None:
    """Class 3 through the gateway: the error tree's BadRequest, through the one error middleware, as JSON
    on the API's namespace; the upstream sees none of them."""
    gateway = await start_gateway(portal={"mode": "proxy"})
    for raw_path in ("/%ef%bd%94ickets", "/tickets%3fx", "/..%%32%66tickets", "/%c0%aftickets", "/%ef%bd%81pi/v1/me"):
        async with gateway.client.get(URL(f"{gateway.url}{raw_path}", encoded=True), headers={"Host": DOMAIN}) as got:
            assert got.status == 400, raw_path
            assert got.headers["X-Request-Id"]
    assert upstream.requests == []


@pytest.mark.parametrize(
    "target",
    [b"/\xc0\xaftickets", b"/\xef\xbd\x94ickets", b"/t\xc4\xb1ckets/1", b"/tickets\xff", b"/\xe2\x88\x95tickets"],
)
async def test_raw_bytes_in_the_request_line_get_the_same_rules(
    start_gateway: StartGateway, upstream: RecordingUpstream, client_ssl: ssl.SSLContext, target: bytes
) -> None:
    """Class 3: bytes above 0x7F sent unencoded in the request line (no client library writes them) are held
    to the same canonical form as their percent-encoded spelling: refused, nothing upstream."""
    gateway = await start_gateway(portal={"mode": "proxy"})
    head = b"GET " + target + b" HTTP/1.1\r\nHost: " + DOMAIN.encode() + b"\r\nConnection: close\r\n\r\n"
    answer = await raw_exchange(gateway, head, client_ssl, seconds=2.0)
    assert answer.statuses == [400], answer.data[:400]
    assert upstream.requests == []


@pytest.mark.parametrize("long", [False, True])
def test_reserved_is_answered_the_same_whether_remembered_or_not(long: bool) -> None:
    """The catch-all asks on every proxied request: short paths' answers are remembered, long ones never (a
    client sending 32 KB paths cannot fill the memory), and the query is never part of what is kept."""
    padding = uuid.uuid4().hex + "a" * (300 if long else 0)  # a path no other test asked about
    before = paths._remembered.cache_info().currsize
    assert paths.reserved(f"/admin/%61pi/{padding}?token=secret")  # %61 is "a": /admin/api, as leniently read
    assert not paths.reserved(f"/help/{padding}?token=secret")
    assert paths.reserved(f"/admin/%61pi/{padding}?other")  # the same path, another query: one entry
    assert paths._remembered.cache_info().currsize == before + (0 if long else 2)

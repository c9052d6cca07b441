"""Header rewriting for the proxy: hop-by-hop removal, X-Forwarded-*, the upstream header set."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address, ip_network

import pytest
from hypothesis import given
from hypothesis import strategies as st
from multidict import CIMultiDict, CIMultiDictProxy

from gateway.edge.headers import (
    GATEWAY_PREFIXES,
    HOP_BY_HOP,
    STANDARD_REQUEST_HEADERS,
    Forwarding,
    Network,
    forwarding,
    passes,
    peer_in,
    upstream_request_headers,
    without_hop_by_hop,
)

HOST = "help.example.com"
TRUSTED: frozenset[Network] = frozenset({ip_network("10.0.0.0/8"), ip_network("fd00::/8")})
CLIENT_FORWARDING_HEADERS = ("Forwarded", "X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host", "X-Real-IP")


def headers(*items: tuple[str, str]) -> CIMultiDictProxy[str]:
    return CIMultiDictProxy(CIMultiDict(items))


# --- without_hop_by_hop -----------------------------------------------------------------------


def test_removes_every_rfc_hop_by_hop_header() -> None:
    given_headers = headers(
        ("Connection", "keep-alive"),
        ("Keep-Alive", "timeout=5"),
        ("Proxy-Connection", "keep-alive"),
        ("Proxy-Authenticate", "Basic"),
        ("Proxy-Authorization", "Basic Zm9vOmJhcg=="),
        ("TE", "trailers"),
        ("Trailer", "X-Checksum"),
        ("Trailers", "X-Checksum"),
        ("Transfer-Encoding", "chunked"),
        ("Upgrade", "h2c"),
        ("Accept", "text/html"),
        ("Content-Type", "text/plain"),
    )
    out = without_hop_by_hop(given_headers)
    assert list(out.items()) == [("Accept", "text/html"), ("Content-Type", "text/plain")]


def test_removes_headers_named_in_connection_case_insensitively() -> None:
    given_headers = CIMultiDict(
        [
            ("connection", "X-Secret-Hop, x-other"),
            ("CONNECTION", " , x-THIRD ,,"),
            ("x-secret-hop", "1"),
            ("X-Other", "2"),
            ("X-Third", "3"),
            ("X-Kept", "4"),
            ("Accept", "a"),
            ("accept", "b"),
        ]
    )
    out = without_hop_by_hop(given_headers)
    assert list(out.items()) == [("X-Kept", "4"), ("Accept", "a"), ("accept", "b")]
    # The input is not changed.
    assert given_headers["X-Other"] == "2"
    assert len(given_headers) == 8


def test_connection_naming_nothing_removes_only_hop_by_hop() -> None:
    out = without_hop_by_hop(headers(("Connection", "close"), ("Cookie", "a=1"), ("Host", HOST)))
    assert list(out.items()) == [("Cookie", "a=1"), ("Host", HOST)]


# --- forwarding -------------------------------------------------------------------------------


def test_untrusted_peer_client_values_are_replaced() -> None:
    given_headers = headers(
        ("X-Forwarded-For", "1.2.3.4, 10.0.0.7"),
        ("X-Forwarded-Proto", "http"),
        ("X-Forwarded-Host", "evil.example.net"),
        ("Forwarded", "for=1.2.3.4;proto=http"),
        ("X-Real-IP", "1.2.3.4"),
    )
    fwd = forwarding("203.0.113.5", given_headers, host=HOST, trusted=TRUSTED)
    assert fwd == Forwarding(client_ip="203.0.113.5", forwarded_for="203.0.113.5", proto="https", host=HOST)


def test_no_trusted_proxies_believes_nobody() -> None:
    fwd = forwarding("10.0.0.1", headers(("X-Forwarded-For", "1.2.3.4")), host=HOST, trusted=frozenset())
    assert fwd == Forwarding(client_ip="10.0.0.1", forwarded_for="10.0.0.1", proto="https", host=HOST)


@pytest.mark.parametrize(
    ("peer", "xff", "client_ip", "forwarded_for"),
    [
        pytest.param("10.0.0.1", ["198.51.100.7"], "198.51.100.7", "198.51.100.7, 10.0.0.1", id="one-hop"),
        pytest.param(
            "10.0.0.1", ["198.51.100.7, 10.0.0.2"], "198.51.100.7", "198.51.100.7, 10.0.0.2, 10.0.0.1", id="two-proxies"
        ),
        pytest.param(
            "10.0.0.1",
            ["6.6.6.6, 198.51.100.7"],
            "198.51.100.7",
            "6.6.6.6, 198.51.100.7, 10.0.0.1",
            id="spoofed-left-entry-ignored",
        ),
        pytest.param(
            "10.0.0.1",
            ["6.6.6.6", "198.51.100.7, 10.9.9.9"],
            "198.51.100.7",
            "6.6.6.6, 198.51.100.7, 10.9.9.9, 10.0.0.1",
            id="several-headers",
        ),
        pytest.param("10.0.0.1", [], "10.0.0.1", "10.0.0.1", id="no-chain"),
        pytest.param("10.0.0.1", ["10.1.1.1, 10.2.2.2"], "10.1.1.1", "10.1.1.1, 10.2.2.2, 10.0.0.1", id="all-trusted"),
        pytest.param(
            "10.0.0.1", [" , ,198.51.100.7,, "], "198.51.100.7", "198.51.100.7, 10.0.0.1", id="empty-entries-dropped"
        ),
        pytest.param(
            "10.0.0.1",
            ["6.6.6.6, unknown"],
            "unknown",
            "6.6.6.6, unknown, 10.0.0.1",
            id="garbage-entry-stops-the-walk",
        ),
        pytest.param(
            "10.0.0.1",
            ["6.6.6.6, 198.51.100.7:4711"],
            "198.51.100.7:4711",
            "6.6.6.6, 198.51.100.7:4711, 10.0.0.1",
            id="entry-with-port-is-not-trusted",
        ),
        pytest.param("fd00::1", ["2001:db8::5"], "2001:db8::5", "2001:db8::5, fd00::1", id="ipv6"),
        pytest.param(
            "fd00::1", ["2001:db8::5, [fd00::2]"], "2001:db8::5", "2001:db8::5, [fd00::2], fd00::1", id="ipv6-bracketed"
        ),
        pytest.param(
            "10.0.0.1", ["2001:db8::5, 10.0.0.3"], "2001:db8::5", "2001:db8::5, 10.0.0.3, 10.0.0.1", id="mixed"
        ),
    ],
)
def test_trusted_peer_chain(peer: str, xff: list[str], client_ip: str, forwarded_for: str) -> None:
    fwd = forwarding(peer, headers(*(("X-Forwarded-For", value) for value in xff)), host=HOST, trusted=TRUSTED)
    assert fwd.client_ip == client_ip
    assert fwd.forwarded_for == forwarded_for


def test_trusted_peer_passes_proto_and_host() -> None:
    given_headers = headers(("X-Forwarded-Proto", "http"), ("X-Forwarded-Host", "help.example.org"))
    fwd = forwarding("10.0.0.1", given_headers, host=HOST, trusted=TRUSTED)
    assert (fwd.proto, fwd.host) == ("http", "help.example.org")
    blank = forwarding(
        "10.0.0.1", headers(("X-Forwarded-Proto", " "), ("X-Forwarded-Host", "")), host=HOST, trusted=TRUSTED
    )
    assert (blank.proto, blank.host) == ("https", HOST)


@pytest.mark.parametrize("peer", ["2001:db8::1", "[2001:db8::1]", "", "garbage", "/run/gateway.sock"])
def test_peers_outside_trusted_networks(peer: str) -> None:
    fwd = forwarding(peer, headers(("X-Forwarded-For", "10.0.0.5")), host=HOST, trusted=TRUSTED)
    assert fwd.forwarded_for == peer
    assert fwd.client_ip == peer


untrusted_ips = st.one_of(
    st.ip_addresses(v=4).filter(lambda ip: not any(ip in network for network in TRUSTED)),
    st.ip_addresses(v=6).filter(lambda ip: not any(ip in network for network in TRUSTED)),
)
header_value = st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\r\n"), max_size=40)
client_forwarding = st.lists(
    st.tuples(st.sampled_from([*CLIENT_FORWARDING_HEADERS, "x-forwarded-for", "X-FORWARDED-FOR"]), header_value),
    max_size=6,
)


@given(peer=untrusted_ips, sent=client_forwarding)
def test_untrusted_peer_forwarded_for_is_exactly_the_peer(
    peer: IPv4Address | IPv6Address, sent: list[tuple[str, str]]
) -> None:
    given_headers = headers(*sent)
    fwd = forwarding(str(peer), given_headers, host=HOST, trusted=TRUSTED)
    assert fwd == Forwarding(client_ip=str(peer), forwarded_for=str(peer), proto="https", host=HOST)
    out = upstream_request_headers(given_headers, cookie=None, fwd=fwd).headers
    assert out.getall("X-Forwarded-For") == [str(peer)]
    assert out.getall("X-Forwarded-Proto") == ["https"]
    assert out.getall("X-Forwarded-Host") == [HOST]
    assert "Forwarded" not in out
    assert "X-Real-IP" not in out


@given(peer=st.ip_addresses(network="10.0.0.0/8"), chain=st.lists(header_value, max_size=4))
def test_trusted_peer_chain_always_ends_with_the_peer(peer: IPv4Address, chain: list[str]) -> None:
    fwd = forwarding(str(peer), headers(*(("X-Forwarded-For", value) for value in chain)), host=HOST, trusted=TRUSTED)
    assert fwd.forwarded_for.split(", ")[-1] == str(peer)


# --- upstream_request_headers -----------------------------------------------------------------

CLIENT = headers(
    ("Host", "help.example.com"),
    ("Forwarded", "for=1.2.3.4"),
    ("X-Forwarded-For", "1.2.3.4"),
    ("x-forwarded-for", "5.6.7.8"),
    ("X-Forwarded-Proto", "http"),
    ("X-Forwarded-Host", "evil.example.net"),
    ("X-Real-IP", "1.2.3.4"),
    ("x-real-ip", "1.2.3.4"),
    ("Cookie", "intercom-session-ws1a2b3c=a; portal-jwt=t"),
    ("Cookie", "other=1"),
    ("Connection", "keep-alive, X-Hop"),
    ("Keep-Alive", "timeout=5"),
    ("X-Hop", "1"),
    ("Accept", "text/html"),
    ("User-Agent", "test/1"),
)
FWD = Forwarding(client_ip="203.0.113.5", forwarded_for="203.0.113.5", proto="https", host=HOST)


def test_upstream_headers_with_filtered_cookie() -> None:
    out = upstream_request_headers(CLIENT, cookie="intercom-session-ws1a2b3c=a", fwd=FWD).headers
    assert sorted(out.items()) == sorted(
        [
            ("Accept", "text/html"),
            ("User-Agent", "test/1"),
            ("Cookie", "intercom-session-ws1a2b3c=a"),
            ("X-Forwarded-For", "203.0.113.5"),
            ("X-Forwarded-Proto", "https"),
            ("X-Forwarded-Host", HOST),
        ]
    )
    assert out.getall("Cookie") == ["intercom-session-ws1a2b3c=a"]
    # The request's own headers are untouched.
    assert CLIENT.getall("Cookie") == ["intercom-session-ws1a2b3c=a; portal-jwt=t", "other=1"]


@pytest.mark.parametrize("cookie", [None, ""])
def test_upstream_headers_without_cookie(cookie: str | None) -> None:
    out = upstream_request_headers(CLIENT, cookie=cookie, fwd=FWD).headers
    assert "Cookie" not in out
    assert "Host" not in out
    for name in ("Forwarded", "X-Real-IP", "Connection", "Keep-Alive", "X-Hop"):
        assert name not in out
    assert out.getall("X-Forwarded-For") == ["203.0.113.5"]


def test_upstream_headers_carry_the_trusted_chain() -> None:
    fwd = forwarding("10.0.0.1", headers(("X-Forwarded-For", "198.51.100.7")), host=HOST, trusted=TRUSTED)
    out = upstream_request_headers(headers(("X-Forwarded-For", "198.51.100.7")), cookie=None, fwd=fwd).headers
    assert out.getall("X-Forwarded-For") == ["198.51.100.7, 10.0.0.1"]


# --- peer_in ----------------------------------------------------------------------------------

LOCAL: frozenset[Network] = frozenset({ip_network("127.0.0.0/8"), ip_network("::1/128")})


@pytest.mark.parametrize(
    ("peer", "networks", "expected"),
    [
        ("127.0.0.1", LOCAL, True),
        ("127.9.9.9", LOCAL, True),
        ("::1", LOCAL, True),
        ("[::1]", LOCAL, True),
        ("128.0.0.1", LOCAL, False),
        ("::2", LOCAL, False),
        ("10.0.0.1", LOCAL, False),
        ("10.0.0.1", TRUSTED, True),
        ("fd00::abcd", TRUSTED, True),
        ("127.0.0.1", frozenset(), False),
        (None, LOCAL, False),
        ("", LOCAL, False),
        ("localhost", LOCAL, False),
        ("127.0.0.1:8080", LOCAL, False),
    ],
)
def test_peer_in(peer: str | None, networks: frozenset[Network], expected: bool) -> None:
    assert peer_in(peer, networks) is expected


# --- identity claims from the client ----------------------------------------------------------

CLAIMS = headers(
    ("X-Portal-User-Id", "admin"),
    ("x-portal-email", "ceo@example.com"),
    ("X_Portal_Company_Ids", "c1,c2"),
    ("X-Forwarded-User", "admin"),
    ("X-Forwarded-Email", "ceo@example.com"),
    ("Remote-User", "admin"),
    ("X_Remote_User", "admin"),
    ("X-Auth-Request-User", "admin"),
    ("X-User-Id", "1"),
    ("Accept", "text/html"),
    ("X-Portalish", "kept"),
)


def test_client_identity_claims_never_reach_upstream() -> None:
    out = upstream_request_headers(CLAIMS, cookie=None, fwd=FWD).headers
    assert sorted(
        key for key in out if key.lower() not in ("x-forwarded-for", "x-forwarded-proto", "x-forwarded-host")
    ) == ["Accept"]


def test_gateway_identity_replaces_client_claims() -> None:
    own = {"X-Portal-User-Id": "u-42", "X-Portal-Company-Ids": "c9"}
    out = upstream_request_headers(CLAIMS, cookie=None, fwd=FWD, identity=own).headers
    assert out.getall("X-Portal-User-Id") == ["u-42"]
    assert out.getall("X-Portal-Company-Ids") == ["c9"]
    assert "X_Portal_Company_Ids" not in out
    assert "X-Portal-Email" not in out
    assert "X-Forwarded-User" not in out


# --- spoofing in every spelling (advisory class 3) ------------------------------------------------

SPOOFED_FORWARDING = headers(
    ("X_Forwarded_For", "6.6.6.6"),
    ("x_forwarded_host", "evil.example"),
    ("X-FORWARDED-PROTO", "http"),
    ("X-Forwarded-Port", "80"),
    ("X-Forwarded-Prefix", "/admin"),
    ("X-Forwarded-Server", "evil.example"),
    ("FORWARDED", "for=6.6.6.6;host=evil.example"),
    ("X_Real_IP", "6.6.6.6"),
    ("True-Client-IP", "6.6.6.6"),
    ("X-Client-IP", "6.6.6.6"),
    ("X-Original-URL", "/admin"),
    ("X-Rewrite-URL", "/admin"),
    ("X-Original-Host", "evil.example"),
    ("Accept", "text/html"),
)


def test_client_forwarding_claims_in_any_spelling_never_reach_upstream() -> None:
    """Class 3, header spoofing: underscore and case variants of X-Forwarded-*, Forwarded and URL overrides."""
    out = upstream_request_headers(SPOOFED_FORWARDING, cookie=None, fwd=FWD).headers
    assert sorted(out.items()) == sorted(
        [
            ("Accept", "text/html"),
            ("X-Forwarded-For", "203.0.113.5"),
            ("X-Forwarded-Proto", "https"),
            ("X-Forwarded-Host", HOST),
        ]
    )


def test_connection_cannot_name_away_the_gateways_own_headers() -> None:
    """Class 3, hop-by-hop abuse: ``Connection: X-Portal-User-Id, X-Forwarded-For`` removes nothing the gateway sets."""
    client = headers(("Connection", "close, X-Portal-User-Id, X-Forwarded-For, X-Forwarded-Host, Cookie"))
    own = {"X-Portal-User-Id": "u-42", "X-Portal-Company-Ids": "c9"}
    out = upstream_request_headers(client, cookie="intercom-session-ws1a2b3c=a", fwd=FWD, identity=own).headers
    assert out.getall("X-Portal-User-Id") == ["u-42"]
    assert out.getall("X-Forwarded-For") == ["203.0.113.5"]
    assert out.getall("X-Forwarded-Host") == [HOST]
    assert out.getall("Cookie") == ["intercom-session-ws1a2b3c=a"]
    assert "Connection" not in out


# --- the positive model (issue 20, classes 1 and 2) ---------------------------------------------

# Names that servers behind a proxy have believed: identity (param-miner's list), forwarding, overrides,
# framing; each is spelled by the strategy below in any case and with "_" for any "-".
BELIEVED = (
    "x-auth-user",
    "iv-user",
    "x-username",
    "user-id",
    "proxy-user",
    "x-remote-user",
    "x-portal-user-id",
    "cf-connecting-ip",
    "x-originating-ip",
    "x-forward-for",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-http-path-override",
    "x-http-method-override",
    "x-original-url",
    "transfer-encoding",
    "content-length",
)
GATEWAYS_OWN = frozenset({"x-forwarded-for", "x-forwarded-proto", "x-forwarded-host"})
TCHAR = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+.^_`|~-"


@st.composite
def spelled(draw: st.DrawFn, names: tuple[str, ...] = BELIEVED) -> str:
    """One of ``names`` in any case, any of its "-" perhaps "_"."""
    name = draw(st.sampled_from(names))
    return "".join(
        draw(st.sampled_from(["-", "_"])) if char == "-" else draw(st.sampled_from([char, char.upper()]))
        for char in name
    )


ANY_NAME = st.text(alphabet=TCHAR, min_size=1, max_size=24)
STANDARD_NAME = spelled(tuple(sorted(STANDARD_REQUEST_HEADERS)))
VALUE = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=16)


@given(
    st.lists(st.tuples(st.one_of(spelled(), ANY_NAME, STANDARD_NAME), VALUE), max_size=24),
    st.frozensets(st.one_of(ANY_NAME, spelled()).map(str.lower), max_size=4),
)
def test_only_standard_or_passed_names_reach_upstream_and_every_other_is_named(
    items: list[tuple[str, str]], extra: frozenset[str]
) -> None:
    """Classes 1 and 2 property: whatever the client sends and whatever ``extra`` lists, a name reaches
    upstream only when standard or listed, never with "_" nor under X-Portal-*/X-Forwarded-* (the gateway's
    own); every other name is in ``dropped`` (names only), unless hop-by-hop or rewritten by the gateway."""
    out = upstream_request_headers(headers(*items), cookie=None, fwd=FWD, extra=extra)
    for name in out.headers:
        lower = name.lower()
        if lower in GATEWAYS_OWN:
            continue
        assert "_" not in lower, name
        assert not lower.startswith(GATEWAY_PREFIXES), name
        assert lower in STANDARD_REQUEST_HEADERS or lower in extra or lower.startswith(("sec-fetch-", "sec-ch-"))
    forwarded = {name.lower() for name in out.headers}
    for name, _ in items:
        lower = name.lower()
        assert lower in forwarded or lower in out.dropped or lower in HOP_BY_HOP | GATEWAYS_OWN | {"host", "cookie"}, (
            name
        )
    assert set(out.dropped) <= {name.lower() for name, _ in items}
    assert len(out.dropped) == len(set(out.dropped))


@given(spelled())
def test_no_config_lets_a_name_with_an_underscore_or_the_gateways_prefix_pass(name: str) -> None:
    """Class 1 property: ``upstream.pass_headers`` can only add names; "_" and X-Portal-*/X-Forwarded-* never pass."""
    lower = name.lower()
    if "_" in lower or lower.startswith(GATEWAY_PREFIXES):
        assert not passes(lower, frozenset({lower, lower.replace("_", "-")}))


def test_passed_names_reach_upstream_and_the_rest_are_dropped_in_order() -> None:
    """Class 2: ``extra`` extends the model; the dropped names come once each, lower case, as first sent."""
    client = headers(
        ("X-Auth-User", "admin"),
        ("X-Tenant", "t1"),
        ("Transfer_Encoding", "chunked"),
        ("x-auth-user", "again"),
        ("Accept", "text/html"),
        ("Sec-Fetch-Mode", "navigate"),
        ("X-Forwarded-Port", "80"),
    )
    out = upstream_request_headers(client, cookie=None, fwd=FWD, extra=frozenset({"x-tenant"}))
    assert [name for name in out.headers if name.lower() not in GATEWAYS_OWN] == [
        "X-Tenant",
        "Accept",
        "Sec-Fetch-Mode",
    ]
    assert out.dropped == ("x-auth-user", "transfer_encoding", "x-forwarded-port")


def test_a_name_the_connection_header_lists_is_dropped_and_named() -> None:
    """Hop-by-hop: ``Connection: Accept-Language`` makes even a standard header hop-by-hop; the audit says so."""
    out = upstream_request_headers(
        headers(("Connection", "Accept-Language"), ("Accept-Language", "en"), ("Keep-Alive", "5")), cookie=None, fwd=FWD
    )
    assert "Accept-Language" not in out.headers
    assert out.dropped == ("accept-language",)


@given(
    st.lists(
        st.tuples(
            st.sampled_from([*sorted(HOP_BY_HOP), "Keep-Alive", "CONNECTION", "Connection"]) | ANY_NAME,
            VALUE | st.just("X-A, keep-Alive"),
        ),
        max_size=10,
    )
)
def test_a_copy_without_hop_by_hop_keeps_every_other_header_in_order(sent: list[tuple[str, str]]) -> None:
    """What is left is exactly the headers whose name is neither hop-by-hop nor listed by a Connection header."""
    given_headers = CIMultiDict(sent)
    named = {
        token.strip().lower() for name, value in sent if name.lower() == "connection" for token in value.split(",")
    }
    expected = [(name, value) for name, value in sent if name.lower() not in HOP_BY_HOP | named]
    assert list(without_hop_by_hop(given_headers).items()) == expected

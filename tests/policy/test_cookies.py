"""The cookie allow-list, both ways: ``filter_cookies`` towards upstream, ``rewrite_set_cookie`` back.

Pure functions, so no server: a table of tricky Cookie headers, property tests
that parse the forwarded header the way a strict and a lenient upstream would,
and a table of upstream Set-Cookie headers.
"""

from __future__ import annotations

import re
from http.cookies import CookieError, SimpleCookie

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.policy.cookies import (
    INVALID_NAME,
    NAMELESS,
    CookieDecision,
    RequestCookies,
    cookie_names,
    cookie_value,
    filter_cookies,
    rewrite_set_cookie,
)

SESSION = "intercom-session-ws1a2b3c"
DEVICE = "intercom-device-id-ws1a2b3c"
ALLOWED = frozenset({SESSION, DEVICE})

UPSTREAM_HOST = "acme.intercom.help"
CUSTOM_DOMAIN = "help.example.com"
COOKIE_DOMAIN = "example.com"

# RFC 6265 section 4.1.1: cookie-octet = %x21 / %x23-2B / %x2D-3A / %x3C-5B / %x5D-7E
COOKIE_OCTETS = "".join(
    chr(code) for code in [0x21, *range(0x23, 0x2C), *range(0x2D, 0x3B), *range(0x3C, 0x5C), *range(0x5D, 0x7F)]
)
OTHER_NAMES = (
    "portal-jwt",
    "intercom-session-otherws",
    "intercom-device-id-otherws",
    "Intercom-Session-ws1a2b3c",
    "INTERCOM-DEVICE-ID-WS1A2B3C",
    "intercom-session-ws1a2b3",
    "intercom-session-ws1a2b3cX",
    "xintercom-session-ws1a2b3c",
    "_ga",
    "session",
    "csrftoken",
    "portal-user-id",
    "portal-user-hash",
    "",
    " ",
    "caf\u00e9",
    f"{SESSION}\u200b",
)


# --- test-only parsers: how an upstream might read the forwarded header -----------------------


def strict_names(header: str) -> list[str]:
    """Cookie names as an RFC 6265 server reads them: pairs split on ``;``; a pair without ``=`` is nameless."""
    names = []
    for piece in header.split(";"):
        pair = piece.strip()
        if pair:
            name, sep, _ = pair.partition("=")
            names.append(name.strip() if sep else "")
    return names


def lenient_names(header: str) -> list[str]:
    """Cookie names as a lenient server reads them: split on ``;`` and ``,``, a bare word is a name."""
    return [piece.strip().partition("=")[0].strip() for piece in re.split("[;,]", header) if piece.strip()]


def simple_cookie_names(header: str) -> list[str]:
    """Cookie names as Python's ``http.cookies.SimpleCookie`` reads them (none when it refuses the header)."""
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(header)
    except CookieError:
        return []
    return list(jar.keys())


def assert_only_allowed(decision: CookieDecision) -> None:
    """No parser finds a name outside the allow-list in what goes upstream."""
    if decision.header is None:
        return
    for parse in (strict_names, lenient_names, simple_cookie_names):
        names = parse(decision.header)
        assert set(names) <= ALLOWED, (parse.__name__, decision.header, names)
    assert set(decision.forwarded) <= ALLOWED


# --- the table --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "expected_header", "expected_forwarded", "expected_stripped"),
    [
        pytest.param([f"{SESSION}=abc"], f"{SESSION}=abc", (SESSION,), (), id="one-allowed"),
        pytest.param(
            [f"{SESSION}=abc; {DEVICE}=d-1"], f"{SESSION}=abc; {DEVICE}=d-1", (SESSION, DEVICE), (), id="both"
        ),
        pytest.param([], None, (), (), id="no-cookie-header"),
        pytest.param([""], None, (), (), id="empty-header"),
        pytest.param(
            [f"foo; {SESSION}=abc"], f"{SESSION}=abc", (SESSION,), (NAMELESS,), id="pair-without-equals-is-nameless"
        ),
        pytest.param(
            [f"{SESSION}; {DEVICE}=d"], f"{DEVICE}=d", (DEVICE,), (NAMELESS,), id="allowed-name-without-equals"
        ),
        pytest.param([f'{SESSION}="abc"'], f'{SESSION}="abc"', (SESSION,), (), id="quoted-value"),
        pytest.param([f'{SESSION}=""'], f'{SESSION}=""', (SESSION,), (), id="empty-quoted-value"),
        pytest.param([f"{SESSION}="], f"{SESSION}=", (SESSION,), (), id="empty-value"),
        pytest.param([f'{SESSION}="abc'], None, (), (SESSION,), id="unbalanced-quote"),
        pytest.param([f'{SESSION}="a;b"'], None, (), (SESSION, NAMELESS), id="semicolon-inside-quotes"),
        pytest.param([f"{SESSION}=a=b==", "x=1"], f"{SESSION}=a=b==", (SESSION,), ("x",), id="equals-in-value"),
        pytest.param(
            [f"{SESSION}=a; {SESSION}=b; {DEVICE}=c; {SESSION}=d"],
            f"{SESSION}=a; {SESSION}=b; {DEVICE}=c; {SESSION}=d",
            (SESSION, DEVICE),
            (),
            id="duplicate-allowed-names-all-forwarded-in-order",
        ),
        pytest.param(
            [f";; {SESSION}=a;;; ;{DEVICE}=b;", ";"],
            f"{SESSION}=a; {DEVICE}=b",
            (SESSION, DEVICE),
            (),
            id="empty-pairs",
        ),
        pytest.param(
            [f"\t {SESSION}=a \t;\t{DEVICE}=b\t"],
            f"{SESSION}=a; {DEVICE}=b",
            (SESSION, DEVICE),
            (),
            id="whitespace-tabs",
        ),
        pytest.param([f"{SESSION} =\ta"], f"{SESSION}=a", (SESSION,), (), id="whitespace-around-equals"),
        pytest.param(
            [f"caf\u00e9=cr\u00e8me; {SESSION}=a"],
            f"{SESSION}=a",
            (SESSION,),
            (INVALID_NAME,),
            id="non-ascii-name",
        ),
        pytest.param(
            [f"{SESSION}=cr\u00e8me", f"{DEVICE}=d"], f"{DEVICE}=d", (DEVICE,), (SESSION,), id="non-ascii-value"
        ),
        pytest.param([f"{SESSION}\u200b=a"], None, (), (INVALID_NAME,), id="allowed-name-with-zero-width-space"),
        pytest.param(
            [f"{SESSION}=a", "other=1; _ga=GA1.2.3", f"{DEVICE}=b"],
            f"{SESSION}=a; {DEVICE}=b",
            (SESSION, DEVICE),
            ("other", "_ga"),
            id="several-cookie-headers",
        ),
        pytest.param(
            [f"intercom-session-otherws=x; {SESSION}=a; intercom-device-id-otherws=y"],
            f"{SESSION}=a",
            (SESSION,),
            ("intercom-session-otherws", "intercom-device-id-otherws"),
            id="other-workspace",
        ),
        pytest.param(
            [f"portal-jwt=eyJhbGciOiJIUzI1NiJ9.e30.sig; {DEVICE}=b"],
            f"{DEVICE}=b",
            (DEVICE,),
            ("portal-jwt",),
            id="portal-jwt",
        ),
        pytest.param(
            ["_ga=GA1.2.345.678; sessionid=abc; csrftoken=xyz; portal-user-id=u1; portal-user-hash=ff"],
            None,
            (),
            ("_ga", "sessionid", "csrftoken", "portal-user-id", "portal-user-hash"),
            id="customer-app-cookies",
        ),
        pytest.param(
            [f"Intercom-Session-ws1a2b3c=a; INTERCOM-DEVICE-ID-WS1A2B3C=b; {SESSION}=c"],
            f"{SESSION}=c",
            (SESSION,),
            ("Intercom-Session-ws1a2b3c", "INTERCOM-DEVICE-ID-WS1A2B3C"),
            id="names-differing-by-case",
        ),
        pytest.param(
            ["intercom-session-ws1a2b3cX=a; intercom-session-ws1a2b3=b; xintercom-session-ws1a2b3c=c"],
            None,
            (),
            ("intercom-session-ws1a2b3cX", "intercom-session-ws1a2b3", "xintercom-session-ws1a2b3c"),
            id="names-that-only-contain-an-allowed-name",
        ),
        pytest.param(
            [f"{SESSION}=a, portal-jwt=stolen; {DEVICE}=d"],
            f"{DEVICE}=d",
            (DEVICE,),
            (SESSION,),
            id="comma-space-smuggling",
        ),
        pytest.param([f"{SESSION}=a,portal-jwt=stolen"], None, (), (SESSION,), id="comma-smuggling"),
        pytest.param([f"{SESSION}=a portal-jwt=stolen"], None, (), (SESSION,), id="space-in-value"),
        pytest.param([f"{SESSION}=a\\b"], None, (), (SESSION,), id="backslash-in-value"),
        pytest.param([f"{SESSION}=a\x00b"], None, (), (SESSION,), id="control-char-in-value"),
        # SECURITY: a regex's "$" also matches before a final newline; the whole value must match, not a prefix.
        pytest.param([f"{SESSION}=\n"], None, (), (SESSION,), id="value-of-a-newline"),
        pytest.param([f"{SESSION}=a\n; {DEVICE}=d"], f"{DEVICE}=d", (DEVICE,), (SESSION,), id="newline-after-value"),
        pytest.param(["_ga\n=1"], None, (), (INVALID_NAME,), id="newline-after-stripped-name"),
        pytest.param([f"=value; {SESSION}=a"], f"{SESSION}=a", (SESSION,), (NAMELESS,), id="nameless-pair"),
        pytest.param([f"={SESSION}=a"], None, (), (NAMELESS,), id="nameless-pair-with-allowed-name-in-value"),
    ],
)
def test_filter_cookies_table(
    headers: list[str],
    expected_header: str | None,
    expected_forwarded: tuple[str, ...],
    expected_stripped: tuple[str, ...],
) -> None:
    decision = filter_cookies(headers, ALLOWED)
    assert decision.header == expected_header
    assert decision.forwarded == expected_forwarded
    assert decision.stripped == expected_stripped
    assert set(cookie_names(headers)) == set(expected_forwarded) | set(expected_stripped)
    assert_only_allowed(decision)


def test_received_names_are_in_order_and_unique() -> None:
    headers = [f"b=1; {SESSION}=x; a=2", f"b=3; {SESSION}=y"]
    decision = filter_cookies(headers, ALLOWED)
    assert cookie_names(headers) == ("b", SESSION, "a")
    assert decision.forwarded == (SESSION,)
    assert decision.stripped == ("b", "a")
    assert decision.header == f"{SESSION}=x; {SESSION}=y"


def test_allow_list_is_exact_and_empty_allows_nothing() -> None:
    header = f"{SESSION}=a; {DEVICE}=b"
    assert filter_cookies([header], frozenset({DEVICE})).header == f"{DEVICE}=b"
    nothing = filter_cookies([header], frozenset())
    assert nothing.header is None
    assert nothing.stripped == (SESSION, DEVICE)


# --- properties -------------------------------------------------------------------------------

names = st.sampled_from(sorted(ALLOWED)) | st.sampled_from(OTHER_NAMES) | st.text(max_size=12)
well_formed_values = st.text(alphabet=COOKIE_OCTETS, max_size=16) | st.text(alphabet=COOKIE_OCTETS, max_size=16).map(
    lambda value: f'"{value}"'
)
smuggling_values = st.tuples(st.text(alphabet=COOKIE_OCTETS, max_size=6), st.sampled_from(OTHER_NAMES)).map(
    lambda parts: f"{parts[0]}, {parts[1]}=x"
) | st.tuples(st.sampled_from(OTHER_NAMES), st.text(alphabet=COOKIE_OCTETS, max_size=6)).map(
    lambda parts: f"v,{parts[0]}={parts[1]}"
)
any_values = well_formed_values | smuggling_values | st.text(max_size=16)
separators = st.sampled_from([";", "; ", ",", ", ", " ;\t", ";;"])
pairs = st.tuples(names, st.sampled_from(["=", "", " = "]), any_values).map("".join)


@st.composite
def structured_headers(draw: st.DrawFn) -> list[str]:
    """Cookie headers built from allowed names, other names and arbitrary values, oddly joined."""
    headers = []
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        parts = draw(st.lists(pairs, max_size=6))
        header = ""
        for part in parts:
            header += part + draw(separators)
        headers.append(header)
    return headers


cookie_headers = st.lists(st.text(), max_size=4) | st.lists(st.text(alphabet=COOKIE_OCTETS + " ;,=\t\"'"), max_size=4)


@settings(max_examples=300)
@given(headers=cookie_headers | structured_headers())
def test_no_input_makes_a_stripped_name_reach_upstream(headers: list[str]) -> None:
    assert_only_allowed(filter_cookies(headers, ALLOWED))


@settings(max_examples=300)
@given(headers=cookie_headers | structured_headers())
def test_the_audit_receives_each_name_the_filter_forwards_or_strips(headers: list[str]) -> None:
    """The audit middleware's names (every request) and the proxy's decision (proxied ones) split cookies alike."""
    decision = filter_cookies(headers, ALLOWED)
    received = cookie_names(headers)
    assert set(received) == set(decision.forwarded) | set(decision.stripped)
    assert len(received) == len(set(received))


@settings(max_examples=300)
@given(headers=cookie_headers | structured_headers())
def test_headers_split_once_read_as_the_headers_themselves(headers: list[str]) -> None:
    """A request's Cookie headers are split once (RequestCookies) for identity and the allow-list: every reader
    answers from that split exactly what it answers from the header values as sent."""
    split = RequestCookies(headers)
    assert (
        tuple(split) == tuple(headers) == split.headers
    )  # the values as sent, for any reader that takes them as they are
    assert cookie_names(split) == cookie_names(headers)
    assert filter_cookies(split, ALLOWED) == filter_cookies(headers, ALLOWED)
    for name in {*(piece.partition("=")[0].strip(" \t") for header in headers for piece in header.split(";")), SESSION}:
        assert cookie_value(split, name) == cookie_value(headers, name), name


@st.composite
def pairs_with_expectation(draw: st.DrawFn) -> tuple[list[str], list[str]]:
    """Cookie headers, and the pairs that must arrive upstream byte for byte, in order."""
    expected: list[str] = []
    headers: list[str] = []
    # Values of other cookies never hold ';', so every generated pair stays one pair.
    free_text = st.text(alphabet=st.characters(exclude_characters=";"), max_size=12)
    bad_char = st.sampled_from([" ", ",", "\\", '"', "\x7f", "\x01", "\u00e9", "\u2028"])
    malformed = st.tuples(
        st.text(alphabet=COOKIE_OCTETS.replace('"', ""), min_size=1, max_size=6),
        bad_char,
        st.text(alphabet=COOKIE_OCTETS.replace('"', ""), min_size=1, max_size=6),
    ).map("".join)
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        pieces: list[str] = []
        for _ in range(draw(st.integers(min_value=0, max_value=6))):
            kind = draw(st.sampled_from(["allowed-good", "allowed-bad", "other", "bare"]))
            if kind == "allowed-good":
                name, value = draw(st.sampled_from(sorted(ALLOWED))), draw(well_formed_values)
                expected.append(f"{name}={value}")
                pieces.append(f"{draw(st.sampled_from(['', ' ', chr(9)]))}{name}={value}")
            elif kind == "allowed-bad":
                pieces.append(f"{draw(st.sampled_from(sorted(ALLOWED)))}={draw(malformed)}")
            elif kind == "other":
                name = draw(
                    st.sampled_from(OTHER_NAMES)
                    | free_text.filter(lambda text: "=" not in text and text.strip(" \t") not in ALLOWED)
                )
                pieces.append(f"{name}={draw(free_text)}")
            else:
                pieces.append(draw(free_text.filter(lambda text: "=" not in text)))
        headers.append(draw(st.sampled_from([";", "; ", ";\t", " ; "])).join(pieces))
    return headers, expected


@settings(max_examples=300)
@given(case=pairs_with_expectation())
def test_every_well_formed_allowed_pair_arrives_byte_for_byte_in_order(case: tuple[list[str], list[str]]) -> None:
    headers, expected = case
    decision = filter_cookies(headers, ALLOWED)
    assert decision.header == ("; ".join(expected) or None)
    assert strict_names(decision.header or "") == [pair.partition("=")[0] for pair in expected]


@st.composite
def headers_with_canaries(draw: st.DrawFn) -> tuple[list[str], list[str]]:
    """Cookie headers whose values (and bare, nameless pairs) carry CANARY strings; names never do."""
    no_semicolon = st.characters(exclude_characters=";")
    name_strategy = (
        st.sampled_from(sorted(ALLOWED))
        | st.sampled_from(OTHER_NAMES)
        | st.text(alphabet=st.characters(exclude_characters=";="), max_size=10)
    )
    canaries: list[str] = []
    headers: list[str] = []
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        pieces: list[str] = []
        for _ in range(draw(st.integers(min_value=1, max_value=5))):
            canary = f"CANARY{draw(st.text(alphabet=COOKIE_OCTETS.replace('=', ''), max_size=8))}"
            canaries.append(canary)
            around = st.text(alphabet=no_semicolon, max_size=6)
            value = draw(around) + canary + draw(around)
            name = draw(name_strategy.filter(lambda text: "CANARY" not in text))
            if draw(st.booleans()):
                pieces.append(f"{name}={value}")
            else:
                pieces.append(value.replace("=", ""))  # a pair without '=' is a value with no name
        headers.append("; ".join(pieces))
    return headers, canaries


@settings(max_examples=300)
@given(case=headers_with_canaries())
def test_audit_names_never_hold_a_value(case: tuple[list[str], list[str]]) -> None:
    headers, canaries = case
    decision = filter_cookies(headers, ALLOWED)
    for listed in (cookie_names(headers), decision.forwarded, decision.stripped):
        for name in listed:
            assert "CANARY" not in name, (headers, listed)
    # The canaries really were planted in what the client sent.
    assert all(canary in "; ".join(headers) for canary in canaries)


# --- Set-Cookie from upstream -----------------------------------------------------------------


def rewrite(header: str) -> str | None:
    return rewrite_set_cookie(
        header, ALLOWED, upstream_host=UPSTREAM_HOST, custom_domain=CUSTOM_DOMAIN, cookie_domain=COOKIE_DOMAIN
    ).header


def attributes(header: str) -> list[str]:
    return [part.strip() for part in header.split(";")[1:]]


@pytest.mark.parametrize(
    ("upstream", "expected"),
    [
        pytest.param(f"{SESSION}=abc", f"{SESSION}=abc; Secure", id="plain"),
        pytest.param(f'{DEVICE}="q-1"; Path=/', f'{DEVICE}="q-1"; Path=/; Secure', id="quoted-value"),
        pytest.param(f"{SESSION}=abc; Secure; Path=/", f"{SESSION}=abc; Path=/; Secure", id="secure-not-doubled"),
        pytest.param(f"{SESSION}=abc; secure; SECURE ; Secure=1", f"{SESSION}=abc; Secure", id="secure-any-case"),
        pytest.param(
            f"{SESSION}=abc; Domain={UPSTREAM_HOST}; Path=/",
            f"{SESSION}=abc; Domain={COOKIE_DOMAIN}; Path=/; Secure",
            id="domain-upstream-host",
        ),
        pytest.param(
            f"{SESSION}=abc; Domain=.{UPSTREAM_HOST}",
            f"{SESSION}=abc; Domain={COOKIE_DOMAIN}; Secure",
            id="domain-dot-upstream-host",
        ),
        pytest.param(
            f"{SESSION}=abc; domain=ACME.Intercom.Help",
            f"{SESSION}=abc; Domain={COOKIE_DOMAIN}; Secure",
            id="domain-upstream-host-any-case",
        ),
        pytest.param(
            f"{SESSION}=abc; Domain=intercom.help",
            f"{SESSION}=abc; Domain={COOKIE_DOMAIN}; Secure",
            id="domain-parent-of-upstream-host",
        ),
        pytest.param(
            f"{SESSION}=abc; Domain={COOKIE_DOMAIN}",
            f"{SESSION}=abc; Domain={COOKIE_DOMAIN}; Secure",
            id="domain-parent",
        ),
        pytest.param(
            f"{SESSION}=abc; Domain=.{COOKIE_DOMAIN}",
            f"{SESSION}=abc; Domain={COOKIE_DOMAIN}; Secure",
            id="domain-dot-parent",
        ),
        pytest.param(
            f"{SESSION}=abc; Domain={CUSTOM_DOMAIN}",
            f"{SESSION}=abc; Domain={CUSTOM_DOMAIN}; Secure",
            id="domain-custom-domain",
        ),
        pytest.param(f"{SESSION}=abc; Domain=evil.com; Path=/", f"{SESSION}=abc; Path=/; Secure", id="domain-foreign"),
        pytest.param(f"{SESSION}=abc; Domain=com", f"{SESSION}=abc; Secure", id="domain-wider-than-cookie-domain"),
        pytest.param(
            f"{SESSION}=abc; Domain=other.example.com", f"{SESSION}=abc; Secure", id="domain-sibling-of-custom-domain"
        ),
        pytest.param(f"{SESSION}=abc; Domain=", f"{SESSION}=abc; Secure", id="domain-empty"),
        pytest.param(
            f"{SESSION}=abc; Path=/; HttpOnly; SameSite=None; Expires=Wed, 21 Oct 2026 07:28:00 GMT; Max-Age=3600",
            f"{SESSION}=abc; Path=/; HttpOnly; SameSite=None; Expires=Wed, 21 Oct 2026 07:28:00 GMT; Max-Age=3600"
            "; Secure",
            id="other-attributes-kept",
        ),
        pytest.param(
            f"{DEVICE}=d; Max-Age=0; Path=/; SameSite=Lax; Domain={UPSTREAM_HOST}; HttpOnly",
            f"{DEVICE}=d; Max-Age=0; Path=/; SameSite=Lax; Domain={COOKIE_DOMAIN}; HttpOnly; Secure",
            id="attribute-order-kept",
        ),
        pytest.param(f"{SESSION}=abc;; ;Path=/", f"{SESSION}=abc; Path=/; Secure", id="empty-attributes"),
    ],
)
def test_set_cookie_allowed_rewritten(upstream: str, expected: str) -> None:
    decision = rewrite_set_cookie(
        upstream, ALLOWED, upstream_host=UPSTREAM_HOST, custom_domain=CUSTOM_DOMAIN, cookie_domain=COOKIE_DOMAIN
    )
    assert decision.header == expected
    assert decision.name in ALLOWED
    assert [attribute.lower() for attribute in attributes(expected)].count("secure") == 1


@pytest.mark.parametrize(
    ("upstream", "name"),
    [
        pytest.param("portal-jwt=eyJ.e30.sig; Path=/; HttpOnly", "portal-jwt", id="portal-jwt"),
        pytest.param("intercom-session-otherws=x; Path=/", "intercom-session-otherws", id="other-workspace"),
        pytest.param("Intercom-Session-ws1a2b3c=x", "Intercom-Session-ws1a2b3c", id="name-differing-by-case"),
        pytest.param("_ga=GA1.2.3; Domain=example.com", "_ga", id="customer-app"),
        pytest.param(f"{SESSION}; Path=/", NAMELESS, id="no-equals"),
        pytest.param(f"={SESSION}", NAMELESS, id="nameless"),
        pytest.param("", NAMELESS, id="empty"),
        pytest.param("caf\u00e9=1", INVALID_NAME, id="non-ascii-name"),
        pytest.param(f"{SESSION}=a b; Path=/", SESSION, id="allowed-name-space-in-value"),
        pytest.param(f"{SESSION}=a,portal-jwt=x", SESSION, id="allowed-name-comma-in-value"),
        pytest.param(f"{SESSION}=cr\u00e8me", SESSION, id="allowed-name-non-ascii-value"),
    ],
)
def test_set_cookie_dropped(upstream: str, name: str) -> None:
    decision = rewrite_set_cookie(
        upstream, ALLOWED, upstream_host=UPSTREAM_HOST, custom_domain=CUSTOM_DOMAIN, cookie_domain=COOKIE_DOMAIN
    )
    assert decision.header is None
    assert decision.name == name


def test_set_cookie_with_an_empty_allow_list_drops_everything() -> None:
    decision = rewrite_set_cookie(
        f"{SESSION}=a",
        frozenset(),
        upstream_host=UPSTREAM_HOST,
        custom_domain=CUSTOM_DOMAIN,
        cookie_domain=COOKIE_DOMAIN,
    )
    assert decision.header is None
    assert decision.name == SESSION


attribute_text = st.text(alphabet=st.characters(exclude_characters=";"), max_size=20)
domain_attributes = st.sampled_from(
    [UPSTREAM_HOST, f".{UPSTREAM_HOST}", COOKIE_DOMAIN, CUSTOM_DOMAIN, "evil.com", "com", "example.org", ""]
).map(lambda domain: f"Domain={domain}") | attribute_text.map(lambda text: f"Domain={text}")
set_cookie_attributes = st.lists(
    st.sampled_from(["Secure", " secure", "HttpOnly", "Path=/", "SameSite=Strict", "Max-Age=60"])
    | domain_attributes
    | attribute_text,
    max_size=8,
)


@settings(max_examples=300)
@given(
    name=st.sampled_from(sorted(ALLOWED)) | st.sampled_from(OTHER_NAMES) | st.text(max_size=10),
    value=st.text(max_size=10),
    attrs=set_cookie_attributes,
)
def test_set_cookie_output_is_always_allowed_secure_and_scoped(name: str, value: str, attrs: list[str]) -> None:
    header = "; ".join([f"{name}={value}", *attrs])
    result = rewrite(header)
    if result is None:
        return
    first, *rest = result.split(";")
    assert first.partition("=")[0] in ALLOWED
    attribute_names = [attribute.strip(" \t").partition("=")[0].strip(" \t").lower() for attribute in rest]
    assert attribute_names.count("secure") == 1
    for attribute in rest:
        key, _, domain = attribute.strip(" \t").partition("=")
        if key.strip(" \t").lower() == "domain":
            assert domain in (COOKIE_DOMAIN, CUSTOM_DOMAIN), result


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        pytest.param(["a=1; portal-jwt=tok.en.x; b=2"], "tok.en.x", id="among-others"),
        pytest.param(["portal-jwt=old", "portal-jwt=new"], "new", id="last-sent-wins"),
        pytest.param(["portal-jwt=old; portal-jwt=new"], "new", id="last-in-one-header-wins"),
        pytest.param(['portal-jwt="quoted"'], "quoted", id="outer-quotes-removed"),
        pytest.param(["xportal-jwt=a; portal-jwtx=b; portal-jwt"], None, id="other-names-and-no-value"),
        pytest.param(["portal-jwt="], "", id="empty"),
        pytest.param([], None, id="no-header"),
    ],
)
def test_cookie_value_reads_one_cookie_by_exact_name(headers: list[str], expected: str | None) -> None:
    assert cookie_value(headers, "portal-jwt") == expected
    assert cookie_value(RequestCookies(headers), "portal-jwt") == expected

"""The prevent-company-update policy as a pure function: parsing, the decision table, and its properties."""

from __future__ import annotations

import json
from types import MappingProxyType
from typing import Any
from urllib.parse import quote, urlencode

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.policy.companyupdates import (
    ACTIVE_COMPANY,
    MAX_FIELDS,
    BodyError,
    Form,
    Sender,
    encode,
    parse_form,
    parse_user_data,
    police,
    token_in,
)

ACME = {"company_id": "acme", "name": "Acme"}
GLOBEX = {"company_id": "globex", "name": "Globex"}
ANN_EMAILS = frozenset({"ann@acme.example"})
ANN = Sender(
    user_id="u-ann", signed=MappingProxyType({"user_id": "u-ann"}), companies=frozenset({"acme"}), emails=ANN_EMAILS
)


def body(user_data: dict[str, Any] | None = None, **fields: str) -> Form:
    """A Messenger form as the web client sends it: ``user_data`` as one JSON string, then other fields."""
    pairs = [("user_data", json.dumps(user_data))] if user_data is not None else []
    return tuple([*pairs, *fields.items()])


def signed(**claims: Any) -> Sender:
    """Ann, with a JWT that signs ``claims`` (frozen, as the verifier hands them over)."""
    return Sender(
        user_id="u-ann",
        signed=MappingProxyType({"user_id": "u-ann", **claims}),
        companies=ANN.companies,
        emails=ANN_EMAILS,
    )


def forwarded(parts: tuple[Form, ...]) -> dict[str, Any]:
    """The user_data that would reach upstream."""
    values = [json.loads(value) for part in parts for name, value in part if name == "user_data"]
    assert len(values) == 1
    result: dict[str, Any] = values[0]
    return result


# --- parsing ---------------------------------------------------------------------------------------------


def test_parse_form_reads_pairs_in_order_with_blank_values() -> None:
    assert parse_form(b"a=1&b=&a=%20x+y") == (("a", "1"), ("b", ""), ("a", " x y"))
    assert parse_form(b"") == ()
    assert parse_form("app_id=ws1") == (("app_id", "ws1"),)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        pytest.param(b"a=1&&b=2", "a field is empty or has no '='", id="empty-field"),
        pytest.param(b"a=1&", "a field is empty or has no '='", id="trailing-ampersand"),
        pytest.param(b"novalue", "a field is empty or has no '='", id="no-equals"),
        pytest.param(b"a=%ff", "does not decode to UTF-8", id="bad-escape"),
        pytest.param(b"a=\xff", "not UTF-8", id="raw-bytes"),
        pytest.param(b"a=1;user_data=x", "a raw ';' is ambiguous", id="semicolon"),
        pytest.param(b"a=1&" * MAX_FIELDS, f"more than {MAX_FIELDS} fields", id="too-many-fields"),
    ],
)
def test_parse_form_refuses_what_is_not_form_data(raw: bytes, reason: str) -> None:
    with pytest.raises(BodyError, match=reason):
        parse_form(raw)


def test_parse_form_error_never_quotes_the_body() -> None:
    with pytest.raises(BodyError) as caught:
        parse_form(b"secret-token-CANARYc4n4ry")
    assert "CANARY" not in str(caught.value)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        pytest.param("{", "not JSON", id="truncated"),
        pytest.param("[1]", "not a JSON object", id="array"),
        pytest.param('"x"', "not a JSON object", id="string"),
        pytest.param('{"companies": [], "companies": [{"company_id": "x"}]}', "more than once", id="duplicate-key"),
        pytest.param('{"a": {"b": 1, "b": 2}}', "more than once", id="nested-duplicate"),
        pytest.param('{"size": NaN}', "NaN", id="nan"),
        pytest.param('{"size": Infinity}', "Infinity", id="infinity"),
        pytest.param("[" * 100_000, "nested too deeply", id="deep"),
    ],
)
def test_user_data_must_be_one_plain_json_object(text: str, reason: str) -> None:
    with pytest.raises(BodyError, match=reason):
        parse_user_data(text)


def test_token_in_finds_a_jwt_but_not_a_hex_user_hash() -> None:
    assert token_in({"intercom_user_jwt": "a.b.c"}) == "a.b.c"
    assert token_in({"user_hash": "a.b.c"}) == "a.b.c"
    assert token_in({"user_hash": "ab" * 32}) is None
    assert token_in({"intercom_user_jwt": 5}) is None
    assert token_in(None) is None


# --- the decision table ----------------------------------------------------------------------------------


def test_a_call_without_company_data_passes_untouched() -> None:
    form = body({"user_id": "u-ann", "email": "ann@acme.example", "plan": "pro"}, app_id="ws1")
    verdict = police(((), form), ANN)
    assert verdict.removals == ()
    assert verdict.parts[1] is form  # the very form: its original bytes can be forwarded
    assert verdict.verified


@pytest.mark.parametrize(
    ("user_data", "sender", "removed"),
    [
        pytest.param({"companies": [GLOBEX]}, ANN, [("user_data.companies", "not signed in the JWT")], id="unsigned"),
        pytest.param({"company": GLOBEX}, ANN, [("user_data.company", "not signed in the JWT")], id="unsigned-one"),
        pytest.param(
            {"companies": [ACME, GLOBEX]},
            signed(companies=[ACME]),
            [("user_data.companies", "differs from the value signed in the JWT")],
            id="adds-to-signed",
        ),
        pytest.param(
            {"company": {**ACME, "size": True}},
            signed(company={**ACME, "size": 1}),
            [("user_data.company", "differs from the value signed in the JWT")],
            id="true-is-not-1",
        ),
        pytest.param(
            {"Companies": [ACME]},
            signed(companies=[ACME]),
            [("user_data.Companies", "not signed in the JWT")],
            id="case-variant",
        ),
        pytest.param(
            {"companies ": [GLOBEX]}, ANN, [("user_data.companies ", "not signed in the JWT")], id="space-variant"
        ),
        pytest.param(
            {"user_id": "u-bob", "companies": [ACME]},
            signed(companies=[ACME]),
            [("user_data.companies", "not signed in the JWT")],
            id="token-of-another-user",
        ),
        pytest.param(
            {"companies": [ACME]}, Sender(), [("user_data.companies", "not signed in the JWT")], id="anonymous"
        ),
        pytest.param(
            {"companies": [ACME]},
            Sender(user_id="u-ann", companies=frozenset({"acme"})),
            [("user_data.companies", "not signed in the JWT")],
            id="legacy-user-hash-signs-nothing",
        ),
    ],
)
def test_company_data_not_signed_in_the_jwt_is_removed(
    user_data: dict[str, Any], sender: Sender, removed: list[tuple[str, str]]
) -> None:
    sent = {"email": "ann@acme.example", **user_data}
    verdict = police(((), body(sent)), sender)
    assert [(removal.field, removal.reason) for removal in verdict.removals] == removed
    removed_fields = {field for field, _ in removed}
    assert forwarded(verdict.parts) == {
        key: value for key, value in sent.items() if f"user_data.{key}" not in removed_fields
    }


@pytest.mark.parametrize(
    ("user_data", "sender"),
    [
        pytest.param({"companies": [ACME]}, signed(companies=[ACME]), id="same-companies"),
        pytest.param({"company": ACME}, signed(company=ACME), id="same-company"),
        pytest.param({"company": {"name": "Acme", "company_id": "acme"}}, signed(company=ACME), id="key-order"),
        pytest.param({"user_id": "u-ann", "companies": []}, signed(companies=[]), id="same-user-named"),
    ],
)
def test_company_data_signed_in_the_jwt_passes(user_data: dict[str, Any], sender: Sender) -> None:
    form = body(user_data)
    verdict = police(((), form), sender)
    assert verdict.removals == ()
    assert verdict.parts[1] is form


def test_only_the_unsigned_key_is_removed_and_the_rest_of_user_data_is_kept() -> None:
    user_data = {"user_id": "u-ann", "name": "Ann", "company": ACME, "companies": [GLOBEX], "custom": {"a": [1]}}
    verdict = police(((), body(user_data, app_id="ws1")), signed(company=ACME))
    assert [removal.field for removal in verdict.removals] == ["user_data.companies"]
    assert forwarded(verdict.parts) == {"user_id": "u-ann", "name": "Ann", "company": ACME, "custom": {"a": [1]}}
    assert ("app_id", "ws1") in verdict.parts[1]


@pytest.mark.parametrize(
    ("active", "sender", "reason"),
    [
        pytest.param("acme", ANN, None, id="member"),
        pytest.param("globex", ANN, "not a company of the verified user", id="not-a-member"),
        pytest.param("acme", Sender(), "no verified user", id="anonymous"),
        pytest.param("acme", Sender(user_id="u-bob", companies=frozenset({"acme"})), "no verified user", id="other"),
    ],
)
def test_active_company_passes_only_for_a_company_of_the_verified_user(
    active: str, sender: Sender, reason: str | None
) -> None:
    form = body({"user_id": "u-ann"}, **{ACTIVE_COMPANY: active})
    verdict = police(((), form), sender)
    if reason is None:
        assert verdict.removals == ()
        assert (ACTIVE_COMPANY, active) in verdict.parts[1]
    else:
        assert [(removal.field, removal.reason) for removal in verdict.removals] == [(ACTIVE_COMPANY, reason)]
        assert all(name != ACTIVE_COMPANY for name, _ in verdict.parts[1])


@pytest.mark.parametrize("name", ["companies", "company", "Company", "companies[][company_id]", "company[id]"])
def test_company_fields_outside_user_data_never_pass(name: str) -> None:
    verdict = police(((), ((name, "globex"), ("app_id", "ws1"))), signed(companies=[GLOBEX], company=GLOBEX))
    assert [(removal.field, removal.reason) for removal in verdict.removals] == [
        (name, "company data outside user_data")
    ]
    assert verdict.parts[1] == (("app_id", "ws1"),)


@pytest.mark.parametrize(
    ("parts", "reason"),
    [
        pytest.param(((), (("user_data[companies][]", "x"),)), "must be one plain field", id="rack-nested"),
        pytest.param(((), (("user_data[]", "{}"),)), "must be one plain field", id="rack-array"),
        pytest.param(((), ((f"{ACTIVE_COMPANY}[x]", "acme"),)), "must be one plain field", id="rack-active"),
        pytest.param(((), (("user_data", "{}"), ("user_data", "{}"))), "user_data appears more than once", id="twice"),
        pytest.param(
            ((("user_data", "{}"),), (("user_data", "{}"),)), "user_data appears more than once", id="query-and-body"
        ),
        pytest.param(
            (((ACTIVE_COMPANY, "acme"),), ((ACTIVE_COMPANY, "acme"),)), "more than once", id="active-query-and-body"
        ),
        pytest.param(((), (("user_data", "not json"),)), "user_data is not JSON", id="not-json"),
        pytest.param(((), (("]user_data", "{}"),)), "names are letters", id="rack2-leading-bracket"),
        pytest.param(((), (("[user_data]", "{}"),)), "names are letters", id="rack2-bracketed"),
        pytest.param(((), (("user_data]", "{}"),)), "names are letters", id="rack2-trailing-bracket"),
        pytest.param(((), (("user.data", "{}"),)), "names are letters", id="php-dot"),
        pytest.param(((), (("user data", "{}"),)), "names are letters", id="php-space"),
        pytest.param(((), (("user_data\x00", "{}"),)), "names are letters", id="nul"),
        pytest.param(((), (("[company]", "x"),)), "names are letters", id="bracketed-company"),
        pytest.param(((), (("user_data", '{"n": 1e400}'),)), "too large", id="infinite-float"),
        pytest.param(((), (("user_data", '{"n": ' + "1" * 5000 + "}"),)), "too many digits", id="huge-int"),
    ],
)
def test_ambiguous_calls_are_refused_whole(parts: tuple[Form, ...], reason: str) -> None:
    with pytest.raises(BodyError, match=reason):
        police(parts, ANN)


def test_a_long_odd_field_name_is_quoted_only_in_part() -> None:
    with pytest.raises(BodyError) as caught:
        police(((), (("]" + "x" * 10_000, "1"),)), ANN)
    assert len(str(caught.value)) < 200


@pytest.mark.parametrize(
    ("email", "verified"),
    [
        pytest.param("ann@acme.example", True, id="hers"),
        pytest.param(" ANN@acme.example ", True, id="case-and-space"),
        pytest.param("bob@globex.example", False, id="somebody-else"),
        pytest.param(None, False, id="null"),
        pytest.param(7, False, id="not-a-string"),
    ],
)
def test_a_call_naming_an_email_is_about_the_sender_only_if_it_is_theirs(email: object, verified: bool) -> None:
    form = body({"email": email, "companies": [ACME]}, **{ACTIVE_COMPANY: "acme"})
    verdict = police(((), form), signed(companies=[ACME]))
    assert verdict.verified is verified
    assert (verdict.removals == ()) is verified


def test_query_and_body_are_policed_as_one_call() -> None:
    query = ((ACTIVE_COMPANY, "acme"), ("v", "1"))
    form = body({"user_id": "u-bob"})
    verdict = police((query, form), ANN)  # the body speaks for Bob: Ann's companies do not count
    assert verdict.parts == ((("v", "1"),), form)
    assert not verdict.verified


def test_encode_round_trips_through_parse_form() -> None:
    form = (("user_data", json.dumps({"name": "Zoë & co = 100%"})), ("x", "a+b"))
    assert parse_form(encode(form)) == form


# --- properties ------------------------------------------------------------------------------------------

json_scalars = st.none() | st.booleans() | st.integers(-5, 5) | st.sampled_from([1.0, 0.5]) | st.text(max_size=4)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=8,
)
company_keys = st.sampled_from(["company", "companies", "Company", "COMPANIES", " companies", "company\t"])
other_keys = st.sampled_from(["user_id", "email", "name", "plan", "custom", "user_hash", "intercom_user_jwt"])
company_ids = st.sampled_from(["acme", "globex", "initech", ""])


@st.composite
def calls(draw: st.DrawFn) -> tuple[tuple[Form, ...], Sender]:
    """A Messenger call (query, body) and a sender, with company data and signatures drawn to often agree."""
    shared = draw(json_values)
    user_data: dict[str, Any] = draw(st.dictionaries(other_keys, json_values, max_size=3))
    if draw(st.booleans()):
        user_data["user_id"] = draw(st.sampled_from(["u-ann", "u-bob"]))
    for key in draw(st.lists(company_keys, max_size=3, unique=True)):
        user_data[key] = shared if draw(st.booleans()) else draw(json_values)
    claims: dict[str, Any] = {"user_id": "u-ann"}
    for key in draw(st.lists(st.sampled_from(["company", "companies"]), max_size=2, unique=True)):
        claims[key] = shared if draw(st.booleans()) else draw(json_values)
    verified = draw(st.sampled_from(["jwt", "hmac", "none"]))
    sender = Sender(
        user_id=None if verified == "none" else "u-ann",
        signed=MappingProxyType(claims) if verified == "jwt" else None,
        companies=frozenset(draw(st.lists(company_ids, max_size=2))),
    )
    extra = draw(
        st.lists(
            st.tuples(st.sampled_from(["app_id", "company", "companies[]", ACTIVE_COMPANY, "v"]), company_ids),
            max_size=3,
        )
    )
    active = [pair for pair in extra if pair[0] == ACTIVE_COMPANY][:1]
    extra = [pair for pair in extra if pair[0] != ACTIVE_COMPANY]
    in_query = draw(st.booleans())
    data = (("user_data", json.dumps(user_data)),)
    query = tuple(active) + (data if in_query else ())
    form = tuple(extra) + (() if in_query else data)
    return (query, form), sender


@settings(max_examples=2000, deadline=None)
@given(calls())
def test_no_call_forwards_company_data_the_jwt_did_not_sign(call: tuple[tuple[Form, ...], Sender]) -> None:
    parts, sender = call
    verdict = police(parts, sender)
    user_data = forwarded(verdict.parts)
    for key, value in user_data.items():
        if key.strip().casefold() in ("company", "companies"):
            assert sender.signed is not None
            assert user_data.get("user_id", sender.user_id) == sender.user_id
            assert key in sender.signed
            assert json.dumps(value, sort_keys=True) == json.dumps(dict(sender.signed)[key], sort_keys=True)
    for part in verdict.parts:
        for name, value in part:
            assert name.partition("[")[0].strip().casefold() not in ("company", "companies")
            if name == ACTIVE_COMPANY:
                assert value in sender.companies
                assert sender.user_id is not None


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=200) | st.text(max_size=200).map(lambda text: quote(text, safe="=&;").encode()))
def test_any_bytes_either_parse_or_raise_body_error(raw: bytes) -> None:
    try:
        form = parse_form(raw)
    except BodyError:
        return
    assert parse_form(urlencode(form)) == form

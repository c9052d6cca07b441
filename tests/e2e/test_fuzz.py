"""Class 9 of the hardening issue: fuzzing the four parsers that meet hostile input first.

Cookie headers, audience rules, JWTs and Messenger bodies, each with thousands
of generated inputs in CI: none may raise anything but its own refusal, and
none may let through what its policy denies. ``PORTAL_FUZZ_EXAMPLES`` sets the
examples per target (1,000 in CI); SECURITY.md gives the longer run.
"""

from __future__ import annotations

import base64
import json
import os
import re
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.config import RuleGroup
from gateway.policy.companyupdates import BodyError, Sender, parse_form, police
from gateway.policy.cookies import filter_cookies
from gateway.policy.identity import Identity, JWTVerifier, Rejection, sign_token
from gateway.policy.rules import compile_rules
from tests.policy.test_rules import FACTS, conditions, rule_trees

RACK2_KEY = re.compile(r"[\[\]]*([^\[\]]+)")
EXAMPLES = int(os.environ.get("PORTAL_FUZZ_EXAMPLES", "1000"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ALLOWED = frozenset({"intercom-session-ws1", "intercom-device-id-ws1"})
SECRET = "fuzz-secret-0123456789abcdef0123456789"
NOW = 1_800_000_000.0

# Text that looks like what it attacks: cookie and form syntax, quotes, escapes, controls, non-ASCII.
cookie_alphabet = st.sampled_from(list(" ;=,\"\\\t\r\n\x00%$!#&'()*+-./:<>?@[]^_`{|}~aZ09é☃") + sorted(ALLOWED))
cookie_text = st.lists(cookie_alphabet, max_size=60).map("".join)
form_alphabet = st.sampled_from([*list('=&;%+[]{}":,.\\ \x00'), "user_data", "companies", "company", "%7B", "%5B"])
form_text = st.lists(form_alphabet | st.characters(), max_size=40).map("".join)
form_bytes = form_text.map(lambda text: text.encode("utf-8", "surrogatepass"))  # lone surrogates: not UTF-8


@FUZZ
@given(headers=st.lists(cookie_text, max_size=3))
def test_cookie_filter_forwards_only_allowed_names_whatever_the_header(headers: list[str]) -> None:
    decision = filter_cookies(headers, ALLOWED)
    assert set(decision.forwarded) <= ALLOWED
    if decision.header is None:
        assert decision.forwarded == ()
    else:
        names = {pair.partition("=")[0] for pair in decision.header.split("; ")}
        assert names == set(decision.forwarded)  # the audit names each forwarded cookie once
        assert not any(char in decision.header for char in '\r\n\x00,"\\')


@FUZZ
@given(rules=st.lists(rule_trees(conditions()), max_size=4), match=st.sampled_from(["all", "any"]), who=FACTS)
def test_rule_evaluation_always_decides_and_never_raises(rules: list[Any], match: str, who: Any) -> None:
    policy = compile_rules(RuleGroup(match=match, rules=rules), "fuzz")
    decision = policy(who)
    assert decision.allowed in (True, False)
    if not rules and match == "any":
        assert not decision.allowed  # deny by default: an empty "any" grants nothing


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@st.composite
def mangled_tokens(draw: st.DrawFn) -> str:
    """A real token with its text, header or payload mangled, or a token-shaped forgery."""
    token = sign_token(SECRET, user_id="u-1", now=NOW, ttl=600)
    header, payload, signature = token.split(".")
    kind = draw(st.sampled_from(["flip", "header", "payload", "splice", "random"]))
    if kind == "flip":
        at = draw(st.integers(0, len(token) - 1))
        return token[:at] + draw(st.sampled_from(list("A_-.=/+x\x00 é"))) + token[at + 1 :]
    if kind == "header":
        fields = draw(st.dictionaries(st.sampled_from(["alg", "typ", "kid", "jku", "x5u", "crit"]), st.text()))
        return f"{b64(json.dumps(fields).encode())}.{payload}.{signature}"
    if kind == "payload":
        claims = draw(st.dictionaries(st.sampled_from(["user_id", "exp", "nbf", "iat", "aud", "email"]), st.text()))
        return f"{header}.{b64(json.dumps(claims).encode())}.{signature}"
    if kind == "splice":
        return ".".join(draw(st.lists(st.sampled_from([header, payload, signature, ""]), min_size=1, max_size=5)))
    return draw(st.text(max_size=80))


@FUZZ
@given(token=mangled_tokens())
def test_a_mangled_token_is_always_rejected_never_raised_on(token: str) -> None:
    verifier = JWTVerifier([SECRET], leeway=30, require_exp=True)
    result = verifier.verify(token, NOW + 1)
    genuine = sign_token(SECRET, user_id="u-1", now=NOW, ttl=600)
    if token == genuine:
        assert isinstance(result, Identity)
    else:
        # A different spelling of the same signed bytes may still verify; it then says exactly what was signed.
        assert isinstance(result, Rejection) or (result.user_id == "u-1" and result.claims.get("exp") == NOW + 600)


@FUZZ
@given(query=form_text, body=st.binary(max_size=120) | form_bytes)
def test_any_messenger_call_is_refused_or_forwarded_without_unsigned_company_data(query: str, body: bytes) -> None:
    sender = Sender(user_id="u-1", signed={"user_id": "u-1"}, companies=frozenset({"acme"}))
    try:
        verdict = police((parse_form(query), parse_form(body)), sender)
    except BodyError:
        return
    for part in verdict.parts:
        for name, value in part:
            # Read each name as the most lenient parser does (Rack 2: brackets around the key are dropped).
            rack = RACK2_KEY.match(name)
            base = (rack.group(1) if rack else name).strip().casefold()
            assert base not in ("company", "companies")
            if base == "user_active_company_id":
                assert value == "acme"
            if base == "user_data":
                user_data = json.loads(value)
                assert not any(key.strip().casefold() in ("company", "companies") for key in user_data)

"""Identity: the JWT attack set, JWKS keys over a real loopback server, the cache, legacy HMAC, TTLs.

Tokens are signed by PyJWT or, for the attacks, built by hand; each rejection is
checked for its exact reason. The clock is always passed in: ``NOW`` is far from
the wall clock on purpose, so nothing here can pass by reading the real time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
from collections.abc import Callable, Sequence
from typing import Any

import aiohttp
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypothesis import given
from hypothesis import strategies as st
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from yarl import URL

from gateway.config import JWTConfig
from gateway.policy.identity import (
    Identity,
    JWKSKeys,
    JWTVerifier,
    Rejection,
    TokenCache,
    parse_ttl,
    sign_token,
    verify_hmac,
)
from tests.conftest import JWKSServer

SECRET = "identity-test-secret-" + "0123456789abcdef" * 3  # 64+ bytes: PyJWT warns below that for HS512
SECOND = "identity-rotated-secret-" + "fedcba9876543210" * 3
SHORT_SECRET = "a-21-byte-test-secret"  # under the 32 bytes RFC 7518 asks for HS256
CANARY = "CANARYidentity"  # planted in secrets and claims; no repr may show it
NOW = 1_500_000_000.0  # 2017: tokens here are valid only because the clock is injected
LEEWAY = 30
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OTHER_RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def segment(value: Any) -> str:
    return b64(json.dumps(value).encode())


def craft(header: Any, payload: Any, key: bytes | None = None) -> str:
    """A token built by hand: HS256-signed with ``key`` as raw bytes, or with an empty signature."""
    signing_input = f"{segment(header)}.{segment(payload)}"
    signature = hmac.new(key, signing_input.encode(), hashlib.sha256).digest() if key is not None else b""
    return f"{signing_input}.{b64(signature)}"


def claims(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"user_id": "u-1", "email": "ann@example.com", "iat": NOW - 60, "exp": NOW + 3600}
    base.update(overrides)
    return {key: value for key, value in base.items() if value is not None}


def token(secret: str = SECRET, /, **overrides: Any) -> str:
    return jwt.encode(claims(**overrides), secret, algorithm="HS256")


def verifier(
    *, require_exp: bool = True, jwks: JWKSKeys | None = None, cache_size: int = 10_000, audience: Sequence[str] = ()
) -> JWTVerifier:
    return JWTVerifier(
        [SECRET, SECOND], leeway=LEEWAY, require_exp=require_exp, jwks=jwks, cache_size=cache_size, audience=audience
    )


def reason(result: Identity | Rejection) -> str:
    assert isinstance(result, Rejection), f"expected a rejection, got {result!r}"
    assert result.method == "jwt"
    return result.reason


def jwk(key: Any, kid: str | None, **extra: Any) -> dict[str, Any]:
    """The public JWK of a private key, as an identity provider publishes it."""
    algorithm = RSAAlgorithm if isinstance(key, rsa.RSAPrivateKey) else ECAlgorithm
    data: dict[str, Any] = algorithm.to_jwk(key.public_key(), as_dict=True)
    if kid is not None:
        data["kid"] = kid
    data.update(extra)
    return data


# --- a valid token ------------------------------------------------------------------------------------------------


def test_valid_token_is_an_identity_with_every_signed_claim() -> None:
    result = verifier().verify(token(name="Ann", plan="pro", companies=[{"id": "c1"}]), NOW)
    assert isinstance(result, Identity)
    assert (result.user_id, result.method, result.email, result.name) == ("u-1", "jwt", "ann@example.com", "Ann")
    assert result.expires_at == NOW + 3600
    assert result.claims["plan"] == "pro"
    assert result.claims["companies"][0]["id"] == "c1"


def test_claims_are_read_only_all_the_way_down() -> None:
    result = verifier().verify(token(companies=[{"id": "c1"}]), NOW)
    assert isinstance(result, Identity)
    with pytest.raises(TypeError):
        result.claims["user_id"] = "admin"  # type: ignore[index]
    with pytest.raises(TypeError):
        result.claims["companies"][0]["id"] = "c2"
    with pytest.raises(AttributeError):
        result.claims["companies"].append({"id": "c2"})


def test_integer_user_id_becomes_a_string() -> None:
    result = verifier().verify(token(user_id=42), NOW)
    assert isinstance(result, Identity)
    assert result.user_id == "42"


@pytest.mark.parametrize("value", [7, ["a@example.com"], "", "ann@example.com\r\nX-Portal-Admin: 1"])
def test_unusable_email_or_name_is_left_out_not_fatal(value: Any) -> None:
    result = verifier().verify(token(email=value, name=value), NOW)
    assert isinstance(result, Identity)
    assert (result.email, result.name) == (None, None)


def test_header_typ_is_not_required() -> None:
    result = verifier().verify(craft({"alg": "HS256"}, claims(), SECRET.encode()), NOW)
    assert isinstance(result, Identity)


# --- the attack set -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE"])
def test_alg_none_is_not_allowed(alg: str) -> None:
    assert reason(verifier().verify(craft({"alg": alg, "typ": "JWT"}, claims()), NOW)) == "alg_not_allowed"


@pytest.mark.parametrize("alg", ["HS512", "HS384", "hs256", "PS256", "RS256", "ES256", "EdDSA", ""])
def test_other_algorithms_are_not_allowed_for_secrets(alg: str) -> None:
    # RS256/ES256 too: without a JWKS there is no key they could verify with.
    assert reason(verifier().verify(craft({"alg": alg}, claims(), SECRET.encode()), NOW)) == "alg_not_allowed"


def test_hs512_signed_with_a_configured_secret_is_not_allowed() -> None:
    assert reason(verifier().verify(jwt.encode(claims(), SECRET, algorithm="HS512"), NOW)) == "alg_not_allowed"


def test_tampered_payload_keeps_the_signature_and_fails_it() -> None:
    header, _, signature = token().split(".")
    forged = f"{header}.{segment(claims(user_id='admin'))}.{signature}"
    assert reason(verifier().verify(forged, NOW)) == "bad_signature"


def test_wrong_secret() -> None:
    assert reason(verifier().verify(token("not-the-secret-but-long-enough-for-hs256"), NOW)) == "bad_signature"


def test_token_signed_with_the_rotated_secret_is_accepted() -> None:
    result = verifier().verify(token(SECOND), NOW)
    assert isinstance(result, Identity)
    assert result.user_id == "u-1"


@pytest.mark.parametrize("secret", [SECRET, SECOND])
def test_each_configured_secret_verifies_on_its_own(secret: str) -> None:
    only = JWTVerifier([secret], leeway=LEEWAY, require_exp=True)
    assert isinstance(only.verify(token(secret), NOW), Identity)
    other = SECOND if secret == SECRET else SECRET
    assert reason(only.verify(token(other), NOW)) == "bad_signature"


def test_expired() -> None:
    assert reason(verifier().verify(token(exp=NOW - LEEWAY - 1), NOW)) == "expired"
    assert reason(verifier().verify(token(exp=NOW - LEEWAY), NOW)) == "expired"


def test_expired_but_within_leeway_is_accepted() -> None:
    result = verifier().verify(token(exp=NOW - LEEWAY + 1), NOW)
    assert isinstance(result, Identity)


@pytest.mark.parametrize("claim", ["nbf", "iat"])
def test_nbf_or_iat_in_the_future_is_not_yet_valid(claim: str) -> None:
    assert reason(verifier().verify(token(**{claim: NOW + LEEWAY + 1}), NOW)) == "not_yet_valid"
    assert isinstance(verifier().verify(token(**{claim: NOW + LEEWAY - 1}), NOW), Identity)


@pytest.mark.parametrize("user_id", [None, "", "   ", True, 1.5, ["u-1"], {"id": "u-1"}, "u-1\r\nX-Portal-Admin: 1"])
def test_missing_or_unusable_user_id(user_id: Any) -> None:
    payload = claims()
    if user_id is None:
        del payload["user_id"]
    else:
        payload["user_id"] = user_id
    assert reason(verifier().verify(jwt.encode(payload, SECRET, algorithm="HS256"), NOW)) == "missing_user_id"


def test_missing_exp_is_malformed_when_required_and_accepted_when_not() -> None:
    assert reason(verifier().verify(token(exp=None), NOW)) == "malformed"
    result = verifier(require_exp=False).verify(token(exp=None), NOW)
    assert isinstance(result, Identity)
    assert result.expires_at is None


@pytest.mark.parametrize("value", ["tomorrow", True, None, float("nan"), float("inf"), 10**400, [NOW]])
@pytest.mark.parametrize("claim", ["exp", "nbf", "iat"])
def test_time_claims_that_are_not_numbers_are_malformed(claim: str, value: Any) -> None:
    payload = claims()
    payload[claim] = value
    forged = craft({"alg": "HS256"}, payload, SECRET.encode())
    assert reason(verifier(require_exp=False).verify(forged, NOW)) == "malformed"


@pytest.mark.parametrize(
    ("audience", "aud", "accepted"),
    [
        ((), None, True),
        ((), "some-other-app", False),
        ((), ["portal"], False),
        (("portal",), "portal", True),
        (("portal", "app"), ["crm", "app"], True),
        (("portal",), "portal-staging", False),
        (("portal",), ["crm"], False),
        (("portal",), None, False),
        (("portal",), 7, False),
        (("portal",), {"portal": True}, False),
    ],
)
def test_an_audience_is_accepted_only_when_configured_and_named(
    audience: tuple[str, ...], aud: Any, accepted: bool
) -> None:
    """RFC 7519 §4.1.3: a token naming audiences the gateway is not among is refused, none configured or not."""
    payload = claims() if aud is None else claims(aud=aud)
    result = verifier(audience=audience).verify(jwt.encode(payload, SECRET, algorithm="HS256"), NOW)
    if accepted:
        assert isinstance(result, Identity)
    else:
        assert reason(result) == "wrong_audience"


def test_a_bad_signature_is_reported_before_a_wrong_audience() -> None:
    assert (
        reason(verifier(audience=("portal",)).verify(token("not-the-secret-" + "x" * 50, aud="crm"), NOW))
        == "bad_signature"
    )


def test_rejections_never_reveal_claims_of_an_unverified_token() -> None:
    # Expired, user-less, future: with a bad signature, the only reason given is the signature.
    forged = craft({"alg": "HS256"}, {"exp": NOW - 9999, "nbf": NOW + 9999}, b"attacker")
    assert reason(verifier().verify(forged, NOW)) == "bad_signature"


# --- malformed inputs ---------------------------------------------------------------------------------------------

VALID = token()
_H, _P, _S = VALID.split(".")


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("", id="empty"),
        pytest.param("a.b", id="two-segments"),
        pytest.param("a.b.c.d", id="four-segments"),
        pytest.param(f"{VALID}.{_S}", id="valid-plus-a-segment"),
        pytest.param("!!!.@@@.###", id="not-base64"),
        pytest.param(f"{_H}.{_P}.{_S}=", id="padded"),
        pytest.param(f"{_H}=.{_P}.{_S}", id="padded-header"),
        pytest.param(f"{_H}.{_P}.{_S[:-1]}", id="signature-length-1-mod-4-or-cut"),
        pytest.param(f"{_H}. {_P}.{_S}", id="space"),
        pytest.param(f"{_H}.{_P}.{_S}é", id="non-ascii"),
        pytest.param(f"{_H}.{'A' * 9000}.{_S}", id="oversized"),
        pytest.param(f"{b64(b'not json')}.{_P}.{_S}", id="header-not-json"),
        pytest.param(f"{segment([1, 2])}.{_P}.{_S}", id="header-json-list"),
        pytest.param(f"{segment('HS256')}.{_P}.{_S}", id="header-json-string"),
        pytest.param(f"{segment({'typ': 'JWT'})}.{_P}.{_S}", id="header-without-alg"),
        pytest.param(f"{segment({'alg': 256})}.{_P}.{_S}", id="alg-not-a-string"),
        pytest.param(f"{segment({'alg': 'HS256', 'kid': 7})}.{_P}.{_S}", id="kid-not-a-string"),
        pytest.param(f"{segment({'alg': 'HS256', 'crit': ['exp']})}.{_P}.{_S}", id="unknown-critical-header"),
        pytest.param(f"{b64(b'[' * 3000)}.{_P}.{_S}", id="deeply-nested-header"),
        pytest.param(craft({"alg": "HS256"}, [1, 2], SECRET.encode()), id="signed-payload-json-list"),
    ],
)
def test_malformed(text: str) -> None:
    assert reason(verifier().verify(text, NOW)) == "malformed"


def test_signed_payload_that_is_not_json_is_malformed() -> None:
    signing_input = f"{segment({'alg': 'HS256'})}.{b64(b'user_id=admin')}"
    signature = b64(hmac.new(SECRET.encode(), signing_input.encode(), hashlib.sha256).digest())
    assert reason(verifier().verify(f"{signing_input}.{signature}", NOW)) == "malformed"


def test_non_canonical_base64_spelling_of_a_valid_token_is_refused() -> None:
    # The signature's last character carries unused low bits; flipping them decodes to the same bytes.
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    variant = _S[:-1] + alphabet[alphabet.index(_S[-1]) ^ 1]
    assert base64.urlsafe_b64decode(variant + "=") == base64.urlsafe_b64decode(_S + "=")
    assert reason(verifier().verify(f"{_H}.{_P}.{variant}", NOW)) == "malformed"


# --- properties ---------------------------------------------------------------------------------------------------


@given(
    exp=st.integers(min_value=0, max_value=4_000_000_000),
    leeway=st.integers(min_value=0, max_value=86_400),
    past=st.floats(min_value=0.0, max_value=1e9, allow_nan=False, exclude_min=True),
)
def test_property_any_exp_past_leeway_is_expired_even_when_cached(exp: int, leeway: int, past: float) -> None:
    checker = JWTVerifier([SECRET], leeway=leeway, require_exp=True)
    signed = jwt.encode({"user_id": "u", "exp": exp}, SECRET, algorithm="HS256")
    assert isinstance(checker.verify(signed, exp + leeway - 0.5), Identity)  # now cached
    assert reason(checker.verify(signed, exp + leeway + past)) == "expired"


@given(
    exp=st.integers(min_value=0, max_value=4_000_000_000),
    leeway=st.integers(min_value=0, max_value=86_400),
    before=st.floats(min_value=1e-3, max_value=1e9),  # a difference a float at 4e9 can still represent
)
def test_property_any_exp_not_yet_past_leeway_is_accepted(exp: int, leeway: int, before: float) -> None:
    checker = JWTVerifier([SECRET], leeway=leeway, require_exp=True)
    signed = jwt.encode({"user_id": "u", "exp": exp}, SECRET, algorithm="HS256")
    assert isinstance(checker.verify(signed, exp + leeway - before), Identity)


@given(data=st.data(), part=st.sampled_from([1, 2]))
def test_property_any_single_byte_change_of_payload_or_signature_is_rejected(data: st.DataObject, part: int) -> None:
    parts = VALID.split(".")
    index = data.draw(st.integers(min_value=0, max_value=len(parts[part]) - 1))
    byte = data.draw(st.characters(min_codepoint=0, max_codepoint=255).filter(lambda c: c != parts[part][index]))
    parts[part] = parts[part][:index] + byte + parts[part][index + 1 :]
    checker = verifier()
    assert isinstance(checker.verify(VALID, NOW), Identity)  # the original is valid (and cached)
    assert reason(checker.verify(".".join(parts), NOW)) in {"bad_signature", "malformed"}


# --- the cache ----------------------------------------------------------------------------------------------------


def test_second_verify_is_a_cache_hit_returning_the_same_identity() -> None:
    checker = verifier()
    first = checker.verify(VALID, NOW)
    second = checker.verify(VALID, NOW + 1)
    assert isinstance(first, Identity)
    assert second is first
    assert (checker.hits, checker.misses, len(checker.cache)) == (1, 1, 1)


def test_cache_is_keyed_by_a_hash_of_the_token_never_the_token() -> None:
    checker = verifier()
    checker.verify(VALID, NOW)
    assert list(checker.cache.keys()) == [hashlib.sha256(VALID.encode()).digest()]
    assert all(VALID not in repr(key) and _S not in repr(key) for key in checker.cache)


def test_cached_token_is_expired_once_now_passes_exp_plus_leeway() -> None:
    checker = verifier()
    signed = token(exp=NOW + 10)
    assert isinstance(checker.verify(signed, NOW), Identity)
    assert isinstance(checker.verify(signed, NOW + 10 + LEEWAY - 1), Identity)
    assert checker.hits == 1
    assert reason(checker.verify(signed, NOW + 10 + LEEWAY)) == "expired"
    assert (checker.hits, len(checker.cache)) == (1, 0)


def test_cached_token_is_not_valid_before_its_iat_when_the_clock_goes_back() -> None:
    checker = verifier()
    signed = token(iat=NOW)
    assert isinstance(checker.verify(signed, NOW), Identity)
    assert reason(checker.verify(signed, NOW - LEEWAY - 1)) == "not_yet_valid"


def test_cache_runs_on_the_injected_clock_not_wall_time() -> None:
    # A token without exp is re-verified once the cache TTL (five minutes) passes on the injected clock.
    checker = verifier(require_exp=False)
    signed = token(exp=None)
    checker.verify(signed, NOW)
    checker.verify(signed, NOW + 299)
    assert (checker.hits, checker.misses) == (1, 1)
    checker.verify(signed, NOW + 301)
    assert (checker.hits, checker.misses) == (1, 2)


def test_cache_never_holds_more_than_cache_size() -> None:
    checker = verifier(cache_size=3)
    for number in range(20):
        assert isinstance(checker.verify(token(user_id=f"u-{number}"), NOW), Identity)
        assert len(checker.cache) <= 3
    assert checker.cache.maxsize == 3


def test_a_full_cache_lets_its_oldest_entry_go_first_and_a_renewed_one_goes_last() -> None:
    cache = TokenCache(3)
    ann = Identity("ann", "jwt")
    for key in (b"a", b"b", b"c"):
        cache.keep(key, (ann, NOW, NOW + 60), NOW)
    cache.keep(b"a", (ann, NOW, NOW + 60), NOW + 1)  # verified again: now the newest
    cache.keep(b"d", (ann, NOW, NOW + 60), NOW + 2)
    assert list(cache) == [b"c", b"a", b"d"]
    assert cache.served(b"b", NOW + 2) is None


def test_a_cached_identity_is_served_only_inside_its_window_cut_at_the_cache_ttl() -> None:
    cache = TokenCache(10)
    ann, bob = Identity("ann", "jwt"), Identity("bob", "jwt")
    cache.keep(b"ann", (ann, NOW - 10, NOW + 60), NOW)  # expires (with its leeway) before the cache TTL
    cache.keep(b"bob", (bob, NOW - 10, NOW + 86_400), NOW)  # valid for a day: verified again after five minutes
    assert [cache.served(b"ann", at) for at in (NOW - 10.001, NOW - 10, NOW + 59.999, NOW + 60)] == [
        None,
        ann,
        ann,
        None,
    ]
    assert [cache.served(b"bob", at) for at in (NOW + 299.999, NOW + 300)] == [bob, None]
    assert cache.served(b"nobody", NOW) is None


def test_a_malformed_token_is_refused_before_and_after_a_good_one_is_cached() -> None:
    """The shape check runs on a miss only: a cached token passed it; any other spelling still meets it."""
    checker = verifier()
    assert isinstance(checker.verify(VALID, NOW), Identity)
    for bad in (VALID + "=", VALID.replace(".", "..", 1), " " + VALID, VALID + "é"):
        assert reason(checker.verify(bad, NOW)) == "malformed"
    assert (checker.hits, len(checker.cache)) == (0, 1)


def test_cache_size_zero_turns_caching_off() -> None:
    checker = verifier(cache_size=0)
    assert isinstance(checker.verify(VALID, NOW), Identity)
    assert isinstance(checker.verify(VALID, NOW), Identity)
    assert (checker.hits, checker.misses, len(checker.cache)) == (0, 2, 0)


def test_rejections_are_not_cached() -> None:
    checker = verifier()
    forged = token("not-the-secret-but-long-enough-for-hs256")
    for _ in range(3):
        assert reason(checker.verify(forged, NOW)) == "bad_signature"
    assert (checker.hits, checker.misses, len(checker.cache)) == (0, 3, 0)


# --- secrets and config -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("secret", ["", "-----BEGIN PUBLIC KEY-----\nMIIB\n-----END PUBLIC KEY-----"])
def test_unusable_secrets_fail_at_construction(secret: str) -> None:
    with pytest.raises(ValueError, match="secret #2"):
        JWTVerifier([SECRET, secret], leeway=0, require_exp=True)


def test_short_secret_verifies_without_warnings_and_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    # pytest turns warnings into errors: a per-call InsecureKeyLengthWarning would fail this test.
    with caplog.at_level(logging.WARNING, logger="gateway.policy.identity"):
        checker = JWTVerifier([SHORT_SECRET], leeway=0, require_exp=True)
    assert "JWT secret #1" in caplog.text
    signed = sign_token(SHORT_SECRET, user_id="u-1", now=NOW, ttl=60)
    assert isinstance(checker.verify(signed, NOW), Identity)


def test_from_config_uses_the_secret_values_leeway_require_exp_and_jwks_url() -> None:
    config = JWTConfig.model_validate(
        {"secrets": [SECOND, SECRET], "leeway_seconds": 5, "require_exp": False, "jwks_url": "https://idp.test/jwks"}
    )
    checker = JWTVerifier.from_config(config)
    assert isinstance(checker.verify(token(SECRET, exp=None), NOW), Identity)
    assert isinstance(checker.verify(token(SECRET, exp=NOW - 4), NOW), Identity)
    assert reason(checker.verify(token(SECRET, exp=NOW - 5), NOW)) == "expired"
    assert checker.jwks is not None
    assert checker.jwks.url == URL("https://idp.test/jwks")


def test_no_repr_contains_the_token_or_the_secret() -> None:
    secret = f"{CANARY}-secret-long-enough-for-hs256"
    checker = JWTVerifier([secret], leeway=0, require_exp=True)
    results: list[Identity | Rejection] = [
        checker.verify(token(secret, note=CANARY), NOW),
        checker.verify(token(secret, exp=NOW - 1, note=CANARY), NOW),
        checker.verify(token(secret, user_id=None, note=CANARY), NOW),
        checker.verify(token(SECRET, note=CANARY), NOW),
        checker.verify(f"{CANARY}.{CANARY}.{CANARY}", NOW),
    ]
    assert isinstance(results[0], Identity)
    hashed = hmac.new(secret.encode(), b"u-1", hashlib.sha256).hexdigest()
    results += [verify_hmac("u-1", hashed, [secret]), verify_hmac("u-1", hashed[:-1] + CANARY, [secret])]
    for result in results:
        for text in (repr(result), str(result)):
            assert CANARY not in text
            assert hashed[:16] not in text
    assert secret not in repr(checker)


# --- JWKS over a real loopback server -----------------------------------------------------------------------------


async def loaded(idp: JWKSServer, *keys: dict[str, Any]) -> JWKSKeys:
    idp.document = {"keys": list(keys)}
    jwks = JWKSKeys(idp.url)
    async with aiohttp.ClientSession() as session:
        await jwks.refresh(session)
    return jwks


def rs256(kid: str | None = "rsa-1", key: Any = RSA_KEY, **overrides: Any) -> str:
    headers = {"kid": kid} if kid is not None else None
    return jwt.encode(claims(**overrides), key, algorithm="RS256", headers=headers)


def es256(kid: str = "ec-1") -> str:
    return jwt.encode(claims(), EC_KEY, algorithm="ES256", headers={"kid": kid})


async def test_rs256_and_es256_tokens_verify_through_jwks(idp: JWKSServer) -> None:
    jwks = await loaded(idp, jwk(RSA_KEY, "rsa-1"), jwk(EC_KEY, "ec-1"))
    assert jwks.key_for("rsa-1") is not None
    assert jwks.key_for("rsa-1")[0] == "RS256"  # type: ignore[index]
    assert jwks.key_for("ec-1")[0] == "ES256"  # type: ignore[index]
    checker = verifier(jwks=jwks)
    for signed in (rs256(), es256()):
        result = checker.verify(signed, NOW)
        assert isinstance(result, Identity)
        assert result.user_id == "u-1"
    assert isinstance(checker.verify(token(), NOW), Identity)  # the secrets still verify HS256


async def test_hs256_signed_with_the_jwks_public_key_pem_is_rejected(idp: JWKSServer) -> None:
    jwks = await loaded(idp, jwk(RSA_KEY, "rsa-1"))
    pem = RSA_KEY.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    checker = verifier(jwks=jwks)
    # Naming the RSA key's kid: HS256 does not match the kid's pinned RS256.
    assert reason(checker.verify(craft({"alg": "HS256", "kid": "rsa-1"}, claims(), pem), NOW)) == "alg_not_allowed"
    # Without a kid it is an HS256 token like any other, and no configured secret signed it.
    assert reason(checker.verify(craft({"alg": "HS256"}, claims(), pem), NOW)) == "bad_signature"
    # Nor does any other byte form of the public key work as an HMAC secret.
    der = RSA_KEY.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert reason(checker.verify(craft({"alg": "HS256"}, claims(), der), NOW)) == "bad_signature"


async def test_rs256_token_whose_kid_is_pinned_to_es256_is_not_allowed(idp: JWKSServer) -> None:
    checker = verifier(jwks=await loaded(idp, jwk(EC_KEY, "ec-1"), jwk(RSA_KEY, "rsa-1")))
    assert reason(checker.verify(rs256(kid="ec-1"), NOW)) == "alg_not_allowed"
    assert reason(checker.verify(jwt.encode(claims(), EC_KEY, algorithm="ES256", headers={"kid": "rsa-1"}), NOW)) == (
        "alg_not_allowed"
    )


async def test_rs256_signed_by_another_key_is_a_bad_signature(idp: JWKSServer) -> None:
    checker = verifier(jwks=await loaded(idp, jwk(RSA_KEY, "rsa-1")))
    assert reason(checker.verify(rs256(key=OTHER_RSA_KEY), NOW)) == "bad_signature"
    assert reason(checker.verify(rs256(exp=NOW - LEEWAY - 1), NOW)) == "expired"


async def test_unknown_kid_then_refetch_once_per_interval(idp: JWKSServer) -> None:
    jwks = await loaded(idp, jwk(RSA_KEY, "rsa-1"))
    checker = verifier(jwks=jwks)
    assert not jwks.needs_refetch(NOW)
    assert reason(checker.verify(es256(kid="ec-new"), NOW)) == "unknown_kid"
    assert jwks.needs_refetch(NOW)
    assert not jwks.needs_refetch(NOW)  # claimed: one fetch per interval, however many unknown kids arrive
    assert reason(checker.verify(es256(kid="ec-other"), NOW + 1)) == "unknown_kid"
    assert not jwks.needs_refetch(NOW + 29)
    assert jwks.needs_refetch(NOW + 30)
    idp.document["keys"].append(jwk(EC_KEY, "ec-new"))
    async with aiohttp.ClientSession() as session:
        await jwks.refresh(session)
    assert isinstance(checker.verify(es256(kid="ec-new"), NOW + 31), Identity)
    assert not jwks.needs_refetch(NOW + 1000)  # nothing unknown since the refresh


async def test_asymmetric_token_without_kid_names_no_key(idp: JWKSServer) -> None:
    jwks = await loaded(idp, jwk(RSA_KEY, "rsa-1"))
    assert reason(verifier(jwks=jwks).verify(rs256(kid=None), NOW)) == "unknown_kid"
    assert not jwks.needs_refetch(NOW)


@pytest.mark.parametrize(
    ("make", "usable"),
    [
        pytest.param(lambda: jwk(RSA_KEY, "k", alg="RS256", use="sig"), True, id="rsa-with-its-alg"),
        pytest.param(lambda: jwk(EC_KEY, "k", alg="ES256"), True, id="ec-with-its-alg"),
        pytest.param(lambda: jwk(RSA_KEY, "k", alg="PS256"), False, id="rsa-alg-not-allowed"),
        pytest.param(lambda: jwk(RSA_KEY, "k", alg="ES256"), False, id="rsa-claiming-es256"),
        pytest.param(lambda: jwk(RSA_KEY, "k", alg="HS256"), False, id="rsa-claiming-hs256"),
        pytest.param(lambda: jwk(RSA_KEY, "k", use="enc"), False, id="encryption-key"),
        pytest.param(lambda: jwk(RSA_KEY, None), False, id="no-kid"),
        pytest.param(lambda: jwk(rsa.generate_private_key(65537, 1024), "k"), False, id="rsa-1024"),  # noqa: S505 (must be refused)
        pytest.param(lambda: jwk(ec.generate_private_key(ec.SECP384R1()), "k"), False, id="ec-p384"),
        pytest.param(lambda: {**jwk(EC_KEY, "k"), "crv": "P-384"}, False, id="ec-wrong-crv"),
        pytest.param(lambda: {"kty": "oct", "k": b64(SECRET.encode()), "kid": "k"}, False, id="symmetric-key"),
        pytest.param(lambda: {**json.loads(RSAAlgorithm.to_jwk(RSA_KEY)), "kid": "k"}, False, id="private-rsa"),
        pytest.param(lambda: {"kty": "RSA", "kid": "k", "n": "!!", "e": "AQAB"}, False, id="garbage-modulus"),
    ],
)
async def test_which_jwks_keys_are_usable(idp: JWKSServer, make: Callable[[], dict[str, Any]], usable: bool) -> None:
    jwks = await loaded(idp, make(), "not a key")  # type: ignore[arg-type]
    assert (jwks.key_for("k") is not None) is usable


async def test_a_kid_listed_twice_is_ambiguous_and_unusable(idp: JWKSServer) -> None:
    jwks = await loaded(idp, jwk(RSA_KEY, "dup"), jwk(EC_KEY, "dup"), jwk(EC_KEY, "ec-1"))
    assert jwks.key_for("dup") is None
    assert jwks.key_for("ec-1") is not None
    assert reason(verifier(jwks=jwks).verify(rs256(kid="dup"), NOW)) == "unknown_kid"


@pytest.mark.parametrize(
    ("status", "document"),
    [
        (500, {"keys": []}),
        (404, "not found"),
        (302, {"keys": []}),
        (200, "not json"),
        (200, {"no_keys": []}),
        (200, [1, 2]),
        (200, {"keys": [], "padding": "x" * (1 << 20)}),
    ],
)
async def test_failed_refresh_keeps_the_old_keys(idp: JWKSServer, status: int, document: Any) -> None:
    jwks = await loaded(idp, jwk(RSA_KEY, "rsa-1"))
    idp.status, idp.document = status, document
    async with aiohttp.ClientSession() as session:
        await jwks.refresh(session)
    assert idp.requests == 2  # fetched, and did not follow a redirect
    assert jwks.key_for("rsa-1") is not None
    assert isinstance(verifier(jwks=jwks).verify(rs256(), NOW), Identity)


async def test_unreachable_jwks_keeps_the_old_keys(idp: JWKSServer) -> None:
    jwks = await loaded(idp, jwk(RSA_KEY, "rsa-1"))
    jwks.url = idp.url.with_port(1)  # nothing listens on port 1 of loopback
    async with aiohttp.ClientSession() as session:
        await jwks.refresh(session)
    assert jwks.key_for("rsa-1") is not None


async def test_a_refresh_without_a_key_withdraws_it(idp: JWKSServer) -> None:
    jwks = await loaded(idp, jwk(RSA_KEY, "rsa-1"))
    checker = verifier(jwks=jwks, cache_size=0)
    assert isinstance(checker.verify(rs256(), NOW), Identity)
    idp.document = {"keys": [jwk(EC_KEY, "ec-1")]}
    async with aiohttp.ClientSession() as session:
        await jwks.refresh(session)
    assert reason(checker.verify(rs256(), NOW)) == "unknown_kid"


# --- legacy HMAC --------------------------------------------------------------------------------------------------


def user_hash(secret: str, user_id: str) -> str:
    return hmac.new(secret.encode(), user_id.encode(), hashlib.sha256).hexdigest()


@pytest.mark.parametrize("secret", [SECRET, SECOND])
def test_hmac_accepts_the_hash_of_each_configured_secret(secret: str) -> None:
    assert verify_hmac("User-7", user_hash(secret, "User-7"), [SECRET, SECOND]) == Identity("User-7", "hmac")


def test_hmac_hex_case_does_not_matter() -> None:
    assert isinstance(verify_hmac("User-7", user_hash(SECRET, "User-7").upper(), [SECRET]), Identity)


@pytest.mark.parametrize(
    ("user_id", "provided", "secrets"),
    [
        pytest.param("User-7", user_hash(SECRET, "User-8"), [SECRET], id="hash-of-another-user"),
        pytest.param("user-7", user_hash(SECRET, "User-7"), [SECRET], id="different-case-user-id"),
        pytest.param("User-7", user_hash(SECRET, "User-7")[:-1], [SECRET], id="truncated"),
        pytest.param("User-7", user_hash(SECRET, "User-7")[:32], [SECRET], id="half"),
        pytest.param("User-7", user_hash(SECRET, "User-7") + "0", [SECRET], id="one-more-digit"),
        pytest.param("User-7", user_hash("unconfigured", "User-7"), [SECRET], id="other-secret"),
        pytest.param("User-7", user_hash(SECRET, "User-7"), [], id="no-secrets"),
        pytest.param("User-7", user_hash("", "User-7"), [""], id="empty-secret"),
        pytest.param("User-7", "é" * 64, [SECRET], id="non-ascii-hash"),
        pytest.param("User-7\n", user_hash(SECRET, "User-7\n"), [SECRET], id="control-character-in-user-id"),
    ],
)
def test_hmac_rejections(user_id: str, provided: str, secrets: list[str]) -> None:
    assert verify_hmac(user_id, provided, secrets) == Rejection("hmac", "bad_signature")


@pytest.mark.parametrize(("user_id", "provided"), [("", "abc"), ("User-7", ""), ("", "")])
def test_hmac_with_nothing_to_check_is_missing(user_id: str, provided: str) -> None:
    assert verify_hmac(user_id, provided, [SECRET]) == Rejection("hmac", "missing")


def test_hmac_compares_in_constant_time_with_every_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    """Spy on the standard library's compare_digest: every secret is compared, even after a match."""
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)  # the standard library's, which identity.py calls
    provided = user_hash(SECRET, "User-7")
    assert isinstance(verify_hmac("User-7", provided, [SECRET, SECOND]), Identity)
    assert calls == [(provided.encode(), provided.encode()), (user_hash(SECOND, "User-7").encode(), provided.encode())]


# --- signing and TTLs ---------------------------------------------------------------------------------------------


def test_sign_token_round_trip() -> None:
    signed = sign_token(SECRET, user_id="u-9", now=NOW, ttl=3600, email="e@example.com", name="Eve", extra={"p": 1})
    assert jwt.get_unverified_header(signed)["alg"] == "HS256"
    result = verifier().verify(signed, NOW)
    assert isinstance(result, Identity)
    assert (result.user_id, result.email, result.name, result.expires_at) == ("u-9", "e@example.com", "Eve", NOW + 3600)
    assert (result.claims["iat"], result.claims["p"]) == (NOW, 1)
    assert reason(verifier().verify(signed, NOW + 3600 + LEEWAY)) == "expired"


def test_sign_token_named_claims_win_over_extra() -> None:
    signed = sign_token(SECRET, user_id="u-9", now=NOW, ttl=60, extra={"user_id": "admin", "exp": NOW + 10**9})
    result = verifier().verify(signed, NOW)
    assert isinstance(result, Identity)
    assert (result.user_id, result.expires_at) == ("u-9", NOW + 60)


@pytest.mark.parametrize(("user_id", "ttl"), [("", 60), ("u", 0), ("u", -1), ("u", float("inf")), ("u", float("nan"))])
def test_sign_token_refuses_empty_user_id_and_non_positive_ttl(user_id: str, ttl: float) -> None:
    with pytest.raises(ValueError, match="user_id and a positive ttl"):
        sign_token(SECRET, user_id=user_id, now=NOW, ttl=ttl)


@pytest.mark.parametrize(
    ("text", "seconds"), [("1h", 3600), ("30m", 1800), ("45s", 45), ("2d", 172800), ("90", 90), (" 15m ", 900)]
)
def test_parse_ttl(text: str, seconds: float) -> None:
    assert parse_ttl(text) == seconds


@pytest.mark.parametrize("text", ["", "h", "1x", "--5", "1.5h", "1 h", "1hh", "1H", "\u0661h", "1h30m", "+5m"])
def test_parse_ttl_refuses_anything_else(text: str) -> None:
    with pytest.raises(ValueError, match=r"invalid TTL .*positive whole number.*s, m, h or d"):
        parse_ttl(text)


@pytest.mark.parametrize("text", ["-5m", "-5", "0", "0s", "-0h", " -1d "])
def test_parse_ttl_says_a_lifetime_must_be_positive(text: str) -> None:
    with pytest.raises(ValueError, match=f"^must be positive, got {text.strip()}$"):
        parse_ttl(text)

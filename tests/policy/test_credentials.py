"""The credential sources: each on its own, their order, and :func:`identify` judging only the first one found.

Pure: plain headers and cookies in, a credential (or an identity, on the injected ``NOW``) out.
"""

from __future__ import annotations

import hashlib
import hmac

from hypothesis import given
from hypothesis import strategies as st

from gateway.config import HMACConfig, IdentityConfig, JWTConfig
from gateway.policy.credentials import (
    BearerHeader,
    HMACCookies,
    JWTCookie,
    Presented,
    SignedUserId,
    Token,
    UserDataHMAC,
    UserDataToken,
    Verifiers,
    first_credential,
    identify,
    messenger_sources,
    portal_sources,
)
from gateway.policy.identity import Identity, JWTVerifier, Rejection, sign_token

SECRET = "credentials-test-secret-" + "0123456789abcdef" * 3
NOW = 1_500_000_000.0  # far from the wall clock: tokens are valid only on the injected clock
VERIFIERS = Verifiers(JWTVerifier([SECRET], leeway=0, require_exp=True), (SECRET,))


def identity_config(*, hmac_enabled: bool) -> IdentityConfig:
    """The identity settings with the default cookie names, legacy HMAC on or off."""
    return IdentityConfig(jwt=JWTConfig(secrets=[SECRET]), hmac=HMACConfig(enabled=hmac_enabled))


def token(user_id: str) -> str:
    """A token for ``user_id``, valid at ``NOW``."""
    return sign_token(SECRET, user_id=user_id, now=NOW, ttl=600)


def user_hash(user_id: str) -> str:
    """The legacy HMAC of ``user_id``."""
    return hmac.new(SECRET.encode(), user_id.encode(), hashlib.sha256).hexdigest()


def test_the_bearer_header_reads_the_token_of_the_bearer_scheme_only() -> None:
    source = BearerHeader()
    assert source.read(Presented(authorization="Bearer a.b.c")) == Token("a.b.c")
    assert source.read(Presented(authorization="bEaReR  a.b.c ")) == Token("a.b.c")
    assert source.read(Presented(authorization="Basic dXNlcjpwdw==")) is None
    assert source.read(Presented(authorization="Bearer   ")) is None
    assert source.read(Presented()) is None


def test_the_jwt_cookie_reads_its_own_cookie_the_last_one_sent_winning() -> None:
    source = JWTCookie("portal-jwt")
    assert source.read(Presented(cookies=("a=1; portal-jwt=x.y.z",))) == Token("x.y.z")
    assert source.read(Presented(cookies=("portal-jwt=old.y.z", "portal-jwt=new.y.z"))) == Token("new.y.z")
    assert source.read(Presented(cookies=("portal-jwt=",))) is None
    assert source.read(Presented(cookies=("other-jwt=x.y.z",))) is None


def test_the_hmac_cookies_need_both_cookies() -> None:
    source = HMACCookies("uid", "uhash")
    assert source.read(Presented(cookies=("uid=u-1; uhash=ab12",))) == SignedUserId("u-1", "ab12")
    assert source.read(Presented(cookies=("uid=u-1",))) is None
    assert source.read(Presented(cookies=("uhash=ab12",))) is None
    assert source.read(Presented(cookies=("uid=; uhash=ab12",))) is None


def test_user_data_sources_read_a_jwt_and_a_legacy_pair() -> None:
    assert UserDataToken().read(Presented(user_data={"intercom_user_jwt": "a.b.c"})) == Token("a.b.c")
    assert UserDataToken().read(Presented(user_data={"user_hash": "a.b.c"})) == Token("a.b.c")
    assert UserDataToken().read(Presented(user_data={"user_hash": "ab" * 32})) is None
    legacy = Presented(user_data={"user_id": "u-1", "user_hash": "ab" * 32})
    assert UserDataHMAC().read(legacy) == SignedUserId("u-1", "ab" * 32)
    # Empty strings are read, to be judged "missing"; a number is no credential at all.
    assert UserDataHMAC().read(Presented(user_data={"user_id": "", "user_hash": ""})) == SignedUserId("", "")
    assert UserDataHMAC().read(Presented(user_data={"user_id": 7, "user_hash": "ab"})) is None
    assert UserDataHMAC().read(Presented(cookies=("user_id=u-1; user_hash=ab",))) is None


def test_sources_built_from_config_in_precedence_order() -> None:
    assert [source.name for source in portal_sources(identity_config(hmac_enabled=False))] == ["bearer", "jwt_cookie"]
    on = identity_config(hmac_enabled=True)
    assert [source.name for source in portal_sources(on)] == ["bearer", "jwt_cookie", "hmac_cookies"]
    assert portal_sources(on)[2] == HMACCookies("portal-user-id", "portal-user-hash")
    assert portal_sources(on)[1] == JWTCookie("portal-jwt")
    assert [source.name for source in messenger_sources(on)] == ["user_data_jwt", "user_data_hmac"]
    assert [source.name for source in messenger_sources(identity_config(hmac_enabled=False))] == ["user_data_jwt"]


def presenting(chosen: set[str]) -> Presented:
    """A request presenting a credential in each of the ``chosen`` portal sources, each naming its own user."""
    cookies = []
    if "jwt_cookie" in chosen:
        cookies.append(f"portal-jwt={token('user-jwt_cookie')}")
    if "hmac_cookies" in chosen:
        cookies.append(f"portal-user-id=user-hmac_cookies; portal-user-hash={user_hash('user-hmac_cookies')}")
    authorization = f"Bearer {token('user-bearer')}" if "bearer" in chosen else ""
    return Presented(authorization, ("; ".join(cookies),) if cookies else ())


@given(st.sets(st.sampled_from(["bearer", "jwt_cookie", "hmac_cookies"])))
def test_any_combination_of_credentials_is_identified_by_the_first_source_in_order(chosen: set[str]) -> None:
    sources = portal_sources(identity_config(hmac_enabled=True))
    result = identify(sources, presenting(chosen), VERIFIERS, NOW)
    first = next((source.name for source in sources if source.name in chosen), None)
    if first is None:
        assert result is None
    else:
        assert isinstance(result, Identity)
        assert result.user_id == f"user-{first}"
        assert result.method == ("hmac" if first == "hmac_cookies" else "jwt")


def test_a_bad_first_credential_is_not_rescued_by_a_good_later_one() -> None:
    presented = Presented(authorization="Bearer not-a-jwt", cookies=(f"portal-jwt={token('u-1')}",))
    sources = portal_sources(identity_config(hmac_enabled=False))
    assert identify(sources, presented, VERIFIERS, NOW) == Rejection("jwt", "malformed")
    assert first_credential(sources, presented) == Token("not-a-jwt")


def test_identify_judges_on_the_injected_clock_and_with_the_hmac_secrets() -> None:
    sources = portal_sources(identity_config(hmac_enabled=True))
    cookie = Presented(cookies=(f"portal-jwt={token('u-1')}",))
    assert isinstance(identify(sources, cookie, VERIFIERS, NOW), Identity)
    assert identify(sources, cookie, VERIFIERS, NOW + 3600) == Rejection("jwt", "expired")
    forged = Presented(cookies=("portal-user-id=u-1; portal-user-hash=" + "00" * 32,))
    assert identify(sources, forged, VERIFIERS, NOW) == Rejection("hmac", "bad_signature")
    assert identify(sources, Presented(), VERIFIERS, NOW) is None


def test_without_hmac_secrets_a_legacy_pair_never_verifies() -> None:
    pair = SignedUserId("u-1", user_hash("u-1"))
    assert VERIFIERS.verify(pair, NOW) == Identity("u-1", "hmac")
    assert Verifiers(VERIFIERS.jwt, None).verify(pair, NOW) == Rejection("hmac", "bad_signature")

"""Where a visitor's credential comes from: an ordered tuple of sources, each read the same way.

A source only *reads* what a request presents (plain headers, cookies and the Messenger's ``user_data``,
no aiohttp); :func:`identify` takes the first source that finds a credential and verifies it. The portal's
sources are the bearer header, the JWT cookie and (when enabled) the legacy HMAC cookies; the Messenger
route puts the JWT and legacy ``user_hash`` of ``user_data`` in front of the same interface.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from gateway.config import IdentityConfig
from gateway.policy.companyupdates import token_in
from gateway.policy.cookies import cookie_value
from gateway.policy.identity import Identity, JWTVerifier, Rejection, verify_hmac


@dataclass(frozen=True)
class Presented:
    """What one request presents, as plain data: its Authorization header, its Cookie headers, its user_data."""

    authorization: str = ""
    cookies: Sequence[str] = ()
    user_data: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class Token:
    """A JWT, still to be verified."""

    value: str


@dataclass(frozen=True)
class SignedUserId:
    """A legacy user id and its HMAC, still to be verified."""

    user_id: str
    user_hash: str


Credential = Token | SignedUserId


class CredentialSource(Protocol):
    """One place a credential may be presented; ``read`` finds it there (or None) without judging it."""

    @property
    def name(self) -> str:
        """The source's name, for tests and the README (never the audit: its records are by method)."""
        ...

    def read(self, presented: Presented) -> Credential | None:
        """The credential this source finds in ``presented``, or None when it finds none."""
        ...


@dataclass(frozen=True)
class BearerHeader:
    """``Authorization: Bearer <jwt>`` (the scheme in any case)."""

    name: str = "bearer"

    def read(self, presented: Presented) -> Credential | None:
        """The bearer token, when the header names that scheme and a token."""
        scheme, _, token = presented.authorization.partition(" ")
        return Token(token.strip()) if scheme.lower() == "bearer" and token.strip() else None


@dataclass(frozen=True)
class JWTCookie:
    """The portal's JWT cookie (``identity.jwt.cookie``)."""

    cookie: str
    name: str = "jwt_cookie"

    def read(self, presented: Presented) -> Credential | None:
        """The cookie's value, when it is set and not empty."""
        value = cookie_value(presented.cookies, self.cookie)
        return Token(value) if value else None


@dataclass(frozen=True)
class HMACCookies:
    """The legacy ``user_id`` and ``user_hash`` cookies (``identity.hmac``); both must be set."""

    user_id_cookie: str
    user_hash_cookie: str
    name: str = "hmac_cookies"

    def read(self, presented: Presented) -> Credential | None:
        """The pair, when both cookies are set and not empty."""
        user_id = cookie_value(presented.cookies, self.user_id_cookie)
        user_hash = cookie_value(presented.cookies, self.user_hash_cookie)
        return SignedUserId(user_id, user_hash) if user_id and user_hash else None


@dataclass(frozen=True)
class UserDataToken:
    """A Messenger call's JWT in ``user_data`` (``intercom_user_jwt``, or a JWT in ``user_hash``)."""

    name: str = "user_data_jwt"

    def read(self, presented: Presented) -> Credential | None:
        """The JWT of ``user_data``, if it carries one."""
        token = token_in(presented.user_data)
        return Token(token) if token is not None else None


@dataclass(frozen=True)
class UserDataHMAC:
    """A Messenger call's legacy ``user_id`` and hex ``user_hash`` in ``user_data``."""

    name: str = "user_data_hmac"

    def read(self, presented: Presented) -> Credential | None:
        """The pair, when both are strings (empty ones are read, and judged ``missing``)."""
        user_data = presented.user_data or {}
        user_id, user_hash = user_data.get("user_id"), user_data.get("user_hash")
        return SignedUserId(user_id, user_hash) if isinstance(user_id, str) and isinstance(user_hash, str) else None


@dataclass(frozen=True)
class Verifiers:
    """What judges a credential: the JWT verifier, and the HMAC secrets (None: legacy HMAC is off)."""

    jwt: JWTVerifier
    hmac_secrets: tuple[str, ...] | None

    def verify(self, credential: Credential, now: float) -> Identity | Rejection:
        """The identity ``credential`` proves at ``now``, or why it proves none."""
        if isinstance(credential, Token):
            return self.jwt.verify(credential.value, now)
        # SECURITY: the HMAC sources are only built when identity.hmac is enabled; without secrets nothing matches.
        return verify_hmac(credential.user_id, credential.user_hash, self.hmac_secrets or ())


def portal_sources(identity: IdentityConfig) -> tuple[CredentialSource, ...]:
    """The portal's sources, in precedence order: bearer header, JWT cookie, then (if enabled) the HMAC cookies."""
    sources: tuple[CredentialSource, ...] = (BearerHeader(), JWTCookie(identity.jwt.cookie))
    if identity.hmac.enabled:
        sources += (HMACCookies(identity.hmac.user_id_cookie, identity.hmac.user_hash_cookie),)
    return sources


def messenger_sources(identity: IdentityConfig) -> tuple[CredentialSource, ...]:
    """The sources a Messenger call's ``user_data`` adds in front of the portal's: its JWT, then (if enabled) HMAC."""
    return (UserDataToken(), UserDataHMAC()) if identity.hmac.enabled else (UserDataToken(),)


def first_credential(sources: Sequence[CredentialSource], presented: Presented) -> Credential | None:
    """The credential of the first source (in order) that finds one; later sources are not read."""
    for source in sources:
        credential = source.read(presented)
        if credential is not None:
            return credential
    return None


def identify(
    sources: Sequence[CredentialSource], presented: Presented, verifiers: Verifiers, now: float
) -> Identity | Rejection | None:
    """The first presented credential, verified; None when no source finds one."""
    # SECURITY: only the first credential is judged: a bad bearer token is not rescued by a good cookie.
    credential = first_credential(sources, presented)
    return None if credential is None else verifiers.verify(credential, now)

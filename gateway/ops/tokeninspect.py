"""What ``token inspect`` says about a JWT: decoded parts, times, the key that signed it, and the gateway's verdict.

The verdict is :meth:`gateway.policy.identity.JWTVerifier.verify`'s own, so the command and the gateway cannot
disagree; this module only decodes (without trusting) and explains it, in the words of the audit log's
``identity.reason``. Pure: the clock, the configuration and the JWKS keys are passed in.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from jwt.utils import base64url_decode, base64url_encode

from gateway.config import JWTConfig
from gateway.policy.identity import Identity, JWKSKeys, JWTVerifier, is_time
from routes.timefmt import iso

TIME_CLAIMS = ("iat", "nbf", "exp")
_HMAC_ALG = "HS256"
_FINGERPRINT_HEX = 8
# RFC 7638 §3.2: the members of a JWK thumbprint, by key type.
_THUMBPRINT_MEMBERS = {"RSA": ("e", "kty", "n"), "EC": ("crv", "kty", "x", "y")}


@dataclass(frozen=True)
class TimeClaim:
    """One of iat/nbf/exp: the number signed, as a UTC time and relative to ``now``."""

    name: str
    value: Any
    utc: str | None
    relative: str | None


@dataclass(frozen=True)
class SigningKey:
    """The configured key whose signature the token carries: a secret by position, or a JWKS key by kid."""

    kind: str
    """``secret`` or ``jwks``."""
    fingerprint: str
    """The first hex digits of SHA-256 of the secret, or the key's RFC 7638 thumbprint; never the key."""
    position: int | None = None
    kid: str | None = None
    alg: str | None = None

    def __str__(self) -> str:
        if self.kind == "secret":
            return f"secret #{self.position} of identity.jwt.secrets (sha256 {self.fingerprint})"
        return f"JWKS key kid {self.kid!r} ({self.alg}, thumbprint {self.fingerprint})"


@dataclass(frozen=True)
class Inspection:
    """Everything ``token inspect`` prints; ``reason`` is the audit log's ``identity.reason`` (None: accepted)."""

    header: Any
    claims: Any
    times: tuple[TimeClaim, ...]
    key: SigningKey | None
    accepted: bool
    reason: str | None
    explanation: str
    user_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The inspection as JSON data, for ``--json``."""
        key = None if self.key is None else {name: value for name, value in vars(self.key).items() if value is not None}
        return {
            "accepted": self.accepted,
            "reason": self.reason,
            "explanation": self.explanation,
            "user_id": self.user_id,
            "header": self.header,
            "claims": self.claims,
            "times": {
                claim.name: {"value": claim.value, "utc": claim.utc, "relative": claim.relative} for claim in self.times
            },
            "key": key,
        }

    def render(self) -> str:
        """The inspection as the lines the command prints."""
        lines = [
            f"header:  {_compact(self.header)}",
            f"claims:  {_compact(self.claims)}  (decoded, not trusted)",
        ]
        for claim in self.times:
            shown = f"{claim.utc} ({claim.relative})" if claim.utc is not None else f"{claim.value!r} (not a time)"
            lines.append(f"{claim.name + ':':<8} {shown}")
        lines.append(f"key:     {self.key if self.key is not None else 'none of the configured keys'}")
        verdict = "accepted" if self.accepted else f"refused: {self.reason}"
        lines += [f"verdict: {verdict}", f"why:     {self.explanation}"]
        return "\n".join(lines)


def _compact(value: Any) -> str:
    # SECURITY: unverified claims are anyone's text: escaped to ASCII, no terminal control sequence gets through.
    return "(undecodable)" if value is None else json.dumps(value)


def duration(seconds: float) -> str:
    """A span for people: ``45 s``, ``12 min``, ``3 h``, ``2 d``."""
    seconds = abs(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= 2 * size or (unit == "min" and seconds >= size):
            return f"{int(seconds // size)} {unit}"
    return f"{int(seconds)} s"


def relative(timestamp: float, now: float) -> str:
    """``3 h ago``, ``in 5 min`` or ``now``."""
    if abs(timestamp - now) < 1:
        return "now"
    return f"{duration(now - timestamp)} ago" if timestamp < now else f"in {duration(timestamp - now)}"


def _segment(part: str) -> Any:
    """One base64url part decoded as JSON, or None when it is not."""
    try:
        return json.loads(base64url_decode(part))
    except (ValueError, TypeError, jwt.exceptions.DecodeError):
        return None


def _times(claims: Any, now: float) -> tuple[TimeClaim, ...]:
    if not isinstance(claims, dict):
        return ()
    return tuple(
        TimeClaim(name, claims[name], iso(int(claims[name])), relative(claims[name], now))
        if is_time(claims[name])
        else TimeClaim(name, claims[name], None, None)
        for name in TIME_CLAIMS
        if name in claims
    )


def thumbprint(key: Any) -> str:
    """The RFC 7638 JWK thumbprint (base64url SHA-256) of an RSA or EC public key."""
    algorithm = RSAAlgorithm if isinstance(key, rsa.RSAPublicKey) else ECAlgorithm
    data = algorithm.to_jwk(key, as_dict=True)
    canonical = json.dumps({name: data[name] for name in _THUMBPRINT_MEMBERS[data["kty"]]}, separators=(",", ":"))
    return base64url_encode(hashlib.sha256(canonical.encode()).digest()).decode()


def fingerprint(secret: str) -> str:
    """Names a secret without giving it away: the first hex digits of its SHA-256."""
    return hashlib.sha256(secret.encode()).hexdigest()[:_FINGERPRINT_HEX]


def _signing_key(token: str, header: Any, secrets: list[str], jwks: JWKSKeys | None) -> SigningKey | None:
    """The configured key the signature verifies with (the signature only: PyJWS, as the verifier uses it)."""
    if not isinstance(header, dict):
        return None
    alg, kid = header.get("alg"), header.get("kid")
    candidates: list[tuple[Any, SigningKey]] = []
    if alg == _HMAC_ALG:
        candidates = [
            (secret, SigningKey("secret", fingerprint(secret), position=number))
            for number, secret in enumerate(secrets, 1)
        ]
    elif jwks is not None and isinstance(kid, str) and (pinned := jwks.key_for(kid)) is not None:
        candidates = [(pinned[1], SigningKey("jwks", thumbprint(pinned[1]), kid=kid, alg=pinned[0]))]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", jwt.InsecureKeyLengthWarning)
        for key, named in candidates:
            try:
                jwt.PyJWS().decode_complete(token, key, algorithms=[named.alg or _HMAC_ALG])
            except jwt.InvalidTokenError:
                continue
            return named
    return None


def _explain(reason: str, header: Any, claims: Any, config: JWTConfig, jwks: JWKSKeys | None, now: float) -> str:
    """The reason in the audit log's words, then what to do about it."""
    leeway = config.leeway_seconds
    header = header if isinstance(header, dict) else {}
    claims = claims if isinstance(claims, dict) else {}
    alg, kid = header.get("alg"), header.get("kid")
    if reason == "expired":
        return (
            f"expired {duration(now - float(claims['exp']))} ago: your app must mint a fresh token per session; "
            f"leeway is {leeway} s"
        )
    if reason == "not_yet_valid":
        start = max(float(claims[name]) for name in ("nbf", "iat") if is_time(claims.get(name)))
        return (
            f"not yet valid: iat/nbf is {duration(start - now)} ahead of this clock, beyond the {leeway} s leeway: "
            "the clock of the server that signs it runs ahead (sync it with NTP), or it signs a future iat/nbf"
        )
    if reason == "missing_user_id":
        return "no user_id: sign the user's user_id, not the email"
    if reason == "wrong_audience":
        wanted = ", ".join(sorted(config.audience))
        if not wanted:
            return f"aud {claims.get('aud')!r}, but identity.jwt.audience is empty: leave aud out, or list it there"
        if "aud" not in claims:
            return f"no aud: identity.jwt.audience requires one of {wanted}"
        return f"aud {claims['aud']!r} names none of identity.jwt.audience ({wanted}): a token minted for elsewhere"
    if reason == "bad_signature":
        if alg == _HMAC_ALG:
            return (
                "signed with none of the configured secrets: "
                "check you copied the Messenger API secret of this workspace"
            )
        return f"not signed by the JWKS key {kid!r}: the token was changed, or signed with another key under that kid"
    if reason == "unknown_kid":
        url = jwks.url if jwks is not None else config.jwks_url
        held = ", ".join(jwks.kids) if jwks is not None and jwks.kids else "no usable keys"
        if not kid:
            return f"no kid: an {alg} token must name its signing key (kid) among the JWKS keys at {url} ({held})"
        return f"kid {kid!r} is not in the JWKS at {url} ({held}): publish the key there, or sign with a key it holds"
    if reason == "alg_not_allowed":
        if alg == _HMAC_ALG:
            return (
                f"HS256 with kid {kid!r}, which names a JWKS public key (key confusion): "
                "drop the kid, or sign with that key"
            )
        if jwks is not None and isinstance(kid, str) and (pinned := jwks.key_for(kid)) is not None:
            return f"kid {kid!r} is a {pinned[0]} key but the token says {alg}: sign with {pinned[0]}"
        extra = " (RS256/ES256 only with identity.jwt.jwks_url)" if alg in ("RS256", "ES256") else ""
        return f"alg {alg!r} is not allowed: sign with HS256 and the Messenger API secret{extra}"
    return f"malformed: {_malformed(header, claims, config)}"


def _malformed(header: Mapping[str, Any], claims: Mapping[str, Any], config: JWTConfig) -> str:
    if not header or not claims:
        return "not a JWT (header.payload.signature, each base64url JSON): copy the whole token, no quotes or spaces"
    bad = [name for name in TIME_CLAIMS if name in claims and not is_time(claims[name])]
    if bad:
        return f"{', '.join(bad)} must be a number of seconds since 1970 (a NumericDate), not a string or date"
    if "exp" not in claims and config.require_exp:
        return "no exp: sign an expiry (identity.jwt.require_exp is on)"
    return "the gateway cannot read this token"


def inspect_token(token: str, config: JWTConfig, now: float, jwks: JWKSKeys | None = None) -> Inspection:
    """Decode ``token`` without trusting it and say what the gateway of ``config`` does with it at ``now``."""
    token = token.strip()
    parts = token.split(".")
    header, claims = (_segment(parts[0]), _segment(parts[1])) if len(parts) == 3 else (None, None)
    secrets = [secret.get_secret_value() for secret in config.secrets]
    # SECURITY: the verdict is the gateway's own verifier's, never a second opinion that could differ.
    verdict = JWTVerifier.from_config(config, jwks, cache_size=0).verify(token, now)
    key = _signing_key(token, header, secrets, jwks) if len(parts) == 3 else None
    times = _times(claims, now)
    if isinstance(verdict, Identity):
        expiry = f", expires {relative(verdict.expires_at, now)}" if verdict.expires_at is not None else ", no expiry"
        explanation = f"the gateway accepts it: user_id {verdict.user_id}{expiry}"
        return Inspection(header, claims, times, key, True, None, explanation, verdict.user_id)
    explanation = _explain(verdict.reason, header, claims, config, jwks, now)
    return Inspection(header, claims, times, key, False, verdict.reason, explanation)

"""Who is this visitor: a verified :class:`Identity`, or a :class:`Rejection` saying why not (never whether).

Pure and synchronous but for :meth:`JWKSKeys.refresh`; the clock (``now``, unix seconds) and keys are passed in.
A JWT is judged in order: shape (malformed), algorithm and key (alg_not_allowed, unknown_kid), signature with
every secret or the kid's key (bad_signature), aud (wrong_audience), exp (expired), nbf/iat (not_yet_valid),
user_id (missing_user_id).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import math
import re
import warnings
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

import aiohttp
import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, HMACAlgorithm, RSAAlgorithm
from yarl import URL

from gateway.config import JWTConfig

log = logging.getLogger(__name__)

Reason = Literal[
    "missing",
    "expired",
    "bad_signature",
    "alg_not_allowed",
    "missing_user_id",
    "not_yet_valid",
    "malformed",
    "unknown_kid",
    "wrong_audience",
]
Method = Literal["jwt", "hmac"]

# SECURITY: the key decides the algorithm, never the token (RFC 8725 §2.1): secrets HS256, JWKS keys RS256/ES256.
_HMAC_ALG = "HS256"
_KTY_ALG = {"RSA": "RS256", "EC": "ES256"}
# SECURITY: canonical base64url only (no stray trailing bits: one spelling per token), at most 8 KiB of work.
_SEGMENT = r"(?:[A-Za-z0-9_-]{4})*(?:[A-Za-z0-9_-]{2}[AEIMQUYcgkosw048]|[A-Za-z0-9_-][AQgw])?"
_SHAPE = re.compile(rf"{_SEGMENT}\.{_SEGMENT}\.{_SEGMENT}")
_MAX_TOKEN = 8192
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_CACHE_TTL = 300.0  # a cached success is re-verified at least this often (JWKS keys get withdrawn)
# PyJWT checks signature, header, aud, sub, jti; the time claims are checked here, against the injected clock.
_DECODE_OPTIONS: jwt.types.Options = {"verify_exp": False, "verify_nbf": False, "verify_iat": False}
_TTL = re.compile(r"(-?[0-9]+)([smhd]?)")
_TTL_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


@dataclass(frozen=True)
class Identity:
    """A verified visitor; ``claims`` are all the signed claims (the JWT's signed attributes), read-only."""

    user_id: str
    method: Method
    email: str | None = None
    name: str | None = None
    claims: Mapping[str, Any] = field(default_factory=dict, repr=False)
    expires_at: float | None = None


@dataclass(frozen=True)
class Rejection:
    """Why there is no identity: for the audit record and metrics, never for the page."""

    method: Method
    reason: Reason


def _freeze(value: Any) -> Any:
    """A read-only deep copy of JSON data: objects become MappingProxyType, arrays tuples."""
    # SECURITY: one cached Identity serves many requests; no consumer can change what the next request sees.
    if isinstance(value, Mapping):
        return MappingProxyType({key: _freeze(item) for key, item in value.items()})
    return tuple(_freeze(item) for item in value) if isinstance(value, list | tuple) else value


def is_time(value: object) -> bool:
    """True for a NumericDate: a number, neither bool, NaN, infinite nor absurdly large."""
    return isinstance(value, int | float) and not isinstance(value, bool) and abs(value) < 1e15


def _text(value: object) -> str | None:
    """A non-blank string without control characters, else None."""
    # SECURITY: even a signed value must not split the X-Portal-* header or the log line it is written to.
    return value if isinstance(value, str) and value.strip() and not _CONTROL.search(value) else None


_Entry = tuple[Identity, float, float]  # a verified identity and the [start, until) window it is served in


class TokenCache(dict[bytes, _Entry]):
    """Verified tokens by ``sha256(token)``: a plain dict, at most ``maxsize`` entries, oldest dropped first.

    A hit costs a dict look-up and a comparison with the entry's own window (cachetools' TTLCache cost more than
    the rest of the cached path: its timer, its links and its expiry walk on every read). The window is the
    token's own [nbf/iat, exp) with the leeway, cut at ``_CACHE_TTL`` after it was verified.
    """

    def __init__(self, maxsize: int) -> None:
        super().__init__()
        self.maxsize = maxsize

    def served(self, key: bytes, now: float) -> Identity | None:
        """The identity cached under ``key`` when ``now`` is inside its window; None otherwise."""
        entry = self.get(key)
        # SECURITY: an entry outside its window (expired, not yet valid, or due to be verified again) is never served.
        return entry[0] if entry is not None and entry[1] <= now < entry[2] else None

    def keep(self, key: bytes, entry: _Entry, now: float) -> None:
        """Cache a verified ``entry`` until its deadline or ``_CACHE_TTL`` from ``now``, whichever comes first."""
        if self.maxsize <= 0:
            return
        self.pop(key, None)  # a renewed entry goes to the end: the oldest first out
        while len(self) >= self.maxsize:
            del self[next(iter(self))]
        identity, start, deadline = entry
        self[key] = (identity, start, min(deadline, now + _CACHE_TTL))


class JWTVerifier:
    """Verifies JWTs with the secrets (and JWKS keys); ``cache``, ``hits`` and ``misses`` are there to observe."""

    def __init__(
        self,
        secrets: Sequence[str],
        *,
        leeway: int,
        require_exp: bool,
        jwks: JWKSKeys | None = None,
        audience: Iterable[str] = (),
        cache_size: int = 10_000,
    ) -> None:
        hs256 = HMACAlgorithm(HMACAlgorithm.SHA256)
        for number, secret in enumerate(secrets, 1):
            try:  # SECURITY: an empty secret would let anyone sign; a PEM/SSH/DER one mixes key families
                short = hs256.check_key_length(hs256.prepare_key(secret))
            except jwt.InvalidKeyError as exc:
                raise ValueError(f"JWT secret #{number} cannot be used: {exc}") from None
            if short:
                log.warning("JWT secret #%d: %s", number, short)
        self._secrets, self._leeway, self._require_exp = tuple(secrets), float(leeway), require_exp
        self.jwks = jwks
        # SECURITY: with none configured, PyJWT refuses any token that names an audience (RFC 7519 §4.1.3);
        # with some, a token must name one of them, so a token minted for another service is no key here.
        self._audience = sorted(audience) or None
        # SECURITY: keyed by sha256(token), never the token; timed by the injected `now`, each hit in its window.
        self.cache = TokenCache(cache_size)
        self.hits = self.misses = 0

    @classmethod
    def from_config(cls, config: JWTConfig, jwks: JWKSKeys | None = None, *, cache_size: int = 10_000) -> JWTVerifier:
        """The verifier of ``identity.jwt``; without ``jwks``, one for ``jwks_url`` (the caller refreshes it)."""
        if jwks is None and config.jwks_url is not None:
            jwks = JWKSKeys(config.jwks_url)
        return cls(
            [secret.get_secret_value() for secret in config.secrets],
            leeway=config.leeway_seconds,
            require_exp=config.require_exp,
            jwks=jwks,
            audience=config.audience,
            cache_size=cache_size,
        )

    def verify(self, token: str, now: float) -> Identity | Rejection:
        """The identity a token proves at ``now``, or why it proves none."""
        if len(token) > _MAX_TOKEN or not token.isascii():
            return Rejection("jwt", "malformed")
        key = hashlib.sha256(token.encode()).digest()
        cached = self.cache.served(key, now)
        if cached is not None:  # a cached token passed the shape check below when it was verified
            self.hits += 1
            return cached
        self.misses += 1  # a miss, or a cached token outside its window: verify afresh, for the exact reason
        result = self._verify(token, now) if _SHAPE.fullmatch(token) else Rejection("jwt", "malformed")
        if isinstance(result, Rejection):  # not cached: junk would evict good entries; not_yet_valid may pass later
            self.cache.pop(key, None)
            return result
        self.cache.keep(key, result, now)
        return result[0]

    def _verify(self, token: str, now: float) -> _Entry | Rejection:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            return Rejection("jwt", "malformed")
        alg, kid = header.get("alg"), header.get("kid")
        if not isinstance(alg, str) or (kid is not None and not isinstance(kid, str)):
            return Rejection("jwt", "malformed")
        pinned = self.jwks.key_for(kid) if self.jwks is not None and kid else None
        if alg == _HMAC_ALG:
            if pinned is not None:  # SECURITY: HS256 naming an RS256/ES256 kid is key confusion
                return Rejection("jwt", "alg_not_allowed")
            candidates: Sequence[Any] = self._secrets
        elif alg in _KTY_ALG.values() and self.jwks is not None:
            if pinned is None:  # a token without kid names no key either
                if kid:
                    self.jwks.mark_unknown()
                return Rejection("jwt", "unknown_kid")
            if pinned[0] != alg:  # SECURITY: the kid's pinned algorithm decides, never the header
                return Rejection("jwt", "alg_not_allowed")
            candidates = [pinned[1]]
        else:  # SECURITY: none, None, NONE, HS512, PS256, RS256 without a JWKS, ...
            return Rejection("jwt", "alg_not_allowed")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", jwt.InsecureKeyLengthWarning)  # short secrets: logged once, at start
            for candidate in candidates:
                try:
                    payload = jwt.decode(
                        token, candidate, algorithms=[alg], options=_DECODE_OPTIONS, audience=self._audience
                    )
                except jwt.InvalidSignatureError:
                    continue
                except (jwt.InvalidAudienceError, jwt.MissingRequiredClaimError):  # `aud` is the one required claim
                    return Rejection("jwt", "wrong_audience")
                except jwt.InvalidTokenError:  # SECURITY: signed, but the payload is not an object
                    return Rejection("jwt", "malformed")
                return self._claims(payload, now)
        return Rejection("jwt", "bad_signature")

    def _claims(self, payload: dict[str, Any], now: float) -> _Entry | Rejection:
        times = {name: payload[name] for name in ("exp", "nbf", "iat") if name in payload}
        # SECURITY: a time claim that is not a number, or no exp under require_exp, is malformed.
        if not all(map(is_time, times.values())) or ("exp" not in times and self._require_exp):
            return Rejection("jwt", "malformed")
        exp = float(times["exp"]) if "exp" in times else None
        deadline = math.inf if exp is None else exp + self._leeway
        start = max(times.get("nbf", -math.inf), times.get("iat", -math.inf)) - self._leeway
        if now >= deadline:
            return Rejection("jwt", "expired")
        if now < start:
            return Rejection("jwt", "not_yet_valid")
        user_id = payload.get("user_id")
        user_id = _text(str(user_id) if isinstance(user_id, int) and not isinstance(user_id, bool) else user_id)
        if user_id is None:
            return Rejection("jwt", "missing_user_id")
        email, name = _text(payload.get("email")), _text(payload.get("name"))
        return Identity(user_id, "jwt", email, name, _freeze(payload), exp), start, deadline


def verify_hmac(user_id: str, user_hash: str, secrets: Sequence[str]) -> Identity | Rejection:
    """Legacy identity: ``user_hash`` is the hex HMAC-SHA256 of ``user_id`` under one of ``secrets``."""
    if not user_id or not user_hash:
        return Rejection("hmac", "missing")
    message, provided = user_id.encode("utf-8", "surrogatepass"), user_hash.lower().encode("utf-8", "surrogatepass")
    expected = [hmac.new(secret.encode(), message, hashlib.sha256).hexdigest().encode() for secret in secrets if secret]
    # SECURITY: constant-time comparison with every secret (a list, not a short-circuit); empty secrets never match.
    if any([hmac.compare_digest(digest, provided) for digest in expected]) and _text(user_id):
        return Identity(user_id, "hmac")
    return Rejection("hmac", "bad_signature")


def sign_token(
    secret: str,
    *,
    user_id: str,
    now: float,
    ttl: float,
    email: str | None = None,
    name: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> str:
    """An HS256 token for ``user_id``, issued at ``now``, valid ``ttl`` seconds; named claims win over ``extra``."""
    if not user_id or not (math.isfinite(ttl) and ttl > 0):
        raise ValueError("sign_token needs a user_id and a positive ttl")
    payload = {**(extra or {}), "user_id": user_id, "iat": int(now), "exp": int(now + ttl)}
    payload.update({key: value for key, value in (("email", email), ("name", name)) if value is not None})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", jwt.InsecureKeyLengthWarning)  # short secrets: the verifier logs them
        return jwt.encode(payload, secret, algorithm=_HMAC_ALG)


def parse_ttl(text: str) -> float:
    """Seconds in a TTL written ``90``, ``45s``, ``30m``, ``1h`` or ``2d``."""
    match = _TTL.fullmatch(text.strip())
    if not match:
        raise ValueError(f"invalid TTL {text!r}: a positive whole number, optionally with s, m, h or d (90, 30m, 1h)")
    if int(match[1]) <= 0:
        raise ValueError(f"must be positive, got {text.strip()}")
    return float(int(match[1]) * _TTL_UNITS[match[2]])


def _parse_jwks(document: Any) -> dict[str, tuple[str, Any]]:
    """kid -> (algorithm, public key) for the usable keys of a JWK set; the others are logged and left out."""
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError("not a JWK set (no 'keys' list)")
    jwks = [jwk for jwk in document["keys"] if isinstance(jwk, dict)]
    counts = Counter(jwk.get("kid") for jwk in jwks if isinstance(jwk.get("kid"), str))
    keys: dict[str, tuple[str, Any]] = {}
    for jwk in jwks:
        kid, alg = jwk.get("kid"), _KTY_ALG.get(jwk.get("kty"))  # type: ignore[arg-type]
        # SECURITY: a kid names one key (none, or listed twice: unusable); kty fixes its algorithm, which "alg" may
        # only confirm; public signing keys only (private ones fail isinstance), RSA of 2048+ bits, EC on P-256.
        try:
            if not isinstance(kid, str) or not kid or counts[kid] > 1:
                raise ValueError("missing or duplicate kid")
            if alg is None or jwk.get("alg", alg) != alg or jwk.get("use", "sig") != "sig":
                raise ValueError(f"not an RS256/ES256 signing key (kty {jwk.get('kty')!r}, alg {jwk.get('alg')!r})")
            key = (RSAAlgorithm if alg == "RS256" else ECAlgorithm).from_jwk(jwk)
            rsa_ok = isinstance(key, rsa.RSAPublicKey) and key.key_size >= 2048
            if not rsa_ok and not (isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1)):
                raise ValueError("not a public key, an RSA key under 2048 bits, or an EC key off P-256")
            keys[kid] = (alg, key)
        except (jwt.PyJWTError, ValueError, KeyError, TypeError) as exc:
            log.warning("JWKS key %r skipped: %s", kid, exc)
    return keys


class JWKSKeys:
    """The RS256/ES256 public keys published at a JWKS URL, each key id pinned to one algorithm."""

    def __init__(self, url: URL, *, min_refetch_interval: float = 30.0) -> None:
        self.url = url
        self._interval = min_refetch_interval
        self._keys: dict[str, tuple[str, Any]] = {}
        self._unknown_seen, self._last_refetch = False, -math.inf

    async def refresh(self, session: aiohttp.ClientSession) -> None:
        """Fetch the key set and replace the keys; on any failure, log it and keep the old keys."""
        try:  # SECURITY: no redirects (never bounced from https to http) and at most 1 MiB of body
            async with session.get(self.url, allow_redirects=False, timeout=aiohttp.ClientTimeout(total=10)) as resp:
                resp.raise_for_status()
                body = bytearray()
                async for chunk in resp.content.iter_chunked(65536):
                    body += chunk
                    if len(body) > 1 << 20:
                        raise ValueError("JWKS larger than 1 MiB")
            keys = _parse_jwks(json.loads(body))
        except (aiohttp.ClientError, TimeoutError, ValueError, RecursionError) as exc:
            log.warning("JWKS %s not refreshed, keeping %d keys: %s", self.url, len(self._keys), exc)
            return
        self._keys, self._unknown_seen = keys, False
        log.info("JWKS %s: %d keys", self.url, len(keys))

    @property
    def kids(self) -> tuple[str, ...]:
        """The key ids held, sorted (``token inspect`` lists them)."""
        return tuple(sorted(self._keys))

    def key_for(self, kid: str) -> tuple[str, Any] | None:
        """The (algorithm, public key) pinned to ``kid``, or None."""
        return self._keys.get(kid)

    def mark_unknown(self) -> None:
        """Note that a token named a kid not held (the verifier calls this); see :meth:`needs_refetch`."""
        self._unknown_seen = True

    def needs_refetch(self, now: float) -> bool:
        """True once per interval while unknown kids are seen: the caller that gets True runs :meth:`refresh`."""
        # SECURITY: however many made-up kids arrive, the JWKS URL is fetched at most once per interval.
        if not self._unknown_seen or now - self._last_refetch < self._interval:
            return False
        self._last_refetch = now
        return True

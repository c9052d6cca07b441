"""The cookie allow-list, both ways, as pure functions.

Towards upstream only the two Intercom cookies of this workspace pass, byte
for byte as the client sent them. From upstream only ``Set-Cookie`` headers
for those two names pass, with ``Domain`` rewritten and ``Secure`` added.
Everything is decided on names; values are never returned for auditing.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import overload

NAMELESS = "<nameless>"
INVALID_NAME = "<invalid-name>"

# RFC 7230 token: what a cookie name may be.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,256}")
# Tokens joined by ";": every name of a request checked in one match.
_TOKENS = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,256}(?:;[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,256})*")
# RFC 6265 cookie-value: cookie-octets, optionally inside one pair of double quotes.
# SECURITY: no space, comma, semicolon, backslash or control character may reach
# upstream inside an allowed cookie, so no lenient parser upstream can split a
# forwarded value into a second, stripped cookie.
_COOKIE_VALUE = re.compile(r'"[\x21\x23-\x2b\x2d-\x3a\x3c-\x5b\x5d-\x7e]*"|[\x21\x23-\x2b\x2d-\x3a\x3c-\x5b\x5d-\x7e]*')


@dataclass(frozen=True)
class CookieDecision:
    """What to send upstream for a request's Cookie headers, and the names for the audit."""

    header: str | None
    forwarded: tuple[str, ...]
    stripped: tuple[str, ...]


@dataclass(frozen=True)
class SetCookieDecision:
    """One upstream Set-Cookie: the header to pass back (None: dropped) and its audit name."""

    name: str
    header: str | None


def audit_name(name: str) -> str:
    """The name as it may appear in the audit log: a valid token, or a placeholder."""
    if not name:
        return NAMELESS
    return name if _TOKEN.fullmatch(name) else INVALID_NAME


def _unique(names: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(names))


def _audit_names(names: list[str]) -> tuple[str, ...]:
    """``names`` as the audit records them, each once: checked together in one match, one by one only when
    some name is not a valid token (no name holds ";", so the joined match checks each exactly)."""
    if not names or _TOKENS.fullmatch(";".join(names)):
        return _unique(names)
    return _unique(map(audit_name, names))


class RequestCookies(Sequence[str]):
    """A request's Cookie header values as sent, split once into the cookie-pairs that every reader shares
    (the identity stage's credentials, the allow-list): a value of the request, never changed."""

    headers: tuple[str, ...]
    """The header values as sent, in order (what the sequence holds)."""
    pairs: tuple[tuple[str, str], ...]
    """Every non-blank pair in the order sent, as (name, value) with blanks trimmed; "" names a pair without "="."""
    named: dict[str, str]
    """The value of each name that was set with "=", the last one sent winning (a cookie's value as read)."""

    def __init__(self, header_values: Iterable[str]) -> None:
        """Split ``header_values`` once."""
        self.headers = tuple(header_values)
        pairs: list[tuple[str, str]] = []
        named: dict[str, str] = {}
        for header in self.headers:
            for piece in header.split(";"):
                name, sep, value = piece.partition("=")
                if sep:
                    name, value = name.strip(" \t"), value.strip(" \t")
                    named[name] = value
                    pairs.append((name, value))
                elif piece.strip(" \t"):
                    pairs.append(("", ""))  # a pair without "=": nameless, and never a cookie's value
        self.pairs, self.named = tuple(pairs), named

    @overload
    def __getitem__(self, index: int) -> str: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[str]: ...

    def __getitem__(self, index: int | slice) -> str | Sequence[str]:
        """One header value as sent (or a slice of them)."""
        return self.headers[index]

    def __len__(self) -> int:
        """How many Cookie headers were sent."""
        return len(self.headers)

    def __iter__(self) -> Iterator[str]:
        """The header values as sent, in order."""
        return iter(self.headers)


def cookie_names(header_values: Iterable[str]) -> tuple[str, ...]:
    """The names of the cookies in a request's Cookie headers, as the audit records them: in order, once each.

    Every request's audit entry gets these, so only each name is sliced out (no value is built), unless
    the headers come split already (:class:`RequestCookies`).
    """
    if isinstance(header_values, RequestCookies):
        return _audit_names([name for name, _ in header_values.pairs])
    names: list[str] = []
    for header in header_values:
        for piece in header.split(";"):
            equals = piece.find("=")
            if equals >= 0:
                names.append(piece[:equals].strip(" \t"))
            elif piece.strip(" \t"):
                names.append("")  # a pair without "=": what filter_cookies strips as nameless
    return _audit_names(names)


def filter_cookies(header_values: Iterable[str], allowed: frozenset[str]) -> CookieDecision:
    """Keep only allowed, well-formed cookies from every Cookie header, in the order sent.

    Denies by default: a pair is forwarded only when its name is exactly an
    allowed name and its value is a well-formed cookie value.
    """
    cookies = header_values if isinstance(header_values, RequestCookies) else RequestCookies(header_values)
    forwarded_pairs: list[str] = []
    forwarded: list[str] = []
    stripped: list[str] = []
    for name, value in cookies.pairs:
        if name in allowed and _COOKIE_VALUE.fullmatch(value):
            forwarded_pairs.append(f"{name}={value}")
            forwarded.append(name)  # an allowed name comes from the config, not from the client
        else:
            stripped.append(name)
    return CookieDecision(
        header="; ".join(forwarded_pairs) or None,
        forwarded=_unique(forwarded),
        stripped=_audit_names(stripped),
    )


def cookie_value(header_values: Iterable[str], name: str) -> str | None:
    """The value of cookie ``name`` in a request's Cookie headers (the last one sent wins), outer quotes removed.

    The gateway's own credentials are read here, with the same splitting as :func:`filter_cookies`,
    instead of parsing every cookie of the request into morsels to read one.
    """
    if isinstance(header_values, RequestCookies):
        found = header_values.named.get(name)
    else:
        found = None
        for header in header_values:
            if name not in header:
                continue
            for piece in header.split(";"):
                key, sep, value = piece.partition("=")
                if sep and key.strip(" \t") == name:
                    found = value.strip(" \t")
    if found is not None and len(found) >= 2 and found[0] == found[-1] == '"':
        return found[1:-1]
    return found


def _within(host: str, domain: str) -> bool:
    """Whether ``host`` is ``domain`` or one of its subdomains."""
    return host == domain or host.endswith("." + domain)


def rewrite_set_cookie(
    header: str,
    allowed: frozenset[str],
    *,
    upstream_host: str,
    custom_domain: str,
    cookie_domain: str,
) -> SetCookieDecision:
    """Pass an upstream Set-Cookie only for an allowed name, made Secure and scoped to our domain.

    ``Domain`` that covers the custom domain without being wider than
    ``cookie_domain`` stays; one naming the upstream host becomes
    ``cookie_domain``; any other is removed, which leaves a host-only cookie.
    """
    first, *attributes = header.split(";")
    name, sep, value = first.partition("=")
    name, value = name.strip(" \t"), value.strip(" \t")
    shown = audit_name(name if sep else "")
    if not sep or name not in allowed or not _COOKIE_VALUE.fullmatch(value):
        return SetCookieDecision(shown, None)
    kept = [f"{name}={value}"]
    for attribute in attributes:
        key, _, raw = attribute.strip(" \t").partition("=")
        lowered = key.strip().lower()
        if not lowered or lowered == "secure":
            continue
        if lowered == "domain":
            domain = raw.strip().lstrip(".").lower()
            if _within(custom_domain, domain) and _within(domain, cookie_domain):
                kept.append(f"Domain={domain}")
            elif _within(upstream_host.lower(), domain):
                kept.append(f"Domain={cookie_domain}")
            continue
        kept.append(attribute.strip(" \t"))
    kept.append("Secure")
    return SetCookieDecision(shown, "; ".join(kept))

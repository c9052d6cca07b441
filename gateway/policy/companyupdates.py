"""The prevent-company-update policy: what company data in a Messenger call may reach upstream.

The Messenger's web client posts form bodies to ``/messenger/web/<endpoint>``;
the field ``user_data`` is a JSON object (``user_id``, ``email``, a JWT or a
``user_hash``, attributes) that may carry a ``company`` object or a
``companies`` array, and ``user_active_company_id`` names the company the
visitor acts for. Whoever can write that body could add themselves to another
company and so read its tickets, so this module decides, without any I/O:

- a ``company`` or ``companies`` in ``user_data`` goes upstream only when the
  JWT sent with the call signs exactly the same value for that key;
- ``user_active_company_id`` goes upstream only when it names a company the
  verified user belongs to;
- company data anywhere else in the form never goes upstream.

Everything else is denied by default. A body the Messenger would never send
(not form data, ``user_data`` twice, not a JSON object, duplicate keys) is a
:class:`BodyError`, and nothing of it is forwarded.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn
from urllib.parse import parse_qsl, urlencode

USER_DATA = "user_data"
ACTIVE_COMPANY = "user_active_company_id"
COMPANY_KEYS = ("company", "companies")
# Where a Messenger call carries its JWT inside user_data: Intercom's own name, or the user_hash field
# of a workspace that signs with JWTs.
TOKEN_KEYS = ("intercom_user_jwt", "user_hash")
MAX_FIELDS = 1000
MAX_SHOWN = 64
# A field name: a plain name, then any number of [index] groups (Rack-style nesting, read as its base name).
_FIELD_NAME = re.compile(r"[A-Za-z0-9_-]+(\[[A-Za-z0-9_-]*\])*")

Form = tuple[tuple[str, str], ...]


class BodyError(ValueError):
    """The body is not a Messenger call; ``str()`` is the reason given with the 400."""


@dataclass(frozen=True)
class Removal:
    """One field kept from upstream, and why; the audit records it as it is (field path and reason, no value)."""

    field: str
    reason: str


@dataclass(frozen=True)
class Sender:
    """What the gateway could verify about who sent the call.

    ``user_id`` is None when nobody was verified; ``signed`` holds the claims
    of the verified JWT (empty for a legacy ``user_hash`` or no token);
    ``companies`` are the ``company_id`` values the user is a member of in the
    store, the only source of truth for memberships.
    """

    user_id: str | None = None
    signed: Mapping[str, Any] | None = None
    companies: frozenset[str] = frozenset()
    emails: frozenset[str] = frozenset()
    """The verified user's email addresses, case-folded (the token's claim, the store's contact)."""


@dataclass(frozen=True)
class Verdict:
    """What may go upstream: each part of the call (query, body) with every removal applied, and the removals.

    A part with nothing removed is the very tuple that was policed, so callers can forward its original bytes.
    """

    parts: tuple[Form, ...]
    removals: tuple[Removal, ...]
    verified: bool
    """Whether the call is about the verified sender (so signed values and their companies counted)."""


def encode(form: Form) -> str:
    """A form as ``application/x-www-form-urlencoded`` text (ASCII only)."""
    return urlencode(form)


def parse_form(text: bytes | str) -> Form:
    """Parse an urlencoded body or query strictly: UTF-8, well-formed pairs, valid escapes."""
    try:
        decoded = text.decode("utf-8") if isinstance(text, bytes) else text
    except UnicodeDecodeError:
        raise BodyError("the body is not UTF-8") from None
    if not decoded:
        return ()
    if ";" in decoded:
        # SECURITY: some parsers (Rack's query parser among them) also split on ";": a field hidden from this one.
        raise BodyError("not form data (a raw ';' is ambiguous: escape it as %3B)")
    if decoded.count("&") >= MAX_FIELDS:
        raise BodyError(f"not form data (more than {MAX_FIELDS} fields)")
    try:
        pairs = parse_qsl(decoded, keep_blank_values=True, strict_parsing=True, errors="strict")
    except UnicodeDecodeError:
        raise BodyError("a percent-escape does not decode to UTF-8") from None
    except ValueError:
        # Not the parser's message: it quotes the offending text, which may be a token.
        raise BodyError("not form data (a field is empty or has no '=')") from None
    return tuple(pairs)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [key for key, _ in pairs]
    if len(set(keys)) != len(keys):
        # SECURITY: parsers disagree on which duplicate wins; the one checked must be the one upstream reads.
        raise BodyError("user_data has a key more than once")
    return dict(pairs)


def _no_constant(name: str) -> NoReturn:
    raise BodyError(f"user_data holds {name}, which is not JSON")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        # Rewritten, it would go upstream as Infinity, which is not JSON.
        raise BodyError("user_data holds a number too large for a float")
    return value


def parse_user_data(text: str) -> dict[str, Any]:
    """``user_data`` as a JSON object; anything else is a BodyError."""
    try:
        value = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant, parse_float=_finite)
    except json.JSONDecodeError as exc:
        raise BodyError(f"user_data is not JSON ({exc.msg} at column {exc.colno})") from None
    except RecursionError:
        raise BodyError("user_data is nested too deeply") from None
    except BodyError:
        raise
    except ValueError:  # an integer longer than Python's limit on digits
        raise BodyError("user_data holds a number with too many digits") from None
    if not isinstance(value, dict):
        raise BodyError("user_data is not a JSON object")
    return value


def _shown(name: str) -> str:
    """A client's field name as a reason may quote it: bounded."""
    return repr(name if len(name) <= MAX_SHOWN else name[:MAX_SHOWN] + "…")


def _base_name(name: str) -> str:
    """A form field's name as Rack-style parsers read it: ``user_data[company][id]`` is ``user_data``."""
    return name.partition("[")[0].strip().casefold()


def _is_company_key(key: str) -> bool:
    # SECURITY: case and surrounding space variants count too; removing a lookalike costs nothing.
    return key.strip().casefold() in COMPANY_KEYS


def _plain(value: object) -> dict[str, Any]:
    """Signed claims arrive frozen (read-only mappings); JSON sees them as plain objects."""
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"{type(value).__name__} is not JSON")


def _canonical(value: Any) -> str:
    """One spelling per JSON value, so "the same value" is exact (``1`` is not ``true`` nor ``1.0``)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=_plain)


def user_data_of(fields: Form) -> dict[str, Any] | None:
    """The one ``user_data`` object among ``fields``, or None without one; BodyError when it is malformed."""
    values = [value for name, value in fields if name == USER_DATA]
    if len(values) > 1:
        raise BodyError("user_data appears more than once")
    return parse_user_data(values[0]) if values else None


def police(parts: Sequence[Form], sender: Sender) -> Verdict:
    """Apply the policy to a Messenger call (its query and its body, read as one form): remove every
    company change the sender did not sign, and every active company that is not theirs."""
    fields = tuple(pair for part in parts for pair in part)
    for name, _ in fields:
        if not _FIELD_NAME.fullmatch(name):
            # SECURITY: parsers disagree on odd names (Rack 2 reads "]user_data" and "[user_data]" as
            # user_data, PHP reads "user.data" as user_data): only names every parser reads alike pass.
            raise BodyError(f"field {_shown(name)} is not accepted: names are letters, digits, _ and -")
        base = _base_name(name)
        if base in (USER_DATA, ACTIVE_COMPANY) and name != base:
            # SECURITY: user_data[companies][]=... is a nested hash to Rack-style parsers: a second, unchecked
            # channel. The Messenger sends user_data as one JSON string and nothing else.
            raise BodyError(f"field {_shown(name)} is not accepted: {base} must be one plain field")
    # SECURITY: one user_data and one active company across query and body, so the one checked is the one read.
    user_data = user_data_of(fields)
    if sum(1 for name, _ in fields if name == ACTIVE_COMPANY) > 1:
        raise BodyError("user_active_company_id appears more than once")
    same_user = _about_sender(user_data or {}, sender)
    signed = sender.signed if same_user and sender.signed is not None else {}
    removals: list[Removal] = []
    cleaned = _clean_user_data(user_data, signed, removals) if user_data is not None else None
    kept_parts = []
    for part in parts:
        kept: list[tuple[str, str]] = []
        changed = False
        for name, value in part:
            reason = None
            if name == USER_DATA and cleaned is not None:
                value, changed = json.dumps(cleaned, separators=(",", ":")), True
            elif name == ACTIVE_COMPANY:
                reason = _active_company_refusal(value, sender, same_user)
            elif _is_company_key(_base_name(name)):
                reason = "company data outside user_data"
            if reason is None:
                kept.append((name, value))
            else:
                removals.append(Removal(name, reason))
                changed = True
        kept_parts.append(tuple(kept) if changed else part)
    return Verdict(parts=tuple(kept_parts), removals=tuple(removals), verified=same_user)


def _about_sender(user_data: Mapping[str, Any], sender: Sender) -> bool:
    """Whether the call is about the verified sender: every identifier it names is theirs.

    SECURITY: a token speaks only for its own user. A call naming another user id, or an email that
    is not the user's (an upstream may look people up by email), or null for either, is unverified.
    """
    if sender.user_id is None:
        return False
    if "user_id" in user_data and user_data["user_id"] != sender.user_id:
        return False
    if "email" not in user_data:
        return True
    email = user_data["email"]
    return isinstance(email, str) and email.strip().casefold() in sender.emails


def _clean_user_data(
    user_data: dict[str, Any], signed: Mapping[str, Any], removals: list[Removal]
) -> dict[str, Any] | None:
    """``user_data`` without unsigned company keys (recording each in ``removals``), or None when all may pass."""
    dropped = []
    for key, value in user_data.items():
        if not _is_company_key(key):
            continue
        if key not in signed:
            removals.append(Removal(f"{USER_DATA}.{key}", "not signed in the JWT"))
        elif _canonical(value) != _canonical(signed[key]):
            removals.append(Removal(f"{USER_DATA}.{key}", "differs from the value signed in the JWT"))
        else:
            continue
        dropped.append(key)
    if not dropped:
        return None
    return {key: value for key, value in user_data.items() if key not in dropped}


def _active_company_refusal(value: str, sender: Sender, same_user: bool) -> str | None:
    """Why ``user_active_company_id`` may not pass, or None when it names one of the user's companies."""
    if not same_user:
        return "no verified user"
    if value not in sender.companies:
        return "not a company of the verified user"
    return None


def token_in(user_data: Mapping[str, Any] | None) -> str | None:
    """The JWT a Messenger call carries in ``user_data``, if any (a hex ``user_hash`` is not one)."""
    for key in TOKEN_KEYS:
        value = (user_data or {}).get(key)
        if isinstance(value, str) and value.count(".") == 2:
            return value
    return None

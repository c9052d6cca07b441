"""How the most lenient servers may read a request path: the tests' oracle, written apart from the gateway's code.

Each round of decoding takes ``%uXXXX`` escapes (IIS), percent-escapes as bytes, and those bytes as UTF-8
that allows overlong forms (``%c0%af`` for "/"), any byte left over as Latin-1. Each reading is then
normalized the ways servers do: NFKC (full-width letters, ligatures), case folded after upper-casing
(dotless i, long s), look-alike and back slashes as "/", ``;`` parameters and trailing dots dropped, dot
segments resolved (also spelled ``0x2e``), empty segments merged.
"""

from __future__ import annotations

import re
import unicodedata

GUARDED = ("/tickets", "/api/v1", "/admin/api", "/messenger/web")
"""The namespaces the gateway guards in the test config: the portal, the JSON API, the admin API, Messenger."""

_PERCENT_U = re.compile(r"%u([0-9a-fA-F]{4})")
_PERCENT = re.compile(rb"%([0-9a-fA-F]{2})")
_SLASHES = str.maketrans(dict.fromkeys("\\\u2215\u2044\u29f8\u2571\u29f5\u2216\u29f9\u2572\uff0f\uff3c", "/"))
ROUNDS = 3


def _utf8_leniently(data: bytes) -> str:
    """Bytes as a lenient UTF-8 decoder reads them: overlong two- and three-byte forms accepted."""
    out, index = [], 0
    while index < len(data):
        first = data[index]
        tail = data[index + 1 : index + 3]
        if 0xC0 <= first <= 0xDF and len(tail) >= 1 and 0x80 <= tail[0] <= 0xBF:
            out.append(chr(((first & 0x1F) << 6) | (tail[0] & 0x3F)))
            index += 2
        elif 0xE0 <= first <= 0xEF and len(tail) == 2 and all(0x80 <= byte <= 0xBF for byte in tail):
            out.append(chr(((first & 0x0F) << 12) | ((tail[0] & 0x3F) << 6) | (tail[1] & 0x3F)))
            index += 3
        else:
            out.append(chr(first))
            index += 1
    return "".join(out)


def decode_once(path: str) -> str:
    """One round of the most lenient percent-decoding."""
    path = _PERCENT_U.sub(lambda match: chr(int(match.group(1), 16)), path)
    data = _PERCENT.sub(lambda match: bytes([int(match.group(1), 16)]), path.encode("utf-8", "surrogateescape"))
    return _utf8_leniently(data)


def normalized(path: str) -> str:
    """One decoded reading, normalized as the most lenient server does."""
    folded = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", path).upper()).casefold()
    segments: list[str] = []
    path_only = re.split(r"[?#]", folded)[0]  # a decoded "?" or "#" ends the path for some readers
    for segment in path_only.translate(_SLASHES).split("/"):
        segment = segment.split(";")[0].replace("0x2e", ".")
        if segment.strip(".") == "" and len(segment) > 1:  # "..", and "..." as Windows reads it
            segments = segments[:-1]
            continue
        segment = segment.rstrip(". ")
        if segment:
            segments.append(segment)
    return "/" + "/".join(segments)


def readings(raw_path: str) -> set[str]:
    """Every path a lenient server may take ``raw_path`` (without its query) for."""
    out, current = set(), raw_path
    for _ in range(ROUNDS + 1):
        out.add(normalized(current))
        current = decode_once(current)
    return out


def guarded(path: str) -> bool:
    """Whether a normalized reading lies in one of the guarded namespaces."""
    return any(path == prefix or path.startswith(prefix + "/") for prefix in GUARDED)

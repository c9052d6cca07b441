"""How the portal shows times, one format everywhere: a relative age whose unit cannot be misread
("now", "21 min ago", "3 h ago", "5 d ago", "3 mo ago", "2 y ago") and the exact time ("6 Dec 2026, 14:05 UTC").

Pages show the age and put the exact time in the ``<time>`` element's ``datetime`` and ``title``
(``routes/templates/time.html``); where the date itself matters (a ticket's facts) they show both.
"""

from __future__ import annotations

from datetime import UTC, datetime

MINUTE, HOUR, DAY = 60, 3600, 86400
MONTH, YEAR = 30 * DAY, 365 * DAY
# Largest unit first: an age is told in the first unit it holds at least one of.
UNITS = ((YEAR, "y"), (MONTH, "mo"), (DAY, "d"), (HOUR, "h"), (MINUTE, "min"))


def relative(timestamp: int, now: float) -> str:
    """``now`` under a minute, else the age in its largest whole unit: ``21 min ago``, ``3 mo ago``."""
    age = max(0.0, now - timestamp)
    for seconds, unit in UNITS:
        if age >= seconds:
            return f"{int(age // seconds)} {unit} ago"
    return "now"


def exact(timestamp: int) -> str:
    """The date and minute, in UTC (the gateway knows no visitor's zone): ``6 Dec 2026, 14:05 UTC``."""
    return datetime.fromtimestamp(timestamp, UTC).strftime("%-d %b %Y, %H:%M UTC")


def iso(timestamp: int) -> str:
    """The exact time, for a ``<time datetime>`` attribute."""
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")

"""How the portal shows times: relative when recent ("now", "5m", "3h", "3d"), then a date."""

from __future__ import annotations

from datetime import UTC, datetime

MINUTE, HOUR, DAY = 60, 3600, 86400
RELATIVE_DAYS = 7


def relative(timestamp: int, now: float) -> str:
    """``now`` under a minute, then minutes, hours, days up to a week, then the date."""
    age = max(0.0, now - timestamp)
    if age < MINUTE:
        return "now"
    if age < HOUR:
        return f"{int(age // MINUTE)}m"
    if age < DAY:
        return f"{int(age // HOUR)}h"
    if age < RELATIVE_DAYS * DAY:
        return f"{int(age // DAY)}d"
    return datetime.fromtimestamp(timestamp, UTC).strftime("%-d %b %Y")


def iso(timestamp: int) -> str:
    """The exact time, for a ``<time datetime>`` attribute and tooltips."""
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")

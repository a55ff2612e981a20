"""Time helpers. All times in the SDK are POSIX seconds (UTC); days are whole UTC days."""

from __future__ import annotations

import time
from datetime import datetime, timezone

__all__ = ["DAY", "day_of", "from_iso", "now", "to_iso"]

DAY = 86_400


def now() -> float:
    """The current time in POSIX seconds."""
    return time.time()


def day_of(ts: float) -> int:
    """The UTC day number (days since 1970-01-01) that ``ts`` falls in."""
    return int(ts // DAY)


def to_iso(ts: float) -> str:
    """ISO-8601 with milliseconds and a ``Z``, as the Segment spec writes timestamps."""
    dt = datetime.fromtimestamp(ts, tz=timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def from_iso(text: str) -> float:
    """Parse an ISO-8601 timestamp (``Z`` or an offset; naive means UTC) to POSIX seconds."""
    value = text.strip()
    if value.endswith(("Z", "z")):
        value = value[:-1] + "+00:00"
    dt = datetime.fromisoformat(value)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.timestamp()

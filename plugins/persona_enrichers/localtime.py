"""Local-time enricher: the request time in the visitor's time zone.

Adds to the request context, computed from the request time (``RequestInfo.now``):

- ``hour`` (0-23), ``minute`` (0-59)
- ``weekday``: ISO day number, 1 = Monday ... 7 = Sunday; ``weekday_name``: ``"monday"``...
- ``weekend``: ``True`` on Saturday and Sunday
- ``daypart``: ``night`` (0-5 h), ``morning`` (6-11 h), ``afternoon`` (12-17 h),
  ``evening`` (18-23 h)
- ``timezone``: the IANA zone name used

The zone is the first valid IANA name among: a ``timezone`` key already in the context
(set by an earlier enricher, e.g. from a profile or a cookie), the ``X-Timezone`` request
header (e.g. sent by your front end from ``Intl.DateTimeFormat().resolvedOptions()
.timeZone``), and the configured default. Invalid names are ignored. Runs after the other
enrichers (order 200).

Settings (``PLUGINS["localtime"]``): ``default_timezone`` — IANA name, default ``"UTC"``;
an unknown zone raises ``ConfigError``. Uses the system time-zone database (install the
``tzdata`` package where there is none, e.g. on Windows).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from datetime import datetime, timezone, tzinfo
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from persona_sdk.context import RequestInfo
from persona_sdk.errors import ConfigError
from persona_sdk.hookspecs import hookimpl

__all__ = ["enrich", "persona_configure", "persona_register_enrichers", "zone"]

KEY = "localtime"
ORDER = 200
HEADER = "x-timezone"
DEFAULT_TIMEZONE = "UTC"
WEEKDAY_NAMES = (
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
    "sunday",
)

# IANA names: "Europe/Paris", "America/Argentina/Buenos_Aires", "Etc/GMT+5", "UTC".
_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_+\-]*(?:/[A-Za-z0-9_+\-]+){0,2}$")


class _Config:
    __slots__ = ("default",)

    def __init__(self, default: str = DEFAULT_TIMEZONE) -> None:
        self.default = default


_config = _Config()
_UTC = timezone.utc


@lru_cache(maxsize=1024)
def zone(name: str) -> ZoneInfo | None:
    """The ``ZoneInfo`` for an IANA name, or None if it is not a valid, known name."""
    if len(name) > 64 or not _NAME_RE.match(name):
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return None


def _section(settings: Mapping[str, Any], allowed: set[str]) -> Mapping[str, Any]:
    section = settings.get(KEY) or {}
    if not isinstance(section, Mapping):
        raise ConfigError(f"PLUGINS[{KEY!r}] must be a mapping, got {type(section).__name__}")
    unknown = sorted(set(section) - allowed)
    if unknown:
        raise ConfigError(
            f"PLUGINS[{KEY!r}]: unknown setting(s) {', '.join(map(repr, unknown))}; "
            f"known: {', '.join(sorted(allowed))}"
        )
    return section


@hookimpl
def persona_configure(settings: Mapping[str, Any]) -> None:
    """Read ``PLUGINS["localtime"]`` (see the module docstring)."""
    global _config
    section = _section(settings, {"default_timezone"})
    default = section.get("default_timezone", DEFAULT_TIMEZONE)
    if not isinstance(default, str) or zone(default) is None:
        raise ConfigError(
            f"PLUGINS[{KEY!r}]['default_timezone']: {default!r} is not a known IANA time "
            "zone name (e.g. 'Europe/Paris'); install the 'tzdata' package if this system "
            "has no time-zone database"
        )
    _config = _Config(default)


def _daypart(hour: int) -> str:
    if hour < 6:
        return "night"
    if hour < 12:
        return "morning"
    if hour < 18:
        return "afternoon"
    return "evening"


def _visitor_zone(request: RequestInfo, context: Mapping[str, Any]) -> tuple[str, tzinfo]:
    for name in (context.get("timezone"), request.headers.get(HEADER)):
        if isinstance(name, str):
            name = name.strip()
            tz = zone(name)
            if tz is not None:
                return name, tz
    default = _config.default
    return default, zone(default) or _UTC  # UTC: no tz database and never configured


def enrich(request: RequestInfo, context: dict[str, Any]) -> None:
    """Add ``hour``, ``minute``, ``weekday``, ``weekday_name``, ``weekend``, ``daypart``
    and ``timezone``."""
    now = request.now
    if not isinstance(now, (int, float)) or not math.isfinite(now):
        return
    name, tz = _visitor_zone(request, context)
    try:
        local = datetime.fromtimestamp(now, tz)
    except (OverflowError, OSError, ValueError):  # a time far outside years 1-9999
        return
    weekday = local.isoweekday()
    context["hour"] = local.hour
    context["minute"] = local.minute
    context["weekday"] = weekday
    context["weekday_name"] = WEEKDAY_NAMES[weekday - 1]
    context["weekend"] = weekday >= 6
    context["daypart"] = _daypart(local.hour)
    context["timezone"] = name


@hookimpl
def persona_register_enrichers(register: Callable[..., None]) -> None:
    register(
        "localtime",
        enrich,
        order=ORDER,
        doc="Visitor-local hour, weekday, weekend and daypart (hour, weekday, daypart...)",
    )

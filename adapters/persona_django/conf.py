"""Settings for the Django adapter: one ``PERSONA`` dict, read through :func:`get_config`.

Every key and its default::

    PERSONA = {
        # consent
        "CONSENT_MODE": "opt-in",          # or "opt-out": what an unset purpose means
        "CONSENT_MODES": {},               # per purpose, e.g. {"marketing": "opt-in"}
        "EXTRA_PURPOSES": [],              # purposes beyond the four built-in ones
        "POLICY_VERSION": "1",             # recorded with every consent decision
        # segments and slots: a dict, a path to a JSON file, or a dotted path to a callable
        "DEFINITIONS": None,
        # storage
        "CACHE_ALIAS": "default",          # hot profiles live here (locmem or Redis)
        "CACHE_TIMEOUT": 3600,             # seconds a cached profile lives
        # the visitor cookie (signed; holds only an opaque id)
        "COOKIE_NAME": "persona_id",
        "COOKIE_AGE": 365 * 24 * 3600,
        "COOKIE_SECURE": None,             # None: follow SESSION_COOKIE_SECURE
        "COOKIE_SAMESITE": "Lax",
        # behaviour
        "RECORD_PAGE_VIEWS": True,         # record a page view per HTML GET (analytics consent)
        "EDGE_TIMEOUT_MS": 800,            # edge mode: show the default after this long
        "BEACON_MAX_BYTES": 16384,         # ingest view: largest accepted body
        "BEACON_RATE_LIMIT": 60,           # ingest view: events per visitor per minute
        "CONVERSION_GOALS": ["Order Completed"],  # events that count as conversions
        "DEBUG_EXPLAIN": None,             # None: follow DEBUG; shows why a slot chose
        "PLUGINS": {},                     # settings handed to plugins (persona_configure)
    }

The getter is cached and cleared when Django's ``setting_changed`` signal fires, so
``override_settings(PERSONA={...})`` works in tests. Nothing is imported from a setting at
import time.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver

__all__ = ["CONFIG_DEFAULTS", "get_config"]

CONFIG_DEFAULTS: dict[str, Any] = {
    "CONSENT_MODE": "opt-in",
    "CONSENT_MODES": {},
    "EXTRA_PURPOSES": [],
    "POLICY_VERSION": "1",
    "DEFINITIONS": None,
    "CACHE_ALIAS": "default",
    "CACHE_TIMEOUT": 3600,
    "COOKIE_NAME": "persona_id",
    "COOKIE_AGE": 365 * 24 * 3600,
    "COOKIE_SECURE": None,
    "COOKIE_SAMESITE": "Lax",
    "RECORD_PAGE_VIEWS": True,
    "EDGE_TIMEOUT_MS": 800,
    "BEACON_MAX_BYTES": 16384,
    "BEACON_RATE_LIMIT": 60,
    "CONVERSION_GOALS": ["Order Completed"],
    "DEBUG_EXPLAIN": None,
    "PLUGINS": {},
}


@lru_cache(maxsize=1)
def get_config() -> dict[str, Any]:
    """The effective settings: defaults overlaid with ``settings.PERSONA``."""
    user = getattr(settings, "PERSONA", None) or {}
    config = dict(CONFIG_DEFAULTS)
    config.update(user)
    if config["COOKIE_SECURE"] is None:
        config["COOKIE_SECURE"] = bool(getattr(settings, "SESSION_COOKIE_SECURE", False))
    if config["DEBUG_EXPLAIN"] is None:
        config["DEBUG_EXPLAIN"] = bool(settings.DEBUG)
    return config


def unknown_keys() -> list[str]:
    user = getattr(settings, "PERSONA", None) or {}
    return sorted(set(user) - set(CONFIG_DEFAULTS))


@receiver(setting_changed)
def _reset(*, setting: str, **kwargs: Any) -> None:
    if setting in ("PERSONA", "DEBUG", "SESSION_COOKIE_SECURE", "CACHES", "DATABASES"):
        get_config.cache_clear()
        from .runtime import reset_persona

        reset_persona()

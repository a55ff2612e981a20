"""Settings of the Wagtail adapter: one optional ``PERSONA_WAGTAIL`` dict.

Every key and its default::

    PERSONA_WAGTAIL = {
        "COUNT_LIMIT": 5000,        # the rule builder's live count reads at most this many
                                    # stored profiles (then it says "at least N")
        "COUNT_BUDGET_MS": 250,     # ... and stops after this long
        "PREVIEW_SEGMENTS": None,   # None: a preview mode per segment; or a list of names
        "VERSION_CHECK_SECONDS": 1.0,  # how often a process asks the cache whether admin
                                       # segments changed elsewhere (0: every request)
    }

Conversion goals are the Django adapter's ``PERSONA["CONVERSION_GOALS"]``; the cache that
carries the segment registry's version between processes is ``PERSONA["CACHE_ALIAS"]``.
Read through :func:`get_config`, cleared on ``setting_changed`` (``override_settings`` works).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver

__all__ = ["CONFIG_DEFAULTS", "get_config"]

CONFIG_DEFAULTS: dict[str, Any] = {
    "COUNT_LIMIT": 5000,
    "COUNT_BUDGET_MS": 250,
    "PREVIEW_SEGMENTS": None,
    "VERSION_CHECK_SECONDS": 1.0,
}


@lru_cache(maxsize=1)
def get_config() -> dict[str, Any]:
    config = dict(CONFIG_DEFAULTS)
    config.update(getattr(settings, "PERSONA_WAGTAIL", None) or {})
    return config


def unknown_keys() -> list[str]:
    user = getattr(settings, "PERSONA_WAGTAIL", None) or {}
    return sorted(set(user) - set(CONFIG_DEFAULTS))


@receiver(setting_changed, dispatch_uid="persona_wagtail.conf.reset")
def _reset(*, setting: str, **kwargs: Any) -> None:
    if setting == "PERSONA_WAGTAIL":
        get_config.cache_clear()

"""The Django adapter's entry-point plugin (group ``persona_sdk``, name ``persona_django``).

It is discovered the same way a third party's plugin is, and imports nothing from Django
until a hook runs, so the core keeps working where Django is not installed. The hooks that
write to the site's database live in :mod:`persona_django.storage` and are bound to the
site's own Persona by :mod:`persona_django.runtime`.
"""

from __future__ import annotations

from typing import Any

from persona_sdk import hookimpl
from persona_sdk.checks import CheckMessage


@hookimpl
def persona_check_config(persona: Any) -> list[CheckMessage] | None:
    """When Django is configured but the app is not installed, say so."""
    try:
        from django.apps import apps
        from django.conf import settings
    except ImportError:
        return None
    if not settings.configured or not apps.ready:
        return None
    if hasattr(settings, "PERSONA") and not apps.is_installed("persona_django"):
        return [
            CheckMessage(
                "warning",
                "persona.W020",
                "settings.PERSONA is set but 'persona_django' is not in INSTALLED_APPS",
                hint="Add 'persona_django' to INSTALLED_APPS.",
            )
        ]
    return None

"""Entry-point plugin of the Wagtail adapter (group ``persona_sdk``, name ``persona_wagtail``).

It is discovered like any third party's plugin and imports nothing from Django or Wagtail at
import time. Its one hook says when Wagtail is set up but this adapter is not installed; the
adapter's own work (admin segments, the block, previews, reports) happens in the Django app
``persona_wagtail``.
"""

from __future__ import annotations

from typing import Any

from persona_sdk import hookimpl
from persona_sdk.checks import CheckMessage


@hookimpl
def persona_check_config(persona: Any) -> list[CheckMessage] | None:
    """When Wagtail is installed in the Django project but persona_wagtail is not, say so."""
    try:
        from django.apps import apps
        from django.conf import settings
    except ImportError:
        return None
    if not settings.configured or not apps.ready:
        return None
    if apps.is_installed("wagtail") and not apps.is_installed("persona_wagtail"):
        return [
            CheckMessage(
                "warning",
                "persona_wagtail.W030",
                "Wagtail is installed but 'persona_wagtail' is not: no segments in the "
                "admin, no personalized blocks",
                hint="Add 'persona_wagtail' to INSTALLED_APPS to use them.",
            )
        ]
    return None

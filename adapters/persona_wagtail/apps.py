from __future__ import annotations

from django.apps import AppConfig


class PersonaWagtailConfig(AppConfig):
    name = "persona_wagtail"
    label = "persona_wagtail"
    verbose_name = "Personalization (Wagtail)"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # system checks and the receivers that keep the segment registry current
        from . import checks, registry  # noqa: F401

from __future__ import annotations

from django.apps import AppConfig


class PersonaConfig(AppConfig):
    name = "persona_django"
    label = "persona"
    verbose_name = "Personalization"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import checks, signals  # noqa: F401  (registers checks and receivers)

from __future__ import annotations

from django.apps import AppConfig


class PersonaEmailConfig(AppConfig):
    name = "persona_email"
    label = "persona_email"
    verbose_name = "Personalization: email"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # ESP tracking webhooks (django-anymail) become profile events. Without anymail
        # installed, sending still works through any Django email backend.
        try:
            from anymail.signals import tracking
        except ImportError:
            return
        from .webhooks import on_tracking

        tracking.connect(on_tracking, dispatch_uid="persona_email.tracking")

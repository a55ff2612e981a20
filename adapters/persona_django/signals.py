"""Login merges the visitor's anonymous profile into the user's."""

from __future__ import annotations

import logging
from typing import Any

from django.contrib.auth.signals import user_logged_in
from django.dispatch import receiver
from django.http import HttpRequest

from persona_sdk import Identity

from .runtime import get_persona

log = logging.getLogger("persona_django")


@receiver(user_logged_in, dispatch_uid="persona_django.merge_on_login")
def merge_on_login(sender: Any, request: HttpRequest | None, user: Any, **kwargs: Any) -> None:
    """On login, the anonymous profile of this browser merges into the user's profile
    (history adds up, a denial of consent survives), and later events under the old
    anonymous id land on the user's profile."""
    if request is None:
        return
    rp = getattr(request, "persona", None)
    visitor_id = rp.visitor_id if rp is not None else None
    try:
        persona = rp.persona if rp is not None else get_persona()
        persona.link(
            Identity.user(str(user.pk)), Identity.anonymous(visitor_id) if visitor_id else None
        )
        if rp is not None:
            rp.refresh()
    except Exception:
        log.exception("persona: merging the anonymous profile at login failed")

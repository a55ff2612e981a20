"""Visitor history for the seed data and the tour: events with timestamps in the past,
recorded through the same SDK calls a live site makes."""

from __future__ import annotations

from typing import Any

from persona_sdk import Identity
from persona_sdk.clock import DAY, now


def seed_history(user: Any) -> None:
    """Ada: a customer for two months, visits weekly, three orders, loves bags."""
    from persona_django.runtime import get_persona

    persona = get_persona()
    identity = Identity.user(str(user.pk))
    if persona.profile_for(identity) is not None:
        return
    t = now()
    persona.set_consent(identity, {"personalization": True, "analytics": True, "marketing": True},
                        source="signup", at=t - 60 * DAY)
    persona.identify(user_id=str(user.pk), email=user.email, traits={"first_name": "Ada"},
                     timestamp=t - 60 * DAY)
    for days_ago in (60, 45, 30, 21, 14, 9, 5, 3, 1):
        when = t - days_ago * DAY
        persona.page(user_id=str(user.pk), properties={"path": "/"}, timestamp=when)
        persona.track("Product Viewed", {"category": "bags"}, user_id=str(user.pk), timestamp=when + 60)
    for days_ago, amount in ((45, 149.0), (21, 119.0), (5, 59.0)):
        persona.track("Order Completed", {"revenue": amount, "products": [{"category": "bags"}]},
                      user_id=str(user.pk), timestamp=t - days_ago * DAY + 120)

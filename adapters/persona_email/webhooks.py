"""Email events back into profiles, from django-anymail's tracking webhooks.

Mount anymail's URLs (``path("anymail/", include("anymail.urls"))``) and point the ESP's
event webhook at ``/anymail/<esp>/tracking/`` with the basic auth of
``ANYMAIL["WEBHOOK_SECRET"]``. The app connects :func:`on_tracking` to
``anymail.signals.tracking``; each normalized event becomes a profile event:

============== ========================= =====================================================
anymail        tracked as                also
============== ========================= =====================================================
opened         ``Email Opened``
clicked        ``Email Link Clicked``    a conversion for the (slot, variant) the link was in
delivered      ``Email Delivered``
bounced        ``Email Bounced``
unsubscribed   ``Unsubscribed``          ``marketing`` denied in the consent ledger
complained     ``Email Marked as Spam``  ``marketing`` denied in the consent ledger
============== ========================= =====================================================

Other event types are ignored. Who it is: the profile id the message carried (anymail
metadata ``persona_profile``, or the click parameter of a tracked link), else the recipient's
email identity. Events are deduplicated by the ESP's event id (a webhook retried by the ESP
is applied once). The consent denial is recorded whatever the ``analytics`` consent (it is the
person's choice); the event itself, like every profile write, needs ``analytics``.

A click on a tracked link (see :mod:`persona_email.sending`) whose event was applied adds
:class:`persona_django.models.Conversion` rows with channel ``email`` and goal
``Email Link Clicked``: one for the (slot, variant) of the branch the link was in and one
without a slot (overall), the way the Django adapter counts web conversions, so the same
experiment reports show both channels.
"""

from __future__ import annotations

import hashlib
import logging
from datetime import datetime, timezone
from typing import Any

from persona_sdk import Identity, Persona, Profile
from persona_sdk.consent import ConsentState
from persona_sdk.errors import IdentityError
from persona_sdk.stores import update_profile

from .plugin import CLICK_EVENT
from .sending import _strip_param, read_click_token

__all__ = ["EVENT_NAMES", "handle_tracking_event", "on_tracking"]

log = logging.getLogger("persona_email")

#: anymail's normalized event type → the profile event recorded (Segment's email spec names)
EVENT_NAMES = {
    "opened": "Email Opened",
    "clicked": CLICK_EVENT,
    "delivered": "Email Delivered",
    "bounced": "Email Bounced",
    "unsubscribed": "Unsubscribed",
    "complained": "Email Marked as Spam",
}
DENIES_MARKETING = frozenset({"unsubscribed", "complained"})


def on_tracking(sender: Any, event: Any, esp_name: str, **kwargs: Any) -> None:
    """``anymail.signals.tracking`` receiver. An exception here makes anymail answer 500,
    so the ESP retries the batch (applied events are deduplicated)."""
    from persona_django.runtime import get_persona

    handle_tracking_event(event, esp_name, persona=get_persona())


def _message_id(event: Any, esp_name: str) -> str:
    basis = event.event_id or "|".join(
        str(x)
        for x in (
            event.event_type,
            event.message_id,
            event.recipient,
            event.timestamp,
            event.click_url,
        )
    )
    digest = hashlib.sha256(f"{esp_name}\x00{basis}".encode()).hexdigest()[:40]
    return f"esp-{digest}"


def _find_profile(persona: Persona, event: Any, token: dict[str, Any] | None) -> Profile | None:
    candidates: list[str] = []
    if token and token.get("profile_id"):
        candidates.append(str(token["profile_id"]))
    metadata = getattr(event, "metadata", None) or {}
    if isinstance(metadata.get("persona_profile"), str):
        candidates.append(metadata["persona_profile"])
    for pid in candidates:
        real = persona.store.resolve_id(pid)
        profile = persona.store.load(real) if real else None
        if profile is not None:
            return profile
    if event.recipient:
        try:
            identity = Identity.email(event.recipient)
        except IdentityError:
            return None
        pid = persona.store.lookup(identity)
        return persona.store.load(pid) if pid else None
    return None


def _identity_of(persona: Persona, profile: Profile) -> Identity | None:
    """An identity that resolves to ``profile`` (for ``set_consent``): user, email,
    anonymous, in that order."""
    order = {"user": 0, "email": 1, "anonymous": 2, "external": 3}
    for identity in sorted(profile.identities, key=lambda i: (order[i.kind.value], i.key)):
        if persona.store.lookup(identity) == profile.id:
            return identity
    return None


def _event_ids(persona: Persona, profile: Profile) -> dict[str, str]:
    """``user_id`` / ``anonymous_id`` that ``ingest`` resolves to ``profile``. A profile
    known only by email gets its own id as an anonymous identity first."""
    users = sorted(i.value for i in profile.identities if i.kind.value == "user")
    if users:
        return {"user_id": users[0]}
    anonymous = sorted(i.value for i in profile.identities if i.kind.value == "anonymous")
    if anonymous:
        return {"anonymous_id": anonymous[0]}
    own = Identity.anonymous(profile.id)
    update_profile(persona.store, profile.id, lambda p: p.identities.add(own))
    return {"anonymous_id": profile.id}


def handle_tracking_event(event: Any, esp_name: str, *, persona: Persona) -> str:
    """Apply one normalized anymail tracking event; returns what was done (for logs/tests):
    ``ignored``, ``unknown recipient``, ``recorded``, ``duplicate``, ``no consent``."""
    event_type = getattr(event, "event_type", None)
    name = EVENT_NAMES.get(str(event_type))
    if name is None:
        return "ignored"
    token = read_click_token(event.click_url) if event_type == "clicked" else None
    profile = _find_profile(persona, event, token)
    if profile is None:
        log.info("persona_email: %s %s event for an unknown recipient", esp_name, event_type)
        return "unknown recipient"
    when = event.timestamp.timestamp() if isinstance(event.timestamp, datetime) else None

    if event_type in DENIES_MARKETING and (
        profile.consent_state("marketing") is not ConsentState.DENIED
    ):
        identity = _identity_of(persona, profile)
        if identity is not None:
            profile = persona.set_consent(
                identity, {"marketing": "denied"}, source=f"esp:{event_type}", at=when
            )

    metadata = getattr(event, "metadata", None) or {}
    properties: dict[str, Any] = {"esp": esp_name}
    campaign = (token or {}).get("campaign") or metadata.get("persona_campaign")
    if campaign:
        properties["campaign"] = str(campaign)
    if event.message_id:
        properties["message_id"] = str(event.message_id)[:200]
    if event_type == "clicked" and event.click_url:
        properties["url"] = _strip_param(event.click_url)[:1000]
        if token and token.get("slot"):
            properties["slot"] = token["slot"]
            properties["variant"] = token["variant"]
    if event_type == "bounced":
        for key in ("reject_reason", "mta_response"):
            value = getattr(event, key, None)
            if value:
                properties[key] = str(value)[:500]
    result = persona.track(
        name,
        properties,
        context={"channel": "email"},
        message_id=_message_id(event, esp_name),
        timestamp=when,
        **_event_ids(persona, profile),
    )
    if not result.applied:
        return "duplicate" if result.reason == "duplicate" else "no consent"
    if event_type == "clicked" and token is not None and result.profile is not None:
        _count_click(result.profile, token, when)
    return "recorded"


def _count_click(profile: Profile, token: dict[str, Any], when: float | None) -> None:
    try:
        from django.apps import apps

        if not apps.is_installed("persona_django"):
            return
        from persona_django.models import Conversion
    except ImportError:
        return
    at = datetime.fromtimestamp(when, tz=timezone.utc) if when else datetime.now(timezone.utc)
    rows = [Conversion(profile_id=profile.id, goal=CLICK_EVENT, value=0.0, channel="email", at=at)]
    if token.get("slot") and token.get("variant"):
        rows.append(
            Conversion(
                profile_id=profile.id,
                goal=CLICK_EVENT,
                value=0.0,
                channel="email",
                at=at,
                slot=str(token["slot"])[:200],
                variant=str(token["variant"])[:200],
            )
        )
    Conversion.objects.bulk_create(rows)

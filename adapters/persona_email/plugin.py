"""The email adapter's entry-point plugin (group ``persona_sdk``, name ``persona_email``).

Imports nothing from Django, ``requests`` or anymail at import time, so the core keeps
working where they are not installed; the vendor modules are imported only when a vendor
is configured.

* ``persona_configure`` reads ``settings["klaviyo"]`` and ``settings["mailchimp"]``
  (see :mod:`persona_email.config`); ``persona_register_sinks`` registers the
  ``email.klaviyo`` / ``email.mailchimp`` sinks only for the vendors configured.
* ``persona_segment_entered`` / ``persona_segment_exited`` queue one outbox item per
  configured vendor mapping that segment (real-time activation); the worker
  (``manage.py persona_deliver``) delivers them, honouring each vendor's limits.
* ``persona_consent_changed`` (``marketing``) queues the change for the vendors: a denial
  unsubscribes the person there too, a grant subscribes them to the lists of the segments
  they are in.
* ``persona_erase`` asks the vendors to delete the person (Klaviyo's data-privacy deletion,
  Mailchimp's permanent delete) and deletes the campaign send log rows.
* ``persona_check_config`` reports missing keys and unmapped segments with hints.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from persona_sdk import hookimpl
from persona_sdk.checks import CheckMessage
from persona_sdk.consent import ConsentState

from . import audience
from .config import KlaviyoConfig, MailchimpConfig, parse_klaviyo, parse_mailchimp

if TYPE_CHECKING:
    from persona_sdk import Identity, Persona, Profile
    from persona_sdk.consent import LedgerEntry

log = logging.getLogger("persona_email")

#: The event a tracked email click is recorded as (Segment's email spec name); it is also
#: the conversion goal clicks are counted under (see :mod:`persona_email.webhooks`).
CLICK_EVENT = "Email Link Clicked"

_pending = threading.local()
_last_problems: list[CheckMessage] = []


@hookimpl
def persona_configure(settings: Mapping[str, Any]) -> None:
    global _last_problems
    klaviyo, k_problems = parse_klaviyo(settings)
    mailchimp, m_problems = parse_mailchimp(settings)
    _pending.configs = (klaviyo, mailchimp)
    _last_problems = k_problems + m_problems


@hookimpl
def persona_register_sinks(register: Any, persona: Persona) -> None:
    klaviyo, mailchimp = getattr(_pending, "configs", (None, None))
    _pending.configs = (None, None)
    if isinstance(klaviyo, KlaviyoConfig):
        from .klaviyo import KlaviyoSink

        register(KlaviyoSink(klaviyo, persona))
    if isinstance(mailchimp, MailchimpConfig):
        from .mailchimp import MailchimpSink

        register(MailchimpSink(mailchimp, persona))


# -- real-time activation ------------------------------------------------------------------
def _queue(profile: Profile, segment: str, at: float, entered: bool, persona: Persona) -> None:
    sinks = [s for s in audience.our_sinks(persona) if segment in s.config.segments]
    if persona is None or not sinks:
        return
    if audience.email_of(profile) is None:
        # nothing to sync yet; `persona_sync_audiences` picks them up once they have one
        return
    op = "enter" if entered else "exit"
    now = persona.clock()
    items = [
        audience.make_item(
            sink,
            profile,
            op=op,
            segments={segment: entered},
            at=at,
            key=f"{op}:{segment}:{at!r}",
            now=now,
        )
        for sink in sinks
        if all(persona.may(profile, p) for p in sink.purposes)
    ]
    if items:
        try:
            persona.outbox.enqueue(items)
        except Exception:
            log.exception("persona_email: queueing the %s of segment %r failed", op, segment)


@hookimpl
def persona_segment_entered(profile: Profile, segment: str, at: float, persona: Persona) -> None:
    _queue(profile, segment, at, True, persona)


@hookimpl
def persona_segment_exited(profile: Profile, segment: str, at: float, persona: Persona) -> None:
    _queue(profile, segment, at, False, persona)


@hookimpl
def persona_consent_changed(
    profile: Profile,
    purpose: str,
    old: ConsentState,
    new: ConsentState,
    entry: LedgerEntry,
    persona: Persona,
) -> None:
    """A ``marketing`` choice reaches the vendors: a denial unsubscribes the person there
    (queued whatever the ``sharing`` consent: it only ever removes), a grant subscribes
    them to the lists of the mapped segments they are in."""
    if purpose != "marketing" or new is old or new is ConsentState.UNSET:
        return
    sinks = audience.our_sinks(persona)
    if persona is None or not sinks or audience.email_of(profile) is None:
        return
    items = []
    for sink in sinks:
        if new is ConsentState.GRANTED:
            if not all(persona.may(profile, p) for p in sink.purposes):
                continue
            segments = {s: True for s in sink.config.segments if s in profile.segments}
        else:
            segments = {}
        item = audience.make_item(
            sink,
            profile,
            op="consent",
            segments=segments,
            at=entry.at,
            key=f"consent:{new.value}:{entry.at!r}",
            now=persona.clock(),
        )
        if new is ConsentState.DENIED:
            item = _with_purposes(item, ())
        items.append(item)
    if items:
        try:
            persona.outbox.enqueue(items)
        except Exception:
            log.exception("persona_email: queueing the marketing consent change failed")


def _with_purposes(item: Any, purposes: tuple[str, ...]) -> Any:
    import attrs

    return attrs.evolve(item, purposes=purposes)


# -- erasure, export, merge ----------------------------------------------------------------
def _django_persona(persona: Persona | None) -> bool:
    """Is ``persona`` the Django site's (its store is the database one)? Only then is the
    campaign send log in play."""
    return persona is not None and type(persona.store).__module__ == "persona_django.stores"


def _send_log() -> Any:
    try:
        from django.apps import apps
    except ImportError:
        return None
    if not apps.ready or not apps.is_installed("persona_email"):
        return None
    from .models import CampaignSend

    return CampaignSend


@hookimpl
def persona_erase(
    profile: Profile, identities: Sequence[Identity], persona: Persona
) -> Mapping[str, Any] | None:
    """Ask each configured vendor to delete the person, now (not through the outbox: the
    erasure purges the person's outbox items, and an item needs the profile to be
    delivered), and delete their campaign send log rows.

    Klaviyo: ``POST /api/data-privacy-deletion-jobs`` (202; deletes every profile with the
    email, asynchronously). Mailchimp: ``POST /lists/{list_id}/members/{md5}/actions/
    delete-permanent`` (204; 404 = not there, fine). A vendor that fails is reported as
    ``failed: ...`` in the erase report and logged: run the erasure again later.
    """
    report: dict[str, Any] = {}
    model = _send_log() if _django_persona(persona) else None
    if model is not None:
        ids = [profile.id, *sorted(profile.aliases)]
        deleted, _ = model.objects.filter(profile_id__in=ids).delete()
        report["send_log_deleted"] = deleted
    sinks = audience.our_sinks(persona)
    email = audience.email_of(profile)
    for sink in sinks:
        if email is None:
            report[sink.vendor] = "skipped: the profile has no email address"
            continue
        try:
            report[sink.vendor] = sink.erase(email)
        except Exception as exc:  # never let one vendor stop the erasure
            log.exception("persona_email: %s erasure failed", sink.vendor)
            report[sink.vendor] = f"failed: {type(exc).__name__}: {exc}"
    if not sinks and not report.get("send_log_deleted"):
        return None
    return {"adapter": "persona_email", **report}


@hookimpl
def persona_export(profile: Profile, persona: Persona) -> Mapping[str, Any] | None:
    model = _send_log() if _django_persona(persona) else None
    if model is None:
        return None
    rows = list(
        model.objects.filter(profile_id__in=[profile.id, *sorted(profile.aliases)])
        .order_by("created_at")
        .values("campaign", "status", "reason", "variants", "created_at")
    )
    return {"email_campaigns": rows} if rows else None


@hookimpl
def persona_profile_merged(into: Profile, merged_id: str, persona: Persona) -> None:
    model = _send_log() if _django_persona(persona) else None
    if model is None:
        return
    taken = set(model.objects.filter(profile_id=into.id).values_list("campaign", flat=True))
    rows = model.objects.filter(profile_id=merged_id)
    rows.exclude(campaign__in=taken).update(profile_id=into.id)
    rows.filter(campaign__in=taken).delete()


# -- checks --------------------------------------------------------------------------------
def _current_problems(persona: Persona) -> list[CheckMessage]:
    if _django_persona(persona):
        try:
            from persona_django.conf import get_config

            settings = get_config()["PLUGINS"] or {}
            return parse_klaviyo(settings)[1] + parse_mailchimp(settings)[1]
        except Exception as exc:
            return [
                CheckMessage(
                    "error",
                    "persona_email.E009",
                    f"email adapter settings do not load: {exc}",
                    hint='PERSONA["PLUGINS"]["klaviyo"] and ["mailchimp"] must be dicts',
                )
            ]
    return list(_last_problems)


@hookimpl
def persona_check_config(persona: Persona) -> list[CheckMessage] | None:
    messages = _current_problems(persona)
    for sink in audience.our_sinks(persona):
        for segment in sink.config.segments:
            if segment not in persona.segments:
                messages.append(
                    CheckMessage(
                        "warning",
                        "persona_email.W001",
                        f"{sink.vendor} maps segment {segment!r}, which is not defined",
                        hint="Define it in PERSONA['DEFINITIONS'] or remove it from the "
                        f"{sink.vendor} mapping; nobody is synced to it.",
                    )
                )
            elif segment not in persona.segments.profile_segments:
                messages.append(
                    CheckMessage(
                        "warning",
                        "persona_email.W002",
                        f"{sink.vendor} maps segment {segment!r}, which depends on the request "
                        "context (device, campaign, time...)",
                        hint="Only segments over the profile are synced as people enter and "
                        "leave them; map a profile segment instead.",
                    )
                )
    if CLICK_EVENT in persona.conversion_goals:
        messages.append(
            CheckMessage(
                "warning",
                "persona_email.W003",
                f"{CLICK_EVENT!r} is in CONVERSION_GOALS, so email clicks would be counted twice",
                hint="The email adapter already records a click conversion for the slot and "
                "variant the link was in; remove it from CONVERSION_GOALS.",
            )
        )
    return messages or None

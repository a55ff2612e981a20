"""Audience sync, vendor-neutral: the outbox items the plugin queues and the helpers the
Klaviyo and Mailchimp sinks share.

Pure Python (no Django, no ``requests``), so the entry-point plugin can use it at start-up.

An item's ``payload`` (sink names ``email.klaviyo`` / ``email.mailchimp``)::

    {"kind": "persona_email.audience", "v": 1,
     "op": "enter" | "exit" | "state" | "consent",
     "email": "ada@example.com",          # the address when queued
     "external_id": "<profile id>",
     "segments": {"vip": true},           # mapped segments and whether the person is in
     "consent": "granted" | "denied" | "unset",   # marketing consent when queued
     "at": 1767225600.0}

``enter``/``exit`` come from the segment hooks (one segment), ``state`` from the reconcile
command (every mapped segment), ``consent`` from a ``marketing`` consent change (no segment).
At delivery the sinks re-read the profile when they can (email and marketing consent as they
are *now*: a later unsubscribe is never undone by an older item); the payload is the
fallback, e.g. for a profile erased since.
"""

from __future__ import annotations

import hashlib
import math
import time
import weakref
from collections.abc import Iterable, Mapping, Sequence
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any

import attrs

from persona_sdk.identity import normalize_email
from persona_sdk.outbox import DeliveryResult, OutboxItem, item_id

if TYPE_CHECKING:
    from persona_sdk import Persona, Profile

__all__ = [
    "KIND",
    "Outcome",
    "SyncState",
    "bind",
    "bound_persona",
    "current_state",
    "email_of",
    "make_item",
    "marketing_state",
    "our_sinks",
    "retry_after_seconds",
]

KIND = "persona_email.audience"

_bound: weakref.ref[Persona] | None = None


def bind(persona: Persona | None) -> None:
    """Tell the adapter which :class:`~persona_sdk.Persona` a sink built by hand (outside
    ``persona_register_sinks``, which passes the Persona) should use. ``bind(None)``
    forgets it."""
    global _bound
    _bound = None if persona is None else weakref.ref(persona)


def bound_persona() -> Persona | None:
    """The Persona :func:`bind` named, if any (for sinks built outside a Persona)."""
    return _bound() if _bound is not None else None


def our_sinks(persona: Persona | None) -> list[Any]:
    """The email adapter's sinks registered on ``persona`` (Klaviyo, Mailchimp)."""
    if persona is None:
        return []
    return [s for s in persona.registry.sinks.values() if getattr(s, "persona_email_sink", False)]


def email_of(profile: Profile) -> str | None:
    """The profile's email address (the ``email`` trait, normalized), or None."""
    trait = profile.traits.get("email")
    value = trait.value if trait is not None else None
    if not isinstance(value, str):
        return None
    try:
        return normalize_email(value)
    except Exception:
        return None


def marketing_state(profile: Profile) -> str:
    """``granted`` / ``denied`` / ``unset``: the *recorded* marketing choice (a vendor
    subscription carries consent only when it was explicitly granted)."""
    return str(profile.consent_state("marketing").value)


@attrs.frozen
class SyncState:
    """What one item asks a vendor to make true about one person."""

    email: str | None
    external_id: str
    consent: str
    #: mapped segment -> member or not (only the segments this item is about)
    segments: Mapping[str, bool]
    op: str
    #: trait values of the profile when it could be loaded (for vendor merge fields)
    traits: Mapping[str, Any] = attrs.field(factory=dict)


def current_state(item: OutboxItem, persona: Persona | None) -> SyncState:
    """The item's state, with email and consent refreshed from the profile when it can be
    loaded (so an unsubscribe recorded after the item was queued wins)."""
    payload = item.payload
    email = payload.get("email")
    consent = str(payload.get("consent", "unset"))
    profile = None
    if persona is not None:
        try:
            profile = persona.store.load(item.profile_id)
        except Exception:
            profile = None
        if profile is not None:
            email = email_of(profile) or email
            consent = marketing_state(profile)
    segments = payload.get("segments") or {}
    traits = {k: t.value for k, t in profile.traits.items()} if profile is not None else {}
    return SyncState(
        email=email if isinstance(email, str) and email else None,
        external_id=str(payload.get("external_id") or item.profile_id),
        consent=consent if consent in ("granted", "denied", "unset") else "unset",
        segments={str(k): bool(v) for k, v in segments.items()},
        op=str(payload.get("op", "state")),
        traits=traits,
    )


def make_item(
    sink: Any,
    profile: Profile,
    *,
    op: str,
    segments: Mapping[str, bool],
    at: float,
    key: str,
    now: float | None = None,
) -> OutboxItem:
    """An outbox item for ``sink`` about ``profile``. ``key`` makes the message id (and so
    the item id) stable: the same transition queued twice is stored once."""
    message_id = (
        "pe-" + hashlib.sha256(f"{sink.name}\x00{profile.id}\x00{key}".encode()).hexdigest()[:40]
    )
    when = time.time() if now is None else now
    return OutboxItem(
        id=item_id(message_id, sink.name),
        sink=sink.name,
        message_id=message_id,
        profile_id=profile.id,
        payload={
            "kind": KIND,
            "v": 1,
            "op": op,
            "email": email_of(profile),
            "external_id": profile.id,
            "segments": dict(segments),
            "consent": marketing_state(profile),
            "at": at,
        },
        purposes=tuple(sink.purposes),
        created_at=when,
        next_attempt_at=when,
    )


def retry_after_seconds(value: str | None, *, now: float | None = None) -> float:
    """``Retry-After`` as seconds: delay-seconds or an HTTP-date (RFC 9110 §10.2.3)."""
    if not value:
        return 0.0
    value = value.strip()
    try:
        seconds = float(value)
        return seconds if math.isfinite(seconds) and seconds > 0 else 0.0
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return 0.0
    return max(0.0, when - (time.time() if now is None else now))


@attrs.define
class Outcome:
    """Per-item results of one ``deliver`` call, combined over the several vendor calls an
    item may need: a failure beats a retry, which beats success."""

    items: Sequence[OutboxItem]
    _failed: dict[str, str] = attrs.Factory(dict)
    _retry: dict[str, float] = attrs.Factory(dict)
    _backoff: set[str] = attrs.Factory(set)
    _planned: dict[str, int] = attrs.Factory(dict)
    _completed: dict[str, int] = attrs.Factory(dict)

    def plan(self, item_id: str) -> None:
        """One more vendor action this item needs."""
        self._planned[item_id] = self._planned.get(item_id, 0) + 1

    def complete(self, ids: Iterable[str]) -> None:
        """One of their actions succeeded."""
        for i in ids:
            self._completed[i] = self._completed.get(i, 0) + 1

    def unsettled(self) -> list[str]:
        """Items with actions neither done nor failed (e.g. when a 429 stopped the batch)."""
        return [
            i
            for i, n in self._planned.items()
            if self._completed.get(i, 0) < n and i not in self._failed
        ]

    def fail(self, ids: Iterable[str], message: str) -> None:
        for i in ids:
            self._failed.setdefault(i, message[:500])

    def retry(self, ids: Iterable[str], delay: float = 0.0) -> None:
        for i in ids:
            self._retry[i] = max(delay, self._retry.get(i, 0.0))

    def backoff(self, ids: Iterable[str]) -> None:
        """Retry later with the outbox's own backoff (5xx, network errors)."""
        self._backoff.update(ids)

    def result(self) -> DeliveryResult:
        failed = dict(self._failed)
        retry = {i: d for i, d in self._retry.items() if i not in failed}
        pending = set(failed) | set(retry) | self._backoff
        delivered = frozenset(i.id for i in self.items if i.id not in pending)
        return DeliveryResult(delivered=delivered, retry=retry, failed=failed)


def error_message(vendor: str, status: int, body: Any) -> str:
    """The vendor's own words for an error response (JSON:API ``errors``, problem+json,
    SendGrid-style ``errors``), prefixed with the status."""
    text = ""
    if isinstance(body, Mapping):
        errors = body.get("errors")
        first = errors[0] if isinstance(errors, list) and errors else None
        if body.get("title") or body.get("detail"):  # problem+json (Mailchimp)
            text = ": ".join(str(body[k]) for k in ("title", "detail") if body.get(k))
            if isinstance(first, Mapping) and first.get("field"):
                text += f" ({first['field']}: {first.get('message', '')})"
        elif isinstance(first, Mapping):  # JSON:API (Klaviyo), SendGrid
            parts = [str(first.get(k)) for k in ("title", "detail", "message") if first.get(k)]
            text = ": ".join(parts)
            pointer = (
                (first.get("source") or {}).get("pointer")
                if isinstance(first.get("source"), Mapping)
                else None
            )
            if pointer:
                text += f" ({pointer})"
    elif isinstance(body, str):
        text = body.strip()[:300]
    return f"{vendor} {status}" + (f" {text}" if text else "")

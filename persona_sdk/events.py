"""Events in the spirit of the Segment spec, and how they build the profile.

Four kinds: ``track`` (something happened), ``identify`` (who it is, with traits),
``page`` (a page view) and ``alias`` (two ids are one person). Each has a ``message_id``
(generated when absent; the outbox and every adapter deduplicate on it), a timestamp and a
free ``context``.

:func:`apply_event` updates a profile in place, synchronously: the next decision sees it.
Validation happens in :meth:`Event.create` / :meth:`Event.from_payload`, before anything is
applied, so a bad event changes nothing.
"""

from __future__ import annotations

import json
import math
import re
import uuid
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Literal

import attrs

from .clock import day_of, from_iso, now, to_iso
from .errors import EventError, IdentityError
from .identity import Identity
from .profile import MAX_AFFINITIES, MAX_EVENT_NAMES, RECENT_IDS, Affinity, EventStats, Profile

__all__ = [
    "EVENT_TYPES",
    "MAX_EVENT_BYTES",
    "BehaviourConfig",
    "Event",
    "apply_event",
]

EventType = Literal["track", "identify", "page", "alias"]
EVENT_TYPES: tuple[str, ...] = ("track", "identify", "page", "alias")
#: Segment's own per-message limit; an event larger than this is refused at the boundary.
MAX_EVENT_BYTES = 32 * 1024
MAX_NAME_LENGTH = 200
MAX_MESSAGE_ID_LENGTH = 100
_TRAIT_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]{0,99}$")
_EMPTY: Mapping[str, Any] = MappingProxyType({})


def _frozen_mapping(value: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return _EMPTY if not value else MappingProxyType(dict(value))


@attrs.frozen
class Event:
    """One validated event. Build with :meth:`create` or :meth:`from_payload`."""

    type: EventType
    message_id: str
    timestamp: float
    anonymous_id: str | None = None
    user_id: str | None = None
    event: str | None = None
    name: str | None = None
    properties: Mapping[str, Any] = attrs.field(default=_EMPTY, converter=_frozen_mapping)
    traits: Mapping[str, Any] = attrs.field(default=_EMPTY, converter=_frozen_mapping)
    context: Mapping[str, Any] = attrs.field(default=_EMPTY, converter=_frozen_mapping)
    previous_id: str | None = None

    @classmethod
    def create(
        cls,
        type: str,
        *,
        anonymous_id: str | None = None,
        user_id: str | None = None,
        event: str | None = None,
        name: str | None = None,
        properties: Mapping[str, Any] | None = None,
        traits: Mapping[str, Any] | None = None,
        context: Mapping[str, Any] | None = None,
        previous_id: str | None = None,
        message_id: str | None = None,
        timestamp: float | None = None,
        max_bytes: int = MAX_EVENT_BYTES,
    ) -> Event:
        """Validate and build an event; raise :class:`EventError` saying what is wrong."""
        if type not in EVENT_TYPES:
            raise EventError(f"event type must be one of {', '.join(EVENT_TYPES)}, got {type!r}")
        if anonymous_id is None and user_id is None:
            raise EventError("an event needs an anonymous_id or a user_id")
        try:
            if anonymous_id is not None:
                Identity.anonymous(anonymous_id)
            if user_id is not None:
                Identity.user(user_id)
            if previous_id is not None:
                Identity.anonymous(previous_id)
        except IdentityError as exc:
            raise EventError(str(exc)) from None
        if message_id is None:
            message_id = uuid.uuid4().hex
        elif not isinstance(message_id, str) or not 0 < len(message_id) <= MAX_MESSAGE_ID_LENGTH:
            raise EventError(f"message_id must be a string of 1-{MAX_MESSAGE_ID_LENGTH} characters")
        if timestamp is None:
            timestamp = now()
        elif (
            isinstance(timestamp, bool)
            or not isinstance(timestamp, (int, float))
            or not math.isfinite(timestamp)
        ):
            raise EventError(f"timestamp must be POSIX seconds, got {timestamp!r}")
        if type == "track":
            _check_name(event, "a track event's name (event)")
        elif event is not None:
            raise EventError(f"only track events have an event name; a {type} event got {event!r}")
        if type == "alias" and previous_id is None:
            raise EventError("an alias event needs previous_id")
        if name is not None:
            _check_name(name, "a page name")
        for label, value in (("properties", properties), ("traits", traits), ("context", context)):
            if value is not None and not isinstance(value, Mapping):
                raise EventError(f"{label} must be an object, got {value.__class__.__name__}")
        if traits:
            for key in traits:
                if not isinstance(key, str) or not _TRAIT_NAME.match(key):
                    raise EventError(
                        f"trait names are 1-100 letters, digits, '_', '.', '-' and start with a "
                        f"letter or '_', got {key!r}"
                    )
        made = cls(
            type,  # type: ignore[arg-type]
            message_id,
            float(timestamp),
            anonymous_id,
            user_id,
            event,
            name,
            properties,
            traits,
            context,
            previous_id,
        )
        size = made.size()
        if size > max_bytes:
            raise EventError(f"event is {size} bytes, over the {max_bytes}-byte limit")
        return made

    @classmethod
    def from_payload(cls, payload: Any, *, max_bytes: int = MAX_EVENT_BYTES) -> Event:
        """Read a Segment-spec JSON object (``type``, ``userId``, ``anonymousId``,
        ``messageId``, ``timestamp`` ISO-8601, ``event``, ``name``, ``properties``,
        ``traits``, ``context``, ``previousId``)."""
        if not isinstance(payload, Mapping):
            raise EventError(f"an event is a JSON object, got {type(payload).__name__}")
        known = {
            "type",
            "userId",
            "anonymousId",
            "messageId",
            "timestamp",
            "event",
            "name",
            "properties",
            "traits",
            "context",
            "previousId",
            "sentAt",
            "integrations",
        }
        unknown = sorted(set(payload) - known)
        if unknown:
            raise EventError(f"unknown event field(s): {', '.join(map(str, unknown))}")
        ts = payload.get("timestamp")
        timestamp: float | None
        if ts is None:
            timestamp = None
        elif isinstance(ts, str):
            try:
                timestamp = from_iso(ts)
            except ValueError:
                raise EventError(f"timestamp is not ISO-8601: {ts!r}") from None
        else:
            raise EventError("timestamp must be an ISO-8601 string")
        return cls.create(
            payload.get("type"),  # type: ignore[arg-type]
            anonymous_id=payload.get("anonymousId"),
            user_id=payload.get("userId"),
            event=payload.get("event"),
            name=payload.get("name"),
            properties=payload.get("properties"),
            traits=payload.get("traits"),
            context=payload.get("context"),
            previous_id=payload.get("previousId"),
            message_id=payload.get("messageId"),
            timestamp=timestamp,
            max_bytes=max_bytes,
        )

    def to_payload(self) -> dict[str, Any]:
        """The Segment-spec JSON form (what sinks and the outbox carry)."""
        out: dict[str, Any] = {
            "type": self.type,
            "messageId": self.message_id,
            "timestamp": to_iso(self.timestamp),
        }
        if self.anonymous_id is not None:
            out["anonymousId"] = self.anonymous_id
        if self.user_id is not None:
            out["userId"] = self.user_id
        if self.event is not None:
            out["event"] = self.event
        if self.name is not None:
            out["name"] = self.name
        if self.type in ("track", "page"):
            out["properties"] = dict(self.properties)
        if self.type == "identify":
            out["traits"] = dict(self.traits)
        if self.context:
            out["context"] = dict(self.context)
        if self.previous_id is not None:
            out["previousId"] = self.previous_id
        return out

    def size(self) -> int:
        """Bytes of the JSON form; raises :class:`EventError` if it cannot be JSON."""
        try:
            return len(
                json.dumps(self.to_payload(), separators=(",", ":"), allow_nan=False).encode()
            )
        except (TypeError, ValueError) as exc:
            raise EventError(f"event data must be JSON-serializable: {exc}") from None


def _check_name(value: object, what: str) -> None:
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_NAME_LENGTH:
        raise EventError(
            f"{what} must be a non-empty string of at most {MAX_NAME_LENGTH} characters"
        )


@attrs.frozen
class BehaviourConfig:
    """Which events and properties feed purchases, revenue and affinity.

    Defaults follow Segment's e-commerce spec: ``Order Completed`` with ``revenue`` or
    ``total``; categories from ``category``, ``categories`` or ``products[].category``;
    a product view weighs 1, an add-to-cart 3, a purchase 5.
    """

    session_timeout: float = 30 * 60
    purchase_events: frozenset[str] = frozenset({"Order Completed"})
    revenue_keys: tuple[str, ...] = ("revenue", "total", "value")
    affinity_weights: Mapping[str, float] = attrs.field(
        factory=lambda: {
            "Product Viewed": 1.0,
            "Product Added": 3.0,
            "Order Completed": 5.0,
            "page": 0.5,
        }
    )
    affinity_half_life_days: float = 30.0


DEFAULT_BEHAVIOUR = BehaviourConfig()


def _categories(props: Mapping[str, Any]) -> list[str]:
    found: list[str] = []
    category = props.get("category")
    if isinstance(category, str) and category:
        found.append(category)
    categories = props.get("categories")
    if isinstance(categories, list):
        found.extend(c for c in categories if isinstance(c, str) and c)
    products = props.get("products")
    if isinstance(products, list):
        for product in products:
            if isinstance(product, Mapping):
                c = product.get("category")
                if isinstance(c, str) and c:
                    found.append(c)
    return list(dict.fromkeys(c[:100] for c in found))


def _revenue(props: Mapping[str, Any], keys: tuple[str, ...]) -> float:
    for key in keys:
        value = props.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
    return 0.0


def apply_event(
    profile: Profile,
    event: Event,
    config: BehaviourConfig = DEFAULT_BEHAVIOUR,
) -> bool:
    """Update ``profile`` in place from ``event``. Returns False for a replay (same message id).

    Traits from ``identify`` are stored with source ``identify`` (latest timestamp wins);
    ``alias`` only records the previous id (merging profiles is the SDK's job, which has the
    store). Consent is never changed here: the caller has already asked the ``analytics``
    gate before applying.
    """
    recent = profile.recent_message_ids
    if event.message_id in recent:
        return False
    recent.append(event.message_id)
    if len(recent) > RECENT_IDS:
        del recent[0]

    ts = event.timestamp
    today = day_of(ts)
    b = profile.behaviour
    if not profile.created_at:
        profile.created_at = ts
    if b.last_seen is None or ts - b.last_seen > config.session_timeout:
        b.sessions.add(today)
    if b.first_seen is None or ts < b.first_seen:
        b.first_seen = ts
    if b.last_seen is None or ts > b.last_seen:
        b.last_seen = ts

    kind = event.type
    if kind == "track":
        name = event.event
        assert name is not None
        stats = b.events.get(name)
        if stats is None:
            if len(b.events) >= MAX_EVENT_NAMES:
                stalest = min(b.events, key=lambda k: b.events[k].last_at)
                del b.events[stalest]
            stats = b.events[name] = EventStats(first_at=ts, last_at=ts)
        stats.counts.add(today)
        if ts > stats.last_at:
            stats.last_at = ts
        if ts < stats.first_at:
            stats.first_at = ts
        props = event.properties
        if name in config.purchase_events:
            b.purchases.add(today)
            amount = _revenue(props, config.revenue_keys)
            if amount:
                b.revenue.add(today, amount)
            if b.first_purchase_at is None or ts < b.first_purchase_at:
                b.first_purchase_at = ts
            if b.last_purchase_at is None or ts > b.last_purchase_at:
                b.last_purchase_at = ts
        weight = config.affinity_weights.get(name)
        if weight and props:
            _add_affinity(profile, _categories(props), weight, ts, config)
    elif kind == "page":
        b.page_views.add(today)
        weight = config.affinity_weights.get("page")
        if weight and event.properties:
            _add_affinity(profile, _categories(event.properties), weight, ts, config)
    elif kind == "identify":
        for key, value in event.traits.items():
            profile.set_trait(key, value, source="identify", at=ts)
    elif kind == "alias" and event.previous_id is not None:
        profile.identities.add(Identity.anonymous(event.previous_id))
    if event.anonymous_id is not None:
        profile.identities.add(Identity.anonymous(event.anonymous_id))
    if event.user_id is not None:
        profile.identities.add(Identity.user(event.user_id))
    return True


def _add_affinity(
    profile: Profile, categories: list[str], weight: float, ts: float, config: BehaviourConfig
) -> None:
    b = profile.behaviour
    hl = config.affinity_half_life_days * 86_400
    b.affinity_half_life = hl
    for category in categories:
        aff = b.affinity.get(category)
        if aff is None:
            if len(b.affinity) >= MAX_AFFINITIES:
                weakest = min(b.affinity, key=lambda k: b.affinity[k].value(ts, hl))
                del b.affinity[weakest]
            b.affinity[category] = Affinity(weight, ts)
        else:
            aff.add(weight, ts, hl)

"""The unified profile: traits, behaviour, identities, consent, segments, experiments.

Behaviour is kept incrementally as events arrive (see :mod:`persona_sdk.events`), never in
batch: counts by day over exact rolling windows (last 1/7/30/90/365 days, at most 366 day
buckets per counter, so memory is bounded), purchases and revenue (recency, frequency,
monetary value) and category affinity with exponential time decay.

A profile is mutable while one update runs (the store hands out a private copy and checks
its ``revision`` on write). :meth:`Profile.to_dict` / :meth:`Profile.from_dict` give the
versioned JSON form stores persist; older schema versions are migrated on read.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from .clock import DAY
from .consent import ConsentDecision, ConsentState, consent_from_dict, merge_consent
from .errors import ProfileFormatError
from .identity import Identity, IdentityKind

__all__ = [
    "SCHEMA_VERSION",
    "WINDOWS",
    "Affinity",
    "Behaviour",
    "DayCounter",
    "EventStats",
    "Profile",
    "Trait",
    "merge_profiles",
]

SCHEMA_VERSION = 1
#: The rolling windows, in days, that behaviour conditions may ask about.
WINDOWS = (1, 7, 30, 90, 365)
HORIZON = max(WINDOWS)
#: The most distinct event names one profile tracks; beyond it the least recently seen
#: name is dropped (its counts no longer matter to any window once it is that stale).
MAX_EVENT_NAMES = 200
#: The most categories kept in the affinity map; the weakest is dropped beyond it.
MAX_AFFINITIES = 100
#: Message ids remembered per profile so a replayed event is not counted twice.
RECENT_IDS = 64


@attrs.frozen
class Trait:
    """A trait value with where it came from and when."""

    value: Any
    source: str
    updated_at: float


@attrs.define
class DayCounter:
    """An all-time total plus per-day amounts for the last :data:`HORIZON` days.

    ``window(n, today)`` is exact: the sum over days ``today-n+1 … today``.
    """

    total: float = 0
    days: dict[int, float] = attrs.Factory(dict)
    #: window sums already computed for one day: ``(today, {n: sum})``; dropped on every
    #: change. One tuple, replaced whole, so concurrent readers never mix two days' sums.
    window_memo: tuple[int, dict[int, float]] | None = attrs.field(
        default=None, init=False, eq=False, repr=False
    )

    def add(self, day: int, amount: float = 1) -> None:
        self.total += amount
        self.window_memo = None
        days = self.days
        days[day] = days.get(day, 0) + amount
        if len(days) > HORIZON + 1:
            self.prune(max(days))

    def prune(self, today: int) -> None:
        self.window_memo = None
        cutoff = today - HORIZON
        for day in [d for d in self.days if d <= cutoff]:
            del self.days[day]

    def window(self, n: int, today: int) -> float:
        memo = self.window_memo
        if memo is not None and memo[0] == today:
            found = memo[1].get(n)
            if found is not None:
                return found
        else:
            memo = self.window_memo = (today, {})
        start = today - n
        found = memo[1][n] = sum(v for d, v in self.days.items() if start < d <= today)
        return found

    def merge(self, other: DayCounter) -> None:
        self.window_memo = None
        self.total += other.total
        for day, amount in other.days.items():
            self.days[day] = self.days.get(day, 0) + amount
        if self.days:
            self.prune(max(self.days))

    def copy(self) -> DayCounter:
        return DayCounter(self.total, dict(self.days))

    def to_dict(self) -> dict[str, Any]:
        return {"total": self.total, "days": {str(d): v for d, v in sorted(self.days.items())}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DayCounter:
        return cls(data["total"], {int(d): v for d, v in data["days"].items()})


@attrs.define
class EventStats:
    """Counts of one named event."""

    counts: DayCounter = attrs.Factory(DayCounter)
    first_at: float = 0.0
    last_at: float = 0.0

    def copy(self) -> EventStats:
        return EventStats(self.counts.copy(), self.first_at, self.last_at)


@attrs.define
class Affinity:
    """A decaying interest score: ``score`` as of ``at``; halves every ``half_life`` seconds."""

    score: float
    at: float

    def value(self, now: float, half_life: float) -> float:
        if now <= self.at:
            return self.score
        return self.score * math.pow(0.5, (now - self.at) / half_life)

    def add(self, weight: float, now: float, half_life: float) -> None:
        base = self.value(now, half_life)
        self.score = base + weight
        self.at = max(now, self.at)


@attrs.define
class Behaviour:
    """What a profile did. Built only by :func:`persona_sdk.events.apply_event` and merges."""

    first_seen: float | None = None
    last_seen: float | None = None
    sessions: DayCounter = attrs.Factory(DayCounter)
    page_views: DayCounter = attrs.Factory(DayCounter)
    events: dict[str, EventStats] = attrs.Factory(dict)
    purchases: DayCounter = attrs.Factory(DayCounter)
    revenue: DayCounter = attrs.Factory(DayCounter)
    first_purchase_at: float | None = None
    last_purchase_at: float | None = None
    affinity: dict[str, Affinity] = attrs.Factory(dict)
    affinity_half_life: float = 30 * DAY

    def copy(self) -> Behaviour:
        return Behaviour(
            self.first_seen,
            self.last_seen,
            self.sessions.copy(),
            self.page_views.copy(),
            {k: v.copy() for k, v in self.events.items()},
            self.purchases.copy(),
            self.revenue.copy(),
            self.first_purchase_at,
            self.last_purchase_at,
            {k: Affinity(v.score, v.at) for k, v in self.affinity.items()},
            self.affinity_half_life,
        )

    def event(self, name: str) -> EventStats | None:
        return self.events.get(name)

    def affinity_scores(self, now: float) -> dict[str, float]:
        hl = self.affinity_half_life
        return {k: a.value(now, hl) for k, a in self.affinity.items()}

    def top_category(self, now: float) -> str | None:
        scores = self.affinity_scores(now)
        if not scores:
            return None
        return min(scores, key=lambda k: (-scores[k], k))


def _new_id() -> str:
    return uuid.uuid4().hex


@attrs.define
class Profile:
    """One person (or one not-yet-known visitor)."""

    id: str = attrs.Factory(_new_id)
    created_at: float = 0.0
    traits: dict[str, Trait] = attrs.Factory(dict)
    identities: set[Identity] = attrs.Factory(set)
    aliases: set[str] = attrs.Factory(set)
    behaviour: Behaviour = attrs.Factory(Behaviour)
    consent: dict[str, ConsentDecision] = attrs.Factory(dict)
    segments: dict[str, float] = attrs.Factory(dict)
    experiments: dict[str, str] = attrs.Factory(dict)
    recent_message_ids: list[str] = attrs.Factory(list)
    #: Store-managed version for optimistic concurrency; not part of the person's data.
    revision: int = attrs.field(default=0, eq=False)
    #: Set while this profile is being merged into that one (see ``Persona.merge``): an
    #: update aimed at it is applied to that profile instead (``update_profile`` follows it).
    merged_into: str | None = attrs.field(default=None, eq=False)

    # -- reading ---------------------------------------------------------------------------
    def trait(self, name: str, default: Any = None) -> Any:
        trait = self.traits.get(name)
        return default if trait is None else trait.value

    @property
    def user_id(self) -> str | None:
        for identity in self.identities:
            if identity.kind is IdentityKind.USER:
                return identity.value
        return None

    @property
    def is_known(self) -> bool:
        """True once the profile has a user id or an email."""
        return any(i.kind in (IdentityKind.USER, IdentityKind.EMAIL) for i in self.identities)

    def consent_state(self, purpose: str) -> ConsentState:
        decision = self.consent.get(purpose)
        return ConsentState.UNSET if decision is None else decision.state

    # -- writing ---------------------------------------------------------------------------
    def set_trait(self, name: str, value: Any, *, source: str, at: float) -> None:
        """Set a trait unless a newer value is already recorded (latest timestamp wins)."""
        current = self.traits.get(name)
        if current is None or at >= current.updated_at:
            self.traits[name] = Trait(value, source, at)

    def copy(self) -> Profile:
        """A private copy for one update (cheaper than ``copy.deepcopy``)."""
        return Profile(
            id=self.id,
            created_at=self.created_at,
            traits=dict(self.traits),
            identities=set(self.identities),
            aliases=set(self.aliases),
            behaviour=self.behaviour.copy(),
            consent=dict(self.consent),
            segments=dict(self.segments),
            experiments=dict(self.experiments),
            recent_message_ids=list(self.recent_message_ids),
            revision=self.revision,
            merged_into=self.merged_into,
        )

    # -- JSON ------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The versioned JSON form (``schema``) that stores persist."""
        b = self.behaviour
        return {
            "schema": SCHEMA_VERSION,
            "id": self.id,
            "created_at": self.created_at,
            "traits": {
                k: {"value": t.value, "source": t.source, "updated_at": t.updated_at}
                for k, t in sorted(self.traits.items())
            },
            "identities": [
                {"kind": i.kind.value, "value": i.value, "namespace": i.namespace}
                for i in sorted(self.identities)
            ],
            "aliases": sorted(self.aliases),
            "behaviour": {
                "first_seen": b.first_seen,
                "last_seen": b.last_seen,
                "sessions": b.sessions.to_dict(),
                "page_views": b.page_views.to_dict(),
                "events": {
                    name: {
                        "counts": s.counts.to_dict(),
                        "first_at": s.first_at,
                        "last_at": s.last_at,
                    }
                    for name, s in sorted(b.events.items())
                },
                "purchases": b.purchases.to_dict(),
                "revenue": b.revenue.to_dict(),
                "first_purchase_at": b.first_purchase_at,
                "last_purchase_at": b.last_purchase_at,
                "affinity": {
                    k: {"score": a.score, "at": a.at} for k, a in sorted(b.affinity.items())
                },
                "affinity_half_life": b.affinity_half_life,
            },
            "consent": {
                p: {
                    "state": d.state.value,
                    "at": d.at,
                    "source": d.source,
                    "policy_version": d.policy_version,
                }
                for p, d in sorted(self.consent.items())
            },
            "segments": dict(sorted(self.segments.items())),
            "experiments": dict(sorted(self.experiments.items())),
            "recent_message_ids": list(self.recent_message_ids),
            **({"merged_into": self.merged_into} if self.merged_into is not None else {}),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Profile:
        """Read a stored profile, migrating older schema versions first.

        Raises :class:`ProfileFormatError` with the reason when the document cannot be read.
        """
        if not isinstance(data, Mapping):
            raise ProfileFormatError(f"a profile document is an object, got {type(data).__name__}")
        version = data.get("schema")
        if not isinstance(version, int) or isinstance(version, bool):
            raise ProfileFormatError("a profile document needs an integer 'schema' version")
        if version > SCHEMA_VERSION:
            raise ProfileFormatError(
                f"profile schema {version} is newer than this persona-sdk understands "
                f"({SCHEMA_VERSION}); upgrade persona-sdk"
            )
        doc: Mapping[str, Any] = data
        while doc["schema"] < SCHEMA_VERSION:
            migrate = MIGRATIONS.get(doc["schema"])
            if migrate is None:
                raise ProfileFormatError(f"no migration from profile schema {doc['schema']}")
            doc = migrate(doc)
        try:
            return cls._from_current(doc)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ProfileFormatError(f"malformed profile document: {exc!r}") from exc

    @classmethod
    def _from_current(cls, d: Mapping[str, Any]) -> Profile:
        b = d["behaviour"]
        behaviour = Behaviour(
            first_seen=b["first_seen"],
            last_seen=b["last_seen"],
            sessions=DayCounter.from_dict(b["sessions"]),
            page_views=DayCounter.from_dict(b["page_views"]),
            events={
                name: EventStats(DayCounter.from_dict(s["counts"]), s["first_at"], s["last_at"])
                for name, s in b["events"].items()
            },
            purchases=DayCounter.from_dict(b["purchases"]),
            revenue=DayCounter.from_dict(b["revenue"]),
            first_purchase_at=b["first_purchase_at"],
            last_purchase_at=b["last_purchase_at"],
            affinity={k: Affinity(a["score"], a["at"]) for k, a in b["affinity"].items()},
            affinity_half_life=b.get("affinity_half_life", 30 * DAY),
        )
        return cls(
            id=str(d["id"]),
            created_at=float(d["created_at"]),
            traits={
                k: Trait(t["value"], t["source"], t["updated_at"]) for k, t in d["traits"].items()
            },
            identities={
                Identity(IdentityKind(i["kind"]), i["value"], i.get("namespace", ""))
                for i in d["identities"]
            },
            aliases=set(d["aliases"]),
            behaviour=behaviour,
            consent=consent_from_dict(d["consent"]),
            segments=dict(d["segments"]),
            experiments=dict(d["experiments"]),
            recent_message_ids=list(d.get("recent_message_ids", [])),
            merged_into=None if d.get("merged_into") is None else str(d["merged_into"]),
        )


def _migrate_0(doc: Mapping[str, Any]) -> dict[str, Any]:
    """Schema 0 (pre-release) kept no message ids and no affinity half-life."""
    new = dict(doc)
    new.setdefault("recent_message_ids", [])
    behaviour = dict(new["behaviour"])
    behaviour.setdefault("affinity_half_life", 30 * DAY)
    new["behaviour"] = behaviour
    new["schema"] = 1
    return new


#: schema version → function that returns the document one version newer.
MIGRATIONS: dict[int, Callable[[Mapping[str, Any]], dict[str, Any]]] = {0: _migrate_0}


def _min(a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    if b is None:
        return a
    return min(a, b)


def _max(a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    if b is None:
        return a
    return max(a, b)


def merge_profiles(into: Profile, other: Profile) -> Profile:
    """Merge ``other`` (typically an anonymous profile) into ``into`` (the known one).

    Returns a new profile with ``into``'s id: counters add, traits keep the latest value by
    timestamp (a tie keeps ``into``'s), identities union, ``other``'s id and aliases become
    aliases, consent merges by :func:`persona_sdk.consent.merge_consent` (a denial survives),
    segment memberships keep the earliest entry time, experiment assignments keep ``into``'s
    and add ``other``'s.

    Idempotent: merging a profile whose id is already an alias (or itself) changes nothing.
    """
    if other.id == into.id or other.id in into.aliases:
        return into.copy()
    result = into.copy()
    for name, theirs in other.traits.items():
        ours = result.traits.get(name)
        if ours is None or theirs.updated_at > ours.updated_at:
            result.traits[name] = theirs
    result.identities |= other.identities
    result.aliases |= other.aliases | {other.id}
    result.aliases.discard(result.id)
    result.created_at = _min(into.created_at or None, other.created_at or None) or 0.0

    b, ob = result.behaviour, other.behaviour
    b.first_seen = _min(b.first_seen, ob.first_seen)
    b.last_seen = _max(b.last_seen, ob.last_seen)
    b.sessions.merge(ob.sessions)
    b.page_views.merge(ob.page_views)
    for name, stats in ob.events.items():
        mine = b.events.get(name)
        if mine is None:
            b.events[name] = stats.copy()
        else:
            mine.counts.merge(stats.counts)
            mine.first_at = min(mine.first_at, stats.first_at)
            mine.last_at = max(mine.last_at, stats.last_at)
    b.purchases.merge(ob.purchases)
    b.revenue.merge(ob.revenue)
    b.first_purchase_at = _min(b.first_purchase_at, ob.first_purchase_at)
    b.last_purchase_at = _max(b.last_purchase_at, ob.last_purchase_at)
    for category, aff in ob.affinity.items():
        mine_aff = b.affinity.get(category)
        if mine_aff is None:
            b.affinity[category] = Affinity(aff.score, aff.at)
        else:
            at = max(mine_aff.at, aff.at)
            hl = b.affinity_half_life
            b.affinity[category] = Affinity(mine_aff.value(at, hl) + aff.value(at, hl), at)

    result.consent = merge_consent(result.consent, other.consent)
    for segment, entered in other.segments.items():
        result.segments[segment] = min(entered, result.segments.get(segment, entered))
    for key, variant in other.experiments.items():
        result.experiments.setdefault(key, variant)
    seen = set(result.recent_message_ids)
    result.recent_message_ids.extend(m for m in other.recent_message_ids if m not in seen)
    del result.recent_message_ids[:-RECENT_IDS]
    return result

"""The SDK in one object: :class:`Persona`.

It wires the parts together — store, consent ledger, outbox, plugin registry, segments,
slots and the decision engine — and is what adapters (Django, email, the CLI) call:

* ``context(request)`` → the request context; ``subject(profile, context)`` → what rules read;
* ``decide(slot, subject)`` → a :class:`~persona_sdk.decisions.Decision`;
* ``track`` / ``page`` / ``identify`` / ``alias`` / ``ingest`` → the profile is updated
  before they return, and forwarding is queued in the outbox in the same write (the Django
  store: the same database transaction), so one is never kept without the other;
* ``set_consent``, ``may``; ``merge``, ``erase``, ``export``; ``deliver`` (one worker pass).

Every gate asks :func:`persona_sdk.consent.may`: no decision without ``personalization``, no
profile write without ``analytics``, nothing queued for a sink without that sink's purposes
(and consent is checked again at delivery).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs
import pluggy

from .checks import CheckMessage
from .clock import now as _clock_now
from .consent import (
    ConsentDecision,
    ConsentLedger,
    ConsentPolicy,
    ConsentState,
    ConsentView,
    HasConsent,
    InMemoryConsentLedger,
    LedgerEntry,
    may,
)
from .context import RequestInfo, build_context
from .decisions import Decision, DecisionEngine, Reason, Slot
from .errors import (
    ConcurrentUpdateError,
    ConsentError,
    EventError,
    RuleError,
    UnknownSegmentError,
    UnknownSlotError,
)
from .events import DEFAULT_BEHAVIOUR, BehaviourConfig, Event, apply_event
from .identity import Identity
from .outbox import Backoff, DeliveryReport, InMemoryOutbox, Outbox, OutboxItem, deliver_once
from .plugins import Registry, make_plugin_manager
from .profile import Profile, merge_profiles
from .rules.compiler import CompiledRule, compile_rule
from .rules.fields import profile_fields
from .rules.subject import Subject
from .segments import SegmentRegistry
from .sources import fetch_traits
from .stores import InMemoryProfileStore, ProfileStore, load_consents, update_profile
from .stores import save as save_profile

__all__ = ["IngestResult", "Persona"]

log = logging.getLogger("persona_sdk")

#: The track event an exposure is recorded as (the Segment A/B-testing spec's name).
EXPOSURE_EVENT = "Experiment Viewed"
DEFAULT_BACKOFF = Backoff()


@attrs.frozen
class IngestResult:
    """What happened to an event: the profile after it, whether it was applied (False for
    a replay or without ``analytics`` consent), and how many outbox items were queued."""

    profile: Profile | None
    applied: bool
    queued: int = 0
    reason: str = ""
    entered: tuple[str, ...] = ()
    exited: tuple[str, ...] = ()


class Persona:
    """The SDK facade. One per process (adapters keep it); thread-safe for reads and for
    updates through the store's optimistic concurrency."""

    def __init__(
        self,
        *,
        definitions: Mapping[str, Any] | None = None,
        store: ProfileStore | None = None,
        ledger: ConsentLedger | None = None,
        outbox: Outbox | None = None,
        policy: ConsentPolicy | None = None,
        behaviour: BehaviourConfig = DEFAULT_BEHAVIOUR,
        plugin_manager: pluggy.PluginManager | None = None,
        plugin_settings: Mapping[str, Any] | None = None,
        sync_segments: bool = True,
        conversion_goals: tuple[str, ...] | frozenset[str] = ("Order Completed",),
        clock: Callable[[], float] = _clock_now,
    ) -> None:
        self.pm = plugin_manager if plugin_manager is not None else make_plugin_manager()
        self.registry = Registry.collect(self.pm, plugin_settings, persona=self)
        self.store: ProfileStore = store if store is not None else InMemoryProfileStore()
        self.ledger: ConsentLedger = ledger if ledger is not None else InMemoryConsentLedger()
        self.outbox: Outbox = outbox if outbox is not None else InMemoryOutbox()
        self.policy = policy if policy is not None else ConsentPolicy()
        self.behaviour = behaviour
        self.sync_segments = sync_segments
        self.conversion_goals = frozenset(conversion_goals)
        self.clock = clock
        self.segments = SegmentRegistry()
        self.slots: dict[str, Slot] = {}
        self.engine = DecisionEngine(self.registry.strategies, self.policy, self.slots)
        if definitions is not None:
            self.load_definitions(definitions)

    # -- definitions -----------------------------------------------------------------------
    def compile_rule(self, spec: Any, *, where: str = "rule") -> CompiledRule:
        """Compile a rule against profile fields and the registered condition types."""
        rule = compile_rule(
            spec, where=where, fields=profile_fields, conditions=self.registry.conditions
        )
        for ref in sorted(rule.refs):
            if ref not in self.segments:
                raise UnknownSegmentError(where, f'refers to segment "{ref}", which is not defined')
        return rule

    def build_segments(
        self,
        definitions: Mapping[str, Any],
        *,
        source: str = "json",
        base: SegmentRegistry | None = None,
    ) -> SegmentRegistry:
        return SegmentRegistry.compile(
            definitions,
            fields=profile_fields,
            conditions=self.registry.conditions,
            source=source,
            base=base,
        )

    def build_slot(self, name: str, data: Mapping[str, Any], *, where: str = "slots") -> Slot:
        """Build a slot (e.g. one a template or a block defines) against current segments."""
        return Slot.from_json(
            name,
            data,
            fields=profile_fields,
            conditions=self.registry.conditions,
            segments=self.segments,
            strategies=self.registry.strategies,
            where=where,
        )

    def load_definitions(self, data: Mapping[str, Any]) -> None:
        """Replace segments and slots from ``{"segments": {...}, "slots": {...}}``.

        Everything is compiled and checked first; on any error nothing changes.
        """
        if not isinstance(data, Mapping):
            raise RuleError("", "definitions are an object with 'segments' and 'slots'")
        unknown = set(data) - {"segments", "slots", "$schema", "description"}
        if unknown:
            raise RuleError("", f"unknown top-level key(s): {', '.join(sorted(map(str, unknown)))}")
        segments = self.build_segments(data.get("segments") or {})
        raw_slots = data.get("slots") or {}
        if not isinstance(raw_slots, Mapping):
            raise RuleError("slots", "slots are an object of name: slot")
        old_segments = self.segments
        self.segments = segments
        try:
            slots = {name: self.build_slot(name, body) for name, body in raw_slots.items()}
        except Exception:
            self.segments = old_segments
            raise
        self.slots.clear()
        self.slots.update(slots)

    def replace_segments(self, segments: SegmentRegistry) -> None:
        """Swap in a new segment registry (e.g. after an editor saved one), checking that
        every defined slot still resolves its references."""
        for slot in self.slots.values():
            for ref in sorted(slot.segment_refs()):
                if ref not in segments:
                    raise UnknownSegmentError(
                        f"slots.{slot.name}", f'uses segment "{ref}", which is not defined'
                    )
        self.segments = segments

    # -- consent ---------------------------------------------------------------------------
    def may(self, profile: HasConsent | None, purpose: str, *, gpc: bool = False) -> bool:
        return may(profile, purpose, self.policy, gpc=gpc)

    def set_consent(
        self,
        identity: Identity,
        choices: Mapping[str, Any],
        *,
        source: str,
        at: float | None = None,
    ) -> Profile:
        """Record consent choices (``{"marketing": "granted", "analytics": False, ...}``).

        Creates the profile when the visitor has none yet (the choice itself must be kept).
        Every purpose and state is validated before anything is written.
        """
        parsed = {self.policy.check(p): ConsentState.parse(s) for p, s in choices.items()}
        if not isinstance(source, str) or not source:
            raise ConsentError("a consent decision needs a source (banner, api, gpc, ...)")
        when = self.clock() if at is None else at
        changes: list[tuple[str, ConsentState, ConsentState]] = []

        def change(profile: Profile) -> None:
            changes.clear()
            profile.identities.add(identity)
            if not profile.created_at:
                profile.created_at = when
            for purpose, state in parsed.items():
                old = profile.consent_state(purpose)
                profile.consent[purpose] = ConsentDecision(state, when, source, self.policy.version)
                changes.append((purpose, old, state))

        profile = self._update_for(identity, change)
        for purpose, old, new in changes:
            entry = LedgerEntry(profile.id, purpose, new, when, source, self.policy.version)
            self.ledger.append(entry)
            self.pm.hook.persona_consent_changed(
                profile=profile, purpose=purpose, old=old, new=new, entry=entry, persona=self
            )
        return profile

    def observe_gpc(self, identity: Identity) -> Profile | None:
        """Record the Global Privacy Control signal as denials (source ``gpc``) for the
        purposes it covers, so later sends outside a request honour it too."""
        pid = self.store.lookup(identity)
        profile = self.store.load(pid) if pid else None
        if profile is None:
            return None
        todo = {
            p: ConsentState.DENIED
            for p in sorted(self.policy.gpc_denies)
            if profile.consent_state(p) is not ConsentState.DENIED
        }
        return self.set_consent(identity, todo, source="gpc") if todo else profile

    # -- profiles --------------------------------------------------------------------------
    def profile_for(self, identity: Identity) -> Profile | None:
        """The profile known by ``identity``, or None."""
        for _ in range(2):  # a stale id from a store's local cache: the store drops it, retry
            pid = self.store.lookup(identity)
            if pid is None:
                return None
            profile = self.store.load(pid)
            if profile is not None:
                return profile
        return None

    def _update_for(self, identity: Identity, change: Callable[[Profile], Any]) -> Profile:
        for _ in range(5):
            pid = self.store.lookup(identity)
            if pid is None:
                new = Profile()
                change(new)
                try:
                    return self.store.save(new)
                except ConcurrentUpdateError:
                    continue  # created meanwhile by another request: update that one
            try:
                profile, _ = update_profile(self.store, pid, change)
            except LookupError:
                continue  # the id was stale (erased or merged away): look it up again
            return profile
        raise ConcurrentUpdateError(f"the profile of {identity} kept changing; try again")

    def refresh(self, profile: Profile) -> dict[str, list[str]]:
        """Merge traits from the registered profile sources into ``profile`` (in memory),
        within their time budget, when ``personalization`` consent allows."""
        sources = list(self.registry.sources.values())
        if not sources or not self.may(profile, "personalization"):
            return {"ok": [], "late": [], "failed": []}
        return fetch_traits(profile, sources, now=self.clock())

    # -- context and decisions -------------------------------------------------------------
    def context(self, request: RequestInfo) -> dict[str, Any]:
        return build_context(request, self.registry.enrichers)

    def subject(
        self,
        profile: Profile | None,
        context: Mapping[str, Any] | None = None,
        *,
        now: float | None = None,
    ) -> Subject:
        """What rules read. ``profile=None`` (a visitor with nothing recorded) reads as an
        empty profile."""
        return Subject(
            profile if profile is not None else Profile(id=""),
            context if context is not None else {},
            self.clock() if now is None else now,
            self.segments,
        )

    def slot(self, name: str) -> Slot:
        try:
            return self.slots[name]
        except KeyError:
            raise UnknownSlotError(
                f"no slot named {name!r}; defined: {', '.join(sorted(self.slots)) or '(none)'}"
            ) from None

    def decide(self, slot: Slot | str, subject: Subject) -> Decision:
        """Decide ``slot`` for ``subject``; never raises for a known slot (errors → the default)."""
        if type(slot) is str:
            found = self.slots.get(slot)
            slot = found if found is not None else self.slot(slot)  # raises UnknownSlotError
        elif not isinstance(slot, Slot):
            slot = self.slot(slot)  # a str subclass, say
        # positional, not keyword, arguments: this is the hot path of every page
        gpc = True if subject.context.get("gpc") else False
        return self.engine.decide(slot, subject, gpc)

    def decide_or_default(self, slot: Slot | str, subject: Subject) -> Decision:
        """:meth:`decide` for a page or an email, which must render whatever happens: never
        raises. An unknown slot name, or anything unexpected, yields a default decision with
        reason ``error`` (and a log line) instead."""
        name = slot if isinstance(slot, str) else slot.name
        try:
            return self.decide(slot, subject)
        except UnknownSlotError as exc:
            log.warning("persona: %s", exc)
            return Decision(
                name,
                "default",
                Reason.ERROR,
                "none",
                True,
                details={"error": "unknown slot"},
                explainer=lambda: f"slot {name!r} is not defined: default content",
            )
        except Exception:
            log.exception("persona: deciding slot %r failed; showing its default", name)
            return Decision(
                name,
                "default",
                Reason.ERROR,
                "none",
                True,
                explainer=lambda: "error while deciding: default content",
            )

    def record_exposure(
        self, profile_id: str | None, decision: Decision, *, channel: str = "web", gpc: bool = False
    ) -> bool:
        """Record that ``decision`` was shown: keeps a sticky experiment assignment on the
        profile, tracks an ``Experiment Viewed`` event and calls ``persona_exposure``.
        Does nothing (returns False) without ``analytics`` consent or a profile, or for a
        decision made without consent."""
        if profile_id is None or decision.reason in (Reason.CONSENT, Reason.PREVIEW):
            return False
        profile = self.store.load(profile_id)
        if profile is None or not self.may(profile, "analytics", gpc=gpc):
            return False
        event = Event.create(
            "track",
            event=EXPOSURE_EVENT,
            properties={
                "experiment_id": decision.slot,
                "variation_id": decision.variant,
                "reason": decision.reason,
                "channel": channel,
            },
            context={"channel": channel},
            **_event_ids(profile),
        )
        assignment = decision.assignment

        def change(p: Profile) -> None:
            if assignment is not None:
                p.experiments.setdefault(assignment[0], assignment[1])
            apply_event(p, event, self.behaviour)

        saved, _ = update_profile(
            self.store, profile.id, change, then=lambda p: self._enqueue(p, event)
        )
        self.pm.hook.persona_exposure(
            profile=saved, decision=decision, channel=channel, persona=self
        )
        return True

    # -- events ----------------------------------------------------------------------------
    def track(
        self,
        event: str,
        properties: Mapping[str, Any] | None = None,
        *,
        anonymous_id: str | None = None,
        user_id: str | None = None,
        context: Mapping[str, Any] | None = None,
        gpc: bool = False,
        **kwargs: Any,
    ) -> IngestResult:
        return self.ingest(
            Event.create(
                "track",
                event=event,
                properties=properties,
                anonymous_id=anonymous_id,
                user_id=user_id,
                context=context,
                **kwargs,
            ),
            gpc=gpc,
        )

    def page(
        self,
        name: str | None = None,
        properties: Mapping[str, Any] | None = None,
        *,
        anonymous_id: str | None = None,
        user_id: str | None = None,
        context: Mapping[str, Any] | None = None,
        gpc: bool = False,
        **kwargs: Any,
    ) -> IngestResult:
        return self.ingest(
            Event.create(
                "page",
                name=name,
                properties=properties,
                anonymous_id=anonymous_id,
                user_id=user_id,
                context=context,
                **kwargs,
            ),
            gpc=gpc,
        )

    def identify(
        self,
        *,
        user_id: str | None = None,
        anonymous_id: str | None = None,
        traits: Mapping[str, Any] | None = None,
        email: str | None = None,
        context: Mapping[str, Any] | None = None,
        gpc: bool = False,
        **kwargs: Any,
    ) -> IngestResult:
        """Say who a visitor is. ``email`` (or ``traits["email"]``) becomes an email identity
        (hashed) and the ``email`` trait; a profile already known by that user id or email
        absorbs the anonymous one."""
        all_traits = dict(traits or {})
        if email is not None:
            all_traits["email"] = email
        if "email" in all_traits:
            Identity.email(all_traits["email"])  # validate before anything is written
        return self.ingest(
            Event.create(
                "identify",
                user_id=user_id,
                anonymous_id=anonymous_id,
                traits=all_traits,
                context=context,
                **kwargs,
            ),
            gpc=gpc,
        )

    def alias(
        self,
        previous_id: str,
        *,
        user_id: str | None = None,
        anonymous_id: str | None = None,
        **kwargs: Any,
    ) -> IngestResult:
        """Say ``previous_id`` (an old anonymous id) is the same person."""
        return self.ingest(
            Event.create(
                "alias",
                previous_id=previous_id,
                user_id=user_id,
                anonymous_id=anonymous_id,
                **kwargs,
            )
        )

    def _identities_of(self, event: Event) -> list[Identity]:
        ids: list[Identity] = []
        if event.user_id is not None:
            ids.append(Identity.user(event.user_id))
        email = event.traits.get("email") if event.type == "identify" else None
        if isinstance(email, str):
            ids.append(Identity.email(email))
        if event.anonymous_id is not None:
            ids.append(Identity.anonymous(event.anonymous_id))
        if event.previous_id is not None:
            ids.append(Identity.anonymous(event.previous_id))
        return ids

    def ingest(self, event: Event, *, gpc: bool = False) -> IngestResult:
        """Apply ``event`` to its profile now and queue it for the sinks, in one write
        (the outbox items are enqueued inside the profile's save: both commit or neither).

        Identity resolution: the event's identities (user id, email from identify traits,
        anonymous id, alias previous id) are looked up; if they belong to different
        profiles, the others are merged into the first found in that order (user, email,
        anonymous). Nothing is written without ``analytics`` consent.
        """
        if not isinstance(event, Event):
            raise EventError("ingest() takes an Event; build one with Event.create()")
        identities = self._identities_of(event)
        entered: list[str] = []
        exited: list[str] = []
        applied = [False]

        def change(profile: Profile) -> None:
            if not self.may(profile, "analytics", gpc=gpc):
                raise _NoConsent(profile)
            applied[0] = apply_event(profile, event, self.behaviour)
            if event.type == "identify":
                profile.identities.update(identities)
            entered.clear()
            exited.clear()
            if applied[0] and self.sync_segments and self.segments.profile_segments:
                subject = Subject(profile, event.context, event.timestamp, self.segments)
                e, x = self.segments.sync_memberships(profile, subject)
                entered.extend(e)
                exited.extend(x)

        queued = [0]

        def enqueue(saving: Profile) -> None:
            # inside the profile's save: the event is queued in the same transaction
            queued[0] = self._enqueue(saving, event) if applied[0] else 0

        profile: Profile | None = None
        for _attempt in range(5):
            found: list[str] = []
            for identity in identities:
                pid = self.store.lookup(identity)
                if pid is not None and pid not in found:
                    found.append(pid)
            try:
                if len(found) > 1:
                    # the event says these profiles are one person: merge them first
                    target = self.store.load(found[0])
                    if target is None:
                        continue
                    if not self.may(target, "analytics", gpc=gpc):
                        raise _NoConsent(target)
                    try:
                        for other in found[1:]:
                            target = self.merge(target.id, other)
                    except ConcurrentUpdateError:
                        continue  # merged the other way round concurrently: look up again
                    found = [target.id]
                if found:
                    try:
                        profile, _ = update_profile(
                            self.store, found[0], change, then=enqueue
                        )
                    except LookupError:
                        continue  # a stale id (erased or merged away): look it up again
                else:
                    new = Profile(created_at=event.timestamp)
                    change(new)
                    try:
                        profile = save_profile(self.store, new, enqueue)
                    except ConcurrentUpdateError:
                        continue  # created concurrently by another request: update that one
            except _NoConsent as refused:
                return IngestResult(refused.profile, False, reason="consent")
            break
        if profile is None:
            raise ConcurrentUpdateError("the event's profile kept changing; try again")
        if not applied[0]:
            return IngestResult(profile, False, reason="duplicate")
        if event.type == "track" and event.event in self.conversion_goals:
            value = event.properties.get("revenue", event.properties.get("value", 0))
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                value = 0
            self.pm.hook.persona_conversion(
                profile=profile,
                goal=event.event,
                value=float(value),
                at=event.timestamp,
                persona=self,
            )
        for name in entered:
            self.pm.hook.persona_segment_entered(
                profile=profile, segment=name, at=event.timestamp, persona=self
            )
        for name in exited:
            self.pm.hook.persona_segment_exited(
                profile=profile, segment=name, at=event.timestamp, persona=self
            )
        return IngestResult(profile, True, queued[0], "applied", tuple(entered), tuple(exited))

    def _enqueue(self, profile: Profile, event: Event) -> int:
        """Queue ``event`` for every sink whose purposes the profile granted (the consent
        gate, :meth:`may`) and that accepts it: one ``outbox.enqueue`` call for all of them
        (the Django outbox: one INSERT). What a request pays per event for forwarding.

        Called from inside the save of the profile the event changed (``then``, see
        :meth:`~persona_sdk.stores.ProfileStore.save`): the profile change and its outbox
        items commit together or not at all (a transactional outbox)."""
        sinks = self.registry.sinks
        if not sinks:
            return 0
        items: list[OutboxItem] = []
        now = 0.0
        for sink in sinks.values():
            purposes = sink.purposes
            if not all(self.may(profile, p) for p in purposes):
                continue
            try:
                if not sink.accepts(event):
                    continue
            except Exception:
                log.exception("sink %r failed in accepts(); event not queued for it", sink.name)
                continue
            if not items:
                now = self.clock()
            items.append(
                OutboxItem.for_event(
                    event,
                    sink=sink.name,
                    profile_id=profile.id,
                    purposes=tuple(purposes),
                    now=now,
                )
            )
        return self.outbox.enqueue(items) if items else 0

    # -- identity lifecycle ----------------------------------------------------------------
    def link(self, primary: Identity, other: Identity | None) -> Profile | None:
        """Record that ``other`` is the same person as ``primary`` (e.g. at login: the user
        and this browser's anonymous id).

        This is identity management, not behaviour, so it happens whatever the ``analytics``
        consent: consent decisions must follow the person (a denial made anonymously still
        holds after login). If both have profiles, ``other``'s merges into ``primary``'s; if
        only one has, the other identity is added to it. With ``analytics`` consent an
        ``identify`` event is then recorded (and forwarded to sinks).
        """
        primary_id = self.store.lookup(primary)
        other_id = self.store.lookup(other) if other is not None else None
        profile: Profile | None
        if primary_id is not None and other_id is not None and primary_id != other_id:
            profile = self.merge(primary_id, other_id)
        elif primary_id is not None or other_id is not None:
            pid = primary_id if primary_id is not None else other_id
            assert pid is not None
            wanted = {primary} | ({other} if other is not None else set())

            def add(p: Profile) -> None:
                p.identities |= wanted

            profile, _ = update_profile(self.store, pid, add)
        else:
            return None
        if self.may(profile, "analytics"):
            ids: dict[str, Any] = {}
            if primary.kind.value == "user":
                ids["user_id"] = primary.value
            if other is not None and other.kind.value == "anonymous":
                ids["anonymous_id"] = other.value
            if ids:
                result = self.ingest(Event.create("identify", **ids))
                profile = result.profile or profile
        return profile

    def merge(self, into_id: str, other_id: str, *, _depth: int = 0) -> Profile:
        """Merge profile ``other_id`` into ``into_id`` (see
        :func:`~persona_sdk.profile.merge_profiles`); return the merged profile.

        Safe against concurrent events: ``other`` is first marked ``merged_into`` (a
        revision bump, so an update based on what it was before fails and is retried), and
        from then on every update aimed at it is applied to ``into`` instead (see
        :func:`~persona_sdk.stores.update_profile`). Only then is it read, merged and
        deleted, so no event can land on it between the read and the delete. A merge that
        fails clears the mark again. Two profiles merged into each other at once (two
        requests seeing the same person's identities the other way round) are a cycle that
        :func:`~persona_sdk.stores.update_profile` refuses: one merge backs off with
        :class:`~persona_sdk.errors.ConcurrentUpdateError` (``ingest`` looks up again).
        """
        resolved = self.store.resolve_id(other_id)
        if resolved is None:
            return self._load_or_fail(into_id)
        other_id = resolved
        if other_id == into_id:
            return self._load_or_fail(into_id)

        def freeze(profile: Profile) -> str | None:
            """Mark ``profile`` as merging into ``into_id``; return where else it already
            merges, if it does."""
            if profile.merged_into not in (None, into_id):
                return profile.merged_into
            profile.merged_into = into_id
            return None

        try:
            other, elsewhere = update_profile(self.store, other_id, freeze, follow_merges=False)
        except LookupError:  # gone meanwhile (erased, or merged away and deleted)
            return self._load_or_fail(into_id)
        if elsewhere is not None:
            # a concurrent merge is taking it into another profile: the person is all three,
            # so bring that one in too (it will follow its own mark to us if it merges on)
            if _depth >= 4:
                raise ConcurrentUpdateError(f"profile {other_id!r} keeps being merged; retry")
            return self.merge(into_id, elsewhere, _depth=_depth + 1)

        def apply(profile: Profile) -> None:
            merged = merge_profiles(profile, other)
            merged.revision = profile.revision
            merged.merged_into = profile.merged_into
            for field in attrs.fields(Profile):
                setattr(profile, field.name, getattr(merged, field.name))

        try:
            saved, _ = update_profile(self.store, into_id, apply)
        except BaseException:
            self._unfreeze(other_id, into_id)
            raise
        if self.store.resolve_id(other.id) == other.id:  # still stored under its own id
            self.store.delete(other.id)
        self.ledger.reassign(other.id, saved.id)
        self.outbox.reassign(other.id, saved.id)
        self.pm.hook.persona_profile_merged(into=saved, merged_id=other.id, persona=self)
        return saved

    def _load_or_fail(self, profile_id: str) -> Profile:
        loaded = self.store.load(profile_id)
        if loaded is None:
            raise LookupError(f"no profile {profile_id!r}")
        return loaded

    def _unfreeze(self, profile_id: str, into_id: str) -> None:
        def thaw(profile: Profile) -> None:
            if profile.merged_into == into_id:
                profile.merged_into = None

        try:
            update_profile(self.store, profile_id, thaw, follow_merges=False)
        except LookupError:
            pass

    def erase(self, identity: Identity) -> dict[str, Any]:
        """Forget a person: plugins first (``persona_erase``), then pending outbox items,
        the consent ledger and the profile. Returns a report of what was done."""
        pid = self.store.lookup(identity)
        profile = self.store.load(pid) if pid else None
        if profile is None:
            return {"found": False, "identity": str(identity)}
        reports = [
            r
            for r in self.pm.hook.persona_erase(
                profile=profile, identities=sorted(profile.identities), persona=self
            )
            if r
        ]
        purged = self.outbox.purge_profile(profile.id)
        for alias in profile.aliases:
            purged += self.outbox.purge_profile(alias)
        ledger = self.ledger.erase(profile.id)
        self.store.delete(profile.id)
        return {
            "found": True,
            "profile_id": profile.id,
            "outbox_items_purged": purged,
            "ledger_entries_erased": ledger,
            "adapters": [dict(r) for r in reports],
        }

    def export(self, identity: Identity) -> dict[str, Any] | None:
        """Everything held about a person: profile, consent ledger, plugin sections."""
        profile = self.profile_for(identity)
        if profile is None:
            return None
        sections: dict[str, Any] = {}
        for part in self.pm.hook.persona_export(profile=profile, persona=self):
            if part:
                sections.update(part)
        return {
            "profile": profile.to_dict(),
            "consent_ledger": [e.to_dict() for e in self.ledger.entries(profile.id)],
            "adapters": sections,
        }

    # -- delivery and checks ---------------------------------------------------------------
    def deliver(
        self, *, limit: int = 500, backoff: Backoff = DEFAULT_BACKOFF, lease: float = 60.0
    ) -> DeliveryReport:
        """One delivery pass over the outbox (the worker loop calls this). ``lease``: how
        long claimed items stay this worker's before another may take them (a worker that
        died mid-batch holds its items this long).

        Consent is re-checked for every item through :meth:`may`, on the profiles as they
        are now: the claimed batch's consent decisions are read with one
        ``store.load_consents`` (the Django store: one query for the batch, not a load per
        item); an item whose profile is gone (erased) or whose purpose was withdrawn since it
        was queued is withheld, not sent."""
        views: dict[str, ConsentView] = {}

        def prefetch(items: Sequence[OutboxItem]) -> None:
            found = load_consents(self.store, {item.profile_id for item in items})
            views.update((pid, ConsentView(consent)) for pid, consent in found.items())

        def allowed(item: OutboxItem) -> bool:
            view = views.get(item.profile_id)
            return view is not None and all(self.may(view, p) for p in item.purposes)

        return deliver_once(
            self.outbox,
            self.registry.sinks,
            allowed=allowed,
            now=self.clock(),
            limit=limit,
            lease=lease,
            backoff=backoff,
            prefetch=prefetch,
        )

    def check(self) -> list[CheckMessage]:
        """Configuration problems reported by plugins (``persona_check_config``)."""
        messages: list[CheckMessage] = []
        for result in self.pm.hook.persona_check_config(persona=self):
            if result:
                messages.extend(result)
        if not self.registry.strategies:
            messages.append(
                CheckMessage(
                    "error",
                    "persona.E001",
                    "no decision strategy is registered",
                    hint="is persona_strategies disabled in PERSONA_DISABLE_PLUGINS?",
                )
            )
        return messages


class _NoConsent(Exception):
    def __init__(self, profile: Profile | None) -> None:
        self.profile = profile


def _event_ids(profile: Profile) -> dict[str, Any]:
    """The ids to put on an event the SDK emits for ``profile`` itself."""
    ids: dict[str, Any] = {}
    user_id = profile.user_id
    if user_id is not None:
        ids["user_id"] = user_id
    anonymous = sorted(i.value for i in profile.identities if i.kind.value == "anonymous")
    ids["anonymous_id"] = anonymous[0] if anonymous else profile.id
    return ids

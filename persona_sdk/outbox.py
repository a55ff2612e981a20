"""Forwarding events to other systems: the outbox interface, sinks, and one delivery pass.

Events bound for adapters (a CDP, an email service) never leave in the request. The SDK
enqueues one :class:`OutboxItem` per (event, sink) — the item id is derived from the
event's message id and the sink name, so enqueueing the same event twice stores it once —
and a worker runs :func:`deliver_once` in a loop: claim due items, re-check consent, hand
them to the sink in batches, then mark them done, schedule a retry (exponential backoff with
full jitter, never earlier than the vendor's ``Retry-After``), or dead-letter them with the
vendor's message. Items a sink held back without sending them (its circuit breaker is open,
the vendor's ``Retry-After`` has not passed) are rescheduled without counting an attempt.
The outcome of a batch is written back with one call per kind (``complete``, ``retry_many``,
``defer_many``, ``dead_many``), so a durable outbox updates a whole batch in a few
statements. The core ships :class:`InMemoryOutbox`; the Django adapter ships the durable
one on the site's database. Both satisfy :class:`Outbox`.
"""

from __future__ import annotations

import hashlib
import logging
import random
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol

import attrs

from .events import Event

__all__ = [
    "Backoff",
    "DeliveryResult",
    "EventSink",
    "InMemoryOutbox",
    "Outbox",
    "OutboxItem",
    "deliver_once",
    "item_id",
]

log = logging.getLogger("persona_sdk.outbox")

PENDING = "pending"
DONE = "done"
DEAD = "dead"


def item_id(message_id: str, sink: str) -> str:
    """The outbox id of ``message_id`` bound for ``sink`` (stable, so enqueue is idempotent)."""
    return hashlib.sha256(f"{sink}\x00{message_id}".encode()).hexdigest()[:32]


@attrs.frozen
class OutboxItem:
    """One event bound for one sink."""

    id: str
    sink: str
    message_id: str
    profile_id: str
    payload: Mapping[str, Any]
    purposes: tuple[str, ...]
    created_at: float
    attempts: int = 0
    next_attempt_at: float = 0.0
    status: str = PENDING
    last_error: str = ""

    @classmethod
    def for_event(
        cls, event: Event, *, sink: str, profile_id: str, purposes: tuple[str, ...], now: float
    ) -> OutboxItem:
        return cls(
            id=item_id(event.message_id, sink),
            sink=sink,
            message_id=event.message_id,
            profile_id=profile_id,
            payload=event.to_payload(),
            purposes=purposes,
            created_at=now,
            next_attempt_at=now,
        )


@attrs.frozen
class DeliveryResult:
    """What a sink did with a batch, per item id.

    ``retry`` maps ids to a minimum delay in seconds (``Retry-After``; 0 when the vendor said
    nothing); ``failed`` maps ids to the vendor's message for errors that will never succeed
    (they are dead-lettered). Ids in none of the three are retried with backoff.

    ``errors`` (optional) says why an id was not delivered (the vendor's message, a
    timeout...): it becomes the item's ``last_error``. ``deferred`` (optional) lists ids
    the sink did not even send (its circuit breaker is open, or the vendor's ``Retry-After``
    has not passed): they are rescheduled after their ``retry`` delay without counting a
    delivery attempt, so a vendor outage does not dead-letter items that were never tried.
    """

    delivered: frozenset[str] = frozenset()
    retry: Mapping[str, float] = attrs.field(factory=dict)
    failed: Mapping[str, str] = attrs.field(factory=dict)
    errors: Mapping[str, str] = attrs.field(factory=dict)
    deferred: frozenset[str] = frozenset()

    @classmethod
    def all_delivered(cls, items: Iterable[OutboxItem]) -> DeliveryResult:
        return cls(delivered=frozenset(i.id for i in items))


class EventSink(Protocol):
    """A destination for events (registered with ``persona_register_sinks``)."""

    name: str
    purposes: tuple[str, ...]
    max_batch: int

    def accepts(self, event: Event) -> bool: ...

    def deliver(self, items: Sequence[OutboxItem]) -> DeliveryResult: ...


class Outbox(Protocol):
    """Storage for items in flight. Implementations must make ``enqueue`` idempotent by id
    and ``claim`` exclusive (an item is handed to one worker until its lease expires).

    ``retry_many``, ``defer_many`` and ``dead_many`` are the batch forms :func:`deliver_once`
    calls; the defaults here (for classes that subclass ``Outbox``) call the single-item
    methods, and :func:`deliver_once` does the same for an outbox that does not have them.
    """

    def enqueue(self, items: Sequence[OutboxItem]) -> int:
        """Store items not already present; return how many were new."""
        ...

    def claim(self, *, limit: int, now: float, lease: float) -> list[OutboxItem]:
        """Take up to ``limit`` due pending items for ``lease`` seconds."""
        ...

    def complete(self, ids: Iterable[str]) -> None: ...

    def retry(self, item_id: str, *, at: float, error: str) -> None: ...

    def dead(self, item_id: str, *, error: str) -> None: ...

    def retry_many(self, entries: Sequence[tuple[str, float, str]]) -> None:
        """``retry`` for many items: ``(id, at, error)`` each, every item keeping its own
        time and error; one attempt counted for each, leases released."""
        for entry_id, at, error in entries:
            self.retry(entry_id, at=at, error=error)

    def defer_many(self, entries: Sequence[tuple[str, float, str]]) -> None:
        """Reschedule items that were claimed but not sent (``(id, at, reason)`` each): like
        ``retry_many`` but without counting an attempt. The default counts one (it can only
        call ``retry``)."""
        for entry_id, at, error in entries:
            self.retry(entry_id, at=at, error=error)

    def dead_many(self, entries: Sequence[tuple[str, str]]) -> None:
        """``dead`` for many items: ``(id, error)`` each."""
        for entry_id, error in entries:
            self.dead(entry_id, error=error)

    def dead_letters(self, *, limit: int = 100) -> list[OutboxItem]: ...

    def replay(self, ids: Iterable[str], *, now: float) -> int:
        """Move dead items back to pending; return how many moved."""
        ...

    def purge_profile(self, profile_id: str) -> int:
        """Delete every item of a profile, delivered ones too (their payload is the person's
        data): erasure. Return how many."""
        ...

    def reassign(self, old_profile_id: str, new_profile_id: str) -> None:
        """Point a merged-away profile's pending items at the surviving profile."""
        ...

    def pending_count(self) -> int: ...


@attrs.frozen
class Backoff:
    """Exponential backoff with full jitter: attempt ``n`` waits ``uniform(0, min(cap,
    base * 2**n))``, and never less than the vendor's ``Retry-After``. After
    ``max_attempts`` the item is dead-lettered."""

    base: float = 1.0
    cap: float = 600.0
    max_attempts: int = 12

    def delay(
        self, attempts: int, retry_after: float = 0.0, rng: random.Random | None = None
    ) -> float:
        ceiling = min(self.cap, self.base * (2 ** min(attempts, 30)))
        jitter = (rng or random).uniform(0, ceiling)
        return max(retry_after, jitter)


@attrs.define
class InMemoryOutbox:
    """An outbox in process memory: for tests and the CLI. Not durable (see the Django one)."""

    _items: dict[str, OutboxItem] = attrs.Factory(dict)
    _leases: dict[str, float] = attrs.Factory(dict)
    _lock: threading.Lock = attrs.field(factory=threading.Lock, repr=False)

    def enqueue(self, items: Sequence[OutboxItem]) -> int:
        added = 0
        with self._lock:
            for item in items:
                if item.id not in self._items:
                    self._items[item.id] = item
                    added += 1
        return added

    def claim(self, *, limit: int, now: float, lease: float) -> list[OutboxItem]:
        out: list[OutboxItem] = []
        with self._lock:
            for item in sorted(
                self._items.values(), key=lambda i: (i.next_attempt_at, i.created_at)
            ):
                if len(out) >= limit:
                    break
                if item.status != PENDING or item.next_attempt_at > now:
                    continue
                if self._leases.get(item.id, 0.0) > now:
                    continue
                self._leases[item.id] = now + lease
                out.append(item)
        return out

    def complete(self, ids: Iterable[str]) -> None:
        with self._lock:
            for i in ids:
                item = self._items.get(i)
                if item is not None:
                    self._items[i] = attrs.evolve(item, status=DONE, attempts=item.attempts + 1)
                self._leases.pop(i, None)

    def retry(self, item_id: str, *, at: float, error: str) -> None:
        self.retry_many([(item_id, at, error)])

    def dead(self, item_id: str, *, error: str) -> None:
        self.dead_many([(item_id, error)])

    def retry_many(self, entries: Sequence[tuple[str, float, str]]) -> None:
        self._reschedule(entries, count_attempt=True)

    def defer_many(self, entries: Sequence[tuple[str, float, str]]) -> None:
        self._reschedule(entries, count_attempt=False)

    def _reschedule(
        self, entries: Sequence[tuple[str, float, str]], *, count_attempt: bool
    ) -> None:
        with self._lock:
            for entry_id, at, error in entries:
                item = self._items.get(entry_id)
                if item is not None:
                    self._items[entry_id] = attrs.evolve(
                        item,
                        attempts=item.attempts + count_attempt,
                        next_attempt_at=at,
                        last_error=error,
                    )
                self._leases.pop(entry_id, None)

    def dead_many(self, entries: Sequence[tuple[str, str]]) -> None:
        with self._lock:
            for entry_id, error in entries:
                item = self._items.get(entry_id)
                if item is not None:
                    self._items[entry_id] = attrs.evolve(
                        item, status=DEAD, attempts=item.attempts + 1, last_error=error
                    )
                self._leases.pop(entry_id, None)

    def dead_letters(self, *, limit: int = 100) -> list[OutboxItem]:
        with self._lock:
            return [i for i in self._items.values() if i.status == DEAD][:limit]

    def replay(self, ids: Iterable[str], *, now: float) -> int:
        moved = 0
        with self._lock:
            for i in ids:
                item = self._items.get(i)
                if item is not None and item.status == DEAD:
                    self._items[i] = attrs.evolve(
                        item, status=PENDING, attempts=0, next_attempt_at=now
                    )
                    moved += 1
        return moved

    def purge_profile(self, profile_id: str) -> int:
        with self._lock:
            doomed = [i.id for i in self._items.values() if i.profile_id == profile_id]
            for i in doomed:
                del self._items[i]
                self._leases.pop(i, None)
        return len(doomed)

    def reassign(self, old_profile_id: str, new_profile_id: str) -> None:
        with self._lock:
            for key, item in list(self._items.items()):
                if item.profile_id == old_profile_id:
                    self._items[key] = attrs.evolve(item, profile_id=new_profile_id)

    def pending_count(self) -> int:
        with self._lock:
            return sum(1 for i in self._items.values() if i.status == PENDING)

    def items(self) -> list[OutboxItem]:
        with self._lock:
            return list(self._items.values())


ConsentCheck = Callable[[OutboxItem], bool]
#: called once per pass with the claimed items, before ``allowed`` is asked about them
Prefetch = Callable[[Sequence[OutboxItem]], object]


@attrs.frozen
class DeliveryReport:
    """What one pass did. ``retried`` counts every item rescheduled, ``deferred`` those of
    them the sink did not send (no attempt counted)."""

    delivered: int = 0
    retried: int = 0
    dead: int = 0
    withheld: int = 0
    deferred: int = 0


def _retry_many(outbox: Outbox, entries: list[tuple[str, float, str]]) -> None:
    batch = getattr(outbox, "retry_many", None)
    if batch is not None:
        batch(entries)
    else:  # an outbox written before the batch forms existed
        for entry_id, at, error in entries:
            outbox.retry(entry_id, at=at, error=error)


def _defer_many(outbox: Outbox, entries: list[tuple[str, float, str]]) -> None:
    batch = getattr(outbox, "defer_many", None)
    if batch is not None:
        batch(entries)
    else:  # without defer_many, the only way to reschedule counts an attempt
        _retry_many(outbox, entries)


def _dead_many(outbox: Outbox, entries: list[tuple[str, str]]) -> None:
    batch = getattr(outbox, "dead_many", None)
    if batch is not None:
        batch(entries)
    else:
        for entry_id, error in entries:
            outbox.dead(entry_id, error=error)


def deliver_once(
    outbox: Outbox,
    sinks: Mapping[str, EventSink],
    *,
    allowed: ConsentCheck,
    now: float,
    limit: int = 500,
    lease: float = 60.0,
    backoff: Backoff = Backoff(),
    rng: random.Random | None = None,
    prefetch: Prefetch | None = None,
) -> DeliveryReport:
    """One pass of the delivery loop.

    ``allowed(item)`` re-checks consent at delivery time, item by item: an item whose
    purpose was withdrawn after it was enqueued is completed without being sent (counted as
    ``withheld``). ``prefetch(items)``, when given, is called once with the claimed items
    before that, to load what ``allowed`` needs in one go (``Persona.deliver`` loads the
    batch's consent decisions with one ``load_consents``). An item whose sink is not
    registered is retried later (the plugin may be temporarily disabled) and dead-lettered
    after ``backoff.max_attempts``.

    Outcomes are written back in batches: one ``complete`` for the withheld items, then per
    sink batch one ``complete`` for the delivered items and at most one each of
    ``retry_many``, ``defer_many`` and ``dead_many``.
    """
    claimed = outbox.claim(limit=limit, now=now, lease=lease)
    if not claimed:
        return DeliveryReport()
    if prefetch is not None:
        prefetch(claimed)
    delivered = retried = dead = deferred = 0
    by_sink: dict[str, list[OutboxItem]] = {}
    withheld_ids: list[str] = []
    for item in claimed:
        if not allowed(item):
            withheld_ids.append(item.id)
            continue
        by_sink.setdefault(item.sink, []).append(item)
    if withheld_ids:
        outbox.complete(withheld_ids)

    retries: list[tuple[str, float, str]] = []
    deaths: list[tuple[str, str]] = []
    defers: list[tuple[str, float, str]] = []

    def retry_or_dead(item: OutboxItem, error: str, retry_after: float = 0.0) -> None:
        if item.attempts + 1 >= backoff.max_attempts:
            deaths.append((item.id, f"gave up after {item.attempts + 1} attempts: {error}"))
        else:
            retries.append((item.id, now + backoff.delay(item.attempts, retry_after, rng), error))

    def flush() -> None:
        nonlocal retried, dead, deferred
        if retries:
            _retry_many(outbox, retries)
        if defers:
            _defer_many(outbox, defers)
        if deaths:
            _dead_many(outbox, deaths)
        retried += len(retries) + len(defers)
        deferred += len(defers)
        dead += len(deaths)
        retries.clear()
        defers.clear()
        deaths.clear()

    for sink_name, items in by_sink.items():
        sink = sinks.get(sink_name)
        if sink is None:
            for item in items:
                retry_or_dead(item, f"no sink named {sink_name!r} is registered")
            flush()
            continue
        size = max(1, sink.max_batch)
        for start in range(0, len(items), size):
            batch = items[start : start + size]
            try:
                result = sink.deliver(batch)
            except Exception as exc:
                log.warning(
                    "sink %r raised while delivering %d items", sink_name, len(batch), exc_info=True
                )
                for item in batch:
                    retry_or_dead(item, f"{type(exc).__name__}: {exc}")
                flush()
                continue
            ok = result.delivered
            done = [i.id for i in batch if i.id in ok]
            if done:
                outbox.complete(done)
                delivered += len(done)
            if len(done) < len(batch):
                failed, delays, errors = result.failed, result.retry, result.errors
                held = result.deferred
                for item in batch:
                    if item.id in ok:
                        continue
                    if item.id in failed:
                        deaths.append((item.id, failed[item.id]))
                    elif item.id in held:
                        wait = backoff.delay(item.attempts, delays.get(item.id, 0.0), rng)
                        reason = errors.get(item.id) or "not sent: the sink deferred it"
                        defers.append((item.id, now + wait, reason))
                    else:
                        reason = errors.get(item.id) or "vendor asked to retry"
                        retry_or_dead(item, reason, delays.get(item.id, 0.0))
                flush()
    return DeliveryReport(delivered, retried, dead, len(withheld_ids), deferred)

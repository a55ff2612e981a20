"""Forwarding events to other systems: the outbox interface, sinks, and one delivery pass.

Events bound for adapters (a CDP, an email service) never leave in the request. The SDK
enqueues one :class:`OutboxItem` per (event, sink) — the item id is derived from the
event's message id and the sink name, so enqueueing the same event twice stores it once —
and a worker runs :func:`deliver_once` in a loop: claim due items, re-check consent, hand
them to the sink in batches, then mark them done, schedule a retry (exponential backoff with
full jitter, never earlier than the vendor's ``Retry-After``), or dead-letter them with the
vendor's message. The core ships :class:`InMemoryOutbox`; the Django adapter ships the
durable one on the site's database. Both satisfy :class:`Outbox`.
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
    """

    delivered: frozenset[str] = frozenset()
    retry: Mapping[str, float] = attrs.field(factory=dict)
    failed: Mapping[str, str] = attrs.field(factory=dict)

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
    and ``claim`` exclusive (an item is handed to one worker until its lease expires)."""

    def enqueue(self, items: Sequence[OutboxItem]) -> int:
        """Store items not already present; return how many were new."""
        ...

    def claim(self, *, limit: int, now: float, lease: float) -> list[OutboxItem]:
        """Take up to ``limit`` due pending items for ``lease`` seconds."""
        ...

    def complete(self, ids: Iterable[str]) -> None: ...

    def retry(self, item_id: str, *, at: float, error: str) -> None: ...

    def dead(self, item_id: str, *, error: str) -> None: ...

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
        with self._lock:
            item = self._items.get(item_id)
            if item is not None:
                self._items[item_id] = attrs.evolve(
                    item, attempts=item.attempts + 1, next_attempt_at=at, last_error=error
                )
            self._leases.pop(item_id, None)

    def dead(self, item_id: str, *, error: str) -> None:
        with self._lock:
            item = self._items.get(item_id)
            if item is not None:
                self._items[item_id] = attrs.evolve(
                    item, status=DEAD, attempts=item.attempts + 1, last_error=error
                )
            self._leases.pop(item_id, None)

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


@attrs.frozen
class DeliveryReport:
    delivered: int = 0
    retried: int = 0
    dead: int = 0
    withheld: int = 0


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
) -> DeliveryReport:
    """One pass of the delivery loop.

    ``allowed(item)`` re-checks consent at delivery time: an item whose purpose was
    withdrawn after it was enqueued is completed without being sent (counted as
    ``withheld``). An item whose sink is not registered is retried later (the plugin may be
    temporarily disabled) and dead-lettered after ``backoff.max_attempts``.
    """
    claimed = outbox.claim(limit=limit, now=now, lease=lease)
    delivered = retried = dead = withheld = 0
    by_sink: dict[str, list[OutboxItem]] = {}
    for item in claimed:
        if not allowed(item):
            outbox.complete([item.id])
            withheld += 1
            continue
        by_sink.setdefault(item.sink, []).append(item)

    def _retry_or_dead(item: OutboxItem, error: str, retry_after: float = 0.0) -> None:
        nonlocal retried, dead
        if item.attempts + 1 >= backoff.max_attempts:
            outbox.dead(item.id, error=f"gave up after {item.attempts + 1} attempts: {error}")
            dead += 1
        else:
            at = now + backoff.delay(item.attempts, retry_after, rng)
            outbox.retry(item.id, at=at, error=error)
            retried += 1

    for sink_name, items in by_sink.items():
        sink = sinks.get(sink_name)
        if sink is None:
            for item in items:
                _retry_or_dead(item, f"no sink named {sink_name!r} is registered")
            continue
        for start in range(0, len(items), max(1, sink.max_batch)):
            batch = items[start : start + max(1, sink.max_batch)]
            try:
                result = sink.deliver(batch)
            except Exception as exc:
                log.warning(
                    "sink %r raised while delivering %d items", sink_name, len(batch), exc_info=True
                )
                for item in batch:
                    _retry_or_dead(item, f"{type(exc).__name__}: {exc}")
                continue
            ok = [i.id for i in batch if i.id in result.delivered]
            outbox.complete(ok)
            delivered += len(ok)
            for item in batch:
                if item.id in result.delivered:
                    continue
                if item.id in result.failed:
                    outbox.dead(item.id, error=result.failed[item.id])
                    dead += 1
                else:
                    _retry_or_dead(item, "vendor asked to retry", result.retry.get(item.id, 0.0))
    return DeliveryReport(delivered, retried, dead, withheld)

"""The in-memory outbox's batch forms, and deliver_once writing outcomes back in batches:
every retried item keeps its own time and error, deferred items count no attempt, legacy
outboxes without the batch forms still work, and the consent re-check stays per item."""

import pytest

from persona_sdk import ConsentPolicy, Identity, hookimpl
from persona_sdk.outbox import (
    DEAD,
    DONE,
    PENDING,
    Backoff,
    DeliveryReport,
    DeliveryResult,
    InMemoryOutbox,
    Outbox,
    OutboxItem,
    deliver_once,
    item_id,
)
from persona_sdk.stores import InMemoryProfileStore

NOW = 1_795_435_200.0


def make_item(n, *, sink="crm", profile_id="p1", attempts=0, at=NOW):
    message_id = f"m{n}"
    return OutboxItem(
        id=item_id(message_id, sink),
        sink=sink,
        message_id=message_id,
        profile_id=profile_id,
        payload={"type": "track", "event": "Tick", "messageId": message_id},
        purposes=("sharing",),
        created_at=at + n * 0.001,
        next_attempt_at=at,
        attempts=attempts,
    )


def by_id(outbox):
    return {i.id: i for i in outbox.items()}


@pytest.fixture
def outbox():
    return InMemoryOutbox()


# -- InMemoryOutbox: retry_many / defer_many / dead_many ----------------------------------


def test_retry_many_keeps_each_items_own_time_and_error_and_counts_an_attempt(outbox):
    a, b, c = (make_item(n) for n in range(3))
    outbox.enqueue([a, b, c])
    assert len(outbox.claim(limit=10, now=NOW, lease=60)) == 3
    outbox.retry_many([(a.id, NOW + 10, "503 a"), (b.id, NOW + 20, "timeout b")])
    items = by_id(outbox)
    assert (items[a.id].next_attempt_at, items[a.id].last_error) == (NOW + 10, "503 a")
    assert (items[b.id].next_attempt_at, items[b.id].last_error) == (NOW + 20, "timeout b")
    assert items[a.id].attempts == items[b.id].attempts == 1
    assert items[a.id].status == items[b.id].status == PENDING
    assert items[c.id].attempts == 0 and items[c.id].next_attempt_at == NOW  # untouched
    # the leases are released: each comes back at its own time, c stays leased
    assert outbox.claim(limit=10, now=NOW + 10, lease=60) == [items[a.id]]
    assert [i.id for i in outbox.claim(limit=10, now=NOW + 20, lease=60)] == [b.id]


def test_defer_many_reschedules_without_counting_an_attempt(outbox):
    a, b = make_item(1, attempts=3), make_item(2)
    outbox.enqueue([a, b])
    outbox.claim(limit=10, now=NOW, lease=60)
    outbox.defer_many([(a.id, NOW + 30, "not sent: breaker open"), (b.id, NOW + 40, "held")])
    items = by_id(outbox)
    assert items[a.id].attempts == 3 and items[b.id].attempts == 0
    assert items[a.id].last_error == "not sent: breaker open"
    assert items[b.id].next_attempt_at == NOW + 40
    assert outbox.claim(limit=10, now=NOW + 29, lease=60) == []
    assert [i.id for i in outbox.claim(limit=10, now=NOW + 30, lease=60)] == [a.id]


def test_dead_many_dead_letters_each_with_its_own_error(outbox):
    a, b, c = (make_item(n) for n in range(3))
    outbox.enqueue([a, b, c])
    outbox.claim(limit=10, now=NOW, lease=60)
    outbox.dead_many([(a.id, "400 bad a"), (b.id, "413 too big")])
    letters = {i.id: i for i in outbox.dead_letters()}
    assert set(letters) == {a.id, b.id}
    assert letters[a.id].last_error == "400 bad a" and letters[b.id].last_error == "413 too big"
    assert letters[a.id].status == DEAD and letters[a.id].attempts == 1
    assert by_id(outbox)[c.id].status == PENDING


def test_batch_forms_ignore_unknown_ids_and_empty_lists(outbox):
    a = make_item(1)
    outbox.enqueue([a])
    outbox.retry_many([])
    outbox.defer_many([])
    outbox.dead_many([])
    outbox.complete([])
    outbox.retry_many([("no-such-id", NOW + 5, "x")])
    outbox.defer_many([("no-such-id", NOW + 5, "x")])
    outbox.dead_many([("no-such-id", "x")])
    assert outbox.items() == [a]


def test_single_item_methods_still_work(outbox):
    a, b = make_item(1), make_item(2)
    outbox.enqueue([a, b])
    outbox.retry(a.id, at=NOW + 5, error="503")
    outbox.dead(b.id, error="400")
    items = by_id(outbox)
    assert (items[a.id].attempts, items[a.id].next_attempt_at, items[a.id].last_error) == (
        1,
        NOW + 5,
        "503",
    )
    assert (items[b.id].status, items[b.id].attempts, items[b.id].last_error) == (DEAD, 1, "400")


class SingleItemOutbox(Outbox):
    """A third-party outbox written before the batch forms: it subclasses the protocol and
    gets the defaults, which call its single-item methods."""

    def __init__(self):
        self.calls = []

    def retry(self, item_id, *, at, error):
        self.calls.append(("retry", item_id, at, error))

    def dead(self, item_id, *, error):
        self.calls.append(("dead", item_id, error))


def test_the_protocol_defaults_call_the_single_item_methods():
    box = SingleItemOutbox()
    box.retry_many([("a", NOW + 1, "e1"), ("b", NOW + 2, "e2")])
    box.defer_many([("c", NOW + 3, "held")])  # can only retry: an attempt is counted
    box.dead_many([("d", "gone")])
    assert box.calls == [
        ("retry", "a", NOW + 1, "e1"),
        ("retry", "b", NOW + 2, "e2"),
        ("retry", "c", NOW + 3, "held"),
        ("dead", "d", "gone"),
    ]


# -- deliver_once ---------------------------------------------------------------------------


class ScriptedSink:
    purposes = ("sharing",)

    def __init__(self, answer, name="crm", max_batch=500):
        self.name = name
        self.max_batch = max_batch
        self.answer = answer
        self.batches = []

    def accepts(self, event):
        return True

    def deliver(self, items):
        self.batches.append([i.id for i in items])
        return self.answer(items)


class CountingOutbox(InMemoryOutbox):
    """Records which write-back methods deliver_once calls, and with how many ids."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def complete(self, ids):
        ids = list(ids)
        self.calls.append(("complete", len(ids)))
        super().complete(ids)

    def retry_many(self, entries):
        self.calls.append(("retry_many", len(entries)))
        super().retry_many(entries)

    def defer_many(self, entries):
        self.calls.append(("defer_many", len(entries)))
        super().defer_many(entries)

    def dead_many(self, entries):
        self.calls.append(("dead_many", len(entries)))
        super().dead_many(entries)


def test_outcomes_are_written_back_once_per_kind_each_item_with_its_own_error():
    outbox = CountingOutbox()
    items = [make_item(n) for n in range(8)]
    ok, slow, busy, bad, held1, held2, quiet, withheld = items
    outbox.enqueue(items)

    def answer(batch):
        return DeliveryResult(
            delivered=frozenset({ok.id}),
            retry={slow.id: 120.0, busy.id: 0.0, held1.id: 30.0, held2.id: 30.0},
            failed={bad.id: "400 unknown event"},
            errors={slow.id: "HTTP 429: slow down", busy.id: "timed out", held1.id: "breaker"},
            deferred=frozenset({held1.id, held2.id}),
        )

    sink = ScriptedSink(answer)
    report = deliver_once(
        outbox,
        {"crm": sink},
        allowed=lambda i: i.id != withheld.id,
        now=NOW,
        backoff=Backoff(base=1, cap=10, max_attempts=5),
    )
    assert (report.delivered, report.retried, report.dead, report.withheld) == (1, 5, 1, 1)
    assert report.deferred == 2
    assert outbox.calls == [
        ("complete", 1),  # the withheld item, before anything is sent
        ("complete", 1),
        ("retry_many", 3),
        ("defer_many", 2),
        ("dead_many", 1),
    ]
    got = by_id(outbox)
    assert got[ok.id].status == DONE and got[withheld.id].status == DONE
    assert got[bad.id].status == DEAD and got[bad.id].last_error == "400 unknown event"
    assert got[slow.id].last_error == "HTTP 429: slow down"
    assert got[slow.id].next_attempt_at >= NOW + 120  # never before the vendor's Retry-After
    assert got[busy.id].last_error == "timed out" and NOW <= got[busy.id].next_attempt_at
    assert got[quiet.id].last_error == "vendor asked to retry"  # the sink said nothing
    for item in (slow, busy, quiet):
        assert got[item.id].attempts == 1
    for item in (held1, held2):  # never sent: no attempt counted, rescheduled after the wait
        assert got[item.id].attempts == 0 and got[item.id].status == PENDING
        assert got[item.id].next_attempt_at >= NOW + 30
    assert got[held1.id].last_error == "breaker"
    assert got[held2.id].last_error == "not sent: the sink deferred it"


def test_a_deferred_item_is_never_dead_lettered_for_attempts_it_did_not_make():
    outbox = InMemoryOutbox()
    item = make_item(1, attempts=4)
    outbox.enqueue([item])

    def held(batch):
        return DeliveryResult(
            retry={i.id: 5.0 for i in batch}, deferred=frozenset(i.id for i in batch)
        )

    backoff = Backoff(base=1, cap=2, max_attempts=5)
    now = NOW
    for _ in range(3):
        report = deliver_once(
            outbox, {"crm": ScriptedSink(held)}, allowed=lambda i: True, now=now, backoff=backoff
        )
        assert (report.retried, report.deferred, report.dead) == (1, 1, 0)
        now += 10
    [after] = outbox.items()
    assert after.attempts == 4 and after.status == PENDING
    # a real failure on the last allowed attempt dead-letters it
    report = deliver_once(
        outbox,
        {"crm": ScriptedSink(lambda b: DeliveryResult())},
        allowed=lambda i: True,
        now=now,
        backoff=backoff,
    )
    assert report.dead == 1
    [letter] = outbox.dead_letters()
    assert letter.last_error == "gave up after 5 attempts: vendor asked to retry"


class LegacyOutbox:
    """An outbox implementing only the original protocol (structurally, no subclassing)."""

    def __init__(self):
        self.inner = InMemoryOutbox()
        self.calls = []

    def enqueue(self, items):
        return self.inner.enqueue(items)

    def claim(self, *, limit, now, lease):
        return self.inner.claim(limit=limit, now=now, lease=lease)

    def complete(self, ids):
        ids = list(ids)
        self.calls.append(("complete", ids))
        self.inner.complete(ids)

    def retry(self, item_id, *, at, error):
        self.calls.append(("retry", item_id, error))
        self.inner.retry(item_id, at=at, error=error)

    def dead(self, item_id, *, error):
        self.calls.append(("dead", item_id, error))
        self.inner.dead(item_id, error=error)


def test_an_outbox_without_the_batch_forms_gets_single_item_calls():
    outbox = LegacyOutbox()
    a, b, c, d = (make_item(n) for n in range(4))
    outbox.enqueue([a, b, c, d])

    def answer(batch):
        return DeliveryResult(
            delivered=frozenset({a.id}),
            retry={b.id: 0.0, c.id: 0.0},
            failed={d.id: "400"},
            errors={b.id: "503"},
            deferred=frozenset({c.id}),
        )

    report = deliver_once(outbox, {"crm": ScriptedSink(answer)}, allowed=lambda i: True, now=NOW)
    assert (report.delivered, report.retried, report.dead, report.deferred) == (1, 2, 1, 1)
    assert outbox.calls == [
        ("complete", [a.id]),
        ("retry", b.id, "503"),
        ("retry", c.id, "not sent: the sink deferred it"),  # no defer: counted as an attempt
        ("dead", d.id, "400"),
    ]


def test_a_sink_that_raises_retries_the_whole_batch_with_the_exception():
    outbox = CountingOutbox()
    outbox.enqueue([make_item(n) for n in range(3)])

    def boom(batch):
        raise ConnectionError("refused")

    report = deliver_once(outbox, {"crm": ScriptedSink(boom)}, allowed=lambda i: True, now=NOW)
    assert report.retried == 3
    assert outbox.calls == [("retry_many", 3)]
    assert {i.last_error for i in outbox.items()} == {"ConnectionError: refused"}
    assert {i.attempts for i in outbox.items()} == {1}


def test_items_of_an_unregistered_sink_are_retried_in_one_call():
    outbox = CountingOutbox()
    outbox.enqueue([make_item(n, sink="gone") for n in range(3)])
    report = deliver_once(outbox, {}, allowed=lambda i: True, now=NOW)
    assert report.retried == 3 and outbox.calls == [("retry_many", 3)]
    assert {i.last_error for i in outbox.items()} == {"no sink named 'gone' is registered"}


def test_prefetch_sees_the_claimed_items_once_before_the_consent_check():
    outbox = InMemoryOutbox()
    outbox.enqueue([make_item(n, profile_id=f"p{n % 2}") for n in range(5)])
    seen = []

    def prefetch(items):
        seen.append(("prefetch", sorted({i.profile_id for i in items}), len(items)))

    def allowed(item):
        seen.append(("allowed", item.profile_id))
        return True

    sink = ScriptedSink(DeliveryResult.all_delivered)
    report = deliver_once(outbox, {"crm": sink}, allowed=allowed, now=NOW, prefetch=prefetch)
    assert report.delivered == 5
    assert seen[0] == ("prefetch", ["p0", "p1"], 5)
    assert [s[0] for s in seen[1:]] == ["allowed"] * 5  # still asked per item
    seen.clear()
    again = deliver_once(outbox, {"crm": sink}, allowed=allowed, now=NOW, prefetch=prefetch)
    assert again == DeliveryReport()
    assert seen == []  # nothing claimed: neither is called


# -- Persona.deliver: one load_many per pass, consent still per item ------------------------


class SpyStore(InMemoryProfileStore):
    def __init__(self):
        super().__init__()
        self.loads = 0
        self.batches = []

    def load(self, profile_id):
        self.loads += 1
        return super().load(profile_id)

    def load_many(self, profile_ids):
        ids = list(profile_ids)
        self.batches.append(("load_many", sorted(ids)))
        return super().load_many(ids)

    def load_consents(self, profile_ids):
        ids = list(profile_ids)
        self.batches.append(("load_consents", sorted(ids)))
        return super().load_consents(ids)


class Recorder:
    name = "recorder"
    purposes = ("analytics", "sharing")
    max_batch = 100

    def __init__(self):
        self.sent = []

    def accepts(self, event):
        return True

    def deliver(self, items):
        self.sent.extend(i.message_id for i in items)
        return DeliveryResult.all_delivered(items)


class Plugin:
    def __init__(self, sink):
        self.sink = sink

    @hookimpl
    def persona_register_sinks(self, register):
        register(self.sink)


@pytest.fixture
def spied(make_persona):
    store, sink = SpyStore(), Recorder()
    persona = make_persona(
        plugins=[Plugin(sink)], policy=ConsentPolicy(mode="opt-out"), store=store, clock=lambda: NOW
    )
    return persona, store, sink


def test_deliver_loads_the_batchs_consent_once_and_rechecks_it_per_item(spied):
    persona, store, sink = spied
    for who in ("a", "b", "c"):
        for n in range(3):
            persona.track("Clicked", anonymous_id=who, message_id=f"{who}{n}", timestamp=NOW)
    persona.set_consent(Identity.anonymous("b"), {"sharing": "denied"}, source="banner")
    gone = persona.profile_for(Identity.anonymous("c"))
    assert store.delete(gone.id)  # erased behind the outbox's back: nothing to check against
    store.loads, store.batches = 0, []
    report = persona.deliver()
    assert (report.delivered, report.withheld) == (3, 6)
    assert sorted(sink.sent) == ["a0", "a1", "a2"]
    [(method, ids)] = store.batches  # one call for the batch, with distinct ids
    assert method == "load_consents" and len(ids) == 3
    assert store.loads == 0  # no per-item loads
    assert persona.outbox.pending_count() == 0


def test_deliver_works_with_a_store_without_load_many_or_load_consents(make_persona):
    class OldStore:  # the original ProfileStore protocol only
        def __init__(self):
            self.inner = InMemoryProfileStore()

        def __getattr__(self, name):
            if name in ("load_many", "load_consents"):
                raise AttributeError(name)
            return getattr(self.inner, name)

    sink = Recorder()
    persona = make_persona(
        plugins=[Plugin(sink)],
        policy=ConsentPolicy(mode="opt-out"),
        store=OldStore(),
        clock=lambda: NOW,
    )
    persona.track("Clicked", anonymous_id="a", message_id="x1", timestamp=NOW)
    persona.track("Clicked", anonymous_id="b", message_id="x2", timestamp=NOW)
    persona.set_consent(Identity.anonymous("b"), {"sharing": "denied"}, source="banner")
    report = persona.deliver()
    assert (report.delivered, report.withheld) == (1, 1) and sink.sent == ["x1"]

"""DatabaseOutbox: idempotent enqueue, exclusive claims, retry/dead/replay, erasure, and
several workers delivering at once (SQLite by default, PostgreSQL with
``PERSONA_TEST_BACKEND=postgres``)."""

import os
import threading
import time

import pytest
from django.db import connection

from persona_django.models import OutboxMessage
from persona_django.stores import DatabaseOutbox
from persona_sdk.outbox import Backoff, DeliveryResult, OutboxItem, deliver_once, item_id

BACKEND = os.environ.get("PERSONA_TEST_BACKEND", "sqlite")
NOW = 1_795_435_200.0

pytestmark = pytest.mark.django_db


def make_item(n, *, profile_id="p1", sink="crm", at=NOW, purposes=("sharing",)):
    message_id = f"m{n}"
    return OutboxItem(
        id=item_id(message_id, sink), sink=sink, message_id=message_id, profile_id=profile_id,
        payload={"type": "track", "event": "Tick", "messageId": message_id, "n": n,
                 "properties": {"price": 9.5, "tags": ["a", "b"]}},
        purposes=purposes, created_at=at, next_attempt_at=at,
    )


class RecordingSink:
    purposes = ()

    def __init__(self, name="crm", max_batch=10, answer=None, pause=0.0):
        self.name = name
        self.max_batch = max_batch
        self.answer = answer
        self.pause = pause
        self.seen = []
        self.lock = threading.Lock()

    def accepts(self, event):
        return True

    def deliver(self, items):
        if self.pause:
            time.sleep(self.pause)
        with self.lock:
            self.seen.extend(i.message_id for i in items)
        if self.answer is not None:
            return self.answer(items)
        return DeliveryResult.all_delivered(items)


@pytest.fixture
def outbox():
    return DatabaseOutbox()


def status_of(item):
    return OutboxMessage.objects.get(id=item.id).status


def test_enqueue_is_one_insert_and_idempotent_by_id(outbox, django_assert_num_queries):
    items = [make_item(n) for n in range(3)]
    with django_assert_num_queries(1):
        assert outbox.enqueue(items) == 3
    with django_assert_num_queries(1):
        assert outbox.enqueue(items) == 0
    assert outbox.enqueue([items[0], make_item(3), make_item(3)]) == 1
    assert outbox.enqueue([]) == 0
    assert OutboxMessage.objects.count() == 4
    assert outbox.pending_count() == 4


def test_a_claimed_item_reads_back_as_it_was_enqueued(outbox):
    item = make_item(1, at=NOW + 0.25)
    outbox.enqueue([item])
    [claimed] = outbox.claim(limit=10, now=NOW + 1, lease=60)
    assert claimed == item
    assert isinstance(claimed.purposes, tuple)


def test_claims_are_exclusive_until_the_lease_expires(outbox):
    items = [make_item(n) for n in range(3)]
    outbox.enqueue(items)
    first = outbox.claim(limit=10, now=NOW, lease=60)
    assert {i.id for i in first} == {i.id for i in items}
    assert outbox.claim(limit=10, now=NOW, lease=60) == []
    assert DatabaseOutbox().claim(limit=10, now=NOW + 59, lease=60) == []  # another worker
    again = DatabaseOutbox().claim(limit=10, now=NOW + 61, lease=60)
    assert {i.id for i in again} == {i.id for i in items}
    assert outbox.claim(limit=10, now=NOW + 62, lease=60) == []


def test_claim_takes_due_items_oldest_first_up_to_the_limit(outbox):
    later, soon, now_, future = (make_item(1, at=NOW - 10), make_item(2, at=NOW - 30),
                                 make_item(3, at=NOW), make_item(4, at=NOW + 5))
    outbox.enqueue([later, soon, now_, future])
    assert [i.message_id for i in outbox.claim(limit=2, now=NOW, lease=60)] == ["m2", "m1"]
    assert [i.message_id for i in outbox.claim(limit=2, now=NOW, lease=60)] == ["m3"]
    assert outbox.claim(limit=2, now=NOW, lease=60) == []
    assert [i.message_id for i in outbox.claim(limit=2, now=NOW + 5, lease=60)] == ["m4"]
    assert outbox.claim(limit=0, now=NOW + 100, lease=60) == []


def test_complete_retry_dead_and_replay(outbox):
    done, retried, dead = make_item(1), make_item(2), make_item(3)
    outbox.enqueue([done, retried, dead])
    assert len(outbox.claim(limit=10, now=NOW, lease=60)) == 3

    outbox.complete([done.id])
    outbox.retry(retried.id, at=NOW + 30, error="503 try later")
    outbox.dead(dead.id, error="400 invalid payload")
    assert outbox.pending_count() == 1
    assert status_of(done) == "done" and status_of(dead) == "dead"

    # the retried item waits for its time, without a lease
    assert outbox.claim(limit=10, now=NOW + 29, lease=60) == []
    [again] = outbox.claim(limit=10, now=NOW + 30, lease=60)
    assert again.id == retried.id and again.attempts == 1 and again.last_error == "503 try later"
    assert outbox.claim(limit=10, now=NOW + 89, lease=60) == []  # leased until NOW + 90

    [letter] = outbox.dead_letters()
    assert letter.id == dead.id and letter.status == "dead" and letter.attempts == 1
    assert letter.last_error == "400 invalid payload"
    assert outbox.dead_letters(limit=0) == []

    assert outbox.replay([dead.id, done.id, "no-such-id"], now=NOW + 100) == 1
    assert outbox.dead_letters() == []
    assert outbox.replay([], now=NOW) == 0
    [replayed] = [i for i in outbox.claim(limit=10, now=NOW + 100, lease=60) if i.id == dead.id]
    assert replayed.status == "pending" and replayed.attempts == 0
    assert replayed.next_attempt_at == NOW + 100


def test_purge_profile_deletes_the_persons_items_and_reassign_moves_them(outbox):
    mine = [make_item(n, profile_id="p1") for n in range(3)]
    other = make_item(9, profile_id="p2")
    outbox.enqueue([*mine, other])
    outbox.claim(limit=10, now=NOW, lease=60)
    outbox.complete([mine[0].id])
    outbox.dead(mine[1].id, error="nope")
    # pending, dead and delivered: the delivered payload is the person's data too
    assert outbox.purge_profile("p1") == 3
    assert list(OutboxMessage.objects.values_list("profile_id", flat=True)) == ["p2"]
    assert outbox.purge_profile("p1") == 0

    outbox.reassign("p2", "p3")
    outbox.reassign("p3", "p3")
    assert OutboxMessage.objects.get(id=other.id).profile_id == "p3"


def test_prune_deletes_only_old_delivered_items(outbox):
    old, new, waiting = make_item(1, at=NOW - 86_400), make_item(2), make_item(3, at=NOW - 86_400)
    outbox.enqueue([old, new, waiting])
    outbox.complete([old.id, new.id])
    assert outbox.prune(done_before=NOW - 3600) == 1
    assert set(OutboxMessage.objects.values_list("id", flat=True)) == {new.id, waiting.id}


def test_long_errors_are_truncated(outbox):
    item = make_item(1)
    outbox.enqueue([item])
    outbox.dead(item.id, error="x" * 50_000)
    assert len(outbox.dead_letters()[0].last_error) == 10_000


def test_deliver_once_marks_delivered_retried_and_dead_items(outbox):
    items = [make_item(n) for n in range(5)]
    ok, later, bad, withheld, lost = items

    def answer(batch):
        return DeliveryResult(delivered=frozenset({ok.id}), retry={later.id: 120.0},
                              failed={bad.id: "400 unknown event"})

    sink = RecordingSink(answer=answer)
    outbox.enqueue(items)
    report = deliver_once(outbox, {"crm": sink}, allowed=lambda i: i.id != withheld.id, now=NOW,
                          backoff=Backoff(base=1, cap=10, max_attempts=5))
    assert (report.delivered, report.retried, report.dead, report.withheld) == (1, 2, 1, 1)
    assert sorted(sink.seen) == ["m0", "m1", "m2", "m4"]
    assert status_of(ok) == "done" and status_of(withheld) == "done" and status_of(bad) == "dead"
    row = OutboxMessage.objects.get(id=later.id)
    assert row.status == "pending" and row.attempts == 1 and row.locked_until is None
    assert row.next_attempt_at.timestamp() >= NOW + 120  # never before the vendor's Retry-After
    assert OutboxMessage.objects.get(id=lost.id).attempts == 1  # retried with backoff
    assert [i.id for i in outbox.dead_letters()] == [bad.id]


@pytest.mark.django_db(transaction=True)
def test_parallel_workers_deliver_every_item_exactly_once():
    # PostgreSQL: SELECT ... FOR UPDATE SKIP LOCKED; SQLite: one UPDATE ... RETURNING per claim.
    n_items, n_workers = 300, 4
    start = time.time()
    DatabaseOutbox().enqueue([make_item(n, at=start) for n in range(n_items)])
    sink = RecordingSink(max_batch=7, pause=0.002)
    barrier = threading.Barrier(n_workers)
    errors = []
    delivered = [0] * n_workers

    def worker(w):
        outbox = DatabaseOutbox()
        deadline = time.monotonic() + 60
        try:
            barrier.wait()
            while time.monotonic() < deadline:
                report = deliver_once(outbox, {"crm": sink}, allowed=lambda i: True,
                                      now=time.time(), limit=20)
                delivered[w] += report.delivered
                if report.delivered == 0:
                    if outbox.pending_count() == 0:
                        return
                    time.sleep(0.005)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(n_workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(sink.seen) == n_items
    assert sorted(sink.seen) == sorted(f"m{n}" for n in range(n_items))
    assert set(OutboxMessage.objects.values_list("status", flat=True)) == {"done"}
    assert set(OutboxMessage.objects.values_list("attempts", flat=True)) == {1}
    assert sum(delivered) == n_items
    assert sum(1 for n in delivered if n) >= 2, delivered  # the workers really did share


def test_the_admin_lists_dead_letters_and_replays_them(admin_client, outbox):
    dead, pending = make_item(1), make_item(2)
    outbox.enqueue([dead, pending])
    outbox.dead(dead.id, error="400 unknown event name")
    listing = admin_client.get("/admin/persona/outboxmessage/", {"status__exact": "dead", "sink": "crm"})
    assert listing.status_code == 200
    assert b"400 unknown event name" in listing.content and b">m1<" in listing.content
    assert b">m2<" not in listing.content
    assert admin_client.get(f"/admin/persona/outboxmessage/{dead.id}/change/").status_code == 200

    response = admin_client.post(
        "/admin/persona/outboxmessage/",
        {"action": "replay_dead_letters", "_selected_action": [dead.id, pending.id]},
        follow=True,
    )
    assert response.status_code == 200
    assert b"1 dead letter(s) queued for delivery again." in response.content
    assert b"1 selected message(s) were not dead letters." in response.content
    assert outbox.dead_letters() == []
    assert status_of(dead) == "pending" and outbox.pending_count() == 2


# -- batch outcomes ---------------------------------------------------------------------------


def row(item):
    return OutboxMessage.objects.get(id=item.id)


def test_retry_many_keeps_each_items_own_time_and_error_in_one_update(
    outbox, django_assert_num_queries
):
    a, b, c, untouched = (make_item(n) for n in range(4))
    outbox.enqueue([a, b, c, untouched])
    outbox.claim(limit=10, now=NOW, lease=60)
    with django_assert_num_queries(1):
        outbox.retry_many([(a.id, NOW + 10.5, "HTTP 503"), (b.id, NOW + 20.25, "timed out"),
                           (c.id, NOW + 30, "HTTP 503")])
    for item, at, error in ((a, NOW + 10.5, "HTTP 503"), (b, NOW + 20.25, "timed out"),
                            (c, NOW + 30, "HTTP 503")):
        r = row(item)
        assert (r.next_attempt_at.timestamp(), r.last_error) == (at, error)
        assert r.attempts == 1 and r.status == "pending" and r.locked_until is None
    r = row(untouched)
    assert r.attempts == 0 and r.locked_until is not None and r.last_error == ""
    assert [i.id for i in outbox.claim(limit=10, now=NOW + 10.5, lease=60)] == [a.id]
    [again] = outbox.claim(limit=10, now=NOW + 20.25, lease=60)
    assert again.id == b.id and again.attempts == 1 and again.last_error == "timed out"


def test_retry_many_with_one_time_and_error_for_all(outbox):
    items = [make_item(n) for n in range(3)]
    outbox.enqueue(items)
    outbox.retry_many([(i.id, NOW + 5, "same") for i in items])
    assert {(r.next_attempt_at.timestamp(), r.last_error, r.attempts)
            for r in OutboxMessage.objects.all()} == {(NOW + 5, "same", 1)}


def test_defer_many_reschedules_without_counting_an_attempt(outbox, django_assert_num_queries):
    a, b = make_item(1), make_item(2)
    outbox.enqueue([a, b])
    outbox.claim(limit=10, now=NOW, lease=60)
    outbox.retry(a.id, at=NOW, error="HTTP 503")  # one real attempt
    outbox.claim(limit=10, now=NOW, lease=60)
    with django_assert_num_queries(1):
        outbox.defer_many([(a.id, NOW + 120, "not sent: breaker open"),
                           (b.id, NOW + 90, "not sent: Retry-After")])
    assert (row(a).attempts, row(a).last_error) == (1, "not sent: breaker open")
    assert (row(b).attempts, row(b).last_error) == (0, "not sent: Retry-After")
    assert row(a).next_attempt_at.timestamp() == NOW + 120 and row(a).locked_until is None
    assert outbox.claim(limit=10, now=NOW + 89, lease=60) == []
    assert [i.id for i in outbox.claim(limit=10, now=NOW + 90, lease=60)] == [b.id]


def test_dead_many_dead_letters_each_with_its_own_error(outbox, django_assert_num_queries):
    a, b, alive = make_item(1), make_item(2), make_item(3)
    outbox.enqueue([a, b, alive])
    outbox.claim(limit=10, now=NOW, lease=60)
    with django_assert_num_queries(1):
        outbox.dead_many([(a.id, "HTTP 400: bad event"), (b.id, "y" * 20_000)])
    letters = {i.id: i for i in outbox.dead_letters()}
    assert set(letters) == {a.id, b.id}
    assert letters[a.id].last_error == "HTTP 400: bad event" and letters[a.id].attempts == 1
    assert letters[b.id].last_error == "y" * 10_000  # truncated like dead()
    assert row(a).next_attempt_at.timestamp() == NOW  # untouched
    assert row(alive).status == "pending" and row(alive).attempts == 0


def test_batch_forms_ignore_unknown_ids_and_do_nothing_for_nothing(
    outbox, django_assert_num_queries
):
    item = make_item(1)
    outbox.enqueue([item])
    with django_assert_num_queries(0):
        outbox.retry_many([])
        outbox.defer_many([])
        outbox.dead_many([])
        outbox.complete([])
    outbox.retry_many([("no-such-id", NOW + 5, "x")])
    outbox.defer_many([("no-such-id", NOW + 5, "x")])
    outbox.dead_many([("no-such-id", "x")])
    r = row(item)
    assert (r.status, r.attempts, r.last_error) == ("pending", 0, "")


def test_large_batches_are_written_in_chunks(outbox):
    from persona_django import stores as stores_module

    items = [make_item(n) for n in range(40)]
    outbox.enqueue(items)
    old = stores_module._IN_CHUNK
    stores_module._IN_CHUNK = 9  # 3 entries per UPDATE, 9 ids per complete
    try:
        outbox.retry_many([(i.id, NOW + n, f"e{n}") for n, i in enumerate(items[:20])])
        outbox.dead_many([(i.id, f"d{n}") for n, i in enumerate(items[20:30])])
        outbox.complete([i.id for i in items[30:]])
    finally:
        stores_module._IN_CHUNK = old
    for n, item in enumerate(items[:20]):
        r = row(item)
        assert (r.next_attempt_at.timestamp(), r.last_error, r.attempts) == (NOW + n, f"e{n}", 1)
    assert [row(i).last_error for i in items[20:30]] == [f"d{n}" for n in range(10)]
    assert {row(i).status for i in items[30:]} == {"done"}


def test_deliver_once_writes_outcomes_back_in_a_few_statements(
    outbox, django_assert_max_num_queries
):
    items = [make_item(n) for n in range(6)]
    ok, later, bad, withheld, held, lost = items

    def answer(batch):
        return DeliveryResult(
            delivered=frozenset({ok.id}),
            retry={later.id: 120.0, held.id: 60.0},
            failed={bad.id: "400 unknown event"},
            errors={later.id: "HTTP 429 from Crm: slow down", held.id: "not sent: breaker open"},
            deferred=frozenset({held.id}),
        )

    outbox.enqueue(items)
    # claim, complete(withheld), complete(ok), retry_many, defer_many, dead_many
    with django_assert_max_num_queries(6):
        report = deliver_once(outbox, {"crm": RecordingSink(answer=answer)},
                              allowed=lambda i: i.id != withheld.id, now=NOW,
                              backoff=Backoff(base=1, cap=10, max_attempts=5))
    assert (report.delivered, report.retried, report.dead, report.withheld, report.deferred) == (
        1, 3, 1, 1, 1)
    assert row(later).last_error == "HTTP 429 from Crm: slow down" and row(later).attempts == 1
    assert row(lost).last_error == "vendor asked to retry" and row(lost).attempts == 1
    assert row(held).attempts == 0 and row(held).last_error == "not sent: breaker open"
    assert row(held).next_attempt_at.timestamp() >= NOW + 60
    assert row(bad).status == "dead" and row(withheld).status == "done"


# -- enqueue and claim ------------------------------------------------------------------------


def test_a_single_enqueue_reuses_its_statement_and_binds_what_django_would(outbox):
    item = make_item(1, at=NOW + 0.123456)
    DatabaseOutbox._insert_sql.clear()
    assert outbox.enqueue([item]) == 1
    key = (connection.alias, connection.vendor)
    assert list(DatabaseOutbox._insert_sql) == [key]
    sql = DatabaseOutbox._insert_sql[key]
    assert outbox.enqueue([item]) == 0  # idempotent by id, same statement
    assert DatabaseOutbox._insert_sql[key] is sql
    # the parameters are what the model fields would have prepared
    fields = [OutboxMessage._meta.get_field(name) for name in DatabaseOutbox._FIELDS]
    model = DatabaseOutbox._row(item)
    expected = [f.get_db_prep_save(getattr(model, f.attname), connection) for f in fields]
    got = DatabaseOutbox._insert_params(item, connection)

    def plain(value):  # psycopg's Jsonb wrapper on PostgreSQL
        return getattr(value, "obj", value)

    assert [plain(v) for v in got] == [plain(v) for v in expected]
    [claimed] = outbox.claim(limit=1, now=NOW + 1, lease=60)
    assert claimed == item


def test_claim_is_one_statement_and_reads_times_exactly(outbox, django_assert_num_queries):
    items = [make_item(n, at=NOW - 1 + n * 0.000001 + 0.123456) for n in range(5)]
    outbox.enqueue(list(reversed(items)))
    with django_assert_num_queries(1):
        claimed = outbox.claim(limit=10, now=NOW + 1, lease=60)
    assert claimed == items  # oldest first, every time to the microsecond
    assert OutboxMessage.objects.filter(locked_until__isnull=False).count() == 5


def test_the_claim_uses_the_claim_index(outbox):
    """The claim statement finds due items through the claim index, in its order: no sort
    of every due row (EXPLAIN of the statement the claim really runs)."""
    outbox.enqueue([make_item(n) for n in range(3)])
    statements = []

    def capture(execute, sql, params, many, context):
        statements.append((sql, params))
        return execute(sql, params, many, context)

    with connection.execute_wrapper(capture):
        assert len(outbox.claim(limit=500, now=NOW, lease=60)) == 3
    [(sql, params)] = statements
    with connection.cursor() as cursor:
        if BACKEND == "postgres":
            cursor.execute("SET LOCAL enable_seqscan = off")  # 3 rows: make the plan honest
        prefix = "EXPLAIN " if BACKEND == "postgres" else "EXPLAIN QUERY PLAN "
        cursor.execute(prefix + sql, params)
        plan = " ".join(str(r) for r in cursor.fetchall())
    assert "persona_outbox_claim" in plan, plan
    assert "Sort" not in plan and "TEMP B-TREE" not in plan, plan  # the index gives the order


@pytest.mark.skipif(BACKEND != "postgres", reason="PostgreSQL-only storage settings")
def test_postgresql_table_has_no_pattern_indexes_and_room_for_hot_updates():
    with connection.cursor() as cursor:
        cursor.execute("SELECT indexname FROM pg_indexes WHERE tablename = %s",
                       [OutboxMessage._meta.db_table])
        names = {r[0] for r in cursor.fetchall()}
        cursor.execute("SELECT reloptions FROM pg_class WHERE relname = %s",
                       [OutboxMessage._meta.db_table])
        [(options,)] = cursor.fetchall()
    assert "persona_outbox_claim" in names and "persona_outbox_due" not in names
    assert not any(n.endswith("_like") for n in names), names
    assert "fillfactor=50" in (options or []), options

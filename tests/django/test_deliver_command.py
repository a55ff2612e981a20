"""``manage.py persona_deliver``: one pass, the loop, stopping, and several workers at once."""

import io
import os
import signal
import threading
import time
import uuid
from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.db.backends.signals import connection_created

from persona_django.models import OutboxMessage
from persona_django.runtime import get_persona
from persona_sdk import Identity
from persona_sdk.outbox import DeliveryResult, OutboxItem, item_id

BACKEND = os.environ.get("PERSONA_TEST_BACKEND", "sqlite")

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def own_cache_namespace(settings):
    conf = {alias: dict(options) for alias, options in settings.CACHES.items()}
    conf["default"]["KEY_PREFIX"] = f"test-{uuid.uuid4().hex[:12]}"
    settings.CACHES = conf


class RecordingSink:
    name = "crm"
    purposes = ("sharing",)

    def __init__(self):
        self.max_batch = 50
        self.seen = []
        self.answer = None
        self.pause = 0.0
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
def sink():
    recorder = RecordingSink()
    persona = get_persona()
    persona.registry.sinks[recorder.name] = recorder
    yield recorder
    persona.registry.sinks.pop(recorder.name, None)


def profile_with_sharing(granted=True):
    who = Identity.anonymous(uuid.uuid4().hex)
    return get_persona().set_consent(who, {"sharing": granted}, source="test")


def enqueue(profile, count, *, sink="crm", start=0):
    now = time.time() - 1
    items = [
        OutboxItem(id=item_id(f"{profile.id}-{n}", sink), sink=sink, message_id=f"{profile.id}-{n}",
                   profile_id=profile.id, payload={"n": n}, purposes=("sharing",),
                   created_at=now, next_attempt_at=now)
        for n in range(start, start + count)
    ]
    get_persona().outbox.enqueue(items)
    return [i.message_id for i in items]


def run(*args):
    out, err = io.StringIO(), io.StringIO()
    call_command("persona_deliver", *args, stdout=out, stderr=err)
    return out.getvalue()


def run_signalled(delay, signum, *args):
    """``run(*args)`` with ``signum`` sent to this process after ``delay`` seconds; returns
    the output and how long the command ran."""
    timer = threading.Timer(delay, os.kill, args=(os.getpid(), signum))
    timer.start()
    try:
        started = time.monotonic()
        output = run(*args)
    finally:
        timer.cancel()
    return output, time.monotonic() - started


def test_once_runs_one_pass_and_prints_the_counts(sink):
    yes, no = profile_with_sharing(True), profile_with_sharing(False)
    sent = enqueue(yes, 3)
    enqueue(no, 1)
    output = run("--once")
    assert output.startswith("pass 1: delivered=3 retried=0 dead=0 withheld=1 (")
    assert output.count("\n") == 1
    assert sorted(sink.seen) == sorted(sent)
    assert set(OutboxMessage.objects.values_list("status", flat=True)) == {"done"}
    assert run("--once").startswith("pass 1: delivered=0 retried=0 dead=0 withheld=0")


def test_once_reports_retries_and_dead_letters(sink):
    profile = profile_with_sharing()
    ids = enqueue(profile, 3)
    enqueue(profile, 1, sink="gone", start=3)  # no such sink registered: retried later

    def answer(items):
        by_message = {i.message_id: i.id for i in items}
        return DeliveryResult(delivered=frozenset({by_message[ids[0]]}),
                              retry={by_message[ids[1]]: 60.0},
                              failed={by_message[ids[2]]: "400 bad payload"})

    sink.answer = answer
    output = run("--once", "--batch", "10")
    assert output.startswith("pass 1: delivered=1 retried=2 dead=1 withheld=0")
    [letter] = get_persona().outbox.dead_letters()
    assert letter.message_id == ids[2] and letter.last_error == "400 bad payload"


def test_the_loop_drains_full_batches_and_stops_at_the_time_limit(sink):
    profile = profile_with_sharing()
    sent = enqueue(profile, 5)
    started = time.monotonic()
    # one loop (more threads would not see this test's uncommitted rows)
    output = run("--threads", "1", "--batch", "2", "--idle-sleep", "0.05", "--max-seconds", "0.4")
    assert time.monotonic() - started < 3
    lines = output.splitlines()
    assert [line.split(" (")[0] for line in lines[:3]] == [
        "pass 1: delivered=2 retried=0 dead=0 withheld=0",
        "pass 2: delivered=2 retried=0 dead=0 withheld=0",
        "pass 3: delivered=1 retried=0 dead=0 withheld=0",
    ]
    assert lines[-1].startswith("stopped (time limit reached) after ")
    assert lines[-1].endswith("delivered=5 retried=0 dead=0 withheld=0")
    assert len(lines) == 4  # idle passes print nothing at the default verbosity
    assert sorted(sink.seen) == sorted(sent)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_stops_the_worker_after_the_pass_in_progress(sink, signum):
    profile = profile_with_sharing()
    sent = enqueue(profile, 3)
    sink.pause = 0.6  # the signal arrives while the sink is working
    before = signal.getsignal(signum)
    output, seconds = run_signalled(0.2, signum, "--threads", "1", "--idle-sleep", "0.05",
                                    "--max-seconds", "10")
    assert seconds < 5
    assert output.splitlines()[0].startswith("pass 1: delivered=3 retried=0 dead=0 withheld=0")
    assert output.splitlines()[-1].startswith("stopped (stop requested) after 1 pass(es)")
    assert sorted(sink.seen) == sorted(sent)
    assert set(OutboxMessage.objects.values_list("status", flat=True)) == {"done"}
    assert signal.getsignal(signum) == before


@pytest.mark.parametrize("args", [("--batch", "0"), ("--idle-sleep", "-1"), ("--batch", "x"),
                                  ("--threads", "0"), ("--threads", "two")])
def test_bad_options_are_refused(args):
    with pytest.raises(CommandError):
        run("--once", *args)


@pytest.mark.django_db(transaction=True)
def test_several_workers_at_once_deliver_each_item_exactly_once(sink):
    # PostgreSQL: SELECT ... FOR UPDATE SKIP LOCKED; SQLite: one UPDATE ... RETURNING per claim.
    profile = profile_with_sharing()
    sent = enqueue(profile, 120)
    sink.max_batch = 5
    sink.pause = 0.003
    outputs, errors = [], []

    def worker():
        try:
            outputs.append(run("--batch", "10", "--idle-sleep", "0.05", "--max-seconds", "1.5"))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(sink.seen) == len(sent) and sorted(sink.seen) == sorted(sent)
    assert set(OutboxMessage.objects.values_list("status", flat=True)) == {"done"}
    totals = [int(out.splitlines()[-1].rsplit("delivered=", 1)[1].split()[0]) for out in outputs]
    assert sum(totals) == len(sent)
    assert sum(1 for n in totals if n) >= 2, outputs  # the workers really did share the queue


def test_drain_stops_once_nothing_is_due(sink):
    profile = profile_with_sharing()
    sent = enqueue(profile, 5)
    later = enqueue(profile, 1, start=5)
    OutboxMessage.objects.filter(message_id__in=later).update(
        next_attempt_at=OutboxMessage.objects.get(message_id=later[0]).next_attempt_at
        + timedelta(hours=1)
    )  # waiting for a retry an hour from now: left for a later run
    started = time.monotonic()
    output = run("--threads", "1", "--drain", "--batch", "2", "--idle-sleep", "30")
    assert time.monotonic() - started < 5  # no idle sleep between passes, no time limit
    lines = output.splitlines()
    assert lines[-1] == (
        "stopped (nothing left to deliver) after 4 pass(es): delivered=5 retried=0 dead=0 "
        "withheld=0"
    )
    assert sorted(sink.seen) == sorted(sent)
    assert OutboxMessage.objects.get(message_id=later[0]).status == "pending"


@pytest.mark.django_db(transaction=True)
def test_threads_share_the_queue_and_deliver_each_item_exactly_once(sink):
    profile = profile_with_sharing()
    sent = enqueue(profile, 200)
    sink.max_batch = 10
    sink.pause = 0.01  # each loop waits on its sink while the other claims
    output = run("--threads", "3", "--drain", "--batch", "10")
    assert sorted(sink.seen) == sorted(sent)  # every item once: no item went to two loops
    assert set(OutboxMessage.objects.values_list("status", flat=True)) == {"done"}
    lines = output.splitlines()
    assert lines[-1].startswith("stopped (nothing left to deliver) after ")
    assert lines[-1].endswith("delivered=200 retried=0 dead=0 withheld=0")
    passes = [line for line in lines if line.startswith("pass ")]
    threads = {line.split("(thread ")[1].split(")")[0] for line in passes}
    assert len(threads) >= 2, output  # the loops really did share the work
    assert sum(int(line.split("delivered=")[1].split()[0]) for line in passes) == 200


@pytest.mark.django_db(transaction=True)
def test_a_signal_stops_every_thread(sink):
    profile = profile_with_sharing()
    enqueue(profile, 40)
    sink.max_batch = 5
    sink.pause = 0.2
    output, seconds = run_signalled(0.3, signal.SIGTERM, "--threads", "2", "--batch", "5",
                                    "--idle-sleep", "0.05")
    assert seconds < 3  # 40 items at 0.2 s per 5 would take 0.8 s per loop
    assert output.splitlines()[-1].startswith("stopped (stop requested) after ")
    assert 0 < len(sink.seen) < 40


@pytest.mark.django_db(transaction=True)
def test_a_backlog_is_delivered_over_one_connection(sink, settings):
    """With Django's default CONN_MAX_AGE of 0 the worker still keeps its connection while
    there is a backlog (a new connection per batch costs more than the batch's claim); it
    lets go of it when it idles."""
    assert settings.DATABASES["default"].get("CONN_MAX_AGE", 0) == 0
    profile = profile_with_sharing()
    enqueue(profile, 30)
    opened = []

    def count(sender, connection, **kwargs):
        opened.append(connection.alias)

    connection_created.connect(count)
    try:
        output = run("--threads", "1", "--drain", "--batch", "5")
    finally:
        connection_created.disconnect(count)
    assert output.splitlines()[-1].startswith("stopped (nothing left to deliver) after 7 pass")
    assert len(opened) <= 2, opened  # not one per pass

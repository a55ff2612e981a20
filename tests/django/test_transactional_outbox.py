"""The Django stores: an event's profile update and its outbox rows commit in one
transaction (on PostgreSQL, in one statement). SQLite + locmem by default, PostgreSQL +
Redis with ``PERSONA_TEST_BACKEND=postgres``."""

import os
import uuid

import pytest
from django.db import DatabaseError, connection, transaction
from django.test.utils import CaptureQueriesContext

import persona_sdk
from persona_django.models import OutboxMessage, ProfileRecord
from persona_django.stores import DatabaseConsentLedger, DatabaseOutbox, DatabaseProfileStore
from persona_sdk import ConsentPolicy, Event, Identity
from persona_sdk.errors import ConcurrentUpdateError
from persona_sdk.outbox import DeliveryResult, OutboxItem
from persona_sdk.plugins import make_plugin_manager

BACKEND = os.environ.get("PERSONA_TEST_BACKEND", "sqlite")
NOW = 1_795_435_200.0

pytestmark = pytest.mark.django_db


class Sink:
    def __init__(self, name):
        self.name = name
        self.purposes = ("analytics",)
        self.max_batch = 100

    def accepts(self, event):
        return True

    def deliver(self, items):
        return DeliveryResult.all_delivered(items)


class BrokenOutbox(DatabaseOutbox):
    """Writes the rows as usual, then fails (a database error after the INSERT was sent)."""

    broken = False

    def enqueue(self, items):
        added = super().enqueue(items)
        if self.broken:
            raise DatabaseError("connection lost")
        return added


@pytest.fixture(autouse=True)
def own_cache_namespace(settings):
    conf = {alias: dict(options) for alias, options in settings.CACHES.items()}
    conf["default"]["KEY_PREFIX"] = f"test-{uuid.uuid4().hex[:12]}"
    settings.CACHES = conf


def make(sinks=("crm",), outbox=None):
    persona = persona_sdk.Persona(
        store=DatabaseProfileStore(timeout=120),
        ledger=DatabaseConsentLedger(),
        outbox=outbox or DatabaseOutbox(),
        plugin_manager=make_plugin_manager(),
        policy=ConsentPolicy(mode="opt-out"),
        clock=lambda: NOW,
    )
    for name in sinks:
        persona.registry.sinks[name] = Sink(name)
    return persona


def revision_of(persona, anonymous_id):
    pid = persona.store.lookup(Identity.anonymous(anonymous_id))
    return ProfileRecord.objects.get(id=pid).revision


def test_each_event_is_queued_with_the_profile_update_and_reads_back_exactly():
    persona = make(sinks=("crm", "cdp"))
    persona.page(anonymous_id="v", message_id="m1", timestamp=NOW)  # creates the profile
    event = Event.create("track", event="Added", anonymous_id="v", message_id="m2",
                         properties={"sku": "S-1", "price": 9.5, "tags": ["a", "é"]},
                         timestamp=NOW + 1)
    result = persona.ingest(event)  # updates it: on PostgreSQL, the joined statement
    assert (result.applied, result.queued) == (True, 2)
    assert OutboxMessage.objects.filter(message_id="m2").count() == 2
    claimed = {i.sink: i for i in persona.outbox.claim(limit=10, now=NOW + 5, lease=30)
               if i.message_id == "m2"}
    for sink in ("crm", "cdp"):
        expected = OutboxItem.for_event(event, sink=sink, profile_id=result.profile.id,
                                        purposes=("analytics",), now=NOW)
        assert claimed[sink] == expected


def test_the_outbox_row_costs_no_statement_of_its_own_on_postgresql():
    with_sink, without = make(), make(sinks=())
    for persona in (with_sink, without):
        persona.page(anonymous_id=f"warm-{id(persona)}", timestamp=NOW)
    counts = []
    for persona in (with_sink, without):
        with CaptureQueriesContext(connection) as captured:
            persona.page(anonymous_id=f"warm-{id(persona)}", timestamp=NOW + 1)
        counts.append(len(captured))
    # PostgreSQL: the profile's UPDATE carries the INSERT; elsewhere one INSERT more, in the
    # same transaction
    assert counts[0] - counts[1] == (0 if connection.vendor == "postgresql" else 1)
    assert OutboxMessage.objects.count() == 2


@pytest.mark.parametrize("existing", [True, False], ids=["update", "create"])
def test_a_failed_enqueue_rolls_the_profile_update_back(existing):
    outbox = BrokenOutbox()
    persona = make(outbox=outbox)
    if existing:
        persona.page(anonymous_id="v", message_id="m1", timestamp=NOW)
        before = revision_of(persona, "v")
    outbox.broken = True
    with pytest.raises(DatabaseError, match="connection lost"):
        persona.page(anonymous_id="v", message_id="m2", timestamp=NOW + 1)
    assert not OutboxMessage.objects.filter(message_id="m2").exists()
    if existing:
        assert revision_of(persona, "v") == before
    else:
        assert persona.store.lookup(Identity.anonymous("v")) is None
        assert not ProfileRecord.objects.exists()
    outbox.broken = False
    result = persona.page(anonymous_id="v", message_id="m2", timestamp=NOW + 1)
    assert (result.applied, result.queued) == (True, 1)  # the retry is not a "duplicate"
    assert OutboxMessage.objects.filter(message_id="m2").count() == 1


def test_a_save_that_fails_its_revision_check_queues_nothing():
    persona = make()
    persona.page(anonymous_id="v", message_id="m1", timestamp=NOW)
    store = persona.store
    pid = store.lookup(Identity.anonymous("v"))
    stale, fresh = store.load(pid), store.load(pid)
    store.save(fresh)
    item = OutboxItem.for_event(Event.create("track", event="X", anonymous_id="v",
                                             message_id="lost-race", timestamp=NOW),
                                sink="crm", profile_id=pid, purposes=("analytics",), now=NOW)
    with pytest.raises(ConcurrentUpdateError):
        store.save(stale, then=lambda p: persona.outbox.enqueue([item]))
    assert not OutboxMessage.objects.filter(message_id="lost-race").exists()


def test_an_enclosing_transaction_that_rolls_back_takes_both_with_it():
    persona = make()
    persona.page(anonymous_id="v", message_id="m1", timestamp=NOW)
    before = revision_of(persona, "v")
    with pytest.raises(RuntimeError), transaction.atomic():  # ATOMIC_REQUESTS, a view raises
        persona.page(anonymous_id="v", message_id="m2", timestamp=NOW + 1)
        assert OutboxMessage.objects.filter(message_id="m2").exists()
        raise RuntimeError("the view failed")
    assert not OutboxMessage.objects.filter(message_id="m2").exists()
    assert revision_of(persona, "v") == before


def test_an_exposure_is_queued_with_its_profile_update():
    persona = make()
    persona.page(anonymous_id="v", message_id="m1", timestamp=NOW)
    pid = persona.store.lookup(Identity.anonymous("v"))
    persona.load_definitions(
        {"slots": {"banner": {"strategy": "experiment", "variants": [{"key": "x"}, {"key": "y"}]}}}
    )
    subject = persona.subject(persona.store.load(pid), {})
    decision = persona.decide("banner", subject)
    assert persona.record_exposure(pid, decision)
    rows = OutboxMessage.objects.filter(payload__event="Experiment Viewed")
    assert rows.count() == 1 and rows.get().profile_id == pid

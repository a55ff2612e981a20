"""Through the Django adapter: the durable DatabaseOutbox, ``persona_deliver``, the admin.

Consent is re-checked at delivery, erasure purges pending items (and asks Segment to delete),
a 4xx the vendor will never accept is a dead letter with the vendor's message, visible in
the admin and replayable, and the circuit breaker keeps the worker off the network."""

from __future__ import annotations

import io
import time
import uuid

import pytest
from django.core.management import call_command

from persona_django.models import OutboxMessage
from persona_django.runtime import get_persona
from persona_sdk import Event, Identity

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def own_cache_namespace(settings):
    conf = {alias: dict(options) for alias, options in settings.CACHES.items()}
    conf["default"]["KEY_PREFIX"] = f"test-{uuid.uuid4().hex[:12]}"
    settings.CACHES = conf


@pytest.fixture
def configure(settings, segment_fake):
    """Point the site's Segment plugin settings at the fake (get_persona is rebuilt)."""

    def apply(**segment):
        block = {"write_key": "WK", "host": segment_fake.url, "max_inline_wait": 0, **segment}
        settings.PERSONA = {**settings.PERSONA, "PLUGINS": {"segment": block}}
        persona = get_persona()
        assert "segment" in persona.registry.sinks
        return persona

    return apply


def visitor(**consent):
    who = Identity.anonymous(uuid.uuid4().hex)
    get_persona().set_consent(who, consent or {"analytics": True, "sharing": True},
                              source="test")
    return who


def deliver(*args):
    out = io.StringIO()
    call_command("persona_deliver", "--once", *args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def rows(**filters):
    return list(OutboxMessage.objects.filter(sink="segment", **filters))


def test_an_event_goes_through_the_outbox_to_segment(configure, segment_fake):
    persona = configure()
    who = visitor()
    result = persona.track("Order Completed", {"revenue": 42}, anonymous_id=who.value,
                           user_id="u-42")
    assert result.queued == 1
    [row] = rows(status="pending")
    assert segment_fake.requests == []  # nothing leaves in the request
    assert deliver().startswith("pass 1: delivered=1 retried=0 dead=0 withheld=0")
    [message] = segment_fake.messages()
    assert message["messageId"] == row.message_id and message["userId"] == "u-42"
    assert message["properties"] == {"revenue": 42}
    assert rows(status="done")[0].id == row.id


def test_without_sharing_consent_nothing_is_queued(configure, segment_fake):
    persona = configure()
    who = visitor(analytics=True, sharing=False)
    assert persona.track("Viewed", anonymous_id=who.value).queued == 0
    assert rows() == []


def test_consent_withdrawn_after_enqueue_is_not_sent(configure, segment_fake):
    persona = configure()
    who = visitor()
    persona.track("Viewed", anonymous_id=who.value)
    persona.set_consent(who, {"sharing": "denied"}, source="banner")
    assert deliver().startswith("pass 1: delivered=0 retried=0 dead=0 withheld=1")
    assert segment_fake.requests == []
    assert [r.status for r in rows()] == ["done"]


def test_erasure_purges_pending_items_and_asks_segment_to_delete(configure, segment_fake):
    persona = configure(public_api_token="PAT", public_api_host=segment_fake.url)
    who = visitor()
    persona.identify(user_id="u-77", anonymous_id=who.value, traits={"plan": "pro"})
    persona.track("Viewed", anonymous_id=who.value)
    assert len(rows(status="pending")) == 2
    report = persona.erase(Identity.user("u-77"))
    assert report["outbox_items_purged"] == 2
    [cdp] = [r for r in report["adapters"] if r["adapter"] == "persona_cdp"]
    assert cdp["status"] == "requested"
    [segment] = cdp["vendors"]
    assert segment["endpoint"] == f"POST {segment_fake.url}/regulations"
    assert segment["subject_ids"] == ["u-77"] and segment["regulate_id"]
    assert segment_fake.regulations[0]["regulationType"] == "SUPPRESS_WITH_DELETE"
    assert segment_fake.regulations[0]["subjectIds"] == ["u-77"]
    assert rows() == []
    assert deliver().startswith("pass 1: delivered=0")
    assert segment_fake.batches() == []


def test_erase_without_a_token_says_what_was_not_done(configure, segment_fake):
    persona = configure()
    who = visitor()
    persona.identify(user_id="u-78", anonymous_id=who.value)
    report = persona.erase(who)
    [cdp] = [r for r in report["adapters"] if r["adapter"] == "persona_cdp"]
    assert cdp["status"] == "not_configured" and "u-78" in cdp["vendors"][0]["reason"]
    assert segment_fake.regulations == []


def test_a_refused_write_key_is_a_dead_letter_in_the_admin_and_replay_works(
    configure, segment_fake, admin_client
):
    persona = configure(write_key="REVOKED")
    who = visitor()
    persona.track("Viewed", anonymous_id=who.value)
    assert deliver().startswith("pass 1: delivered=0 retried=0 dead=1 withheld=0")
    assert deliver().startswith("pass 1: delivered=0 retried=0 dead=0")  # not retried
    [row] = rows(status="dead")
    assert row.last_error == "HTTP 401 from Segment: unauthorized: invalid write key"
    listing = admin_client.get("/admin/persona/outboxmessage/",
                               {"status__exact": "dead", "sink": "segment"})
    assert listing.status_code == 200
    assert b"HTTP 401 from Segment: unauthorized: invalid write key" in listing.content
    assert row.message_id.encode() in listing.content

    configure(write_key="WK")  # the key is fixed...
    response = admin_client.post(  # ...and the dead letter replayed from the admin
        "/admin/persona/outboxmessage/",
        {"action": "replay_dead_letters", "_selected_action": [row.id]}, follow=True)
    assert b"1 dead letter(s) queued for delivery again." in response.content
    assert deliver().startswith("pass 1: delivered=1")
    assert [m["messageId"] for m in segment_fake.messages()] == [row.message_id]


def test_an_oversize_message_is_a_dead_letter_with_the_reason(configure, segment_fake):
    persona = configure()
    who = visitor()
    # just under the core's 32 KB event limit, over it once the adapter adds its context
    base = Event.create("track", event="Big", properties={"blob": ""}, anonymous_id=who.value)
    blob = "x" * (32 * 1024 - base.size() - 10)
    assert persona.track("Big", {"blob": blob}, anonymous_id=who.value).queued == 1
    persona.track("Small", anonymous_id=who.value)
    assert deliver().startswith("pass 1: delivered=1 retried=0 dead=1")
    [row] = rows(status="dead")
    assert "per-message limit of 32,768 bytes" in row.last_error
    assert [m["event"] for m in segment_fake.messages()] == ["Small"]


def test_the_breaker_keeps_the_worker_off_the_network(configure, segment_fake):
    persona = configure(max_batch=2, breaker_threshold=2, breaker_cooldown=120)
    who = visitor()
    for n in range(6):
        persona.track(f"E{n}", anonymous_id=who.value)
    segment_fake.script("503", "503", "503", "503")
    assert deliver().startswith("pass 1: delivered=0 retried=6 dead=0")
    assert len(segment_fake.requests) == 2  # two failed batches opened it; the third waited
    sink = persona.registry.sinks["segment"]
    assert sink.breaker.state == "open"
    assert all(r.status == "pending" for r in rows())
    # the four items sent count an attempt and keep the vendor's answer; the two the breaker
    # held back were never sent: no attempt counted, and last_error says why
    sent = [r for r in rows() if r.attempts == 1]
    held = [r for r in rows() if r.attempts == 0]
    assert len(sent) == 4 and len(held) == 2
    assert all(r.last_error.startswith("HTTP 503 from Segment") for r in sent)
    for r in held:
        assert r.last_error.startswith("not sent: the circuit breaker is open"), r.last_error
        assert "last failure: HTTP 503 from Segment" in r.last_error
        assert r.next_attempt_at.timestamp() >= time.time() + 100  # after the cool-down


def test_retry_after_pushes_the_next_attempt(configure, segment_fake):
    persona = configure()
    segment_fake.retry_after = "120"
    segment_fake.script("429")
    who = visitor()
    persona.track("Viewed", anonymous_id=who.value)
    before = time.time()
    assert deliver().startswith("pass 1: delivered=0 retried=1")
    [row] = rows()
    assert row.next_attempt_at.timestamp() >= before + 119
    assert row.status == "pending" and row.attempts == 1


def test_integrations_follow_the_persons_consent_on_a_django_site(configure, segment_fake):
    persona = configure(integrations={"marketing": ["Braze"], "personalization": ["Optimizely"]})
    yes = visitor(analytics=True, sharing=True, marketing=True, personalization=True)
    no = visitor(analytics=True, sharing=True, marketing=False)
    persona.track("A", anonymous_id=yes.value)
    persona.track("B", anonymous_id=no.value)
    persona.set_consent(yes, {"personalization": "denied"}, source="banner")  # after enqueue
    deliver()
    got = {m["event"]: m["integrations"] for m in segment_fake.messages()}
    assert got == {"A": {"All": True, "Optimizely": False},
                   "B": {"All": True, "Braze": False, "Optimizely": False}}


def test_identify_forwards_the_email_trait_with_sharing(configure, segment_fake):
    persona = configure()
    who = visitor()
    persona.identify(user_id="u-5", anonymous_id=who.value, email="Ada@Example.com")
    deliver()
    [message] = segment_fake.messages()
    assert message["type"] == "identify" and message["traits"]["email"] == "Ada@Example.com"

"""The Segment sink against the fake: messages, batching under the limits, response handling
(Retry-After, X-RateLimit-Reset, 5xx, timeouts, 4xx), the circuit breaker, consent."""

from __future__ import annotations

import time

import pytest

from persona_cdp.breaker import CLOSED, HALF_OPEN, OPEN, CircuitBreaker
from persona_cdp.config import parse
from persona_cdp.segment import CdpSink, parse_retry_delay
from persona_sdk import Event
from persona_sdk.outbox import OutboxItem

from .fakes import FakeSegment, http_date

NOW = 1_795_435_200.0
BOTH = ("analytics", "sharing")


def config(fake, **extra):
    settings = {"write_key": "WK", "host": fake.url, "max_inline_wait": 0, **extra}
    parsed, problems = parse("segment", settings)
    assert parsed is not None, problems
    return parsed


def item(event, *, profile_id="p1", purposes=BOTH, sink="segment"):
    return OutboxItem.for_event(event, sink=sink, profile_id=profile_id, purposes=purposes,
                                now=NOW)


def track(n=0, **props):
    return item(Event.create("track", user_id=f"u{n % 7}", event="Order Completed",
                             properties={"n": n, **props}, timestamp=NOW - n))


class Clock:
    def __init__(self, t=1000.0):
        self.t = t

    def __call__(self):
        return self.t


def test_each_kind_goes_through_v1_batch_with_the_write_key_in_the_body(segment_fake):
    sink = CdpSink(config(segment_fake))
    events = [
        Event.create("identify", user_id="u1", anonymous_id="a1",
                     traits={"email": "ada@example.com", "plan": "pro"}, timestamp=NOW),
        Event.create("track", user_id="u1", event="Signed Up", properties={"x": 1},
                     context={"ip": "203.0.113.9"}, timestamp=NOW),
        Event.create("page", anonymous_id="a1", name="Home", properties={"path": "/"},
                     timestamp=NOW),
        Event.create("alias", previous_id="a1", user_id="u1", timestamp=NOW),
    ]
    assert all(sink.accepts(e) for e in events)
    items = [item(e) for e in events]
    result = sink.deliver(items)
    assert result.delivered == {i.id for i in items} and not result.retry and not result.failed
    [request] = segment_fake.requests
    assert request.path == "/v1/batch"
    assert request.body["writeKey"] == "WK" and "authorization" not in request.headers
    assert request.body["sentAt"].endswith("Z")
    sent = {m["messageId"]: m for m in request.body["batch"]}
    assert list(sent) == [e.message_id for e in events]
    identify = sent[events[0].message_id]
    assert identify["traits"] == {"email": "ada@example.com", "plan": "pro"}
    assert identify["timestamp"] == "2026-11-23T12:00:00.000Z"
    assert identify["context"]["library"]["name"] == "persona-sdk"
    assert "integrations" not in identify  # nothing mapped: every enabled destination
    assert sent[events[1].message_id]["context"]["ip"] == "203.0.113.9"
    assert sent[events[3].message_id]["previousId"] == "a1"


def test_alias_without_a_user_id_is_not_accepted():
    fake_cfg, _ = parse("segment", {"write_key": "WK"})
    sink = CdpSink(fake_cfg)
    assert not sink.accepts(Event.create("alias", previous_id="a1", anonymous_id="a2"))


def test_batches_respect_max_batch_and_500_kb_and_reuse_one_connection(segment_fake):
    sink = CdpSink(config(segment_fake, max_batch=500))
    small = [track(n) for n in range(1_200)]
    result = sink.deliver(small)
    assert len(result.delivered) == 1_200
    assert [len(b) for b in segment_fake.batches()] == [500, 500, 200]
    segment_fake.reset()
    big = [track(n, pad="x" * 20_000) for n in range(60)]  # ~1.2 MB in all
    result = sink.deliver(big)
    assert len(result.delivered) == 60 and not result.failed
    sizes = [r.raw_size for r in segment_fake.requests]
    assert len(sizes) == 3 and max(sizes) <= 500_000
    assert segment_fake.distinct == 60
    ports = {r.client_port for r in segment_fake.requests}
    assert len(ports) == 1  # one keep-alive connection, reused


def test_an_oversize_message_is_dead_lettered_before_sending_and_the_rest_delivered(segment_fake):
    sink = CdpSink(config(segment_fake))
    ok = track(1)
    huge = OutboxItem(id="huge", sink="segment", message_id="m-huge", profile_id="p1",
                      payload={**ok.payload, "messageId": "m-huge",
                               "properties": {"blob": "b" * 40_000}},
                      purposes=BOTH, created_at=NOW)
    result = sink.deliver([huge, ok])
    assert result.delivered == {ok.id}
    assert "over Segment's per-message limit of 32,768 bytes" in result.failed["huge"]
    assert segment_fake.distinct == 1


def test_a_message_without_ids_is_dead_lettered_not_sent(segment_fake):
    sink = CdpSink(config(segment_fake))
    bad = OutboxItem(id="x", sink="segment", message_id="m1", profile_id="p1",
                     payload={"type": "track", "event": "E", "messageId": "m1"},
                     purposes=BOTH, created_at=NOW)
    result = sink.deliver([bad])
    assert "neither userId nor anonymousId" in result.failed["x"]
    assert segment_fake.requests == []


def test_429_retry_after_seconds_is_honoured_and_held_without_network_io(segment_fake):
    clock = Clock()
    sink = CdpSink(config(segment_fake), breaker=CircuitBreaker(clock=clock))
    segment_fake.retry_after = "30"
    segment_fake.script("429")
    items = [track(n) for n in range(3)]
    result = sink.deliver(items)
    assert result.retry == {i.id: 30.0 for i in items} and not result.delivered
    clock.t += 10
    result = sink.deliver(items)
    assert set(result.retry.values()) == {20.0}
    assert len(segment_fake.requests) == 1  # nothing sent while the vendor said wait
    clock.t += 21
    assert sink.deliver(items).delivered == {i.id for i in items}


def test_retry_after_http_date_and_x_ratelimit_reset():
    now = time.time()
    assert parse_retry_delay({"Retry-After": http_date(90)}, now=now) == pytest.approx(90, abs=2)
    assert parse_retry_delay({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}, now=now) == 0
    assert parse_retry_delay({"X-RateLimit-Reset": "12"}, now=now) == 12
    assert parse_retry_delay({"X-RateLimit-Reset": str(int(now) + 45)}, now=now) == \
        pytest.approx(45, abs=1)
    assert parse_retry_delay({"X-RateLimit-Reset": str(int(now * 1000) + 5000)}, now=now) == \
        pytest.approx(5, abs=1)
    assert parse_retry_delay({"Retry-After": "soon"}, now=now) is None
    assert parse_retry_delay({}, now=now) is None
    assert parse_retry_delay({"Retry-After": "999999"}, now=now) == 3600  # a guard


def test_429_with_an_http_date_or_only_x_ratelimit_reset(segment_fake):
    sink = CdpSink(config(segment_fake))
    segment_fake.retry_after = http_date(40)
    segment_fake.script("429")
    [one] = [track(1)]
    assert sink.deliver([one]).retry[one.id] == pytest.approx(40, abs=2)
    sink.breaker.reset()
    segment_fake.retry_after = None
    segment_fake.rate_limit_reset = "15"
    segment_fake.script("429")
    assert sink.deliver([one]).retry[one.id] == 15


def test_5xx_and_timeouts_are_retried(segment_fake):
    sink = CdpSink(config(segment_fake, timeout=0.3))
    segment_fake.timeout_sleep = 1.0
    items = [track(n) for n in range(2)]
    segment_fake.script("503")
    assert sink.deliver(items).retry == {i.id: 0.0 for i in items}
    segment_fake.script("timeout")
    started = time.monotonic()
    assert sink.deliver(items).retry == {i.id: 0.0 for i in items}
    assert time.monotonic() - started < 1.0
    assert sink.deliver(items).delivered == {i.id for i in items}


def test_a_batch_the_vendor_refuses_is_split_to_the_bad_message():
    """The vendor's per-message limit is lower than configured: the 400 is narrowed down by
    splitting, the neighbours are delivered once, the culprit gets the vendor's message."""
    with FakeSegment(max_message_bytes=4_000) as fake:
        sink = CdpSink(config(fake))
        items = [track(n) for n in range(8)]
        items[5] = track(5, pad="z" * 5_000)
        result = sink.deliver(items)
        assert result.delivered == {i.id for i in items} - {items[5].id}
        assert result.failed[items[5].id].startswith("HTTP 400 from Segment: payload_too_large")
        assert fake.duplicates == 0 and fake.distinct == 7
        assert sink.stats["split"] >= 3


def test_a_bad_write_key_dead_letters_with_the_vendor_message(segment_fake):
    cfg, _ = parse("segment", {"write_key": "WRONG", "host": segment_fake.url})
    sink = CdpSink(cfg)
    items = [track(n) for n in range(3)]
    result = sink.deliver(items)
    assert result.failed == {
        i.id: "HTTP 401 from Segment: unauthorized: invalid write key" for i in items}
    assert not result.retry


def test_the_breaker_opens_after_consecutive_failures_then_probes(segment_fake):
    clock = Clock()
    breaker = CircuitBreaker(threshold=3, cooldown=30, clock=clock)
    sink = CdpSink(config(segment_fake, max_batch=2), breaker=breaker)
    segment_fake.script("500", "502", "503", "504")
    items = [track(n) for n in range(10)]
    result = sink.deliver(items)  # 5 chunks of 2: three fail, the breaker opens
    assert len(segment_fake.requests) == 3
    assert breaker.state == OPEN and breaker.trips == 1
    assert set(result.retry) == {i.id for i in items}
    assert sorted(set(result.retry.values())) == [0.0, 30.0]
    clock.t += 10
    result = sink.deliver(items[:2])
    assert result.retry == {i.id: 20.0 for i in items[:2]}
    assert len(segment_fake.requests) == 3  # open: no network I/O
    clock.t += 25
    assert breaker.state == HALF_OPEN
    result = sink.deliver(items[:2])  # the probe fails (the scripted 504): open again, longer
    assert len(segment_fake.requests) == 4 and breaker.state == OPEN
    assert result.retry == {i.id: 0.0 for i in items[:2]}
    clock.t += 59
    assert breaker.state == OPEN
    clock.t += 2
    result = sink.deliver(items)  # probe succeeds, breaker closes, the rest goes too
    assert result.delivered == {i.id for i in items} and breaker.state == CLOSED


def test_integrations_follow_consent_purposes(segment_fake):
    answers = {"p-yes": {"marketing": True, "personalization": True},
               "p-mixed": {"marketing": False, "personalization": True}}
    asked = []

    def lookup(profile_id, purposes):
        asked.append((profile_id, purposes))
        return answers.get(profile_id)

    cfg = config(segment_fake, integrations={"marketing": ["Braze", "Customer.io"],
                                             "personalization": ["Optimizely"]})
    sink = CdpSink(cfg, consent_lookup=lookup)
    items = {pid: item(Event.create("track", user_id=pid, event="E", timestamp=NOW),
                       profile_id=pid)
             for pid in ("p-yes", "p-mixed", "p-unknown")}
    again = item(Event.create("track", user_id="p-yes", event="F", timestamp=NOW),
                 profile_id="p-yes")
    sink.deliver([*items.values(), again])
    got = {m["userId"]: m["integrations"] for m in segment_fake.messages()}
    assert got["p-yes"] == {"All": True}
    assert got["p-mixed"] == {"All": True, "Braze": False, "Customer.io": False}
    assert got["p-unknown"] == {"All": True, "Braze": False, "Customer.io": False,
                                "Optimizely": False}
    assert sorted(p for p, _ in asked) == ["p-mixed", "p-unknown", "p-yes"]  # once per profile
    # no lookup at all: the safe answer, every mapped destination off
    segment_fake.reset()
    CdpSink(cfg).deliver([items["p-yes"]])
    [message] = segment_fake.messages()
    assert message["integrations"] == {"All": True, "Braze": False, "Customer.io": False,
                                       "Optimizely": False}


def test_email_is_forwarded_only_with_sharing_in_the_sinks_purposes(segment_fake):
    identify = Event.create("identify", user_id="u1", traits={"email": "ada@example.com",
                                                              "plan": "pro"},
                            context={"traits": {"email": "ada@example.com"}}, timestamp=NOW)
    CdpSink(config(segment_fake)).deliver([item(identify)])
    CdpSink(config(segment_fake, purposes=["analytics"])).deliver(
        [item(identify, purposes=("analytics",))])
    with_sharing, without = segment_fake.messages()
    assert with_sharing["traits"]["email"] == "ada@example.com"
    assert without["traits"] == {"plan": "pro"} and without["context"]["traits"] == {}


def test_gzip_bodies(segment_fake):
    sink = CdpSink(config(segment_fake, gzip=True))
    items = [track(n) for n in range(5)]
    assert sink.deliver(items).delivered == {i.id for i in items}
    assert segment_fake.requests[0].headers["content-encoding"] == "gzip"


def test_a_connection_error_is_a_retry_not_a_crash():
    cfg, _ = parse("segment", {"write_key": "WK", "host": "http://127.0.0.1:9", "timeout": 0.5,
                               "max_inline_wait": 0})
    one = track(1)
    assert CdpSink(cfg).deliver([one]).retry == {one.id: 0.0}

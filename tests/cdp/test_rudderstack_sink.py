"""The same sink configured for RudderStack: data-plane URL, Basic auth only, traits in
``context.traits`` on identify, plain-text errors, 413 on oversize, 429 without Retry-After."""

from __future__ import annotations

from persona_cdp.config import parse
from persona_cdp.segment import CdpSink
from persona_sdk import Event
from persona_sdk.outbox import OutboxItem

from .fakes import FakeRudderStack

NOW = 1_795_435_200.0


def config(fake, **extra):
    parsed, problems = parse(
        "rudderstack",
        {"write_key": "RWK", "data_plane_url": fake.url, "max_inline_wait": 0, **extra},
    )
    assert parsed is not None, problems
    return parsed


def item(event, profile_id="p1"):
    return OutboxItem.for_event(event, sink="rudderstack", profile_id=profile_id,
                                purposes=("analytics", "sharing"), now=NOW)


def track(n, **props):
    return item(Event.create("track", anonymous_id=f"a{n}", event="Tick",
                             properties={"n": n, **props}, timestamp=NOW))


def test_basic_auth_only_and_identify_traits_in_context(rudder_fake):
    sink = CdpSink(config(rudder_fake))
    assert sink.name == "rudderstack"
    identify = item(Event.create("identify", user_id="u1", traits={"plan": "pro",
                                                                    "email": "a@b.co"},
                                 context={"traits": {"source": "crm"}}, timestamp=NOW))
    page = item(Event.create("page", anonymous_id="a1", name="Home", timestamp=NOW))
    result = sink.deliver([identify, page])
    assert result.delivered == {identify.id, page.id}
    [request] = rudder_fake.requests
    assert request.headers["authorization"].startswith("Basic ")
    assert "writeKey" not in request.body
    first, second = request.body["batch"]
    assert "traits" not in first
    assert first["context"]["traits"] == {"source": "crm", "plan": "pro", "email": "a@b.co"}
    assert first["channel"] == "server" and first["integrations"] == {"All": True}
    assert second["name"] == "Home"


def test_plain_text_errors_become_dead_letters_with_the_vendor_message():
    with FakeRudderStack(disabled_keys=("OFF",)) as fake:
        items = [track(n) for n in range(2)]
        wrong, _ = parse("rudderstack", {"write_key": "NOPE", "data_plane_url": fake.url})
        assert CdpSink(wrong).deliver(items).failed == {
            i.id: "HTTP 401 from RudderStack: invalid write key" for i in items}
        off, _ = parse("rudderstack", {"write_key": "OFF", "data_plane_url": fake.url})
        assert set(CdpSink(off).deliver(items).failed.values()) == {
            "HTTP 404 from RudderStack: source is disabled"}
        assert fake.distinct == 0


def test_413_is_split_down_and_a_single_oversize_message_dead_lettered():
    with FakeRudderStack(max_request_bytes=20_000) as fake:
        sink = CdpSink(config(fake))
        items = [track(n, pad="p" * 4_000) for n in range(10)]
        items.append(track(99, pad="q" * 25_000))
        result = sink.deliver(items)
        assert result.delivered == {i.id for i in items[:10]}
        assert result.failed == {items[10].id:
                                 "HTTP 413 from RudderStack: request size exceeds max limit"}
        assert 413 in fake.statuses and fake.duplicates == 0 and fake.distinct == 10


def test_429_without_retry_after_is_a_plain_retry(rudder_fake):
    sink = CdpSink(config(rudder_fake))
    rudder_fake.script("429")
    one = track(1)
    assert sink.deliver([one]).retry == {one.id: 0.0}
    assert sink.deliver([one]).delivered == {one.id}


def test_host_is_accepted_as_the_data_plane_url(rudder_fake):
    parsed, problems = parse("rudderstack", {"write_key": "RWK", "host": rudder_fake.url + "/"})
    assert parsed is not None and parsed.host == rudder_fake.url
    assert [p.id for p in problems] == ["persona_cdp.W003"]
    one = track(1)
    assert CdpSink(parsed).deliver([one]).delivered == {one.id}

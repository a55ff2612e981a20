import json

import pytest

from persona_sdk.clock import DAY, day_of
from persona_sdk.errors import EventError, IdentityError, ProfileFormatError
from persona_sdk.events import Event, apply_event
from persona_sdk.identity import Identity, email_hash, normalize_email
from persona_sdk.profile import SCHEMA_VERSION, DayCounter, Profile
from persona_sdk.testing import build_profile

NOW = 1_795_435_200.0  # 2026-11-23 12:00 UTC


def test_rolling_windows_are_exact_to_the_day():
    c = DayCounter()
    today = day_of(NOW)
    for days_ago in (0, 1, 6, 7, 29, 30, 89, 364, 365):
        c.add(today - days_ago)
    assert c.window(1, today) == 1
    assert c.window(7, today) == 3  # 0, 1, 6 — day 7 is outside "the last 7 days"
    assert c.window(30, today) == 5
    assert c.window(90, today) == 7
    assert c.window(365, today) == 8
    assert c.total == 9


def test_day_buckets_stay_bounded_however_long_a_profile_lives():
    p = Profile()
    for d in range(2000):
        apply_event(p, Event.create("page", anonymous_id="a", timestamp=NOW + d * DAY))
    assert len(p.behaviour.page_views.days) <= 366
    assert p.behaviour.page_views.total == 2000
    assert p.behaviour.page_views.window(365, day_of(NOW + 1999 * DAY)) == 365


def test_sessions_start_after_thirty_idle_minutes():
    p = Profile()
    for offset in (0, 60, 29 * 60, 29 * 60 + 31 * 60, 10 * 3600):
        apply_event(p, Event.create("page", anonymous_id="a", timestamp=NOW + offset))
    assert p.behaviour.sessions.total == 3
    assert p.behaviour.page_views.total == 5


def test_purchases_revenue_and_category_affinity():
    p = Profile()
    apply_event(p, Event.create("track", anonymous_id="a", event="Order Completed",
                                properties={"revenue": 120.5, "products": [{"category": "shoes"}]},
                                timestamp=NOW))
    apply_event(p, Event.create("track", anonymous_id="a", event="Product Viewed",
                                properties={"category": "bags"}, timestamp=NOW))
    b = p.behaviour
    assert (b.purchases.total, b.revenue.total, b.last_purchase_at) == (1, 120.5, NOW)
    assert b.affinity_scores(NOW) == {"shoes": 5.0, "bags": 1.0}
    # thirty days later (one half-life) interest has halved
    assert b.affinity_scores(NOW + 30 * DAY)["shoes"] == pytest.approx(2.5)
    assert b.top_category(NOW) == "shoes"


def test_a_replayed_message_id_is_counted_once():
    p = Profile()
    e = Event.create("track", anonymous_id="a", event="Signed Up", message_id="m1", timestamp=NOW)
    assert apply_event(p, e) is True
    assert apply_event(p, e) is False
    assert p.behaviour.events["Signed Up"].counts.total == 1


def test_identify_traits_keep_the_latest_by_timestamp():
    p = Profile()
    apply_event(p, Event.create("identify", user_id="u", traits={"plan": "pro"}, timestamp=NOW))
    apply_event(p, Event.create("identify", user_id="u", traits={"plan": "free"}, timestamp=NOW - 10))
    assert p.trait("plan") == "pro"
    assert p.traits["plan"].source == "identify"


def test_json_round_trip_is_lossless():
    p = build_profile(now=NOW, visits=5, purchases=[100, 250], categories={"shoes": 3},
                      traits={"plan": {"tier": "gold"}}, user_id="u1",
                      consent={"analytics": "granted"})
    p.segments["vip"] = NOW
    p.experiments["hero@1"] = "b"
    doc = json.loads(json.dumps(p.to_dict()))
    assert doc["schema"] == SCHEMA_VERSION
    assert Profile.from_dict(doc) == p


def test_an_older_schema_is_migrated_on_read():
    doc = build_profile(now=NOW, visits=2).to_dict()
    doc["schema"] = 0
    del doc["recent_message_ids"]
    del doc["behaviour"]["affinity_half_life"]
    p = Profile.from_dict(doc)
    assert p.behaviour.sessions.total == 2
    assert p.recent_message_ids == []


@pytest.mark.parametrize(
    "doc, message",
    [
        ({"schema": 99}, "newer than this persona-sdk understands"),
        ({"id": "x"}, "integer 'schema'"),
        ({"schema": 1, "id": "x"}, "malformed profile document"),
        ([], "is an object"),
    ],
)
def test_unreadable_profile_documents_raise_a_clear_error(doc, message):
    with pytest.raises(ProfileFormatError, match=message):
        Profile.from_dict(doc)


def test_emails_are_normalized_and_kept_only_as_a_hash():
    assert normalize_email("  Ada.Lovelace@Example.COM ") == "ada.lovelace@example.com"
    identity = Identity.email("Ada.Lovelace@Example.COM")
    assert identity.value == email_hash("ada.lovelace@example.com")
    assert "example" not in identity.key
    assert Identity.parse("email:ada.lovelace@example.com") == identity
    assert Identity.parse(identity.key) == identity


@pytest.mark.parametrize("bad", ["", "no-at", "a@b", "two@@x.com", "sp ace@x.com", "a@b.c" * 60])
def test_malformed_emails_are_refused(bad):
    with pytest.raises(IdentityError):
        Identity.email(bad)


@pytest.mark.parametrize(
    "text", ["", "user", "user:", "anonymous:has space", "nope:1", "external:x", "external:BAD:1", "email:zz"]
)
def test_malformed_identities_are_refused(text):
    with pytest.raises(IdentityError):
        Identity.parse(text)


def test_identity_keys_round_trip():
    for identity in (Identity.user("42"), Identity.anonymous("abc"), Identity.external("segment", "x-1")):
        assert Identity.parse(identity.key) == identity


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"type": "track", "event": "X"}, "anonymous_id or a user_id"),
        ({"type": "shout", "anonymous_id": "a"}, "event type must be one of"),
        ({"type": "track", "anonymous_id": "a"}, "track event's name"),
        ({"type": "track", "anonymous_id": "a", "event": ""}, "track event's name"),
        ({"type": "page", "anonymous_id": "a", "event": "X"}, "only track events"),
        ({"type": "alias", "anonymous_id": "a"}, "needs previous_id"),
        ({"type": "track", "anonymous_id": "a b", "event": "X"}, "without spaces"),
        ({"type": "track", "anonymous_id": "a", "event": "X", "properties": [1]}, "must be an object"),
        ({"type": "track", "anonymous_id": "a", "event": "X", "properties": {"x": object()}}, "JSON-serializable"),
        ({"type": "track", "anonymous_id": "a", "event": "X", "properties": {"x": float("nan")}}, "JSON-serializable"),
        ({"type": "identify", "user_id": "u", "traits": {"$bad": 1}}, "trait names"),
        ({"type": "track", "anonymous_id": "a", "event": "X", "message_id": "m" * 101}, "message_id"),
        ({"type": "track", "anonymous_id": "a", "event": "X", "timestamp": "yesterday"}, "POSIX seconds"),
        ({"type": "track", "anonymous_id": "a", "event": "X", "properties": {"blob": "x" * 40000}}, "over the 32768-byte limit"),
    ],
)
def test_bad_events_are_refused_with_the_reason(kwargs, message):
    kind = kwargs.pop("type")
    with pytest.raises(EventError, match=message):
        Event.create(kind, **kwargs)


def test_segment_payloads_round_trip():
    payload = {
        "type": "track", "userId": "u1", "event": "Order Completed", "messageId": "m-1",
        "timestamp": "2026-11-23T12:00:00.000Z", "properties": {"revenue": 10},
        "context": {"ip": "127.0.0.1"},
    }
    event = Event.from_payload(payload)
    assert event.timestamp == NOW
    assert event.to_payload() == payload


@pytest.mark.parametrize(
    "payload, message",
    [
        ("not an object", "JSON object"),
        ({"type": "track", "userId": "u", "event": "x", "bogus": 1}, "unknown event field"),
        ({"type": "track", "userId": "u", "event": "x", "timestamp": "nope"}, "not ISO-8601"),
        ({"type": "track", "userId": "u", "event": "x", "timestamp": 12}, "ISO-8601 string"),
    ],
)
def test_bad_payloads_are_refused(payload, message):
    with pytest.raises(EventError, match=message):
        Event.from_payload(payload)

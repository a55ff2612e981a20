"""The browser endpoints: ``/persona/decide``, ``/persona/consent``, ``/persona/event``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from django.test import Client, override_settings

from persona_django.runtime import get_persona

from .test_tag import build_history, grant, profile_of, time_travel

pytestmark = pytest.mark.django_db


@pytest.fixture
def days_ago(monkeypatch):
    return time_travel(monkeypatch)


DEFINITIONS = str(Path(__file__).parents[1] / "django_project" / "definitions.json")
PURPOSES = ("personalization", "analytics", "marketing", "sharing")


def decide(client, slots, **extra):
    return client.get("/persona/decide", {"slots": slots}, **extra)


def beacon(client, body, content_type="application/json", **extra):
    data = body if isinstance(body, (str, bytes)) else json.dumps(body)
    return client.post("/persona/event", data, content_type=content_type, **extra)


def assert_private_json(response):
    assert response["Content-Type"] == "application/json"
    cache_control = {p.strip() for p in response["Cache-Control"].split(",")}
    assert {"private", "no-store"} <= cache_control
    assert "Cookie" in response["Vary"]


# -- decide --------------------------------------------------------------------------------
def test_decide_without_consent_answers_defaults(client):
    response = decide(client, "hero,banner")
    assert response.status_code == 200
    assert_private_json(response)
    assert response.json() == {
        "slots": {
            "hero": {"variant": "default", "default": True, "reason": "consent"},
            "banner": {"variant": "default", "default": True, "reason": "consent"},
        }
    }
    assert "persona_id" not in response.cookies


def test_decide_answers_each_visitors_variant(client, days_ago):
    grant(client)
    assert decide(client, "hero").json() == {
        "slots": {"hero": {"variant": "first-visit", "default": False, "reason": "matched"}}
    }
    build_history(client, days_ago, sessions=3, revenue=600)
    assert decide(client, "hero").json()["slots"]["hero"]["variant"] == "vip"


def test_decide_explains_when_debug_explain_is_on(client, settings):
    settings.DEBUG = True
    grant(client)
    entry = decide(client, "hero").json()["slots"]["hero"]
    assert entry["explanation"].startswith("matched segment first-time")


def test_decide_records_experiment_exposures_like_the_middleware(client):
    from persona_django.models import Exposure

    grant(client)
    answer = decide(client, "banner").json()["slots"]["banner"]
    assert answer["reason"] in ("experiment", "holdout")
    profile = profile_of(client)
    assert profile.experiments == {"banner@1": answer["variant"]}
    assert (
        Exposure.objects.filter(
            profile_id=profile.id, slot="banner", variant=answer["variant"]
        ).count()
        == 1
    )
    assert profile.behaviour.events["Experiment Viewed"].counts.total == 1
    # sticky
    assert decide(client, "banner").json()["slots"]["banner"]["variant"] == answer["variant"]


@pytest.mark.django_db(transaction=True)  # the store publishes to the cache on commit
def test_a_warm_decide_request_does_no_sql(client, django_assert_num_queries):
    grant(client)
    decide(client, "hero")
    with django_assert_num_queries(0):
        response = decide(client, "hero")
    assert response.json()["slots"]["hero"]["variant"] == "first-visit"


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({}, "name the slots"),
        ({"slots": ""}, "name the slots"),
        ({"slots": " , ,"}, "name the slots"),
        ({"slots": "hero,nope"}, "unknown slot(s): 'nope'"),
        (
            {"slots": "promo"},
            "unknown slot(s): 'promo'",
        ),  # ad-hoc template slots are not edge slots
        ({"slots": ",".join(f"s{i}" for i in range(21))}, "at most 20 slots"),
    ],
)
def test_decide_validates_the_slots_parameter(client, query, message):
    response = client.get("/persona/decide", query)
    assert response.status_code == 400
    assert_private_json(response)
    assert message in response.json()["error"]


def test_decide_accepts_twenty_names_and_repeats(client):
    response = decide(client, ",".join(["hero"] * 25 + ["banner"]))
    assert response.status_code == 200
    assert set(response.json()["slots"]) == {"hero", "banner"}


def test_decide_is_get_only(client):
    response = client.post("/persona/decide?slots=hero")
    assert response.status_code == 405
    assert "error" in response.json()


# -- consent -------------------------------------------------------------------------------
def test_consent_get_before_any_choice(client):
    response = client.get("/persona/consent")
    assert response.status_code == 200
    assert_private_json(response)
    assert response.json() == {
        "purposes": {p: "unset" for p in PURPOSES},
        "effective": {p: False for p in PURPOSES},
        "gpc": False,
        "mode": "opt-in",
    }
    assert "persona_id" not in response.cookies


@override_settings(PERSONA={"CONSENT_MODE": "opt-out", "DEFINITIONS": DEFINITIONS})
def test_consent_get_in_opt_out_mode(client):
    body = client.get("/persona/consent").json()
    assert body["mode"] == "opt-out"
    assert body["effective"] == {p: True for p in PURPOSES}


def test_consent_post_records_choices_and_sets_the_cookie(client):
    response = client.post(
        "/persona/consent",
        json.dumps({"personalization": True, "analytics": "granted", "marketing": False}),
        content_type="application/json",
    )
    assert response.status_code == 200
    assert_private_json(response)
    assert "persona_id" in response.cookies
    assert response.json() == {
        "purposes": {
            "personalization": "granted",
            "analytics": "granted",
            "marketing": "denied",
            "sharing": "unset",
        },
        "effective": {
            "personalization": True,
            "analytics": True,
            "marketing": False,
            "sharing": False,
        },
        "gpc": False,
        "mode": "opt-in",
    }
    profile = profile_of(client)
    entries = get_persona().ledger.entries(profile.id)
    assert {(e.purpose, e.state.value, e.source) for e in entries} == {
        ("personalization", "granted", "api"),
        ("analytics", "granted", "api"),
        ("marketing", "denied", "api"),
    }
    # the same visitor on the next request
    assert client.get("/persona/consent").json()["purposes"]["personalization"] == "granted"


def test_consent_post_is_csrf_protected():
    client = Client(enforce_csrf_checks=True)
    body = json.dumps({"personalization": True})
    refused = client.post("/persona/consent", body, content_type="application/json")
    assert refused.status_code == 403
    assert "persona_id" not in refused.cookies
    client.get("/persona/consent")  # sets the CSRF cookie, as persona.js relies on
    token = client.cookies["csrftoken"].value
    accepted = client.post(
        "/persona/consent", body, content_type="application/json", HTTP_X_CSRFTOKEN=token
    )
    assert accepted.status_code == 200
    assert accepted.json()["effective"]["personalization"] is True


def test_gpc_is_honoured_and_recorded(client):
    response = client.post(
        "/persona/consent",
        json.dumps({"personalization": True, "marketing": True, "sharing": True}),
        content_type="application/json",
        HTTP_SEC_GPC="1",
    )
    body = response.json()
    assert body["gpc"] is True
    assert body["effective"]["marketing"] is False and body["effective"]["sharing"] is False
    assert body["effective"]["personalization"] is True
    # recorded as denials (source gpc), so sends outside a request honour it too
    assert body["purposes"]["marketing"] == "denied" and body["purposes"]["sharing"] == "denied"
    assert client.get("/persona/consent").json()["purposes"]["marketing"] == "denied"
    sources = {(e.purpose, e.source) for e in get_persona().ledger.entries(profile_of(client).id)}
    assert ("marketing", "gpc") in sources


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('{"telepathy": true}', "unknown consent purpose 'telepathy'"),
        ('{"marketing": "maybe"}', "granted, denied or unset"),
        ('{"marketing": 1}', "granted, denied or unset"),
        ('{"marketing": [1]}', "granted, denied or unset"),
        ("not json", "not valid JSON"),
        (b"\xff\xfe", "not UTF-8"),
        ("[]", "JSON object"),
        ("{}", "JSON object"),
        ('"granted"', "JSON object"),
        ('{"marketing": "' + "x" * 5000 + '"}', "larger than 4096 bytes"),
    ],
)
def test_consent_post_rejects_bad_input(client, body, message):
    response = client.post("/persona/consent", body, content_type="application/json")
    assert response.status_code == 400
    assert_private_json(response)
    assert message in response.json()["error"]
    assert "persona_id" not in response.cookies


def test_consent_rejects_other_methods(client):
    assert client.put("/persona/consent", "{}").status_code == 405


def test_denying_consent_restores_defaults_and_stops_writes(client):
    grant(client)
    assert decide(client, "hero").json()["slots"]["hero"]["variant"] == "first-visit"
    grant(client, personalization="denied", analytics="denied")
    before = profile_of(client).to_dict()
    assert decide(client, "hero").json()["slots"]["hero"]["reason"] == "consent"
    assert beacon(client, {"event": "Product Viewed"}).status_code == 202
    client.get("/")
    client.post("/buy/", {"amount": "900"})
    after = profile_of(client).to_dict()
    assert after["behaviour"] == before["behaviour"]


# -- the event beacon ----------------------------------------------------------------------
def test_a_beacon_updates_the_profile_before_responding(client):
    grant(client)
    response = beacon(
        client,
        {"event": "Product Viewed", "properties": {"category": "shoes"}},
        HTTP_REFERER="http://testserver/shoes/42/",
        HTTP_ORIGIN="http://testserver",
        HTTP_SEC_FETCH_SITE="same-origin",
    )
    assert response.status_code == 200, response.content
    assert_private_json(response)
    assert response.json() == {"recorded": True}
    profile = profile_of(client)
    assert profile.behaviour.events["Product Viewed"].counts.total == 1
    assert "shoes" in profile.behaviour.affinity
    # and the very next render sees it
    assert beacon(client, {"event": "Newsletter Signup"}).json() == {"recorded": True}
    assert "Thanks for subscribing" in client.get("/").content.decode()


def test_a_page_beacon_takes_its_path_from_the_referer(client):
    grant(client)
    response = beacon(
        client, {"type": "page", "name": "Shoes"}, HTTP_REFERER="http://testserver/shoes/"
    )
    assert response.status_code == 200
    assert profile_of(client).behaviour.page_views.total == 1


def test_text_plain_json_is_accepted(client):
    grant(client)
    response = beacon(
        client, '{"event": "Product Viewed"}', content_type="text/plain;charset=UTF-8"
    )
    assert response.status_code == 200


def test_the_client_never_chooses_ids(client):
    grant(client)
    for field in ("userId", "anonymousId", "messageId", "timestamp", "context", "traits"):
        response = beacon(client, {"event": "Product Viewed", field: "someone-else"})
        assert response.status_code == 400
        assert "unknown field" in response.json()["error"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("{nope", "not valid JSON"),
        ("[1, 2]", "one JSON object"),
        ({"event": ""}, "non-empty string"),
        ({"event": "x" * 300}, "at most 200 characters"),
        ({"event": "Product Viewed", "properties": [1]}, "properties must be an object"),
        ({"type": "identify"}, '"track" events'),
        ({"type": "alias"}, '"track" events'),
        ({"properties": {}}, '"track" events'),
        ({"event": "Order Completed", "properties": {"revenue": 99999}}, "record it server-side"),
        ({"type": "page", "name": ""}, "non-empty string"),
    ],
)
def test_a_bad_beacon_is_a_400_with_the_reason(client, body, message):
    grant(client)
    response = beacon(client, body)
    assert response.status_code == 400
    assert_private_json(response)
    assert message in response.json()["error"]


def test_an_oversized_beacon_is_a_413(client, settings):
    grant(client)
    settings.PERSONA = {**settings.PERSONA, "BEACON_MAX_BYTES": 200}
    grant(client)
    response = beacon(client, {"event": "Product Viewed", "properties": {"note": "x" * 300}})
    assert response.status_code == 413
    assert "larger than 200 bytes" in response.json()["error"]
    assert beacon(client, {"event": "Product Viewed"}).status_code == 200


def test_beacons_are_rate_limited_per_visitor(client, settings):
    settings.PERSONA = {**settings.PERSONA, "BEACON_RATE_LIMIT": 3}
    grant(client)
    assert [beacon(client, {"event": "Tick"}).status_code for _ in range(3)] == [200, 200, 200]
    limited = beacon(client, {"event": "Tick"})
    assert limited.status_code == 429
    assert 1 <= int(limited["Retry-After"]) <= 60
    assert "too many" in limited.json()["error"]
    assert profile_of(client).behaviour.events["Tick"].counts.total == 3
    other = Client()
    grant(other)
    assert beacon(other, {"event": "Tick"}).status_code == 200


@pytest.mark.parametrize(
    "headers",
    [
        {"HTTP_ORIGIN": "https://evil.example"},
        {"HTTP_ORIGIN": "null"},
        {"HTTP_ORIGIN": "http://testserver.evil.example"},
        {"HTTP_SEC_FETCH_SITE": "cross-site"},
        {"HTTP_SEC_FETCH_SITE": "same-site"},
        {"HTTP_ORIGIN": "http://testserver", "HTTP_SEC_FETCH_SITE": "cross-site"},
    ],
)
def test_a_cross_origin_beacon_is_a_403(client, headers):
    grant(client)
    response = beacon(client, {"event": "Product Viewed"}, **headers)
    assert response.status_code == 403
    assert "own pages" in response.json()["error"]
    assert "Product Viewed" not in profile_of(client).behaviour.events


def test_a_trusted_origin_is_accepted(client, settings):
    settings.CSRF_TRUSTED_ORIGINS = ["https://www.example.com"]
    grant(client)
    response = beacon(client, {"event": "Product Viewed"}, HTTP_ORIGIN="https://www.example.com")
    assert response.status_code == 200


def test_a_form_encoded_beacon_is_refused(client):
    grant(client)
    response = client.post("/persona/event", {"event": "Product Viewed"})
    assert response.status_code == 415


def test_without_analytics_consent_a_beacon_records_nothing(client):
    response = beacon(client, {"event": "Product Viewed"})  # opt-in, no cookie yet
    assert response.status_code == 202
    assert response.json() == {"recorded": False, "reason": "consent"}
    assert "persona_id" not in response.cookies
    grant(client, personalization=True, analytics=False)
    response = beacon(client, {"event": "Product Viewed"})
    assert response.status_code == 202
    assert response.json() == {"recorded": False, "reason": "consent"}
    assert profile_of(client).behaviour.events == {}


def test_gpc_does_not_block_analytics_beacons_by_itself(client):
    grant(client)
    response = beacon(client, {"event": "Product Viewed"}, HTTP_SEC_GPC="1")
    assert response.status_code == 200


@override_settings(PERSONA={"CONSENT_MODE": "opt-out", "DEFINITIONS": DEFINITIONS})
def test_opt_out_beacon_from_a_first_time_visitor(client):
    response = beacon(client, {"event": "Product Viewed"})
    assert response.status_code == 200
    assert "persona_id" in response.cookies
    assert profile_of(client).behaviour.events["Product Viewed"].counts.total == 1


def test_the_beacon_is_post_only(client):
    assert client.get("/persona/event").status_code == 405


@pytest.mark.parametrize("cookie", ["garbage", "abc:forged-signature", "", "x" * 4000])
@pytest.mark.parametrize(
    "call",
    [
        lambda c: c.get("/persona/decide?slots=hero"),
        lambda c: c.get("/persona/consent"),
        lambda c: c.post(
            "/persona/consent", '{"analytics": true}', content_type="application/json"
        ),
        lambda c: c.post("/persona/event", '{"event": "X"}', content_type="application/json"),
    ],
)
def test_a_forged_cookie_is_a_new_visitor_never_a_500(client, cookie, call):
    client.cookies["persona_id"] = cookie
    response = call(client)
    assert response.status_code in (200, 202)
    assert response["Content-Type"] == "application/json"


def test_a_logged_in_users_beacon_lands_on_their_profile(client, django_user_model):
    from persona_sdk import Identity

    client.get("/login-as/grace/")
    grant(client)
    assert beacon(client, {"event": "Product Viewed"}).json() == {"recorded": True}
    user = django_user_model.objects.get(username="grace")
    profile = get_persona().profile_for(Identity.user(str(user.pk)))
    assert profile.behaviour.events["Product Viewed"].counts.total == 1


def test_edge_slots_are_decided_for_the_page_the_visitor_is_on(client):
    """The page's campaign link counts, not the decide endpoint's own URL."""
    import json as _json

    client.post("/persona/consent", _json.dumps({"personalization": True}), content_type="application/json")
    plain = client.get("/persona/decide?slots=campaign-promo").json()["slots"]["campaign-promo"]
    assert plain["variant"] == "default"
    from urllib.parse import quote

    on_page = client.get("/persona/decide?slots=campaign-promo&page=" + quote("/landing/?utm_campaign=winter-sale")).json()
    assert on_page["slots"]["campaign-promo"]["variant"] == "winter"

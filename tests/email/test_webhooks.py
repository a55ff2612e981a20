"""Email events back into profiles: SendGrid tracking webhooks posted to anymail's
``/anymail/sendgrid/tracking/`` (basic auth) become profile events; unsubscribes and spam
complaints deny ``marketing`` in the consent ledger; a click on a tracked link counts as a
conversion for the slot and variant it was in, in the same table the web's reports read."""

from __future__ import annotations

import base64
import json
import re
import uuid

import pytest
from django.db.models import Count

from persona_django.models import ConsentEntry, Conversion
from persona_email.sending import SKIPPED, Campaign
from persona_sdk import Identity

pytestmark = pytest.mark.django_db

WEBHOOK = "/anymail/sendgrid/tracking/"
AUTH = "Basic " + base64.b64encode(b"persona-test:webhook-secret").decode()

TEMPLATE = """{% load persona %}{% personalize "hero" %}
{% variant "vip" %}<a href="https://shop.example/vip">VIP offers</a>
{% default %}<a href="https://shop.example/new">New</a>{% endpersonalize %}
{% personalize "banner" %}{% variant "a" %}<a href="https://shop.example/a">A</a>{% variant "b" %}<a href="https://shop.example/b">B</a>{% default %}<a href="https://shop.example/d">D</a>{% endpersonalize %}
<a href="https://shop.example/unsubscribe">unsubscribe</a>"""


@pytest.fixture
def sent(settings, sendgrid, persona_settings, make_person):
    """Two people sent a campaign through anymail's SendGrid backend (the fake); returns
    {email: (profile, the SendGrid personalization as delivered)}."""
    persona_settings()
    settings.EMAIL_BACKEND = "anymail.backends.sendgrid.EmailBackend"
    settings.ANYMAIL = {**settings.ANYMAIL, "SENDGRID_API_URL": sendgrid.url + "/v3/"}
    vip = make_person("w-vip", email="vip@example.com", visits=4, revenue=900.0)
    other = make_person("w-other", email="other@example.com")
    report = Campaign("hook-1", template_string=TEMPLATE, subject="Hi",
                      from_email="shop@example.com").send([vip.id, other.id])
    assert report.counts["sent"] == 2
    delivered = {d["to"]: d for d in sendgrid.delivered()}
    return {"vip@example.com": (vip, delivered["vip@example.com"]),
            "other@example.com": (other, delivered["other@example.com"])}


def event(delivered, kind, **fields):
    """A SendGrid event for a delivered message: its custom args come back as top-level
    fields, as SendGrid sends them."""
    return {"email": delivered["to"], "timestamp": 1_795_000_000, "event": kind,
            "sg_event_id": uuid.uuid4().hex, "sg_message_id": "sg.1",
            **delivered["custom_args"], **fields}


def link(delivered, prefix):
    url = re.search(rf'href="({re.escape(prefix)}[^"]*)"', delivered["html"]).group(1)
    return url.replace("&amp;", "&")


def post(client, events, auth=AUTH):
    return client.post(WEBHOOK, json.dumps(events), content_type="application/json",
                       HTTP_AUTHORIZATION=auth)


def counts(persona, profile):
    events = persona.store.load(profile.id).behaviour.events
    return {name: int(stats.counts.total) for name, stats in events.items()
            if name.startswith(("Email", "Unsub"))}


def test_tracking_events_become_profile_events(client, sent):
    from persona_django.runtime import get_persona

    persona = get_persona()
    profile, delivered = sent["vip@example.com"]
    events = [
        event(delivered, "delivered"),
        event(delivered, "open", useragent="Mail/1.0"),
        event(delivered, "click", url=link(delivered, "https://shop.example/vip")),
        event(delivered, "bounce", reason="550 5.1.1 no such user", type="bounce", status="5.1.1"),
        event(delivered, "processed"),  # not a profile event
    ]
    response = post(client, events)
    assert response.status_code == 200, response.content
    assert counts(persona, profile) == {"Email Delivered": 1, "Email Opened": 1,
                                        "Email Link Clicked": 1, "Email Bounced": 1}
    # the ESP retries a webhook it thinks failed: applied once
    assert post(client, events).status_code == 200
    assert counts(persona, profile)["Email Opened"] == 1


def test_a_click_counts_as_a_conversion_for_the_slot_and_variant_the_link_was_in(client, sent):
    profile, delivered = sent["vip@example.com"]
    click = event(delivered, "click", url=link(delivered, "https://shop.example/vip"))
    assert post(client, [click]).status_code == 200
    clicks = Conversion.objects.filter(goal="Email Link Clicked")
    rows = set(clicks.values_list("profile_id", "goal", "slot", "variant", "channel"))
    assert rows == {(profile.id, "Email Link Clicked", None, None, "email"),
                    (profile.id, "Email Link Clicked", "hero", "vip", "email")}
    post(client, [click])  # replayed: not counted twice
    assert clicks.count() == 2
    # a link outside any slot: an overall conversion only
    plain = event(delivered, "click", url=link(delivered, "https://shop.example/unsubscribe"))
    post(client, [plain])
    assert clicks.filter(slot__isnull=True).count() == 2
    assert clicks.filter(slot__isnull=False).count() == 1


def test_email_clicks_and_web_conversions_land_in_the_same_experiment_report(client, sent):
    from persona_django.runtime import get_persona

    persona = get_persona()
    profile, delivered = sent["other@example.com"]
    variant = persona.store.load(profile.id).experiments["banner@1"]  # assigned by the email
    banner_link = link(delivered, f"https://shop.example/{variant if variant != 'default' else 'd'}")
    post(client, [event(delivered, "click", url=banner_link)])
    # later the same person buys on the site: the web's conversion hook attributes it to the
    # experiments they were assigned to, the email's included
    persona.track("Order Completed", {"revenue": 25.0}, user_id="w-other")
    report = {
        (r["variant"], r["channel"]): r["n"]
        for r in Conversion.objects.filter(slot="banner")
        .values("variant", "channel").annotate(n=Count("id"))
    }
    assert report == {(variant, "email"): 1, (variant, "web"): 1}


def test_unsubscribes_and_complaints_deny_marketing_in_the_consent_ledger(client, sent):
    from persona_django.runtime import get_persona

    persona = get_persona()
    vip, vip_msg = sent["vip@example.com"]
    other, other_msg = sent["other@example.com"]
    assert post(client, [event(vip_msg, "unsubscribe"),
                         event(other_msg, "spamreport")]).status_code == 200
    ledger = {
        (e.profile_id, e.purpose, e.state, e.source)
        for e in ConsentEntry.objects.filter(purpose="marketing", state="denied")
    }
    assert ledger == {(vip.id, "marketing", "denied", "esp:unsubscribed"),
                      (other.id, "marketing", "denied", "esp:complained")}
    assert counts(persona, vip)["Unsubscribed"] == 1
    assert counts(persona, other)["Email Marked as Spam"] == 1
    # a repeated unsubscribe does not add ledger lines
    post(client, [event(vip_msg, "group_unsubscribe")])
    assert ConsentEntry.objects.filter(profile_id=vip.id, purpose="marketing",
                                       state="denied").count() == 1
    # and the next campaign skips them
    report = Campaign("hook-2", template_string=TEMPLATE, subject="Again",
                      from_email="shop@example.com").send([vip.id, other.id])
    assert {r.status for r in report.results} == {SKIPPED}
    assert {r.reason for r in report.results} == {"no marketing consent (denied)"}


def test_people_are_found_by_their_email_when_the_event_carries_no_profile(client, persona_settings):
    from persona_django.runtime import get_persona

    persona = persona_settings()
    # known only by an email identity (e.g. a newsletter form): no user or visitor id
    persona.set_consent(Identity.email("Reader@Example.com"),
                        {"analytics": "granted", "marketing": "granted"}, source="form")
    profile = persona.profile_for(Identity.email("reader@example.com"))
    response = post(client, [
        {"email": "reader@example.com", "timestamp": 1_795_000_000, "event": "open",
         "sg_event_id": "e1"},
        {"email": "reader@example.com", "timestamp": 1_795_000_001, "event": "unsubscribe",
         "sg_event_id": "e2"},
        {"email": "stranger@example.com", "timestamp": 1_795_000_000, "event": "open",
         "sg_event_id": "e3"},
    ])
    assert response.status_code == 200
    persona = get_persona()
    stored = persona.profile_for(Identity.email("reader@example.com"))
    assert stored.id == profile.id  # no second profile was made for the event
    assert counts(persona, stored) == {"Email Opened": 1, "Unsubscribed": 1}
    assert stored.consent_state("marketing").value == "denied"
    assert persona.profile_for(Identity.email("stranger@example.com")) is None


def test_the_webhook_needs_its_basic_auth(client, sent):
    _, delivered = sent["vip@example.com"]
    wrong = "Basic " + base64.b64encode(b"persona-test:nope").decode()
    assert post(client, [event(delivered, "open")], auth=wrong).status_code == 400
    assert not Conversion.objects.filter(channel="email").exists()


def test_a_forged_click_parameter_is_not_counted(client, sent):
    _, delivered = sent["vip@example.com"]
    forged = link(delivered, "https://shop.example/vip").replace("pzc=", "pzc=x")
    assert post(client, [event(delivered, "click", url=forged)]).status_code == 200
    assert not Conversion.objects.filter(channel="email").exists()

"""Personalized sends through django-anymail's SendGrid backend, pointed at the fake
SendGrid (``SENDGRID_API_URL``), which enforces the v3 mail-send contract."""

from __future__ import annotations

import json

import pytest

from persona_email.models import CampaignSend
from persona_email.sending import FAILED, SENT, Campaign

pytestmark = pytest.mark.django_db

TEMPLATE = """{% load persona %}<p>Hello</p>{% personalize "hero" %}
{% variant "vip" %}<h1>VIP</h1><a href="https://shop.example/vip">VIP offers</a>
{% variant "welcome-back" %}<h1>Welcome back</h1>
{% default %}<h1>Hi</h1>{% endpersonalize %}"""


@pytest.fixture
def anymail_sendgrid(settings, sendgrid):
    settings.EMAIL_BACKEND = "anymail.backends.sendgrid.EmailBackend"
    settings.ANYMAIL = {**settings.ANYMAIL, "SENDGRID_API_URL": sendgrid.url + "/v3/"}
    return sendgrid


@pytest.fixture
def people(persona_settings, make_person):
    persona_settings()
    return [
        make_person("s-vip", email="vip@example.com", visits=4, revenue=900.0),
        make_person("s-back", email="back@example.com", visits=2),
        make_person("s-new", email="new@example.com"),
    ]


def send(ids, cid="sg-1"):
    return Campaign(cid, template_string=TEMPLATE, subject="News",
                    from_email="shop@example.com").send(ids)


def test_each_recipient_gets_their_variant_through_the_sendgrid_api(anymail_sendgrid, people):
    report = send([p.id for p in people])
    assert report.counts[SENT] == 3
    delivered = {d["to"]: d for d in anymail_sendgrid.delivered()}
    assert set(delivered) == {"vip@example.com", "back@example.com", "new@example.com"}
    assert "<h1>VIP</h1>" in delivered["vip@example.com"]["html"]
    assert "<h1>Welcome back</h1>" in delivered["back@example.com"]["html"]
    assert "<h1>Hi</h1>" in delivered["new@example.com"]["html"]
    assert delivered["vip@example.com"]["subject"] == "News"
    assert "pzc=" in delivered["vip@example.com"]["html"]
    assert delivered["vip@example.com"]["text"].startswith("Hello")
    for person in people:
        args = delivered[person.traits["email"].value]["custom_args"]
        # anymail metadata → SendGrid custom_args (they come back on every webhook event)
        assert args["persona_campaign"] == "sg-1"
        assert args["persona_profile"] == person.id
        result = next(r for r in report.results if r.profile_id == person.id)
        assert result.message_id == args["anymail_id"]  # anymail's id for the message
        row = CampaignSend.objects.get(campaign="sg-1", profile_id=person.id)
        assert row.status == "sent" and row.message_id == args["anymail_id"]
    # the v3 contract: Bearer auth, JSON, one personalization per message
    calls = anymail_sendgrid.calls("POST", "/v3/mail/send")
    assert len(calls) == 3
    assert calls[0].headers["authorization"] == "Bearer SG.persona-test-key"
    assert all(len(json.loads(c.raw)["personalizations"]) == 1 for c in calls)


def test_a_vendor_4xx_fails_that_recipient_and_the_rest_continue(anymail_sendgrid, people):
    anymail_sendgrid.reject.add("back@example.com")
    report = send([p.id for p in people], cid="sg-2")
    statuses = {r.email: (r.status, r.reason) for r in report.results}
    assert statuses["vip@example.com"][0] == SENT and statuses["new@example.com"][0] == SENT
    status, reason = statuses["back@example.com"]
    assert status == FAILED
    assert "AnymailRequestsAPIError" in reason and "The email address is rejected" in reason
    assert sorted(d["to"] for d in anymail_sendgrid.delivered()) == [
        "new@example.com", "vip@example.com"
    ]
    # resume: only the failed one is retried, and only when asked
    anymail_sendgrid.reject.clear()
    again = Campaign("sg-2", template_string=TEMPLATE, subject="News",
                     from_email="shop@example.com").send([p.id for p in people], retry_failed=True)
    assert [r.email for r in again.results if r.status == SENT] == ["back@example.com"]
    assert len(anymail_sendgrid.delivered()) == 3


def test_a_bad_api_key_and_rate_limits_are_reported_per_recipient(anymail_sendgrid, people,
                                                                   settings):
    anymail_sendgrid.throttle_next(1)
    report = send([people[0].id], cid="sg-3")
    assert report.results[0].status == FAILED and "too many requests" in report.results[0].reason
    settings.ANYMAIL = {**settings.ANYMAIL, "SENDGRID_API_KEY": "SG.wrong"}
    report = send([people[1].id], cid="sg-4")
    assert report.results[0].status == FAILED
    assert "authorization grant is invalid" in report.results[0].reason

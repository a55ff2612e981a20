"""Audience sync: segment enter/exit → outbox → the Klaviyo and Mailchimp sinks → the fakes'
state; the reconcile command; idempotency; vendor rate limits; consent; erasure; checks."""

from __future__ import annotations

import io
import subprocess
import sys
import time
from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from persona_django.models import OutboxMessage
from persona_email import audience
from persona_email.mailchimp import subscriber_hash
from persona_email.models import CampaignSend
from persona_sdk import Identity
from persona_sdk.testing import check_plugin

from .conftest import ALL_CONSENT, KLAVIYO_KEY, klaviyo_settings, mailchimp_settings

pytestmark = pytest.mark.django_db

NO_MARKETING = {"personalization": "granted", "analytics": "granted", "sharing": "granted"}


def deliver_all(persona, rounds=20):
    """Run delivery passes until nothing is due; returns the totals."""
    totals = {"delivered": 0, "retried": 0, "dead": 0, "withheld": 0}
    for _ in range(rounds):
        report = persona.deliver()
        for key in totals:
            totals[key] += getattr(report, key)
        if not (report.delivered or report.retried or report.dead or report.withheld):
            break
    return totals


def make_due(sink=None):
    """Pretend the retry delays passed."""
    rows = OutboxMessage.objects.filter(status="pending")
    if sink:
        rows = rows.filter(sink=sink)
    rows.update(next_attempt_at=timezone.now() - timedelta(seconds=1))


def items(sink=None, status=None):
    rows = OutboxMessage.objects.filter(sink__startswith="email.")
    if sink:
        rows = rows.filter(sink=sink)
    if status:
        rows = rows.filter(status=status)
    return list(rows.order_by("created_at"))


def set_plan(persona, user_id, plan):
    persona.identify(user_id=user_id, traits={"plan": plan})


def test_entering_and_leaving_a_segment_syncs_lists_tags_and_subscriptions(
    vendors, klaviyo, mailchimp, make_person
):
    persona = vendors
    make_person("ada", email="Ada@Example.com", traits={"first_name": "Ada"})
    assert items() == []  # not in a mapped segment yet
    set_plan(persona, "ada", "pro")
    queued = items()
    assert {i.sink for i in queued} == {"email.klaviyo", "email.mailchimp"}
    assert all(i.payload["op"] == "enter" and i.payload["segments"] == {"pro": True}
               for i in queued)
    assert all(i.purposes == ["sharing"] for i in queued)
    assert deliver_all(persona)["delivered"] == 2
    # Klaviyo: marketing consent was granted → subscribed to the segment's list with consent
    assert klaviyo.members("LRET02") == {"ada@example.com"}
    assert klaviyo.subscribed() == {"ada@example.com"}
    job = klaviyo.calls("POST", "profile-subscription-bulk-create-jobs")[0].body
    assert job["data"]["relationships"]["list"]["data"] == {"type": "list", "id": "LRET02"}
    consent = job["data"]["attributes"]["profiles"]["data"][0]["attributes"]["subscriptions"]
    assert consent == {"email": {"marketing": {"consent": "SUBSCRIBED"}}}
    # Mailchimp: PUT by subscriber hash, then the tag
    member = mailchimp.member("aud001", "ada@example.com")
    assert member["status"] == "subscribed" and member["id"] == subscriber_hash("ada@example.com")
    assert mailchimp.tags("aud001", "ada@example.com") == {"Pro"}
    set_plan(persona, "ada", "free")
    assert [i.payload["op"] for i in items(status="pending")] == ["exit", "exit"]
    assert deliver_all(persona)["delivered"] == 2
    assert klaviyo.members("LRET02") == set()
    assert mailchimp.tags("aud001", "ada@example.com") == set()
    assert mailchimp.member("aud001", "ada@example.com")["status"] == "subscribed"


def test_without_marketing_consent_people_are_listed_but_not_subscribed(
    vendors, klaviyo, mailchimp, make_person
):
    persona = vendors
    profile = make_person("bo", email="bo@example.com", consent=NO_MARKETING)
    set_plan(persona, "bo", "pro")
    deliver_all(persona)
    assert klaviyo.members("LRET02") == {"bo@example.com"}
    assert klaviyo.subscribed() == set()  # listed, consent untouched
    (kl_profile,) = klaviyo.profiles.values()
    assert kl_profile["external_id"] == profile.id
    assert mailchimp.member("aud001", "bo@example.com")["status"] == "transactional"
    assert mailchimp.tags("aud001", "bo@example.com") == {"Pro"}


def test_nothing_is_synced_without_sharing_consent(vendors, klaviyo, mailchimp, make_person):
    persona = vendors
    make_person("cy", email="cy@example.com",
                consent={**ALL_CONSENT, "sharing": "denied"})
    set_plan(persona, "cy", "pro")
    assert items() == []
    # consent withdrawn after the item was queued: withheld at delivery
    make_person("di", email="di@example.com")
    set_plan(persona, "di", "pro")
    persona.set_consent(Identity.user("di"), {"sharing": "denied"}, source="banner")
    assert deliver_all(persona)["withheld"] == 2
    assert klaviyo.requests == [] and mailchimp.requests == []


def test_a_marketing_denial_unsubscribes_at_both_vendors_and_a_grant_resubscribes(
    vendors, klaviyo, mailchimp, make_person
):
    persona = vendors
    make_person("ed", email="ed@example.com")
    set_plan(persona, "ed", "pro")
    deliver_all(persona)
    persona.set_consent(Identity.user("ed"), {"marketing": "denied", "sharing": "denied"},
                        source="banner")
    denial = [i for i in items(status="pending") if i.payload["op"] == "consent"]
    assert len(denial) == 2 and all(i.purposes == [] for i in denial)  # an opt-out always goes
    deliver_all(persona)
    assert klaviyo.subscribed() == set()
    assert mailchimp.member("aud001", "ed@example.com")["status"] == "unsubscribed"
    persona.set_consent(Identity.user("ed"), {"marketing": "granted", "sharing": "granted"},
                        source="banner")
    deliver_all(persona)
    assert klaviyo.subscribed() == {"ed@example.com"}
    assert mailchimp.member("aud001", "ed@example.com")["status"] == "subscribed"


def test_an_older_item_never_resubscribes_someone_who_unsubscribed(vendors, klaviyo, mailchimp,
                                                                   make_person):
    persona = vendors
    make_person("fay", email="fay@example.com")
    set_plan(persona, "fay", "pro")  # queued while consent was granted...
    persona.set_consent(Identity.user("fay"), {"marketing": "denied"}, source="esp:unsubscribed")
    deliver_all(persona)  # ...delivered after the denial: consent is read at delivery
    assert klaviyo.subscribed() == set()
    assert klaviyo.members("LRET02") == {"fay@example.com"}
    assert mailchimp.member("aud001", "fay@example.com")["status"] == "unsubscribed"


# -- reconcile -----------------------------------------------------------------------------
def test_the_reconcile_command_syncs_everyone_and_is_idempotent(
    persona_settings, klaviyo, mailchimp, make_person
):
    persona_settings()  # people exist before the vendors are configured
    make_person("vip", email="vip@example.com", visits=4, revenue=900.0, traits={"plan": "pro"})
    make_person("pro", email="pro@example.com", traits={"plan": "pro"}, consent=NO_MARKETING)
    make_person("none", email="none@example.com")
    make_person("anon", traits={"plan": "pro"})  # no address
    make_person("private", email="private@example.com", traits={"plan": "pro"},
                consent={**ALL_CONSENT, "sharing": "denied"})
    persona_settings(klaviyo=klaviyo_settings(klaviyo), mailchimp=mailchimp_settings(mailchimp))
    out, err = io.StringIO(), io.StringIO()
    call_command("persona_sync_audiences", "--deliver", "--run-id", "r1", stdout=out, stderr=err)
    text = out.getvalue()
    assert "4 profiles with an email, queued 6 sync items for klaviyo, mailchimp" in text
    assert "delivered=6" in text
    state = (klaviyo.members("LVIP01"), klaviyo.members("LRET02"), klaviyo.subscribed(),
             {m["email_address"]: (m["status"], set(m["tags"]))
              for m in mailchimp.members["aud001"].values()})
    assert state == (
        {"vip@example.com"},
        {"vip@example.com", "pro@example.com"},
        {"vip@example.com"},
        {"vip@example.com": ("subscribed", {"VIP", "Pro"}),
         "pro@example.com": ("transactional", {"Pro"})},
    )
    # the same run again queues nothing; a new run redoes the same calls to the same state
    out = io.StringIO()
    call_command("persona_sync_audiences", "--run-id", "r1", stdout=out)
    assert "queued 0 sync items" in out.getvalue()
    call_command("persona_sync_audiences", "--deliver", stdout=io.StringIO())
    again = (klaviyo.members("LVIP01"), klaviyo.members("LRET02"), klaviyo.subscribed(),
             {m["email_address"]: (m["status"], set(m["tags"]))
              for m in mailchimp.members["aud001"].values()})
    assert again == state
    assert len(klaviyo.profiles) == 2 and len(mailchimp.members["aud001"]) == 2
    assert not items(status="dead")
    out = io.StringIO()
    call_command("persona_sync_audiences", "--vendor", "mailchimp", "--dry-run", stdout=out)
    assert "would queue 3 sync items for mailchimp" in out.getvalue()


def test_the_reconcile_command_needs_a_configured_vendor(persona_settings):
    persona_settings()
    with pytest.raises(CommandError, match="no email vendor is configured"):
        call_command("persona_sync_audiences")


def test_the_same_transition_is_queued_once_and_redelivery_changes_nothing(
    vendors, mailchimp, make_person
):
    persona = vendors
    profile = make_person("gil", email="gil@example.com", traits={"plan": "pro"})
    OutboxMessage.objects.all().delete()
    for _ in range(2):  # the hook fired twice for the same transition
        persona.pm.hook.persona_segment_entered(
            profile=profile, segment="pro", at=1.5e9, persona=persona
        )
    assert len(items()) == 2  # one per vendor, not two
    deliver_all(persona)
    OutboxMessage.objects.update(status="pending", next_attempt_at=timezone.now())
    deliver_all(persona)
    assert len(mailchimp.calls("PUT")) == 2 and len(mailchimp.members["aud001"]) == 1


# -- rate limits ---------------------------------------------------------------------------
def test_klaviyo_retry_after_is_honoured_through_the_outbox(vendors, klaviyo, mailchimp,
                                                            make_person):
    persona = vendors
    make_person("hal", email="hal@example.com")
    klaviyo.throttle_next(1, retry_after=30)
    set_plan(persona, "hal", "pro")
    before = timezone.now()
    report = persona.deliver()
    assert (report.delivered, report.retried) == (1, 1)  # Mailchimp went through
    (item,) = items("email.klaviyo")
    assert item.status == "pending" and item.attempts == 1
    assert item.next_attempt_at >= before + timedelta(seconds=29)
    assert persona.deliver().delivered == 0  # not due yet
    make_due()
    assert persona.deliver().delivered == 1
    assert klaviyo.subscribed() == {"hal@example.com"}
    # an HTTP-date Retry-After is honoured too
    klaviyo.throttle_next(1, retry_after=20, as_date=True)
    set_plan(persona, "hal", "free")
    before = timezone.now()
    persona.deliver()
    (item,) = items("email.klaviyo", status="pending")
    assert item.next_attempt_at >= before + timedelta(seconds=15)


def test_a_klaviyo_429_stops_the_batch_and_the_rest_waits(vendors, klaviyo, make_person):
    persona = vendors
    for name in ("ivy", "jo"):
        make_person(name, email=f"{name}@example.com", consent=NO_MARKETING)
    set_plan(persona, "jo", "pro")
    deliver_all(persona)
    assert klaviyo.members("LRET02") == {"jo@example.com"}
    klaviyo.clock = lambda: 1_800_000_000.25  # frozen inside one fixed window
    klaviyo.limits["list-relationships"] = (10, 1)  # one list call per minute
    set_plan(persona, "ivy", "pro")  # add to the list: the one call allowed
    set_plan(persona, "jo", "free")  # remove from the list: 429, Retry-After ~60 s
    report = persona.deliver()
    assert report.retried == 1
    (waiting,) = items("email.klaviyo", status="pending")
    assert waiting.payload["email"] == "jo@example.com"
    assert waiting.next_attempt_at >= timezone.now() + timedelta(seconds=50)
    assert klaviyo.members("LRET02") == {"jo@example.com", "ivy@example.com"}
    klaviyo.limits["list-relationships"] = (10, 150)
    make_due()
    deliver_all(persona)
    assert klaviyo.members("LRET02") == {"ivy@example.com"}
    assert not items(status="dead")


def test_mailchimp_deliveries_stay_under_the_connection_cap(vendors, mailchimp, make_person):
    persona = vendors
    mailchimp.latency = 0.05
    for n in range(24):
        make_person(f"m{n}", email=f"m{n}@example.com", traits={"plan": "pro"})
    assert len(items("email.mailchimp")) == 24
    deliver_all(persona)
    assert len(mailchimp.members["aud001"]) == 24
    assert 2 <= mailchimp.max_in_flight <= 10  # parallel, never beyond the cap
    assert mailchimp.rejected_for_concurrency == 0
    # another tool now uses the key too: Mailchimp refuses some; they are retried, none lost
    mailchimp.max_connections = 3
    for n in range(24, 36):
        make_person(f"m{n}", email=f"m{n}@example.com", traits={"plan": "pro"})
    report = persona.deliver()
    assert report.retried > 0 and mailchimp.rejected_for_concurrency > 0
    for _ in range(10):
        make_due()
        if not deliver_all(persona)["retried"]:
            break
    assert len(mailchimp.members["aud001"]) == 36
    assert not items(status="dead")


# -- vendor errors -------------------------------------------------------------------------
def test_vendor_4xx_dead_letters_only_the_items_concerned_with_the_vendors_message(
    persona_settings, klaviyo, mailchimp, make_person
):
    persona = persona_settings(
        klaviyo=klaviyo_settings(klaviyo),
        mailchimp=mailchimp_settings(mailchimp, merge_fields={"NICK": "first_name"}),
    )
    klaviyo.reject.add("bad@example.com")
    make_person("ok", email="ok@example.com", traits={"first_name": "O"})
    make_person("bad", email="bad@example.com", traits={"first_name": "B"})
    persona.identify(user_id="ok", traits={"plan": "pro"})
    persona.identify(user_id="bad", traits={"plan": "pro"})
    deliver_all(persona)
    dead = {(i.sink, i.payload["email"]): i.last_error for i in items(status="dead")}
    # Klaviyo's 400 pointed at one profile of the bulk job: only that one fails
    assert dead[("email.klaviyo", "bad@example.com")].startswith("Klaviyo 400 Invalid input.")
    assert ("email.klaviyo", "ok@example.com") not in dead
    assert klaviyo.subscribed() == {"ok@example.com"}
    # Mailchimp refuses the unknown merge field (problem+json title: detail)
    assert dead[("email.mailchimp", "ok@example.com")].startswith("Mailchimp 400 Invalid Resource")


# -- erasure -------------------------------------------------------------------------------
def test_erasure_reaches_both_vendors_and_the_send_log(vendors, klaviyo, mailchimp, make_person):
    persona = vendors
    profile = make_person("kim", email="kim@example.com", traits={"plan": "pro"})
    deliver_all(persona)
    CampaignSend.objects.create(campaign="c1", profile_id=profile.id, status="sent")
    report = persona.erase(Identity.user("kim"))
    (ours,) = [a for a in report["adapters"] if a.get("adapter") == "persona_email"]
    assert ours == {"adapter": "persona_email", "send_log_deleted": 1,
                    "klaviyo": "requested", "mailchimp": "deleted"}
    assert klaviyo.deletions == ["kim@example.com"]
    assert mailchimp.member("aud001", "kim@example.com") is None
    assert subscriber_hash("kim@example.com") in mailchimp.forgotten["aud001"]
    assert not CampaignSend.objects.exists()
    assert items() == []  # the person's outbox items are purged by the core


def test_a_failing_vendor_does_not_stop_the_erasure(persona_settings, klaviyo, mailchimp,
                                                    make_person):
    persona = persona_settings(klaviyo=klaviyo_settings(klaviyo, api_key="pk_wrong"),
                               mailchimp=mailchimp_settings(mailchimp))
    make_person("lu", email="lu@example.com")
    report = persona.erase(Identity.user("lu"))
    (ours,) = [a for a in report["adapters"] if a.get("adapter") == "persona_email"]
    assert ours["klaviyo"].startswith("failed: Klaviyo 401")
    assert ours["mailchimp"] == "not found"
    assert persona.profile_for(Identity.user("lu")) is None


# -- configuration -------------------------------------------------------------------------
def test_the_plugin_matches_the_hookspecs_and_imports_nothing_heavy():
    import persona_email.plugin

    check_plugin(persona_email.plugin)
    code = ("import sys, persona_email.plugin; "
            "print(sorted(m for m in ('django', 'requests', 'anymail') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_without_settings_no_sink_is_registered(make_persona):
    persona = make_persona()
    assert not [s for s in persona.registry.sinks if s.startswith("email.")]
    assert [m for m in persona.check() if m.id.startswith("persona_email")] == []


def test_missing_keys_are_reported_with_hints(persona_settings):
    persona = persona_settings(klaviyo={"lists": {}}, mailchimp={"api_key": "nodc", "tags": {}})
    assert [s for s in persona.registry.sinks if s.startswith("email.")] == []
    messages = {m.id: m for m in persona.check() if m.id.startswith("persona_email")}
    assert set(messages) == {"persona_email.E001", "persona_email.E002", "persona_email.E004",
                             "persona_email.E005", "persona_email.E006"}
    assert "private API key" in messages["persona_email.E001"].hint
    assert "-us19" in messages["persona_email.E004"].hint
    from django.core.checks import run_checks

    ids = {m.id for m in run_checks()}
    assert {"persona_email.E001", "persona_email.E005"} <= ids


def test_mapping_problems_are_warned_about(persona_settings, klaviyo, mailchimp, settings):
    persona_settings(
        klaviyo={"api_key": KLAVIYO_KEY, "base_url": klaviyo.url,
                 "lists": {"mobile": "LVIP01", "ghost": "LRET02"}},
        mailchimp=mailchimp_settings(mailchimp, max_connections=11),
    )
    settings.PERSONA = {**settings.PERSONA, "CONVERSION_GOALS": ["Email Link Clicked"]}
    from persona_django.runtime import get_persona

    ids = {m.id for m in get_persona().check()}
    assert {"persona_email.W001", "persona_email.W002", "persona_email.W003",
            "persona_email.E007"} <= ids


def test_a_non_mapping_section_is_a_config_error(make_persona):
    from persona_sdk.errors import ConfigError

    with pytest.raises(ConfigError, match="klaviyo"):
        make_persona(plugin_settings={"klaviyo": "pk_oops"})


def test_retry_after_accepts_seconds_and_http_dates():
    from email.utils import formatdate

    assert audience.retry_after_seconds("7") == 7.0
    assert audience.retry_after_seconds(None) == 0.0
    assert audience.retry_after_seconds("soon") == 0.0
    now = time.time()
    assert 25 <= audience.retry_after_seconds(formatdate(now + 30, usegmt=True), now=now) <= 30

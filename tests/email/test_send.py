"""Personalized sends through a real SMTP server on loopback: each recipient's own variants,
the marketing consent gate, bad input reported per recipient, resume without re-sending,
exposures with channel ``email``, and the same variant on the web and in email."""

from __future__ import annotations

import io
import json
import time

import pytest
from django.core.management import CommandError, call_command

from persona_django.models import Exposure
from persona_django.runtime import get_persona
from persona_email.models import CampaignSend
from persona_email.sending import (
    ALREADY,
    FAILED,
    SENT,
    SKIPPED,
    Campaign,
    CampaignError,
    read_click_token,
)
from persona_sdk import Identity
from persona_sdk.stores import update_profile

pytestmark = pytest.mark.django_db

TEMPLATE = """{% load persona %}<html><body>
<p>Hi {{ recipient.traits.first_name|default:"there" }}</p>
{% personalize "hero" %}
  {% variant "vip" %}<h1>VIP</h1><a href="https://shop.example/vip?from=mail">VIP offers</a>
  {% variant "welcome-back" %}<h1>Welcome back</h1><a href="https://shop.example/back">New</a>
  {% variant "first-visit" %}<h1>First visit</h1>
  {% default %}<h1>Hello</h1><a href="https://shop.example/">Shop</a>
{% endpersonalize %}
{% personalize "banner" %}{% variant "a" %}<p>Banner A</p>{% variant "b" %}<p>Banner B</p>{% default %}<p>No banner</p>{% endpersonalize %}
<a href="https://shop.example/unsubscribe#top">Unsubscribe</a>
</body></html>"""

HEROES = {"vip": "<h1>VIP</h1>", "welcome-back": "<h1>Welcome back</h1>",
          "first-visit": "<h1>First visit</h1>", "default": "<h1>Hello</h1>"}


def campaign(cid="spring", template=TEMPLATE, **kwargs):
    kwargs.setdefault("subject", "Hi {{ recipient.traits.first_name|default:'there' }}")
    kwargs.setdefault("from_email", "shop@example.com")
    return Campaign(cid, template_string=template, **kwargs)


@pytest.fixture
def people(persona_settings, make_person):
    persona_settings()
    return {
        "vip": make_person("u-vip", email="vip@example.com", visits=4, revenue=600.0,
                           traits={"first_name": "Vera"}),
        "back": make_person("u-back", email="back@example.com", visits=2,
                            traits={"first_name": "Bo"}),
        "new": make_person("u-new", email="new@example.com"),
    }


def test_each_recipient_gets_their_own_variant_over_real_smtp(smtp, people):
    report = campaign().send([p.id for p in people.values()])
    assert report.counts == {SENT: 3, SKIPPED: 0, FAILED: 0, ALREADY: 0}
    got = smtp.by_recipient()
    assert set(got) == {"vip@example.com", "back@example.com", "new@example.com"}
    expected = {"vip@example.com": "vip", "back@example.com": "welcome-back",
                "new@example.com": "first-visit"}
    for address, variant in expected.items():
        html = got[address].html
        assert HEROES[variant] in html
        assert all(h not in html for k, h in HEROES.items() if k != variant)
        assert "\ue000" not in html and "\ue003" not in html  # region markers are gone
    assert got["vip@example.com"].message["Subject"] == "Hi Vera"
    assert got["new@example.com"].message["Subject"] == "Hi there"
    assert got["vip@example.com"].message["From"] == "shop@example.com"
    assert got["vip@example.com"].message["X-Persona-Campaign"] == "spring"
    assert "VIP offers (https://shop.example/vip?from=mail&pzc=" in got["vip@example.com"].text
    # one SMTP session for the whole batch (the connection is reused)
    assert smtp.connections == 1
    by_profile = {r.profile_id: r for r in report.results}
    assert by_profile[people["back"].id].variants["hero"] == "welcome-back"
    assert by_profile[people["back"].id].email == "back@example.com"


def test_links_carry_the_slot_and_variant_they_are_in(smtp, people):
    campaign("links").send([people["vip"].id])
    html = smtp.messages[0].html
    import re

    links = dict(re.findall(r'href="([^"?#]+)[^"]*?pzc=([^"&#]+)', html))
    urls = re.findall(r'href="([^"]+)"', html)
    vip_url = next(u for u in urls if u.startswith("https://shop.example/vip"))
    assert vip_url.startswith("https://shop.example/vip?from=mail&amp;pzc=")
    token = read_click_token(vip_url.replace("&amp;", "&"))
    assert token == {"campaign": "links", "profile_id": people["vip"].id, "slot": "hero",
                     "variant": "vip"}
    unsubscribe = next(u for u in urls if "unsubscribe" in u)
    assert unsubscribe.endswith("#top")  # the fragment stays last
    outside = read_click_token(unsubscribe.replace("&amp;", "&"))
    assert outside["slot"] is None and outside["variant"] is None
    assert set(links) == {"https://shop.example/vip", "https://shop.example/unsubscribe"}
    # a forged token is not believed
    assert read_click_token(vip_url.replace("&amp;", "&") + "x") is None


def test_only_recipients_whose_marketing_consent_allows_are_sent_to(smtp, persona_settings,
                                                                     make_person):
    persona_settings()
    consent = {"personalization": "granted", "analytics": "granted"}
    yes = make_person("u-yes", email="yes@example.com")
    denied = make_person("u-no", email="no@example.com", consent={**consent, "marketing": "denied"})
    unset = make_person("u-unset", email="unset@example.com", consent=consent)
    report = campaign("consent").send([yes.id, denied.id, unset.id])
    assert [m.to for m in smtp.messages] == ["yes@example.com"]
    reasons = {r.profile_id: (r.status, r.reason) for r in report.results}
    assert reasons[denied.id] == (SKIPPED, "no marketing consent (denied)")
    assert reasons[unset.id] == (SKIPPED, "no marketing consent (unset)")  # opt-in: unset = no
    assert report.reasons(SKIPPED) == {"no marketing consent (denied)": 1,
                                       "no marketing consent (unset)": 1}
    logged = dict(CampaignSend.objects.filter(campaign="consent").values_list("profile_id", "status"))
    assert logged == {yes.id: "sent", denied.id: "skipped", unset.id: "skipped"}


def test_bad_input_is_reported_per_recipient_and_the_rest_of_the_send_continues(
    smtp, persona_settings, make_person
):
    persona = persona_settings()
    good = make_person("u-good", email="good@example.com", traits={"slot": "hero"})
    no_email = make_person("u-none", traits={"slot": "hero"})
    malformed = make_person("u-bad", email="bad@example.com", traits={"slot": "hero"})
    update_profile(persona.store, malformed.id,
                   lambda p: p.set_trait("email", "bad@@example", source="crm", at=time.time()))
    unknown_slot = make_person("u-slot", email="slot@example.com", traits={"slot": "no-such-slot"})
    refused = make_person("u-refused", email="refused@example.com", traits={"slot": "hero"})
    smtp.refuse.add("refused@example.com")
    last = make_person("u-last", email="last@example.com", traits={"slot": "hero"})
    template = ('{% load persona %}{% personalize recipient.traits.slot %}{% default %}'
                '<p>for you</p>{% endpersonalize %}')
    recipients = [good.id, no_email.id, malformed.id, Identity.email("ghost@example.com"),
                  unknown_slot.id, refused.id, last.id]
    report = campaign("bad", template=template).send(recipients)
    result = [(r.status, r.reason) for r in report.results]
    assert result[0] == (SENT, "")
    assert result[1] == (SKIPPED, "no email address")
    assert result[2] == (FAILED, "malformed address: 'bad@@example'")
    assert result[3][0] == FAILED and result[3][1].startswith("no profile for email:")
    assert result[4] == (FAILED, "slot 'no-such-slot' is not defined")
    assert result[5][0] == FAILED and "SMTPRecipientsRefused" in result[5][1]
    assert "mailbox unavailable" in result[5][1]
    assert result[6] == (SENT, "")
    assert sorted(m.to for m in smtp.messages) == ["good@example.com", "last@example.com"]
    # failures are in the send log with their reasons (the unknown identity has no profile)
    rows = dict(CampaignSend.objects.filter(campaign="bad").values_list("profile_id", "reason"))
    assert rows[unknown_slot.id] == "slot 'no-such-slot' is not defined"
    assert len(rows) == 6


def test_a_slot_missing_for_everyone_fails_everyone_but_nothing_breaks(smtp, people):
    template = '{% load persona %}{% personalize "nope" %}{% default %}x{% endpersonalize %}'
    report = campaign("nope", template=template).send([p.id for p in people.values()])
    assert report.counts[FAILED] == 3 and smtp.messages == []
    assert {r.reason for r in report.results} == {"slot 'nope' is not defined"}


def test_edge_mode_and_bad_campaign_ids_are_refused_up_front(people):
    with pytest.raises(CampaignError, match="edge mode cannot be used in email"):
        campaign(template='{% load persona %}{% personalize "hero" edge %}{% default %}x'
                          '{% endpersonalize %}')
    with pytest.raises(CampaignError, match="campaign id"):
        campaign("has spaces")


def test_resume_does_not_send_twice(smtp, persona_settings, make_person):
    persona_settings()
    ids = [make_person(f"u{i}", email=f"r{i}@example.com").id for i in range(6)]

    class Crash(Exception):
        pass

    def crash_after_three(report):
        if len(report.results) == 3:
            raise Crash

    with pytest.raises(Crash):
        campaign("resume").send(ids, progress=crash_after_three, batch_size=4)
    assert len(smtp.messages) == 3
    # a crash between claiming a recipient and the backend answering leaves a 'sending' row:
    # resume does not retry it (the message may have gone out), it reports it
    CampaignSend.objects.create(campaign="resume", profile_id=ids[3], status="sending")
    report = campaign("resume").send(ids)
    assert report.counts == {SENT: 2, SKIPPED: 0, FAILED: 0, ALREADY: 4}
    assert report.results[3].reason == "already sending"
    assert sorted(m.to for m in smtp.messages) == sorted(
        f"r{i}@example.com" for i in (0, 1, 2, 4, 5)
    )
    again = campaign("resume").send(ids)
    assert again.counts[ALREADY] == 6 and len(smtp.messages) == 5


def test_failed_recipients_are_retried_only_when_asked(smtp, persona_settings, make_person):
    persona_settings()
    person = make_person("u-f", email="flaky@example.com")
    smtp.refuse.add("flaky@example.com")
    assert campaign("retry").send([person.id]).counts[FAILED] == 1
    smtp.refuse.clear()
    assert campaign("retry").send([person.id]).counts[ALREADY] == 1
    assert smtp.messages == []
    report = campaign("retry").send([person.id], retry_failed=True)
    assert report.counts[SENT] == 1 and [m.to for m in smtp.messages] == ["flaky@example.com"]
    assert CampaignSend.objects.get(campaign="retry").status == "sent"


def test_exposures_are_recorded_with_channel_email_for_experiment_slots(smtp, people):
    persona = get_persona()
    report = campaign("expo").send([p.id for p in people.values()])
    rows = list(Exposure.objects.values_list("profile_id", "slot", "variant", "channel"))
    # the banner is an experiment (sticky assignment, like the web); the hero is not
    assert {r[1] for r in rows} == {"banner"}
    assert {r[3] for r in rows} == {"email"}
    for result in report.results:
        profile = persona.store.load(result.profile_id)
        assert profile.experiments["banner@1"] == result.variants["banner"]
        assert (result.profile_id, "banner", result.variants["banner"], "email") in rows


def test_dry_run_decides_and_reports_but_sends_and_records_nothing(smtp, people):
    report = campaign("dry").send([p.id for p in people.values()], dry_run=True)
    assert report.dry_run and report.counts[SENT] == 3
    assert {r.variants["hero"] for r in report.results} == {"vip", "welcome-back", "first-visit"}
    assert smtp.messages == [] and not CampaignSend.objects.exists()
    assert not Exposure.objects.exists()


def test_the_same_segment_gives_the_same_variant_on_the_web_and_in_email(
    client, smtp, persona_settings, make_person
):
    persona = persona_settings()
    client.get("/login-as/carol/")
    response = client.post(
        "/persona/consent",
        json.dumps({"personalization": True, "analytics": True, "marketing": True}),
        content_type="application/json",
    )
    assert response.status_code == 200, response.content
    from django.contrib.auth import get_user_model

    user_id = str(get_user_model().objects.get(username="carol").pk)
    make_person(user_id, email="carol@example.com", visits=2, consent={"marketing": "granted"})
    html = client.get("/").content.decode()
    web = html[html.index('<section id="hero">'):html.index("</section>")]
    assert "<h1>Welcome back</h1>" in web
    profile = persona.profile_for(Identity.user(user_id))
    campaign("same").send([profile.id])
    assert "<h1>Welcome back</h1>" in smtp.messages[0].html


# -- the management command ----------------------------------------------------------------
@pytest.fixture
def email_templates(settings):
    """Templates by name for the command, from a locmem loader (kept in the test tree)."""
    templates = [dict(t) for t in settings.TEMPLATES]
    options = dict(templates[0].get("OPTIONS", {}))
    options["loaders"] = [
        ("django.template.loaders.locmem.Loader", {
            "emails/spring.html": TEMPLATE,
            "emails/spring.txt": '{% load persona %}{% personalize "hero" %}{% variant "vip" %}'
                                 "VIP: https://shop.example/vip{% default %}Hello"
                                 "{% endpersonalize %}",
        }),
        "django.template.loaders.filesystem.Loader",
        "django.template.loaders.app_directories.Loader",
    ]
    templates[0] = {**templates[0], "APP_DIRS": False, "OPTIONS": options}
    settings.TEMPLATES = templates


def test_the_command_sends_a_segment_with_a_progress_bar_and_resumes(smtp, people,
                                                                      email_templates):
    out, err = io.StringIO(), io.StringIO()
    call_command("persona_send_campaign", "cmd-1", "emails/spring.html", "--subject", "Spring",
                 "--segment", "returning", "--from", "news@example.com",
                 "--text-template", "emails/spring.txt", stdout=out, stderr=err)
    # vip and back are returning; new is not
    assert sorted(m.to for m in smtp.messages) == ["back@example.com", "vip@example.com"]
    vip = smtp.by_recipient()["vip@example.com"]
    assert vip.message["From"] == "news@example.com"
    assert vip.text.startswith("VIP: https://shop.example/vip?pzc=")
    assert "2/2" in err.getvalue() and "[" in err.getvalue() and "sent=2" in err.getvalue()
    assert "campaign cmd-1: sent=2 skipped=0 failed=0 already done=0" in out.getvalue()
    out = io.StringIO()
    call_command("persona_send_campaign", "cmd-1", "emails/spring.html", "--subject", "Spring",
                 "--all", "--no-progress", stdout=out, stderr=io.StringIO())
    assert "sent=1 skipped=0 failed=0 already done=2" in out.getvalue()
    assert len(smtp.messages) == 3  # only 'new' was added


def test_the_command_reads_identities_from_a_file_and_can_dry_run(smtp, people, email_templates,
                                                                   tmp_path):
    path = tmp_path / "who.txt"
    path.write_text("# the list\nemail:VIP@example.com\nuser:u-new\n\nemail:ghost@example.com\n")
    out = io.StringIO()
    call_command("persona_send_campaign", "cmd-2", "emails/spring.html", "--subject", "S",
                 "--recipients", str(path), "--dry-run", "-v", "2", stdout=out,
                 stderr=io.StringIO())
    text = out.getvalue()
    assert "dry run: would send=2 skipped=0 failed=1" in text
    assert "no profile for email:" in text
    assert smtp.messages == [] and not CampaignSend.objects.exists()
    path.write_text("nonsense\n")
    with pytest.raises(CommandError, match=r"who\.txt:1"):
        call_command("persona_send_campaign", "cmd-2", "emails/spring.html", "--subject", "S",
                     "--recipients", str(path))
    with pytest.raises(CommandError, match="no segment named 'nope'"):
        call_command("persona_send_campaign", "cmd-2", "emails/spring.html", "--subject", "S",
                     "--segment", "nope")
    with pytest.raises(CommandError, match="does not load"):
        call_command("persona_send_campaign", "cmd-2", "emails/missing.html", "--subject", "S",
                     "--all")


def test_the_text_part_and_no_debug_comments_leak_into_the_message(people, settings):
    settings.PERSONA = {**settings.PERSONA, "DEBUG_EXPLAIN": True}  # pages would explain
    template = ('{% load persona %}<!DOCTYPE html><html><head><title>T</title><style>p{color:red}'
                '</style></head><body><P>Hi &amp; welcome</P>{% personalize "hero" %}'
                '{% variant "vip" %}<div>VIP <a class="x" HREF="https://shop.example/v">go</a></div>'
                '{% default %}<div>Hello</div>{% endpersonalize %}<br>bye</body></html>')
    rendered = campaign("text", template=template).render(get_persona().store.load(people["vip"].id))
    assert "<!-- persona" not in rendered.html
    assert 'HREF="https://shop.example/v?pzc=' in rendered.html  # any case of href is tagged
    lines = rendered.text.splitlines()
    assert lines[0] == "Hi & welcome"
    assert lines[1].startswith("VIP go (https://shop.example/v?pzc=")
    assert lines[-1] == "bye"
    assert "color:red" not in rendered.text and "DOCTYPE" not in rendered.text


def test_a_login_merge_moves_the_send_log_so_nobody_gets_a_campaign_twice(
    smtp, persona_settings, make_person
):
    from .conftest import ALL_CONSENT

    persona = persona_settings()
    persona.set_consent(Identity.anonymous("visitor-1"), ALL_CONSENT, source="banner")
    persona.identify(anonymous_id="visitor-1", email="merge@example.com")
    anonymous = persona.profile_for(Identity.anonymous("visitor-1"))
    assert campaign("merge").send([anonymous.id]).counts[SENT] == 1
    make_person("u-merge")
    merged = persona.link(Identity.user("u-merge"), Identity.anonymous("visitor-1"))
    assert merged.id != anonymous.id
    assert CampaignSend.objects.get(campaign="merge").profile_id == merged.id
    assert campaign("merge").send([merged.id]).counts[ALREADY] == 1
    assert len(smtp.messages) == 1

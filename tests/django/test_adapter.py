"""Middleware, settings, checks, login merge and management commands of the Django adapter."""

import io
import json
import logging

import pytest
from django.core.checks import run_checks
from django.core.management import CommandError, call_command
from django.test import override_settings

from persona_django.conf import get_config
from persona_django.runtime import get_persona
from persona_sdk import Identity

pytestmark = pytest.mark.django_db


def grant(client, **choices):
    body = choices or {"personalization": True, "analytics": True}
    return client.post("/persona/consent", json.dumps(body), content_type="application/json")


def profile_of(client):
    from django.test import RequestFactory

    from persona_django.request import COOKIE_SALT

    request = RequestFactory().get("/")
    request.COOKIES["persona_id"] = client.cookies["persona_id"].value
    visitor = request.get_signed_cookie("persona_id", salt=COOKIE_SALT)
    return get_persona().profile_for(Identity.anonymous(visitor))


def test_settings_are_read_through_a_cached_getter_that_override_settings_resets():
    assert get_config()["CONSENT_MODE"] == "opt-in"
    with override_settings(PERSONA={"CONSENT_MODE": "opt-out", "COOKIE_NAME": "p"}):
        assert get_config()["CONSENT_MODE"] == "opt-out"
        assert get_config()["COOKIE_NAME"] == "p"
        assert get_persona().policy.mode == "opt-out"
    assert get_config()["COOKIE_NAME"] == "persona_id"
    assert get_persona().policy.mode == "opt-in"


def test_opt_in_sets_no_cookie_and_writes_nothing_before_consent(client):
    response = client.get("/plain/")
    assert response.status_code == 200
    assert "persona_id" not in response.cookies
    grant(client)
    assert "persona_id" in client.cookies
    client.get("/plain/")
    assert profile_of(client).behaviour.page_views.total == 1


@override_settings(PERSONA={"CONSENT_MODE": "opt-out"})
def test_opt_out_identifies_on_the_first_request_and_records_page_views(client):
    response = client.get("/plain/")
    cookie = response.cookies["persona_id"]
    assert cookie["httponly"] and cookie["samesite"] == "Lax"
    client.get("/plain/")
    assert profile_of(client).behaviour.page_views.total == 2


@override_settings(PERSONA={"CONSENT_MODE": "opt-out"})
def test_the_cookie_holds_only_a_signed_opaque_id(client):
    client.get("/plain/")
    raw = client.cookies["persona_id"].value
    value, timestamp, signature = raw.split(":")  # id : signing time : signature
    assert len(value) == 32 and all(c in "0123456789abcdef" for c in value)
    assert timestamp and signature


@override_settings(PERSONA={"CONSENT_MODE": "opt-out"})
@pytest.mark.parametrize("cookie", ["garbage", "abc:forged-signature", "", "x" * 4000])
def test_a_forged_or_garbled_cookie_is_a_new_visitor_never_a_500(client, cookie, caplog):
    client.cookies["persona_id"] = cookie
    with caplog.at_level(logging.WARNING, logger="persona_django"):
        response = client.get("/plain/")
    assert response.status_code == 200
    assert response.cookies["persona_id"].value not in ("", cookie)
    if cookie:
        assert "forged or garbled" in caplog.text


def test_a_request_that_personalizes_nothing_does_no_profile_work(client, django_assert_num_queries):
    with override_settings(PERSONA={"CONSENT_MODE": "opt-in", "RECORD_PAGE_VIEWS": False}):
        grant(client)
        client.get("/plain/")
        with django_assert_num_queries(0):
            response = client.get("/plain/")
    assert "Cache-Control" not in response or "private" not in response["Cache-Control"]


def test_login_merges_the_anonymous_profile_into_the_users(client, django_user_model):
    grant(client)
    client.get("/plain/")
    client.get("/plain/")
    anon = profile_of(client)
    client.get("/login-as/ada/")
    user = django_user_model.objects.get(username="ada")
    known = get_persona().profile_for(Identity.user(str(user.pk)))
    assert known is not None
    assert known.behaviour.page_views.total >= 2
    assert known.id == anon.id or anon.id in known.aliases
    client.post("/buy/", {"amount": "42"})
    assert get_persona().profile_for(Identity.user(str(user.pk))).behaviour.revenue.total == 42


def test_a_denial_made_anonymously_survives_login(client, django_user_model):
    grant(client, personalization=False, analytics=False)
    client.get("/login-as/bob/")
    user = django_user_model.objects.get(username="bob")
    known = get_persona().profile_for(Identity.user(str(user.pk)))
    assert known is not None and not get_persona().may(known, "personalization")


def test_server_side_track_updates_the_profile_before_the_response(client):
    grant(client)
    client.post("/buy/", {"amount": "600"})
    assert profile_of(client).behaviour.revenue.total == 600


@pytest.mark.parametrize(
    "overrides, check_id",
    [
        ({"MIDDLEWARE": ["django.contrib.sessions.middleware.SessionMiddleware"]}, "persona.E001"),
        ({"MIDDLEWARE": ["persona_django.middleware.PersonaMiddleware",
                         "django.contrib.sessions.middleware.SessionMiddleware",
                         "django.contrib.auth.middleware.AuthenticationMiddleware"]}, "persona.W002"),
        ({"PERSONA": {"CACHE_ALIAS": "nope"}}, "persona.E003"),
        ({"PERSONA": {"CONSENT_MODE": "maybe"}}, "persona.E005"),
        ({"PERSONA": {"COOKIE_NAM": "x"}}, "persona.W006"),
        ({"PERSONA": {"DEFINITIONS": {"segments": {"vip": {"rule": {"traits.ltv": {"$gte": "abc"}}}}}}},
         "persona.E007"),
        ({"PERSONA": {"DEFINITIONS": "/nonexistent/defs.json"}}, "persona.E007"),
    ],
)
def test_system_checks_name_the_problem_with_a_hint(overrides, check_id):
    with override_settings(**overrides):
        messages = [m for m in run_checks() if m.id == check_id]
    assert messages, f"expected {check_id}"
    assert messages[0].hint
    if check_id == "persona.E007" and "DEFINITIONS" in str(overrides) and "abc" in str(overrides):
        assert 'segments.vip.rule.traits.ltv: $gte expects a number, got "abc"' in messages[0].msg


def test_the_test_settings_pass_every_check():
    ours = [m for m in run_checks() if m.id.startswith("persona.")]
    assert ours == []


def test_management_commands_explain_export_and_erase(client, django_user_model):
    grant(client, personalization=True, analytics=True, marketing=True)
    client.post("/buy/", {"amount": "700"})
    client.get("/login-as/cy/")
    user = django_user_model.objects.get(username="cy")
    out = io.StringIO()
    call_command("persona_explain", f"user:{user.pk}", "hero", stdout=out)
    text = out.getvalue()
    assert "variant:" in text and "explanation:" in text and "consent:" in text
    out = io.StringIO()
    call_command("persona_export", f"user:{user.pk}", stdout=out)
    exported = json.loads(out.getvalue())
    assert exported["profile"]["behaviour"]["revenue"]["total"] == 700
    assert {e["purpose"] for e in exported["consent_ledger"]} >= {"marketing"}
    out = io.StringIO()
    call_command("persona_erase", f"user:{user.pk}", "--yes", stdout=out)
    report = json.loads(out.getvalue())
    assert report["found"] and any(a["adapter"] == "persona_django" for a in report["adapters"])
    assert get_persona().profile_for(Identity.user(str(user.pk))) is None
    with pytest.raises(CommandError, match="no profile"):
        call_command("persona_export", f"user:{user.pk}")
    with pytest.raises(CommandError, match="Expected who"):
        call_command("persona_explain", "nobody", "hero")


def test_persona_plugins_lists_the_adapter_as_a_plugin():
    out = io.StringIO()
    call_command("persona_plugins", "--hooks", stdout=out)
    text = out.getvalue()
    assert "persona_django" in text and "persona_erase" in text
    assert "strategies: experiment, priority" in text


def test_server_side_experiment_exposures_are_recorded_with_page_views_on(client):
    """The page view refreshes the request's state; the exposures decided before it must
    still be recorded (the experiment report depends on them)."""
    from django.template import engines

    from persona_django.models import Exposure

    grant(client)
    client.get("/plain/")
    template = engines["django"].from_string(
        '{% load persona %}{% personalize "banner" %}{% variant "a" %}A{% variant "b" %}B'
        "{% default %}D{% endpersonalize %}"
    )
    from django.test import RequestFactory

    from persona_django.middleware import PersonaMiddleware

    def view(request):
        from django.http import HttpResponse

        return HttpResponse(template.render({"request": request}), content_type="text/html")

    request = RequestFactory().get("/")
    request.COOKIES.update({k: v.value for k, v in client.cookies.items()})
    from django.contrib.auth.models import AnonymousUser

    request.user = AnonymousUser()
    PersonaMiddleware(view)(request)
    profile = profile_of(client)
    assert profile.behaviour.page_views.total == 2
    exposures = list(Exposure.objects.filter(slot="banner").values_list("profile_id", "variant"))
    decided = request.persona.decisions or None
    assert exposures and exposures[0][0] == profile.id, (exposures, decided)
    assert profile.experiments.get("banner@1") in ("a", "b", "default")

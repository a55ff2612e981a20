"""Segments in the Wagtail admin: the snippet, its validation, the rule check endpoint, and
how every process picks up a saved segment (one cache read per request, no SQL)."""

from __future__ import annotations

import json

import pytest
from django.core.cache import cache
from django.test import override_settings
from django.urls import reverse
from wagtail.test.utils.form_data import nested_form_data

from persona_django.runtime import get_persona, reset_persona
from persona_sdk import Identity
from persona_sdk.errors import RuleError
from persona_wagtail import registry
from persona_wagtail.models import Segment
from persona_wagtail.widgets import PATHS, catalogue
from tests.wagtail.conftest import main_html, personalized, set_traits, variant

pytestmark = pytest.mark.django_db

LIST = "persona_wagtail_segments:list"
ADD = "persona_wagtail_segments:add"
EDIT = "persona_wagtail_segments:edit"
CHECK = "persona_wagtail:check_rule"
PRO = {"traits.plan": "pro"}


def post_segment(client, name, rule, description="", pk=None):
    url = reverse(EDIT, args=[pk]) if pk else reverse(ADD)
    data = nested_form_data({"name": name, "description": description, "rule": json.dumps(rule)})
    return client.post(url, data)


def form_errors(response):
    form = response.context["form"]
    return {field: [str(e) for e in errors] for field, errors in form.errors.items()}


def check(client, rule, **extra):
    return client.post(
        reverse(CHECK), json.dumps({"rule": rule, **extra}), content_type="application/json"
    )


@pytest.fixture
def condition_plugin():
    """A plugin's custom condition type (``$tier``) on the site's Persona."""
    from persona_sdk.rules.subject import Subject

    def tier(arg, where):
        if not isinstance(arg, str):
            raise RuleError(where, "$tier expects a tier name")
        return lambda s: isinstance(s, Subject) and s.profile.trait("tier") == arg

    persona = get_persona()
    persona.registry.conditions.register("tier", tier, doc="the customer's loyalty tier")
    yield persona
    reset_persona()


# -- the listing and the form ----------------------------------------------------------------
def test_listing_shows_admin_segments_and_the_code_ones_read_only(admin_client):
    Segment.objects.create(name="pro-users", description="Paying", rule=PRO)
    html = admin_client.get(reverse(LIST)).content.decode()
    assert "pro-users" in html and "Paying" in html
    code = html[html.index('id="persona-code-segments"') :]
    # PERSONA["DEFINITIONS"] (tests/django_project/definitions.json), not editable here
    for name in ("first-time", "returning", "returning-high-value", "mobile"):
        assert f'data-segment="{name}"' in code
    assert "/cms/persona/segments/edit/" not in code
    assert "pro-users" not in code


def test_the_form_has_the_rule_builder_with_every_namespace_condition_and_segment(
    admin_client, condition_plugin
):
    html = admin_client.get(reverse(ADD)).content.decode()
    assert "data-persona-rule-builder" in html
    assert "persona_wagtail/rule-builder.js" in html
    data = catalogue()
    assert {n["name"] for n in data["namespaces"]} == {
        "traits",
        "behaviour",
        "events",
        "rfm",
        "affinity",
        "identity",
        "context",
    }
    from persona_sdk.rules.fields import NAMESPACES

    assert {n["name"] for n in data["namespaces"]} == set(NAMESPACES)
    assert {"name": "tier", "doc": "the customer's loyalty tier"} in data["conditions"]
    assert {s["name"] for s in data["segments"]} >= {"returning", "mobile"}


@pytest.mark.parametrize("path,doc", PATHS)
def test_every_suggested_path_compiles(path, doc):
    concrete = path.replace("<name>", "plan").replace("<event name>", "Order Completed")
    concrete = concrete.replace("<category>", "shoes")
    get_persona().compile_rule({concrete: {"$exists": True}})


def test_saving_a_segment_makes_it_usable_at_once(admin_client, make_page, visitor):
    response = post_segment(admin_client, "pro-users", PRO, "Paying customers")
    assert response.status_code == 302, form_errors(response)
    segment = Segment.objects.get(name="pro-users")
    assert segment.rule == PRO and segment.description == "Paying customers"
    persona = registry.ensure_current()
    assert persona.segments.get("pro-users").source == "admin"
    assert persona.segments.get("returning").source == "json"  # code segments kept

    make_page(personalized("hero", [variant(segment="pro-users", content=(("heading", "Pro"),))]))
    pro, other = visitor(), visitor()
    set_traits(pro, plan="pro")
    assert "Pro" in main_html(pro.get("/pages/offers/"))
    assert "Hello everyone" in main_html(other.get("/pages/offers/"))


@pytest.mark.parametrize(
    "rule,where",
    [
        ({"traits.ltv": {"$gte": "a lot"}}, "rule.traits.ltv: $gte expects a number"),
        (
            {"$and": [PRO, {"behaviour.visits_13d": {"$gt": 1}}]},
            "rule.$and[1].behaviour.visits_13d",
        ),
        ({"$segment": "nobody"}, 'refers to segment "nobody"'),
        ({"$python": "__import__('os')"}, 'unknown operator "$python"'),
    ],
)
def test_a_rule_that_does_not_compile_cannot_be_saved(admin_client, rule, where):
    response = post_segment(admin_client, "broken", rule)
    assert response.status_code == 200
    errors = form_errors(response)
    assert list(errors) == ["rule"]
    assert where in errors["rule"][0]
    assert not Segment.objects.exists()
    # the error is shown at the field, in the page
    assert where.split(":")[0].replace('"', "&quot;") in response.content.decode()


def test_a_name_a_code_segment_has_is_refused(admin_client):
    response = post_segment(admin_client, "returning", PRO)
    errors = form_errors(response)
    assert "already defined in file" in errors["name"][0]
    response = post_segment(admin_client, "Not A Name", PRO)
    assert "lower-case" in form_errors(response)["name"][0]
    assert not Segment.objects.exists()


def test_cycles_and_changes_that_break_another_segment_are_refused(admin_client):
    assert post_segment(admin_client, "a", PRO).status_code == 302
    assert post_segment(admin_client, "b", {"$segment": "a"}).status_code == 302
    a = Segment.objects.get(name="a")
    # a -> b -> a
    errors = form_errors(post_segment(admin_client, "a", {"$segment": "b"}, pk=a.pk))
    assert "cycle" in errors["rule"][0]
    # renaming a would leave b pointing at nothing
    errors = form_errors(post_segment(admin_client, "a2", PRO, pk=a.pk))
    assert 'break segment "b"' in errors["name"][0]
    a.refresh_from_db()
    assert a.name == "a" and a.rule == PRO
    # an edit that keeps everything working is fine
    assert post_segment(admin_client, "a", {"traits.plan": "max"}, pk=a.pk).status_code == 302


def test_a_plugin_condition_type_can_be_used(admin_client, condition_plugin):
    assert post_segment(admin_client, "gold", {"$tier": "gold"}).status_code == 302
    errors = form_errors(post_segment(admin_client, "silver", {"$tier": 3}))
    assert "$tier expects a tier name" in errors["rule"][0]


# -- the live check --------------------------------------------------------------------------
def test_check_answers_ok_with_a_count_of_matching_profiles(admin_client):
    persona = get_persona()
    for i in range(5):
        persona.set_consent(Identity.anonymous(f"visitor-{i}"), {"analytics": True}, source="test")
        persona.identify(anonymous_id=f"visitor-{i}", traits={"plan": "pro" if i < 2 else "free"})
    answer = check(admin_client, PRO).json()
    assert answer == {
        "ok": True,
        "count": {"matched": 2, "scanned": 5, "total": 5, "complete": True, "reads_context": False},
    }
    answer = check(admin_client, {"context.device.type": "mobile"}).json()
    assert answer["count"]["reads_context"] is True
    # bounded: at most COUNT_LIMIT profiles are read; then the count is a lower bound
    with override_settings(PERSONA_WAGTAIL={"COUNT_LIMIT": 3}):
        count = check(admin_client, {}).json()["count"]
    assert count["scanned"] == 3 and count["complete"] is False and count["total"] == 5


def test_check_names_where_the_rule_is_wrong(admin_client):
    answer = check(admin_client, {"$or": [PRO, {"traits.ltv": {"$gte": "x"}}]}).json()
    assert answer["ok"] is False
    assert answer["where"] == "rule.$or[1].traits.ltv"
    assert "$gte expects a number" in answer["error"]


def test_check_with_a_name_catches_clashes_and_cycles(admin_client):
    answer = check(admin_client, PRO, name="mobile").json()
    assert answer["ok"] is False and answer["field"] == "name"
    a = Segment.objects.create(name="a", rule=PRO)
    Segment.objects.create(name="b", rule={"$segment": "a"})
    answer = check(admin_client, {"$segment": "b"}, name="a", pk=a.pk).json()
    assert answer["ok"] is False and "cycle" in answer["error"]


def test_check_refuses_bad_requests_and_anonymous_users(admin_client, client):
    assert admin_client.get(reverse(CHECK)).status_code == 405
    response = admin_client.post(reverse(CHECK), "nope", content_type="application/json")
    assert response.status_code == 400
    response = admin_client.post(
        reverse(CHECK), json.dumps({"rule": [1]}), content_type="application/json"
    )
    assert response.status_code == 400
    response = check(client, PRO)
    assert response.status_code in (302, 403)


# -- keeping every process current -----------------------------------------------------------
class FakeRequestPersona:
    """What ``ensure_current(rp=...)`` needs of ``request.persona``: one per request."""

    def __init__(self, persona):
        self.persona = persona


@pytest.fixture
def token_reads(monkeypatch):
    reads = []
    real = registry._read_token

    def counted():
        reads.append(1)
        return real()

    monkeypatch.setattr(registry, "_read_token", counted)
    return reads


def test_a_warm_request_reads_one_cache_key_at_most_and_runs_no_sql(
    token_reads, django_assert_num_queries
):
    Segment.objects.create(name="pro-users", rule=PRO)
    persona = registry.ensure_current()
    assert "pro-users" in persona.segments
    token_reads.clear()
    with override_settings(PERSONA_WAGTAIL={"VERSION_CHECK_SECONDS": 0}):
        with django_assert_num_queries(0):
            rp = FakeRequestPersona(persona)
            for _ in range(3):  # three blocks on one page
                registry.ensure_current(rp=rp)
            assert len(token_reads) == 1  # once per request
            for _ in range(3):  # three more requests
                registry.ensure_current(rp=FakeRequestPersona(persona))
            assert len(token_reads) == 4
    token_reads.clear()
    # by default a process asks the cache at most once a second
    with django_assert_num_queries(0):
        for _ in range(5):
            registry.ensure_current(rp=FakeRequestPersona(persona))
    assert len(token_reads) <= 1


@override_settings(PERSONA_WAGTAIL={"VERSION_CHECK_SECONDS": 0})
def test_another_process_saving_a_segment_is_noticed_through_the_cache(make_page, visitor):
    make_page(personalized("hero", [variant(segment="vip2", content=(("heading", "VIP"),))]))
    pro = visitor()
    set_traits(pro, plan="pro")
    assert "Hello everyone" in main_html(pro.get("/pages/offers/"))  # vip2 does not exist yet
    # "another process" writes the row (no signal here) and publishes a new version
    Segment.objects.bulk_create([Segment(name="vip2", rule=PRO)])
    assert "Hello everyone" in main_html(pro.get("/pages/offers/"))  # same version: no reload
    cache.set(registry.VERSION_KEY, "another-process", None)
    assert "VIP" in main_html(pro.get("/pages/offers/"))


def test_saving_publishes_a_new_version_after_commit(django_capture_on_commit_callbacks):
    registry.ensure_current()
    before = cache.get(registry.VERSION_KEY)
    assert before
    with django_capture_on_commit_callbacks(execute=True):
        Segment.objects.create(name="later", rule=PRO)
    assert cache.get(registry.VERSION_KEY) not in (None, before)
    assert "later" in registry.ensure_current().segments


def test_a_segment_that_stopped_compiling_is_left_out_and_the_rest_work(condition_plugin):
    Segment.objects.create(name="gold", rule={"$tier": "gold"})
    Segment.objects.create(name="pro-users", rule=PRO)
    assert "gold" in registry.ensure_current(condition_plugin).segments
    reset_persona()  # the plugin is gone (uninstalled): $tier is unknown now
    registry.reset()
    persona = registry.ensure_current()
    assert "gold" not in persona.segments and "pro-users" in persona.segments
    assert 'unknown operator "$tier"' in str(registry.problems()["gold"])


def test_code_segments_come_back_when_the_registry_is_reset():
    Segment.objects.create(name="pro-users", rule=PRO)
    persona = registry.ensure_current()
    code = registry.code_registry(persona)
    assert "pro-users" in persona.segments and "pro-users" not in code
    registry.reset()
    assert persona.segments is code


def test_a_name_already_taken_is_reported_once(admin_client):
    Segment.objects.create(name="pro-users", rule=PRO)
    errors = form_errors(post_segment(admin_client, "pro-users", PRO))
    assert len(errors["name"]) == 1 and "already exists" in errors["name"][0]
    assert check(admin_client, PRO, name="pro-users").json()["field"] == "name"

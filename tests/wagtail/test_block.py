"""``PersonalizedBlock``: migrations, validation, rendering (same semantics as the template
tag), experiments, failures, search, editing through the Wagtail admin, and no extra SQL."""

from __future__ import annotations

import logging

import pytest
from django.contrib.auth.models import AnonymousUser
from django.core.exceptions import ValidationError
from django.db import connection
from django.template import Context, Template
from django.test import RequestFactory, override_settings
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from wagtail import blocks
from wagtail.blocks.definition_lookup import BlockDefinitionLookup, BlockDefinitionLookupBuilder
from wagtail.test.utils.form_data import nested_form_data, rich_text, streamfield

from persona_django.conf import get_config
from persona_django.models import Exposure
from persona_django.request import RequestPersona
from persona_django.runtime import get_persona
from persona_wagtail.blocks import PersonalizedBlock, find_personalized
from persona_wagtail.models import Segment
from tests.wagtail.conftest import (
    DESKTOP,
    IPHONE,
    main_html,
    personalized,
    profile_of,
    set_traits,
    stream,
    uid,
    variant,
)
from tests.wagtail.testapp.models import PersonalizedPage, PlainPage, content_blocks

pytestmark = pytest.mark.django_db

PRO = {"traits.plan": "pro"}


def body_block():
    return PersonalizedPage._meta.get_field("body").stream_block.child_blocks["personalized"]


# -- migrations ------------------------------------------------------------------------------
def test_deconstruct_is_pinned_to_the_public_path():
    block = PersonalizedBlock(child_blocks=[("heading", blocks.CharBlock())], label="Hero")
    path, args, kwargs = block.deconstruct()
    assert path == "persona_wagtail.blocks.PersonalizedBlock"
    assert args == ()
    assert [name for name, _ in kwargs["child_blocks"]] == ["heading"]
    assert kwargs["label"] == "Hero"

    class SiteBlock(PersonalizedBlock):  # a subclass in a site's code
        pass

    assert SiteBlock(child_blocks=[("h", blocks.CharBlock())]).deconstruct()[0] == (
        "persona_wagtail.blocks.PersonalizedBlock"
    )


def test_it_round_trips_through_the_migration_lookup():
    original = body_block()
    builder = BlockDefinitionLookupBuilder()
    index = builder.add_block(original)
    path, _args, kwargs = builder.get_lookup_as_dict()[index]
    assert path == "persona_wagtail.blocks.PersonalizedBlock"
    assert all(isinstance(i, int) for _, i in kwargs["child_blocks"])
    rebuilt = BlockDefinitionLookup(builder.get_lookup_as_dict()).get_block(index)
    assert isinstance(rebuilt, PersonalizedBlock)
    assert rebuilt.deconstruct() == original.deconstruct()
    assert list(rebuilt.child_blocks) == ["slot", "variants", "default", "experiment"]


def test_child_blocks_are_required():
    with pytest.raises(TypeError, match="child_blocks"):
        PersonalizedBlock()


# -- validation ------------------------------------------------------------------------------
def clean(raw):
    block = body_block()
    return block.clean(block.to_python(raw))


def raw(variants, slot="", experiment=None):
    return personalized(slot, variants, experiment=experiment)[1]


def errors_of(exc):
    return exc.value.as_json_data()


def test_clean_names_the_block_and_its_variants():
    value = clean(raw([variant(segment="mobile"), variant(rule=PRO), variant()]))
    assert value["slot"].startswith("block-")
    assert [v["key"] for v in value["variants"]] == ["mobile", "variant-2", "variant-3"]
    again = clean(body_block().get_prep_value(value))
    assert again["slot"] == value["slot"]  # kept once given


@pytest.mark.parametrize(
    "variants,slot,where,message",
    [
        ([variant(rule="{not json")], "", ("variants", 0, "rule"), "not valid JSON"),
        (
            [variant(rule={"traits.ltv": {"$gt": "x"}})],
            "",
            ("variants", 0, "rule"),
            "$gt expects a number",
        ),
        ([variant(rule={"$segment": "gone"})], "", ("variants", 0, "rule"), 'segment "gone"'),
        (
            [variant(segment="gone")],
            "",
            ("variants", 0, "segment"),
            'Segment "gone" does not exist',
        ),
        ([variant(segment="mobile", rule=PRO)], "", ("variants", 0, "rule"), "not both"),
        ([variant("default")], "", ("variants", 0, "key"), "default content"),
        ([variant("x y")], "", ("variants", 0, "key"), "letters, digits"),
        ([variant("a"), variant("a")], "", ("variants", 1, "key"), 'uses "a" too'),
        ([variant(weight=0)], "", ("variants", 0, "weight"), "positive"),
        ([], "bad name!", ("slot",), "letters, digits"),
    ],
)
def test_clean_refuses_what_cannot_decide(variants, slot, where, message):
    with pytest.raises(ValidationError) as exc:
        clean(raw(variants, slot))
    data = errors_of(exc)["blockErrors"]
    node = data
    for part in where:
        node = (
            node["blockErrors"][part]
            if not isinstance(part, str) or "blockErrors" in node
            else node[part]
        )
    text = str(node)
    assert message in text, data


# -- rendering -------------------------------------------------------------------------------
TAG = (
    '{% load persona %}{% personalize "tag-twin" %}'
    '{% variant "mobile" %}M{% variant "pro" rule=\'{"traits.plan": "pro"}\' %}P'
    "{% default %}D{% endpersonalize %}"
)


def twin_page(make_page):
    return make_page(
        personalized(
            "twin",
            [
                variant("mobile", segment="mobile", content=(("heading", "M"),)),
                variant("pro", rule=PRO, content=(("heading", "P"),)),
            ],
            default=(("heading", "D"),),
        )
    )


def tag_choice(client, ua):
    request = RequestFactory(headers={"User-Agent": ua}).get("/")
    request.COOKIES = {k: v.value for k, v in client.cookies.items()}
    request.user = AnonymousUser()
    request.persona = RequestPersona(request, get_persona(), get_config())
    return Template(TAG).render(Context({"request": request})).strip()


def block_choice(client, ua):
    html = main_html(client.get("/pages/offers/", headers={"User-Agent": ua}))
    return html.split('<h2 class="heading">', 1)[1].split("<", 1)[0]


@pytest.mark.parametrize(
    "ua,plan,consent,expected",
    [
        (IPHONE, None, True, "M"),
        (DESKTOP, "pro", True, "P"),
        (IPHONE, "pro", True, "M"),  # both match: the first wins
        (DESKTOP, "free", True, "D"),
        (IPHONE, None, False, "D"),  # no consent: the default
    ],
)
def test_the_block_decides_like_the_template_tag(make_page, visitor, ua, plan, consent, expected):
    twin_page(make_page)
    client = (
        visitor(ua, consent=consent)
        if consent
        else visitor(ua, personalization=False, analytics=True)
    )
    if plan:
        set_traits(client, plan=plan)
    assert block_choice(client, ua) == expected
    assert tag_choice(client, ua) == expected


def test_only_the_chosen_branch_renders_and_the_response_is_private(make_page, visitor):
    twin_page(make_page)
    response = visitor(IPHONE).get("/pages/offers/")
    html = main_html(response)
    assert ">M<" in html and ">D<" not in html and ">P<" not in html
    assert "private" in response["Cache-Control"]


def test_an_experiment_records_exposures_under_the_block_name(make_page, visitor):
    make_page(
        personalized(
            "exp",
            [variant("a", content=(("heading", "A"),)), variant("b", content=(("heading", "B"),))],
            experiment={"enabled": True, "holdout": 0.3, "version": "1"},
        )
    )
    seen = {}
    for _ in range(12):
        client = visitor()
        first = block_choice(client, DESKTOP)
        assert block_choice(client, DESKTOP) == first  # sticky
        seen[visitor_key(client)] = first
        assert profile_of(client).experiments["exp@1"] in ("a", "b", "default")
    assert set(seen.values()) <= {"A", "B", "Hello everyone"}
    assert len(set(seen.values())) >= 2
    rows = set(Exposure.objects.filter(slot="exp").values_list("variant", flat=True))
    assert rows <= {"a", "b", "default"} and len(rows) >= 2


def visitor_key(client):
    return client.cookies["persona_id"].value


def test_a_variant_that_raises_shows_the_default_and_logs(make_page, visitor, caplog):
    make_page(personalized("hero", [variant(segment="mobile", content=(("boom", "x"),))]))
    with caplog.at_level(logging.ERROR, logger="persona_wagtail"):
        response = visitor(IPHONE).get("/pages/offers/")
    assert response.status_code == 200
    assert "Hello everyone" in main_html(response)
    assert "rendering variant 'mobile' of personalized block 'hero' failed" in caplog.text
    assert "boom: this block always fails" in caplog.text


def test_a_default_that_raises_still_leaves_the_page_working(make_page, visitor, caplog):
    make_page(personalized("hero", [], default=(("boom", "x"),)), ("heading", "After"))
    with caplog.at_level(logging.ERROR, logger="persona_wagtail"):
        response = visitor().get("/pages/offers/")
    assert response.status_code == 200 and "After" in main_html(response)
    assert "rendering the default of a personalized block failed" in caplog.text


def test_a_deleted_segment_falls_back_to_the_default_and_is_flagged(
    make_page, visitor, admin_client, caplog
):
    segment = Segment.objects.create(name="pro-users", rule=PRO)
    page = make_page(
        personalized("hero", [variant(segment="pro-users", content=(("heading", "Pro"),))])
    )
    pro = visitor()
    set_traits(pro, plan="pro")
    assert "Pro" in main_html(pro.get("/pages/offers/"))
    segment.delete()
    with caplog.at_level(logging.WARNING, logger="persona_wagtail"):
        assert "Hello everyone" in main_html(pro.get("/pages/offers/"))
    assert 'segment "pro-users" is not defined' in caplog.text
    block, value = next(
        (b, v)
        for _, b, v in find_personalized(
            PersonalizedPage._meta.get_field("body").stream_block, page.specific.body
        )
    )
    assert 'targets segment "pro-users", which does not exist' in block.problems(value)[0]
    # the page editor says so
    response = admin_client.get(reverse("wagtailadmin_pages:edit", args=[page.id]))
    messages = [str(m) for m in response.context["messages"]]
    assert any("pro-users" in m and "hero" in m for m in messages), messages


def test_without_request_persona_the_default_renders(make_page):
    page = make_page(personalized("hero", [variant(segment="mobile", content=(("heading", "M"),))]))
    html = str(page.specific.body)  # rendered without a request
    assert "Hello everyone" in html and ">M<" not in html


# -- search: targeted content stays out ------------------------------------------------------
def test_only_the_default_is_searchable(make_page, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):  # Wagtail 7 indexes on commit
        page = make_page(
            personalized(
                "hero",
                [variant(segment="mobile", content=(("heading", "Secret offer"),))],
                default=(("heading", "Public text"),),
            )
        )
    block = body_block()
    value = page.specific.body[0].value
    assert block.get_searchable_content(value) == ["Public text"]
    assert list(PersonalizedPage.objects.live().search("Secret")) == []
    assert [p.id for p in PersonalizedPage.objects.live().search("Public")] == [page.id]


# -- editing in the Wagtail admin ------------------------------------------------------------
def listblock(items):
    data = {
        str(i): {"deleted": "", "order": str(i), "id": uid(), "value": v}
        for i, v in enumerate(items)
    }
    data["count"] = str(len(items))
    return data


def page_form(title, variant_rule="", segment="mobile"):
    return nested_form_data(
        {
            "title": title,
            "slug": "edited",
            "body": streamfield(
                [
                    (
                        "personalized",
                        {
                            "slot": "",
                            "variants": listblock(
                                [
                                    {
                                        "key": "",
                                        "segment": segment,
                                        "rule": variant_rule,
                                        "weight": "1",
                                        "content": streamfield([("heading", "On your phone")]),
                                    }
                                ]
                            ),
                            "default": streamfield([("paragraph", rich_text("<p>Hi all</p>"))]),
                            "experiment": {"holdout": "0", "version": "1"},
                        },
                    )
                ]
            ),
            "action-publish": "action-publish",
        }
    )


def test_an_editor_adds_a_personalized_block_through_the_admin(admin_client, home, visitor):
    url = reverse(
        "wagtailadmin_pages:add", args=("persona_wagtail_testapp", "personalizedpage", home.id)
    )
    form = admin_client.get(url)
    assert form.status_code == 200
    response = admin_client.post(url, page_form("Edited"))
    assert response.status_code == 302, (
        response.context["form"].errors if response.context else response
    )
    page = PersonalizedPage.objects.get(slug="edited")
    value = page.body[0].value
    assert value["slot"].startswith("block-") and value["variants"][0]["key"] == "mobile"
    assert page.live
    assert "On your phone" in main_html(visitor(IPHONE).get("/pages/edited/"))
    assert "Hi all" in main_html(visitor(DESKTOP).get("/pages/edited/"))


def test_an_editor_cannot_save_a_rule_that_does_not_compile(admin_client, home):
    url = reverse(
        "wagtailadmin_pages:add", args=("persona_wagtail_testapp", "personalizedpage", home.id)
    )
    response = admin_client.post(
        url, page_form("Broken", variant_rule='{"traits.ltv": {"$gt": "x"}}', segment="")
    )
    assert response.status_code == 200
    assert not PersonalizedPage.objects.filter(slug="edited").exists()
    assert "$gt expects a number" in response.content.decode()


# -- cost ------------------------------------------------------------------------------------
def test_a_warm_personalized_page_runs_the_same_sql_as_the_plain_page(make_page, visitor):
    blocks_ = [
        personalized(
            f"slot-{i}",
            [
                variant(segment="returning-high-value", content=(("heading", "VIP"),)),
                variant(segment="mobile", content=(("heading", "Phone"),)),
                variant(rule=PRO, content=(("heading", "Pro"),)),
            ],
            default=(("heading", f"Default {i}"),),
        )
        for i in range(3)
    ]
    make_page(*blocks_, slug="personal")
    make_page(*[("heading", f"Default {i}") for i in range(3)], slug="plain", model=PlainPage)
    client = visitor()
    with override_settings(PERSONA={**get_config(), "RECORD_PAGE_VIEWS": False}):
        for url in ("/pages/personal/", "/pages/plain/"):
            client.get(url)  # warm
        counts = {}
        for url in ("/pages/personal/", "/pages/plain/"):
            with CaptureQueriesContext(connection) as ctx:
                response = client.get(url)
            assert response.status_code == 200
            counts[url] = len(ctx.captured_queries)
        assert "Default 2" in main_html(client.get("/pages/personal/"))
    assert counts["/pages/personal/"] == counts["/pages/plain/"], counts


def test_the_slot_is_built_once_per_value_and_registry(make_page, visitor, monkeypatch):
    make_page(personalized("hero", [variant(segment="mobile", content=(("heading", "M"),))]))
    client = visitor(IPHONE)
    client.get("/pages/offers/")
    persona = get_persona()
    calls = []
    real = persona.build_slot
    monkeypatch.setattr(persona, "build_slot", lambda *a, **k: calls.append(a) or real(*a, **k))
    for _ in range(3):
        client.get("/pages/offers/")
    assert calls == []
    Segment.objects.create(name="new-one", rule=PRO)  # a new registry: rebuilt once
    for _ in range(2):
        client.get("/pages/offers/")
    assert len(calls) == 1


def test_content_blocks_are_the_sites_own(make_page):
    names = [n for n, _ in content_blocks()]
    block = body_block()
    assert list(block.child_blocks["default"].child_blocks) == names
    assert (
        list(block.child_blocks["variants"].child_block.child_blocks["content"].child_blocks)
        == names
    )
    assert stream(("heading", "x"))[0]["type"] == "heading"


def test_the_api_representation_is_the_visitors_branch_only(make_page, visitor):
    page = make_page(
        personalized(
            "hero",
            [variant("phone", segment="mobile", content=(("heading", "Secret phone deal"),))],
        )
    )
    value = page.specific.body[0].value
    block = body_block()

    def api(ua, consent=True):
        client = visitor(ua, consent=consent)
        request = RequestFactory(headers={"User-Agent": ua}).get("/")
        request.COOKIES = {k: v.value for k, v in client.cookies.items()}
        request.user = AnonymousUser()
        request.persona = RequestPersona(request, get_persona(), get_config())
        return block.get_api_representation(value, {"request": request})

    phone = api(IPHONE)
    assert phone["slot"] == "hero" and phone["variant"] == "phone"
    assert phone["content"][0]["value"] == "Secret phone deal"
    desktop = api(DESKTOP)
    assert desktop["variant"] == "default"
    assert "Secret" not in str(desktop)
    assert "Secret" not in str(block.get_api_representation(value))  # no request: the default


def test_a_variant_renders_like_the_same_blocks_placed_in_the_page(make_page, visitor):
    content = (("hero", {"heading": "Big sale", "text": "Today only"}), ("heading", "More"))
    make_page(personalized("hero", [variant(segment="mobile", content=content)]), slug="p")
    make_page(*content, slug="q", model=PlainPage)
    phone = visitor(IPHONE)
    assert main_html(phone.get("/pages/p/")) == main_html(phone.get("/pages/q/"))


def test_plain_text_content_is_escaped_like_include_block_does(make_page, visitor):
    block = PersonalizedBlock(child_blocks=[("text", blocks.CharBlock())])
    value = block.to_python(
        {
            "slot": "x",
            "variants": [],
            "default": [{"type": "text", "value": "<script>alert(1)</script>", "id": uid()}],
            "experiment": {},
        }
    )
    html = str(block.render(value, {}))
    assert html == "&lt;script&gt;alert(1)&lt;/script&gt;"
    # HTML made by a block (a template, rich text) is kept as it is
    page = make_page(personalized("hero", [], default=(("paragraph", "<p>Hi <b>all</b></p>"),)))
    assert "<p>Hi <b>all</b></p>" in main_html(visitor().get(page.url))

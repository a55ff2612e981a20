"""Previews: a mode per segment, per variant and as a given profile; side by side; and a
preview never writes a profile, a page view or an exposure."""

from __future__ import annotations

import json
import re

import pytest
from django.test import Client
from django.urls import reverse
from wagtail.test.utils.form_data import nested_form_data, streamfield

from persona_django.models import Exposure, ProfileRecord
from persona_django.runtime import get_persona
from persona_sdk import Identity
from persona_wagtail.models import Segment
from persona_wagtail.preview import PROFILE_SESSION_KEY, PreviewSpec, forced_variant
from tests.django.test_tag import visitor_id
from tests.wagtail.conftest import (
    grant,
    main_html,
    personalized,
    profile_of,
    set_traits,
    variant,
)

pytestmark = pytest.mark.django_db

PRO = {"traits.plan": "pro"}


@pytest.fixture
def page(make_page):
    Segment.objects.create(name="pro-users", rule=PRO)
    return make_page(
        personalized(
            "hero",
            [
                variant("vip", segment="returning-high-value", content=(("heading", "VIP"),)),
                variant("pro", rule={"$segment": "pro-users"}, content=(("heading", "Pro"),)),
                variant("phone", segment="mobile", content=(("heading", "Phone"),)),
            ],
        ),
        personalized(
            "exp",
            [
                variant("a", content=(("heading", "Arm A"),)),
                variant("b", content=(("heading", "Arm B"),)),
            ],
            default=(("heading", "Control"),),
            experiment={"enabled": True, "holdout": 0.2},
        ),
    )


def headings(html):
    return re.findall(r'<h2 class="heading">([^<]*)</h2>', html)


def preview(page, mode, request=None, **extra):
    response = page.specific.make_preview_request(request, mode, extra_request_attrs=extra or None)
    assert response.status_code == 200
    return headings(main_html(response))


def test_preview_modes_per_segment_variant_and_profile(page):
    modes = dict(page.specific.preview_modes)
    assert modes[""] == "Everyone else (default content)"
    for name in ("returning", "mobile", "pro-users", "returning-high-value"):
        assert modes[f"segment:{name}"] == f"Segment: {name}"
    assert "variant:1" in modes and "profile" in modes


def test_each_segment_sees_its_variant(page):
    assert preview(page, "") == ["Hello everyone", "Control"]
    assert preview(page, "segment:mobile") == ["Phone", "Control"]
    assert preview(page, "segment:returning-high-value") == ["VIP", "Control"]
    assert preview(page, "segment:pro-users")[0] == "Pro"  # a rule that is just $segment
    assert preview(page, "segment:first-time") == ["Hello everyone", "Control"]
    assert preview(page, "variant:2") == ["Pro", "Arm B"]
    assert preview(page, "variant:3") == ["Phone", "Control"]


def test_as_a_given_profile(page, visitor, rf):
    pro = visitor()
    set_traits(pro, plan="pro")
    profile = profile_of(pro)
    shown = preview(page, "profile", persona_preview_profile=profile.id)
    assert shown[0] == "Pro"
    assert shown[1] in ("Arm A", "Arm B", "Control")
    assert (
        preview(page, "profile", persona_preview_profile=f"anonymous:{visitor_id(pro)}")[0] == "Pro"
    )
    # no such profile: what a visitor with nothing recorded (and no consent) sees
    assert preview(page, "profile", persona_preview_profile="nobody") == [
        "Hello everyone",
        "Control",
    ]


def test_a_preview_never_writes(page, visitor):
    pro = visitor()
    set_traits(pro, plan="pro")
    before = profile_of(pro)
    # the editor's own browser has a visitor cookie too: previews must not record for it
    editor = visitor()
    editor_before = profile_of(editor)
    rows = ProfileRecord.objects.count()
    for mode in ("", "segment:mobile", "variant:1", "profile"):
        page.specific.make_preview_request(
            None, mode, extra_request_attrs={"persona_preview_profile": before.id}
        )
    from django.test import RequestFactory

    request = RequestFactory().get("/")
    request.COOKIES = {k: v.value for k, v in editor.cookies.items()}
    request.META["HTTP_COOKIE"] = "; ".join(f"{k}={v.value}" for k, v in editor.cookies.items())
    for mode in ("", "segment:mobile", "variant:2", "profile"):
        page.specific.make_preview_request(
            request, mode, extra_request_attrs={"persona_preview_profile": before.id}
        )
    assert Exposure.objects.count() == 0
    assert ProfileRecord.objects.count() == rows
    after = profile_of(pro)
    assert after.revision == before.revision and after.experiments == {}
    editor_after = profile_of(editor)
    assert editor_after.revision == editor_before.revision
    assert editor_after.behaviour.page_views.total == editor_before.behaviour.page_views.total


def test_defined_slots_used_by_the_template_tag_are_forced_too(page):
    from persona_wagtail.preview import start_preview

    persona = get_persona()
    hero = persona.slots["hero"]  # PERSONA["DEFINITIONS"]: vip / welcome-back / first-visit
    assert forced_variant(hero, "returning-high-value") == "vip"
    assert forced_variant(hero, "returning") == "welcome-back"
    assert forced_variant(hero, "mobile") == "default"

    from django.contrib.auth.models import AnonymousUser
    from django.test import RequestFactory

    from persona_django.conf import get_config
    from persona_django.request import RequestPersona

    request = RequestFactory().get("/")
    request.user = AnonymousUser()
    request.persona = RequestPersona(request, persona, get_config())
    start_preview(request, PreviewSpec.from_mode("segment:returning"))
    assert request.persona.preview["hero"] == "welcome-back"


def test_wagtail_preview_panel_uses_the_modes(page, admin_client):
    """Wagtail's own preview (the editor's preview panel) with a segment mode."""
    url = reverse("wagtailadmin_pages:preview_on_edit", args=[page.id])
    data = nested_form_data(
        {
            "title": page.title,
            "slug": page.slug,
            "body": streamfield(
                [
                    (
                        "personalized",
                        {
                            "slot": "hero",
                            "variants": {
                                "count": "1",
                                "0": {
                                    "deleted": "",
                                    "order": "0",
                                    "id": "",
                                    "value": {
                                        "key": "phone",
                                        "segment": "mobile",
                                        "rule": "",
                                        "weight": "1",
                                        "content": streamfield([("heading", "Draft phone")]),
                                    },
                                },
                            },
                            "default": streamfield([("heading", "Draft default")]),
                            "experiment": {"holdout": "0", "version": "1"},
                        },
                    )
                ]
            ),
        }
    )
    assert admin_client.post(url, data).json()["is_valid"] is True
    assert "Draft phone" in admin_client.get(url, {"mode": "segment:mobile"}).content.decode()
    assert "Draft default" in admin_client.get(url, {"mode": ""}).content.decode()


def test_side_by_side(page, admin_client):
    url = reverse("persona_wagtail:compare", args=[page.id])
    response = admin_client.get(
        url, {"mode": ["segment:mobile", "segment:returning-high-value", ""]}
    )
    assert response.status_code == 200
    frames = response.context["frames"]
    assert [f["mode"] for f in frames] == ["segment:mobile", "segment:returning-high-value", ""]
    html = response.content.decode()
    assert html.count("<iframe") == 3
    for frame in frames:
        shown = admin_client.get(frame["url"])
        assert shown.status_code == 200
        assert shown["X-Frame-Options"] == "SAMEORIGIN"
        assert "private" in shown["Cache-Control"]
    assert headings(main_html(admin_client.get(frames[0]["url"])))[0] == "Phone"
    assert headings(main_html(admin_client.get(frames[1]["url"])))[0] == "VIP"
    # the default choice: the default and the first segments
    assert admin_client.get(url).context["chosen"][0] == ""


def test_side_by_side_as_a_profile_is_remembered_for_the_preview_panel(page, admin_client, visitor):
    pro = visitor()
    set_traits(pro, plan="pro")
    pid = profile_of(pro).id
    url = reverse("persona_wagtail:compare", args=[page.id])
    response = admin_client.get(url, {"mode": ["profile"], "profile": pid})
    frame = response.context["frames"][0]
    assert frame["label"] == f"As profile {pid}"
    assert headings(main_html(admin_client.get(frame["url"])))[0] == "Pro"
    assert admin_client.session[PROFILE_SESSION_KEY] == pid
    # Wagtail's preview panel in "profile" mode uses the remembered profile
    shown = page.specific.make_preview_request(
        type(
            "R",
            (),
            {
                "META": {
                    "HTTP_COOKIE": "; ".join(
                        f"{k}={v.value}" for k, v in admin_client.cookies.items()
                    )
                }
            },
        )(),
        "profile",
    )
    assert headings(main_html(shown))[0] == "Pro"


def test_side_by_side_needs_edit_permission(page, client, django_user_model):
    user = django_user_model.objects.create_user("reader", password="x")
    from django.contrib.auth.models import Permission

    user.user_permissions.add(Permission.objects.get(codename="access_admin"))
    client.force_login(user)
    home = reverse("wagtailadmin_home")
    for name in (
        "persona_wagtail:compare",
        "persona_wagtail:preview_frame",
        "persona_wagtail:page_report",
    ):
        response = client.get(reverse(name, args=[page.id]))
        # Wagtail's admin turns PermissionDenied into a redirect to its dashboard
        assert (response.status_code, response.url) == (302, home), name


def test_unknown_mode_is_404(page, admin_client):
    url = reverse("persona_wagtail:preview_frame", args=[page.id])
    assert admin_client.get(url, {"mode": "segment:nope"}).status_code == 404


def test_preview_spec_labels():
    assert PreviewSpec.from_mode("segment:vip").label == "Segment: vip"
    assert PreviewSpec.from_mode("variant:x").kind == "default"
    assert PreviewSpec.from_mode("profile", "p1").mode == "profile"
    assert json.dumps(PreviewSpec.from_mode("variant:2").mode) == '"variant:2"'
    assert isinstance(Client, type) and grant and Identity

"""The report: exposures and conversions per variant, Wilson intervals, uplift against the
holdout with Newcombe's interval, the SVG chart; and no page copies anywhere."""

from __future__ import annotations

import pytest
from django.urls import reverse
from wagtail.models import Page

from persona_django.models import Conversion, Exposure
from persona_wagtail.models import Segment
from persona_wagtail.report import block_reports, chart_svg, newcombe_interval, wilson_interval
from tests.wagtail.conftest import DESKTOP, main_html, personalized, profile_of, variant

pytestmark = pytest.mark.django_db


def test_wilson_interval_matches_published_values():
    low, high = wilson_interval(5, 10)
    assert (round(low, 4), round(high, 4)) == (0.2366, 0.7634)
    assert wilson_interval(0, 10)[0] == 0.0 and round(wilson_interval(0, 10)[1], 4) == 0.2775
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_newcombe_interval_matches_the_paper():
    # Newcombe (1998), Statistics in Medicine 17:873, example (a): 56/70 vs 48/80
    d, low, high = newcombe_interval(56, 70, 48, 80)
    assert (round(d, 4), round(low, 4), round(high, 4)) == (0.2, 0.0524, 0.3339)


@pytest.fixture
def experiment_page(make_page):
    return make_page(
        personalized(
            "spring-hero",
            [
                variant("a", content=(("heading", "Arm A"),)),
                variant("b", content=(("heading", "Arm B"),)),
            ],
            default=(("heading", "Control"),),
            experiment={"enabled": True, "holdout": 0.34, "version": "1"},
        ),
        personalized("plain-targeting", [variant(segment="mobile", content=(("heading", "M"),))]),
    )


def shown(client):
    html = main_html(client.get("/pages/offers/", headers={"User-Agent": DESKTOP}))
    return html.split('<h2 class="heading">', 1)[1].split("<", 1)[0]


def test_a_report_from_real_visits_and_purchases(experiment_page, visitor, admin_client):
    arms = {"Arm A": "a", "Arm B": "b", "Control": "default"}
    visitors = {"a": 0, "b": 0, "default": 0}
    bought = {"a": 0, "b": 0, "default": 0}
    for i in range(30):
        client = visitor()
        key = arms[shown(client)]
        shown(client)  # a second view: two exposures, one visitor
        visitors[key] += 1
        # arm A converts every visitor, the others every third
        if key == "a" or i % 3 == 0:
            assert client.post("/buy/", {"amount": "20"}).status_code == 200
            bought[key] += 1
        assert profile_of(client).experiments["spring-hero@1"] == key
    assert all(visitors.values()), visitors

    report = {r.slot: r for r in block_reports(experiment_page)}
    hero = report["spring-hero"]
    assert hero.experiment and hero.holdout == 0.34 and hero.control == "default"
    by_key = {a.key: a for a in hero.arms}
    for key in ("a", "b", "default"):
        arm = by_key[key]
        assert arm.visitors == visitors[key]
        assert arm.exposures == 2 * visitors[key]
        assert arm.converted == bought[key]
        assert arm.rate == pytest.approx(bought[key] / visitors[key])
        assert (arm.low, arm.high) == pytest.approx(wilson_interval(bought[key], visitors[key]))
    assert by_key["default"].is_control and by_key["default"].uplift is None
    d, low, high = newcombe_interval(
        bought["a"], visitors["a"], bought["default"], visitors["default"]
    )
    assert (by_key["a"].uplift, by_key["a"].uplift_low, by_key["a"].uplift_high) == pytest.approx(
        (d, low, high)
    )
    # conversions are counted once per visitor, whatever the number of orders
    assert Conversion.objects.filter(slot="spring-hero").count() == sum(bought.values())

    # the priority-only block has nothing recorded (no experiment), and says what it targets
    plain = report["plain-targeting"]
    assert not plain.experiment and not plain.has_data
    assert plain.arms[0].targeting == "segment mobile"

    # the admin page: table, chart, intervals
    response = admin_client.get(reverse("persona_wagtail:page_report", args=[experiment_page.id]))
    html = response.content.decode()
    assert response.status_code == 200
    assert '<svg class="persona-chart"' in html
    for key in ("a", "b", "default"):
        assert f'<g class="arm" data-variant="{key}">' in html
        assert f'<tr data-variant="{key}">' in html
    assert "Switch its experiment on to measure its variants" in html
    assert " pp (" in html  # the uplift, in percentage points, with its interval

    index = admin_client.get(reverse("persona_wagtail:report_index"))
    rows = index.context["rows"]
    assert [r["page"].id for r in rows] == [experiment_page.id]
    assert rows[0]["exposures"] == 60


def test_the_report_flags_a_block_whose_segment_was_deleted(make_page, admin_client):
    segment = Segment.objects.create(name="pro-users", rule={"traits.plan": "pro"})
    page = make_page(
        personalized("hero", [variant(segment="pro-users", content=(("heading", "P"),))])
    )
    segment.delete()
    html = admin_client.get(reverse("persona_wagtail:page_report", args=[page.id])).content.decode()
    assert "targets segment &quot;pro-users&quot;, which does not exist" in html
    rows = admin_client.get(reverse("persona_wagtail:report_index")).context["rows"]
    assert rows[0]["problems"] == 1


def test_exposures_of_a_variant_no_longer_on_the_page_are_still_shown(experiment_page):
    Exposure.objects.create(profile_id="p1", slot="spring-hero", variant="old", reason="experiment")
    hero = next(r for r in block_reports(experiment_page) if r.slot == "spring-hero")
    old = next(a for a in hero.arms if a.key == "old")
    assert old.visitors == 1 and "no longer on the page" in old.label


def test_the_chart_is_plain_svg_with_whiskers():
    from persona_wagtail.report import Arm

    arms = [
        Arm(
            "a",
            "Variant 1: a",
            "everyone",
            False,
            10,
            10,
            5,
            5,
            0.0,
            0.5,
            *wilson_interval(5, 10),
            0.3,
            0.01,
            0.55,
            1.5,
        ),
        Arm(
            "default",
            "Default (control)",
            "holdout",
            True,
            10,
            10,
            2,
            2,
            0.0,
            0.2,
            *wilson_interval(2, 10),
        ),
    ]
    svg = str(chart_svg(arms, title="Rates <b>"))
    assert svg.startswith('<svg class="persona-chart" role="img" aria-label="Rates &lt;b&gt;"')
    assert svg.count("<rect") == 2 and svg.count('class="control"') == 1
    assert "50.0%" in svg and "<script" not in svg
    assert str(chart_svg([])) == ""


def test_no_page_copies_are_made(home, make_page):
    before = Page.objects.count()
    page = make_page(
        personalized(
            "hero",
            [
                variant(segment=s, content=(("heading", s),))
                for s in ("mobile", "returning", "first-time")
            ],
        )
    )
    assert Page.objects.count() == before + 1
    assert page.get_children().count() == 0
    assert [p.title for p in home.get_children()] == ["Offers"]

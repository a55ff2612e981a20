"""The Wagtail adapter in a real headless Chromium against a live server.

An editor logs into the Wagtail admin, builds a segment with the rule builder (seeing it
validated as they type and the live count), adds a personalized block to a page in the page
editor, publishes it; then two visitors, one in the segment and one not, get different
content on the live page.

Chromium comes from the system (Debian: ``apt-get update && apt-get install -y chromium``);
these tests fail, rather than skip, when it is missing.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from django.http import HttpRequest

from persona_django.request import COOKIE_SALT
from persona_django.runtime import get_persona
from persona_sdk import Identity
from persona_wagtail.models import Segment
from tests.wagtail.testapp.models import PersonalizedPage

pytestmark = pytest.mark.django_db(transaction=True)

PASSWORD = "correct horse battery staple"


@pytest.fixture
def new_context(browser, live_server):
    contexts = []

    def make():
        context = browser.new_context(
            base_url=live_server.url, viewport={"width": 1400, "height": 1000}
        )
        context.set_default_timeout(20_000)  # generous: a busy machine saves pages slowly
        contexts.append(context)
        return context, context.new_page()

    yield make
    for context in contexts:
        context.close()


def visitor_id(context):
    raw = next(c["value"] for c in context.cookies() if c["name"] == "persona_id")
    request = HttpRequest()
    request.COOKIES = {"persona_id": raw}
    return request.get_signed_cookie("persona_id", salt=COOKIE_SALT)


def consent(page):
    """Answer the consent banner the way a site does: through ``persona.consent.set``."""
    page.goto("/plain/")
    page.wait_for_function("window.persona && window.persona.consent")
    page.evaluate(
        "c => window.persona.consent.set(c)", {"personalization": True, "analytics": True}
    )


def log_in(page):
    page.goto("/cms/login/")
    page.fill("input[name=username]", "editor")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url("**/cms/")


def build_segment(page):
    page.goto("/cms/persona/segments/add/")
    page.fill("input[name=name]", "pro-customers")
    page.fill("textarea[name=description]", "Customers on the pro plan")
    builder = page.locator(".persona-rule-builder.prb-ready")
    builder.wait_for()
    assert "everyone matches" in builder.inner_text()

    builder.get_by_role("button", name="+ Condition").click()
    row = builder.locator(".prb-item").last
    # validated as you type, in the page: a number operator with a word
    row.locator(".prb-path").fill("rfm.monetary")
    builder.locator(".prb-op").select_option("$gte")
    builder.locator(".prb-value").fill("lots")
    page.wait_for_selector(".prb-problem:has-text('is not a number')")
    # ... and on the server: a behaviour window that does not exist
    builder.locator(".prb-path").fill("behaviour.visits_13d")
    builder.locator(".prb-value").fill("2")
    page.wait_for_selector(".prb-status.prb-error:has-text('windows are 1, 7, 30, 90, 365 days')")
    assert builder.locator(".prb-server-problem").count() == 1  # the row is marked
    # the real condition: plan is pro
    builder.locator(".prb-path").fill("traits.plan")
    builder.locator(".prb-op").select_option("$eq")
    builder.locator(".prb-value").fill("pro")
    # the server's answer for this rule (earlier edits had answers of their own)
    counted = re.compile(r"The rule compiles\. 1 of \d+ stored profiles match")
    page.locator(".prb-status.prb-ok", has_text=counted).wait_for()
    assert builder.locator(".prb-server-problem").count() == 0
    page.get_by_role("button", name="Save").click()
    page.wait_for_url("**/cms/persona/segments/")
    assert "pro-customers" in page.locator("main").inner_text()


def add_block(page, add_button, label):
    """Click a StreamField "+" and pick a block type in the chooser it opens (only visible
    options count). On a busy machine the click can land while the previous chooser is
    still closing; then it is clicked again."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    for attempt in range(3):
        add_button.click()
        try:
            page.get_by_role("option", name=label, exact=True).click(timeout=4000)
            return
        except PlaywrightTimeout:
            if attempt == 2:
                raise
            page.keyboard.press("Escape")


def add_page(page, home_id):
    page.goto(f"/cms/pages/add/persona_wagtail_testapp/personalizedpage/{home_id}/")
    page.fill("#id_title", "Offers")
    add_block(
        page,
        page.locator('[data-contentpath="body"] .c-sf-add-button').first,
        "Personalized content",
    )
    # the first variant: for the segment just built
    segment = page.locator("#body-0-value-variants-0-value-segment")
    segment.wait_for()
    # a rule typed into a variant is checked on the server as it is typed
    rule = page.locator("#body-0-value-variants-0-value-rule")
    rule.fill('{"traits.ltv": {"$gt": "lots"}}')
    checked = page.locator("#body-0-value-variants-0-value-rule + .prb-status.prb-error")
    checked.filter(has_text="$gt expects a number").wait_for()
    rule.fill("")
    assert "pro-customers (admin)" in segment.inner_text()
    segment.select_option("pro-customers")
    variant = page.locator('[data-contentpath="variants"] [data-contentpath="content"]').first
    add_block(page, variant.locator(".c-sf-add-button").first, "Heading")
    page.fill("#body-0-value-variants-0-value-content-0-value", "Thanks for going pro")
    # the default, for everyone else
    default = page.locator('[data-contentpath="default"]').first
    add_block(page, default.locator(".c-sf-add-button").first, "Heading")
    page.fill("#body-0-value-default-0-value", "Try pro for free")
    # publish (in the footer's action menu)
    page.click("footer [data-w-dropdown-target=toggle]")
    publish = page.locator('button[name="action-publish"]')
    publish.wait_for(state="visible")
    publish.click()
    try:
        page.wait_for_selector("text=created and published", timeout=60_000)
    except Exception:
        Path("/tmp/persona-wagtail-browser-failure.html").write_text(page.content())
        page.screenshot(path="/tmp/persona-wagtail-browser-failure.png", full_page=True)
        errors = page.locator(".error-message, .help-critical, [role=alert]").all_inner_texts()
        raise AssertionError(f"publishing failed at {page.url}: {errors}") from None


def test_an_editor_targets_a_block_and_two_visitors_see_different_content(
    new_context, django_user_model, home
):
    django_user_model.objects.create_superuser("editor", "editor@example.com", PASSWORD)

    # two visitors who have answered the consent banner; one of them is on the pro plan
    pro_context, pro = new_context()
    other_context, other = new_context()
    consent(pro)
    consent(other)
    persona = get_persona()
    assert persona.identify(anonymous_id=visitor_id(pro_context), traits={"plan": "pro"}).applied
    assert persona.identify(anonymous_id=visitor_id(other_context), traits={"plan": "free"}).applied

    _, editor = new_context()
    log_in(editor)
    build_segment(editor)
    segment = Segment.objects.get(name="pro-customers")
    assert segment.rule == {"$and": [{"traits.plan": "pro"}]}
    assert segment.description == "Customers on the pro plan"

    add_page(editor, home.id)
    page = PersonalizedPage.objects.get(slug="offers")
    assert page.live
    value = page.body[0].value
    assert value["variants"][0]["segment"] == "pro-customers"

    pro.goto("/pages/offers/")
    other.goto("/pages/offers/")
    assert pro.locator("main").inner_text().strip() == "Thanks for going pro"
    assert other.locator("main").inner_text().strip() == "Try pro for free"
    # and the matching visitor's profile says why
    profile = persona.profile_for(Identity.anonymous(visitor_id(pro_context)))
    assert persona.segments.test("pro-customers", persona.subject(profile))


def test_side_by_side_previews_in_the_browser(new_context, django_user_model, make_page):
    from tests.wagtail.conftest import personalized, variant

    django_user_model.objects.create_superuser("editor", "editor@example.com", PASSWORD)
    page = make_page(
        personalized(
            "hero",
            [
                variant(segment="mobile", content=(("heading", "Phone offer"),)),
                variant(segment="returning", content=(("heading", "Welcome back"),)),
            ],
            default=(("heading", "Hello"),),
        )
    )
    _, editor = new_context()
    log_in(editor)
    editor.goto(
        f"/cms/persona/pages/{page.id}/compare/?mode=&mode=segment:mobile&mode=segment:returning"
    )
    texts = []
    for mode in ("", "segment:mobile", "segment:returning"):
        frame = editor.frame_locator(f'.persona-frame[data-mode="{mode}"] iframe')
        texts.append(frame.locator("main").inner_text().strip())
    assert texts == ["Hello", "Phone offer", "Welcome back"]

"""persona.js in a real headless Chromium against a live server.

Chromium comes from the system (Debian: ``apt-get update && apt-get install -y chromium``);
these tests fail, rather than skip, when it is missing.
"""

from __future__ import annotations

import time

import pytest
from django.http import HttpRequest

from persona_django.request import COOKIE_SALT
from persona_django.runtime import get_persona
from persona_sdk import Identity
from persona_sdk.clock import DAY

pytestmark = pytest.mark.django_db(transaction=True)

DESKTOP = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0.0.0 Safari/537.36"
)
BOTH = {"personalization": True, "analytics": True}


@pytest.fixture
def visitor(browser, live_server):
    """``visitor()`` → a fresh browser context (its own cookies) and page."""
    contexts = []

    def make():
        context = browser.new_context(user_agent=DESKTOP, base_url=live_server.url)
        contexts.append(context)
        return context, context.new_page()

    yield make
    for context in contexts:
        context.close()


def choose(page, choices):
    """Record consent the way a site's banner would: through ``persona.consent.set``."""
    page.goto("/plain/")
    page.wait_for_function("window.persona && window.persona.consent")
    state = page.evaluate("c => window.persona.consent.set(c)", choices)
    return state


def visitor_id(context):
    raw = next(c["value"] for c in context.cookies() if c["name"] == "persona_id")
    request = HttpRequest()
    request.COOKIES = {"persona_id": raw}
    return request.get_signed_cookie("persona_id", salt=COOKIE_SALT)


def make_vip(context):
    """Three past purchase sessions worth 600 in all: returning-high-value."""
    vid = visitor_id(context)
    persona = get_persona()
    now = time.time()
    for days in (3, 2, 1):
        result = persona.track(
            "Order Completed", {"revenue": 200}, anonymous_id=vid, timestamp=now - days * DAY
        )
        assert result.applied


def settled_text(page, slot):
    page.wait_for_selector(
        f'[data-persona-slot="{slot}"]:not([data-persona-state="pending"])', timeout=5000
    )
    el = page.locator(f'[data-persona-slot="{slot}"]')
    return el.get_attribute("data-persona-state"), el.inner_text().strip()


def test_edge_mode_fills_the_same_cached_html_differently_per_visitor(visitor):
    vip_context, vip = visitor()
    assert choose(vip, BOTH)["effective"]["personalization"] is True
    make_vip(vip_context)
    new_context, newcomer = visitor()
    choose(newcomer, BOTH)

    # the HTML a CDN would cache is byte-identical for both visitors
    html_vip = vip_context.request.get("/edge/")
    html_new = new_context.request.get("/edge/")
    assert html_vip.ok and html_new.ok
    assert html_vip.text() == html_new.text()
    assert "private" not in html_vip.headers.get("cache-control", "")
    assert "VIP" in html_vip.text()  # inert, inside <template>

    vip.goto("/edge/")
    newcomer.goto("/edge/")
    assert settled_text(vip, "hero") == ("done", "VIP")
    assert settled_text(newcomer, "hero") == ("done", "First visit")
    # the experiment slot settles too, and its exposure is recorded like a server-side one
    state, text = settled_text(vip, "banner")
    assert state == "done" and text in ("Banner A", "Banner B", "Banner control")
    profile = get_persona().profile_for(Identity.anonymous(visitor_id(vip_context)))
    assert "banner@1" in profile.experiments
    # the swapped-in content is visible, the inert variants are not rendered
    assert vip.locator("[data-persona-slot=hero] h1").count() == 1
    assert vip.locator("[data-persona-slot=hero] h1").is_visible()


def test_consent_denial_shows_the_defaults(visitor):
    context, page = visitor()
    state = choose(page, {"personalization": False, "analytics": False})
    assert state["purposes"]["personalization"] == "denied"
    assert state["effective"] == {
        "personalization": False,
        "analytics": False,
        "marketing": False,
        "sharing": False,
    }
    make_profile_rich = get_persona().profile_for(Identity.anonymous(visitor_id(context)))
    assert make_profile_rich is not None  # the choice itself is kept

    page.goto("/edge/")
    assert settled_text(page, "hero") == ("done", "Hello")
    assert settled_text(page, "banner") == ("done", "Banner control")
    page.goto("/")
    assert page.locator("#hero").inner_text().strip() == "Hello"
    # and the beacon refuses to send without analytics consent
    assert page.evaluate("window.persona.track('Newsletter Signup')") is False


def test_changing_consent_in_the_page_redecides_and_notifies(visitor):
    _context, page = visitor()
    page.goto("/edge/")
    assert settled_text(page, "hero") == ("done", "Hello")  # no consent yet: the default
    page.evaluate(
        "() => { window.__changes = []; window.persona.consent.onChange(s => window.__changes.push(s)); }"
    )
    assert page.evaluate("window.persona.consent.get()")["effective"]["personalization"] is False
    page.evaluate("window.persona.consent.set({personalization: true, analytics: true})")
    page.wait_for_function(
        "document.querySelector('[data-persona-slot=hero]').innerText.includes('First visit')"
    )
    changes = page.evaluate("window.__changes")
    assert len(changes) == 1 and changes[0]["effective"]["personalization"] is True


def test_a_slow_decision_shows_the_default_after_the_timeout(visitor):
    _context, page = visitor()
    choose(page, BOTH)
    page.route("**/persona/decide*", lambda route: None)  # never answered
    started = time.monotonic()
    page.goto("/edge/")
    assert settled_text(page, "hero") == ("default", "Hello")
    assert time.monotonic() - started < 4
    assert page.locator("[data-persona-slot=hero] h1").is_visible()


def test_without_the_script_the_default_is_revealed_anyway(visitor):
    _context, page = visitor()
    page.route("**/persona.js", lambda route: route.abort())
    page.goto("/edge/")
    hero = page.locator("[data-persona-slot=hero]")
    assert hero.get_attribute("data-persona-state") == "pending"
    page.wait_for_function(
        "getComputedStyle(document.querySelector('[data-persona-slot=hero]')).visibility === 'visible'",
        timeout=3000,
    )
    assert hero.inner_text().strip() == "Hello"


def test_the_beacon_updates_the_profile_the_next_page_reflects(visitor):
    context, page = visitor()
    choose(page, BOTH)
    page.goto("/")
    assert page.locator("#newsletter").inner_text().strip() == "Subscribe to our newsletter"
    with page.expect_response(lambda r: "/persona/event" in r.url) as sent:
        assert (
            page.evaluate("window.persona.track('Newsletter Signup', {source: 'footer'})") is True
        )
    assert sent.value.status == 200
    page.goto("/")
    assert page.locator("#newsletter").inner_text().strip() == "Thanks for subscribing"
    profile = get_persona().profile_for(Identity.anonymous(visitor_id(context)))
    assert profile.behaviour.events["Newsletter Signup"].counts.total == 1

"""Fixtures and helpers for the Wagtail adapter's tests.

Pages live under Wagtail's initial "Welcome" page (created by its migrations, the default
site's root), so a page with slug ``offers`` is served at ``/pages/offers/``.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from django.test import Client

from persona_django.runtime import get_persona
from persona_sdk import Identity
from persona_wagtail import registry
from tests.django.test_tag import visitor_id

IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1"
)
DESKTOP = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0.0.0 Safari/537.36"
)


@pytest.fixture(autouse=True)
def _fresh_segments():
    """Each test starts from the code segments; admin segments a test made are dropped."""
    registry.reset()
    yield
    registry.reset()


def uid() -> str:
    return str(uuid.uuid4())


def stream(*items: tuple[str, Any]) -> list[dict[str, Any]]:
    return [{"type": t, "value": v, "id": uid()} for t, v in items]


def variant(
    key: str = "",
    *,
    segment: str = "",
    rule: Any = "",
    weight: float = 1.0,
    content: tuple[tuple[str, Any], ...] = (),
) -> dict[str, Any]:
    return {
        "type": "item",
        "id": uid(),
        "value": {
            "key": key,
            "segment": segment,
            "rule": rule if isinstance(rule, str) else json.dumps(rule),
            "weight": weight,
            "content": stream(*content),
        },
    }


def personalized(
    slot: str = "hero",
    variants: tuple[dict[str, Any], ...] | list[dict[str, Any]] = (),
    default: tuple[tuple[str, Any], ...] = (("heading", "Hello everyone"),),
    *,
    experiment: dict[str, Any] | None = None,
) -> tuple[str, dict[str, Any]]:
    return (
        "personalized",
        {
            "slot": slot,
            "variants": list(variants),
            "default": stream(*default),
            "experiment": {"enabled": False, "holdout": 0.0, "version": "1", **(experiment or {})},
        },
    )


@pytest.fixture
def home(db):
    """The default site's root page (Wagtail's migrations make it; a transactional test's
    flush removes it, so it is made again when missing)."""
    from django.conf import settings
    from wagtail.models import Locale, Page, Site
    from wagtail.models.i18n import get_supported_content_language_variant

    home = Page.objects.filter(depth=2).first()
    if home is None:
        Locale.objects.get_or_create(
            language_code=get_supported_content_language_variant(settings.LANGUAGE_CODE)
        )
        root = Page.objects.filter(depth=1).first() or Page.add_root(title="Root", slug="root")
        home = root.add_child(instance=Page(title="Welcome", slug="home"))
        Site.objects.update_or_create(
            is_default_site=True,
            defaults={"hostname": "localhost", "port": 80, "root_page": home},
        )
    return home


@pytest.fixture
def make_page(home):
    from tests.wagtail.testapp.models import PersonalizedPage

    def make(*blocks, title="Offers", slug="offers", publish=True, model=PersonalizedPage):
        page = model(title=title, slug=slug, body=stream(*blocks))
        home.add_child(instance=page)
        if publish:
            page.save_revision().publish()
            page.refresh_from_db()
        return page

    return make


def grant(client: Client, **choices: bool) -> None:
    body = choices or {"personalization": True, "analytics": True}
    response = client.post("/persona/consent", json.dumps(body), content_type="application/json")
    assert response.status_code == 200, response.content


@pytest.fixture
def visitor():
    """``visitor(ua=DESKTOP, consent=True)`` → a test client that has answered the banner."""

    def make(ua: str = DESKTOP, consent: bool = True, **choices: bool) -> Client:
        client = Client(headers={"User-Agent": ua})
        if consent:
            grant(client, **choices)
        return client

    return make


def profile_of(client: Client):
    return get_persona().profile_for(Identity.anonymous(visitor_id(client)))


def set_traits(client: Client, **traits: Any) -> None:
    result = get_persona().identify(anonymous_id=visitor_id(client), traits=traits)
    assert result.applied


def main_html(response) -> str:
    html = response.content.decode()
    start = html.index('<main id="body">')
    return html[start : html.index("</main>", start)]

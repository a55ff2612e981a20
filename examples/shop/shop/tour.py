"""The scripted tour: visitors walk through the shop with Django's test client, and the tour
reports what each saw and why (read from the page itself: the HTML and the
``<!-- persona: slot → variant (reason: why) -->`` comments that ``DEBUG_EXPLAIN`` adds).

It doubles as an end-to-end test (``tests/examples/test_shop.py``).
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.test import Client, RequestFactory, override_settings

from persona_sdk.clock import DAY, now

COMMENT = re.compile(r"<!-- persona: (\S+) → (\S+) \((\w+): (.*?)\) -->", re.S)


def _text(fragment: str) -> str:
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", fragment)).split())


def _between(page: str, start: str, end: str) -> str:
    i = page.find(start)
    if i < 0:
        return ""
    j = page.find(end, i + len(start))
    return page[i + len(start): j if j >= 0 else None]


def visitor_id(client: Client) -> str | None:
    from persona_django.request import COOKIE_SALT

    morsel = client.cookies.get(settings.PERSONA.get("COOKIE_NAME", "persona_id"))
    if morsel is None or not morsel.value:
        return None
    request = RequestFactory().get("/")
    request.COOKIES["persona_id"] = morsel.value
    return str(request.get_signed_cookie("persona_id", salt=COOKIE_SALT))


def consent(client: Client, headers: dict[str, str] | None = None, **choices: bool) -> None:
    response = client.post("/persona/consent", json.dumps(choices), content_type="application/json",
                           headers=headers or {})
    assert response.status_code == 200, response.content


def backdate(anonymous_id: str, days_ago: list[float], category: str | None = None) -> None:
    """Earlier visits of this browser (the tour cannot wait for days to pass)."""
    from persona_django.runtime import get_persona

    persona = get_persona()
    t = now()
    for d in days_ago:
        persona.page(anonymous_id=anonymous_id, properties={"path": "/"}, timestamp=t - d * DAY)
        if category:
            persona.track("Product Viewed", {"category": category}, anonymous_id=anonymous_id,
                          timestamp=t - d * DAY + 30)


def look(client: Client, headers: dict[str, str] | None = None, path: str = "/") -> dict[str, Any]:
    """What the visitor sees on a page (and on the cached deals page's decide call)."""
    page = client.get(path, headers=headers or {}).content.decode()
    why = {slot: f"{reason}: {text}" for slot, _variant, reason, text in COMMENT.findall(page)}
    shown = {slot: variant for slot, variant, _reason, _text in COMMENT.findall(page)}
    hero = _text(re.sub(r"<!--.*?-->", "", _between(page, '<section class="hero" id="hero">', "</section>"), flags=re.S))
    from urllib.parse import quote

    deals = client.get(f"/persona/decide?slots=deals&page={quote(path)}",
                       headers=headers or {}).json()["slots"]["deals"]
    return {
        "hero": hero.split(". ")[0][:60],
        "hero_variant": shown.get("hero", "?"),
        "recommendations": shown.get("recommendations", "?"),
        "nav": "VIP lounge" if 'id="vip-link"' in page else "standard",
        "banner": shown.get("banner", "?"),
        "deals": deals["variant"],
        "why": why.get("hero", ""),
        "why_recommendations": why.get("recommendations", ""),
    }


def _new(c: Client) -> dict[str, Any]:
    consent(c, personalization=True, analytics=True)
    return look(c)


def _returning(c: Client) -> dict[str, Any]:
    consent(c, personalization=True, analytics=True)
    vid = visitor_id(c)
    assert vid
    backdate(vid, [12, 5], category="shoes")
    return look(c)


def _high_value(c: Client) -> dict[str, Any]:
    consent(c, personalization=True, analytics=True, marketing=True)
    vid = visitor_id(c)
    assert vid
    backdate(vid, [50, 40, 20, 12, 8, 4, 2], category="outdoor")
    from catalog.models import ProductPage

    tent = ProductPage.objects.get(slug="two-person-tent")
    c.post(f"/cart/add/{tent.pk}/")
    c.post(f"/cart/add/{tent.pk}/")
    c.post("/checkout/")
    return look(c)


def _denied(c: Client) -> dict[str, Any]:
    consent(c, personalization=False, analytics=False, marketing=False)
    return look(c)


def _gpc(c: Client) -> dict[str, Any]:
    gpc = {"Sec-GPC": "1"}
    consent(c, headers=gpc, personalization=True, analytics=True, marketing=True)
    row = look(c, headers=gpc, path="/?utm_source=newsletter&utm_campaign=winter-sale")
    from persona_django.runtime import get_persona
    from persona_sdk import Identity

    vid = visitor_id(c)
    profile = get_persona().profile_for(Identity.anonymous(vid)) if vid else None
    row["marketing email"] = "allowed" if get_persona().may(profile, "marketing") else "no (GPC)"
    return row


def _login(c: Client) -> dict[str, Any]:
    consent(c, personalization=True, analytics=True)
    from catalog.models import ProductPage

    for product in ProductPage.objects.filter(slug__in=["trail-runners", "city-sneakers"]):
        c.get(product.url)
    c.post("/login/", {"username": "ada", "password": "persona"})
    return look(c)


VISITORS: list[tuple[str, Callable[[Client], dict[str, Any]]]] = [
    ("new visitor", _new),
    ("returning", _returning),
    ("high value", _high_value),
    ("consent denied", _denied),
    ("GPC + campaign link", _gpc),
    ("logs in after browsing", _login),
]


def tour() -> list[dict[str, Any]]:
    rows = []
    with override_settings(PERSONA={**settings.PERSONA, "DEBUG_EXPLAIN": True}):
        for label, step in VISITORS:
            row = step(Client())
            row["visitor"] = label
            rows.append(row)
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    cols = ["visitor", "hero_variant", "recommendations", "nav", "banner", "deals"]
    heads = ["visitor", "hero", "recommendations", "nav", "banner", "deals (edge)"]
    widths = [max(len(h), *(len(str(r.get(c, ""))) for r in rows)) for c, h in zip(cols, heads, strict=True)]
    out = ["  ".join(h.ljust(w) for h, w in zip(heads, widths, strict=True)),
           "  ".join("-" * w for w in widths)]
    for r in rows:
        out.append("  ".join(str(r.get(c, "")).ljust(w) for c, w in zip(cols, widths, strict=True)))
    out.append("")
    out.append("why (hero):")
    for r in rows:
        out.append(f"  {r['visitor']}: {r['why'] or '-'}")
    out.append("why (recommendations):")
    for r in rows:
        out.append(f"  {r['visitor']}: {r['why_recommendations'] or '-'}")
    return "\n".join(out)

"""``persona demo``: a scripted tour of the SDK with no web server.

Six visitors browse an imaginary shop through the real event path; the same segment and
slot definitions decide what each would see, and the tour prints what and why. It is
deterministic (a fixed clock), so its output is also checked by the test suite.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TextIO

from .clock import DAY
from .context import RequestInfo
from .identity import Identity
from .sdk import Persona

__all__ = ["DEMO_DEFINITIONS", "DEMO_NOW", "build_demo", "run_demo", "tour"]

#: 2026-11-23 12:00 UTC, a Monday.
DEMO_NOW = 1_795_435_200.0

DEMO_DEFINITIONS: dict[str, Any] = {
    "segments": {
        "first-time": {
            "description": "One>>Many: first visit",
            "rule": {"behaviour.visits": {"$lte": 1}},
        },
        "returning": {
            "description": "One>>Many: came back",
            "rule": {"behaviour.visits": {"$gte": 2}},
        },
        "frequent": {
            "description": "three or more visits in the last 30 days",
            "rule": {"behaviour.visits_30d": {"$gte": 3}},
        },
        "high-value": {
            "description": "spent 500 or more",
            "rule": {"rfm.monetary": {"$gte": 500}},
        },
        "returning-high-value": {
            "description": "One>>Few: nested segments",
            "rule": {"$and": [{"$segment": "frequent"}, {"$segment": "high-value"}]},
        },
        "shoe-lover": {
            "description": "One>>One: strongest interest is shoes",
            "rule": {"behaviour.top_category": "shoes"},
        },
    },
    "slots": {
        "hero": {
            "variants": [
                {"key": "vip-hero", "segment": "returning-high-value", "priority": 30},
                {"key": "welcome-back", "segment": "returning", "priority": 10},
                {"key": "first-visit", "segment": "first-time", "priority": 10},
            ],
            "default": "generic-hero",
        },
        "recommendations": {
            "variants": [
                {"key": "shoes", "segment": "shoe-lover"},
                {"key": "campaign-sale", "rule": {"context.campaign": "winter-sale"}},
            ],
            "default": "bestsellers",
        },
        "banner": {
            "strategy": "experiment",
            "experiment": {"version": "1", "holdout": 0.2, "seed": "demo"},
            "variants": [
                {"key": "free-shipping", "weight": 1},
                {"key": "ten-percent", "weight": 1},
            ],
            "default": "no-banner",
        },
    },
}


def build_demo() -> Persona:
    clock = [DEMO_NOW]
    persona = Persona(definitions=DEMO_DEFINITIONS, clock=lambda: clock[0])
    return persona


Step = Callable[[Persona], tuple[Identity, dict[str, Any]]]


def _grant(persona: Persona, anon: str, at: float) -> None:
    persona.set_consent(
        Identity.anonymous(anon),
        {"personalization": "granted", "analytics": "granted"},
        source="banner",
        at=at,
    )


def _visits(
    persona: Persona, anon: str, days_ago: list[float], *, category: str | None = None
) -> None:
    for d in days_ago:
        t = DEMO_NOW - d * DAY
        persona.page(anonymous_id=anon, properties={"path": "/"}, timestamp=t)
        if category:
            persona.track(
                "Product Viewed", {"category": category}, anonymous_id=anon, timestamp=t + 5
            )


def _new(p: Persona) -> tuple[Identity, dict[str, Any]]:
    _grant(p, "anon-new", DEMO_NOW - 60)
    _visits(p, "anon-new", [0])
    return Identity.anonymous("anon-new"), {}


def _returning(p: Persona) -> tuple[Identity, dict[str, Any]]:
    _grant(p, "anon-ret", DEMO_NOW - 20 * DAY)
    _visits(p, "anon-ret", [19, 12, 2], category="shoes")
    return Identity.anonymous("anon-ret"), {}


def _high_value(p: Persona) -> tuple[Identity, dict[str, Any]]:
    _grant(p, "anon-hv", DEMO_NOW - 30 * DAY)
    _visits(p, "anon-hv", [25, 14, 9, 5, 2, 0], category="bags")
    for amount, d in ((320, 14), (500, 2)):
        p.track(
            "Order Completed",
            {"revenue": amount, "category": "bags"},
            anonymous_id="anon-hv",
            timestamp=DEMO_NOW - d * DAY + 60,
        )
    return Identity.anonymous("anon-hv"), {}


def _denied(p: Persona) -> tuple[Identity, dict[str, Any]]:
    p.set_consent(
        Identity.anonymous("anon-no"),
        {"personalization": "denied", "analytics": "denied"},
        source="banner",
        at=DEMO_NOW - 60,
    )
    _visits(p, "anon-no", [3, 1, 0])
    return Identity.anonymous("anon-no"), {}


def _gpc(p: Persona) -> tuple[Identity, dict[str, Any]]:
    _grant(p, "anon-gpc", DEMO_NOW - 60)
    _visits(p, "anon-gpc", [0])
    request = RequestInfo.build(
        "/?utm_campaign=winter-sale", headers={"Sec-GPC": "1"}, now=DEMO_NOW
    )
    p.observe_gpc(Identity.anonymous("anon-gpc"))
    return Identity.anonymous("anon-gpc"), p.context(request)


def _login(p: Persona) -> tuple[Identity, dict[str, Any]]:
    # Earlier, as user u-42 on another device: two orders, and yes to marketing email.
    _grant(p, "anon-laptop", DEMO_NOW - 40 * DAY)
    p.set_consent(
        Identity.anonymous("anon-laptop"),
        {"marketing": "granted"},
        source="signup",
        at=DEMO_NOW - 40 * DAY,
    )
    p.identify(
        user_id="u-42",
        anonymous_id="anon-laptop",
        email="Ada@Example.com",
        timestamp=DEMO_NOW - 40 * DAY,
    )
    for amount, d in ((300, 40), (450, 35)):
        p.track(
            "Order Completed", {"revenue": amount}, user_id="u-42", timestamp=DEMO_NOW - d * DAY
        )
    # Today, anonymously on a phone, then logs in: the phone's history merges in.
    _grant(p, "anon-phone", DEMO_NOW - 3 * DAY)
    _visits(p, "anon-phone", [3, 1, 0], category="shoes")
    p.identify(user_id="u-42", anonymous_id="anon-phone", timestamp=DEMO_NOW)
    return Identity.user("u-42"), {}


VISITORS: list[tuple[str, Step]] = [
    ("new visitor", _new),
    ("returning, likes shoes", _returning),
    ("high value", _high_value),
    ("consent denied", _denied),
    ("GPC, from a campaign", _gpc),
    ("logged in after browsing", _login),
]


def tour(persona: Persona | None = None) -> list[dict[str, Any]]:
    """Play every visitor; return one row per visitor and slot."""
    persona = persona or build_demo()
    rows: list[dict[str, Any]] = []
    for label, step in VISITORS:
        identity, context = step(persona)
        profile = persona.profile_for(identity)
        subject = persona.subject(profile, context)
        segments = sorted(persona.segments.evaluate_all(subject)) if profile else []
        for slot in ("hero", "recommendations", "banner"):
            decision = persona.decide(slot, subject)
            rows.append(
                {
                    "visitor": label,
                    "slot": slot,
                    "variant": decision.variant,
                    "reason": decision.reason,
                    "why": decision.explanation,
                    "segments": segments,
                    "marketing": persona.may(profile, "marketing", gpc=bool(context.get("gpc"))),
                }
            )
    return rows


def run_demo(out: TextIO, *, verbose: bool = False) -> int:
    rows = tour()
    header = ("visitor", "slot", "shows", "reason", "why")
    table = [header] + [
        (r["visitor"], r["slot"], r["variant"], r["reason"], r["why"]) for r in rows
    ]
    widths = [min(40, max(len(str(row[i])) for row in table)) for i in range(4)]
    out.write("persona-sdk tour: six visitors, one set of rules (see persona_sdk/demo.py)\n\n")
    for n, row in enumerate(table):
        cells = [str(c)[:w].ljust(w) for c, w in zip(row[:4], widths, strict=True)]
        out.write("  ".join(cells) + "  " + str(row[4]) + "\n")
        if n == 0:
            out.write("  ".join("-" * w for w in widths) + "  " + "-" * 40 + "\n")
    if verbose:
        out.write("\nsegments and marketing consent per visitor:\n")
        seen: set[str] = set()
        for r in rows:
            if r["visitor"] in seen:
                continue
            seen.add(r["visitor"])
            out.write(
                f"  {r['visitor']}: {', '.join(r['segments']) or '(none)'}; "
                f"marketing email {'allowed' if r['marketing'] else 'not allowed'}\n"
            )
    return 0

"""The rule builder: a form widget that edits a rule in the JSON form.

It is a ``<textarea>`` holding the JSON (what the form submits, and what a visitor without
JavaScript edits) enhanced by ``persona_wagtail/rule-builder.js`` (vanilla JavaScript, no build
step) into nested groups — *all of* (``$and``), *any of* (``$or``), *none of* (``$nor``),
*not* (``$not``) — of condition rows: a field (a path in one of the namespaces of
:mod:`persona_sdk.rules.fields`, with suggestions) with an operator and a value, membership of
a segment (``$segment``), one of the condition types plugins registered (``$name``, with its
doc), or raw JSON for anything the rows cannot show. As the editor types, the rule is sent to
the admin endpoint ``persona_wagtail:check_rule``, which compiles it server-side and answers
with the error (and its ``where``, so the row is marked) or the number of stored profiles
that match. Saving compiles again (:meth:`persona_wagtail.models.Segment.clean`).
"""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.urls import NoReverseMatch, reverse

from .registry import ensure_current, segments_overview

__all__ = ["NAMESPACES", "PATHS", "RuleBuilderWidget", "catalogue"]

#: The namespaces of ``persona_sdk.rules.fields`` and what they hold.
NAMESPACES: list[tuple[str, str]] = [
    ("traits", "a trait on the profile: traits.<name>[.<key>…]"),
    ("behaviour", "visits, page views, recency, tenure, categories"),
    ("events", "events.<event name>.<metric>: count, count_<N>d, last_days, first_days"),
    ("rfm", "purchases: recency, frequency, monetary value, average order"),
    ("affinity", "affinity.<category>: time-decayed interest in a category"),
    ("identity", "known (has a user id or email), user_id"),
    ("context", "the request: device, campaign, referrer, country, time of day…"),
]

#: Suggested paths (``<…>`` is a placeholder the editor replaces) with a short doc.
PATHS: list[tuple[str, str]] = [
    ("traits.<name>", "a trait, e.g. traits.plan"),
    ("behaviour.visits", "visits (sessions), all time"),
    ("behaviour.visits_30d", "visits in the last 30 days (also _1d _7d _90d _365d)"),
    ("behaviour.page_views", "page views, all time"),
    ("behaviour.page_views_7d", "page views in the last 7 days"),
    ("behaviour.returning", "more than one visit (true/false)"),
    ("behaviour.new", "at most one visit (true/false)"),
    ("behaviour.first_seen_days", "days since the first visit"),
    ("behaviour.last_seen_days", "days since the last visit"),
    ("behaviour.tenure_days", "days since the first visit"),
    ("behaviour.categories", "number of categories with interest"),
    ("behaviour.top_category", "the category of strongest interest"),
    ("events.<event name>.count", "how often an event happened"),
    ("events.<event name>.count_30d", "... in the last 30 days"),
    ("events.<event name>.last_days", "days since it last happened"),
    ("rfm.recency_days", "days since the last purchase"),
    ("rfm.frequency", "number of purchases"),
    ("rfm.frequency_90d", "purchases in the last 90 days"),
    ("rfm.monetary", "revenue, all time"),
    ("rfm.monetary_365d", "revenue in the last 365 days"),
    ("rfm.aov", "average order value"),
    ("affinity.<category>", "interest in a category (0 when none)"),
    ("identity.known", "has a user id or an email (true/false)"),
    ("identity.user_id", "the user id"),
    ("context.device.type", "desktop, mobile, tablet, bot, unknown"),
    ("context.device.os", "ios, android, windows, macos, linux…"),
    ("context.device.browser", "chrome, safari, firefox, edge…"),
    ("context.utm.source", "utm_source of the landing URL"),
    ("context.utm.medium", "utm_medium"),
    ("context.utm.campaign", "utm_campaign"),
    ("context.campaign", "the campaign (utm_campaign)"),
    ("context.referrer_host", "the referring site"),
    ("context.referrer_type", "search, social, email, paid, referral, internal, direct"),
    ("context.paid_click", "came from an ad click (true/false)"),
    ("context.country", "two-letter country code"),
    ("context.hour", "local hour, 0-23"),
    ("context.weekday", "1 (Monday) to 7 (Sunday)"),
    ("context.weekend", "Saturday or Sunday (true/false)"),
    ("context.daypart", "morning, afternoon, evening, night"),
    ("context.authenticated", "logged in (true/false)"),
    ("context.path", "the page's path"),
]


def catalogue() -> dict[str, Any]:
    """What the rule builder offers: namespaces, paths, condition types, segments."""
    persona = ensure_current()
    return {
        "namespaces": [{"name": n, "doc": d} for n, d in NAMESPACES],
        "paths": [{"path": p, "doc": d} for p, d in PATHS],
        "conditions": [
            {"name": name, "doc": doc} for name, doc in persona.registry.conditions.docs().items()
        ],
        "segments": [
            {"name": s["name"], "source": s["source"], "description": s["description"]}
            for s in segments_overview(persona)
        ],
    }


def check_url() -> str:
    try:
        return reverse("persona_wagtail:check_rule")
    except NoReverseMatch:  # the admin URLs are not installed (a form outside the admin)
        return ""


class RuleBuilderWidget(forms.Textarea):
    """Edits a rule (the JSON form). ``segment_pk`` (set by the segment form) lets the live
    check also catch cycles and clashes with other segments."""

    template_name = "persona_wagtail/widgets/rule_builder.html"

    def __init__(self, attrs: dict[str, Any] | None = None) -> None:
        base = {"rows": 8, "spellcheck": "false", "class": "persona-rule-json"}
        base.update(attrs or {})
        super().__init__(attrs=base)

    def format_value(self, value: Any) -> str:
        if value is None or value == "":
            return "{}"
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                return value
        return json.dumps(value, indent=2, ensure_ascii=False)

    def get_context(self, name: str, value: Any, attrs: dict[str, Any] | None) -> dict[str, Any]:
        context = super().get_context(name, value, attrs)
        try:
            data = catalogue()
        except Exception:  # the page still renders: the textarea alone works
            data = {"namespaces": [], "paths": [], "conditions": [], "segments": []}
        context["widget"]["catalogue"] = data
        context["widget"]["check_url"] = check_url()
        return context

    @property
    def media(self) -> forms.Media:
        return forms.Media(
            js=["persona_wagtail/rule-builder.js"],
            css={"all": ["persona_wagtail/rule-builder.css"]},
        )

"""What each personalized block achieved: exposures and conversions per variant.

For every :class:`~persona_wagtail.blocks.PersonalizedBlock` on a page the report reads the
Django adapter's :class:`~persona_django.models.Exposure` and
:class:`~persona_django.models.Conversion` rows for the block's slot (two grouped queries per
page, whatever the number of blocks) and shows per variant:

* **visitors** exposed (distinct profiles) and **exposures** (times shown);
* **converted**: distinct exposed profiles with a conversion goal
  (``PERSONA["CONVERSION_GOALS"]``) attributed to that variant;
* the **conversion rate** with its 95 % Wilson score interval;
* the **uplift** against the control — the default shown to the experiment's holdout — as a
  difference in percentage points with its 95 % Newcombe (hybrid Wilson) interval, and the
  relative change;
* a bar chart (inline SVG, no JavaScript): one bar per variant, whiskers for the interval, a
  dashed line at the control's rate.

Exposures are recorded for decisions that carry an experiment assignment (a block with its
experiment switched on); a block that only targets by priority shows what it targets but has
nothing to measure until its experiment is switched on.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import attrs
from django.db.models import Count, Q, Sum
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe

from .blocks import DEFAULT_KEY, _spec, personalized_in_instance, slot_json

__all__ = [
    "Arm",
    "BlockReport",
    "block_reports",
    "chart_svg",
    "newcombe_interval",
    "wilson_interval",
]

Z95 = 1.959963984540054


def wilson_interval(successes: int, trials: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a proportion (``(0, 1)`` without trials)."""
    if trials <= 0:
        return (0.0, 1.0)
    p = successes / trials
    z2 = z * z
    denominator = 1 + z2 / trials
    centre = (p + z2 / (2 * trials)) / denominator
    half = z * math.sqrt(p * (1 - p) / trials + z2 / (4 * trials * trials)) / denominator
    return (max(0.0, centre - half), min(1.0, centre + half))


def newcombe_interval(
    k1: int, n1: int, k2: int, n2: int, z: float = Z95
) -> tuple[float, float, float]:
    """The difference ``p1 - p2`` and its Newcombe hybrid score interval (method 10)."""
    p1 = k1 / n1 if n1 else 0.0
    p2 = k2 / n2 if n2 else 0.0
    l1, u1 = wilson_interval(k1, n1, z)
    l2, u2 = wilson_interval(k2, n2, z)
    d = p1 - p2
    low = d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)
    high = d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
    return (d, max(-1.0, low), min(1.0, high))


@attrs.frozen
class Arm:
    """One variant (or the default) of a block, with its numbers."""

    key: str
    label: str
    targeting: str
    is_control: bool
    exposures: int = 0
    visitors: int = 0
    converted: int = 0
    conversions: int = 0
    value: float = 0.0
    rate: float | None = None
    low: float | None = None
    high: float | None = None
    #: difference against the control, in proportion points, and its interval
    uplift: float | None = None
    uplift_low: float | None = None
    uplift_high: float | None = None
    relative: float | None = None

    @property
    def significant(self) -> bool | None:
        if self.uplift_low is None or self.uplift_high is None:
            return None
        return self.uplift_low > 0 or self.uplift_high < 0


@attrs.frozen
class BlockReport:
    field: str
    path: tuple[str, ...]
    slot: str
    experiment: bool
    holdout: float
    version: str
    arms: tuple[Arm, ...]
    problems: tuple[str, ...] = ()
    #: the control arm's key when it has visitors (else there is nothing to compare with)
    control: str | None = None

    @property
    def has_data(self) -> bool:
        return any(a.exposures for a in self.arms)

    @property
    def chart(self) -> SafeString:
        return chart_svg(self.arms, title=f"Conversion rate per variant of {self.slot}")


def _targeting(variant: Any) -> str:
    if variant.get("segment"):
        return f"segment {variant['segment']}"
    if variant.get("rule"):
        return f"rule {variant['rule']}"
    return "everyone"


def _arms(
    value: Any,
    slot: str,
    exposures: dict[tuple[str, str], dict[str, int]],
    conversions: dict[tuple[str, str], dict[str, Any]],
) -> tuple[list[Arm], str | None]:
    _, _, index = slot_json(_spec(value))
    variants = list(value.get("variants") or ())
    entries = [(key, variants[i], False) for key, i in index.items()]
    keys = [k for k, _, _ in entries]
    default = DEFAULT_KEY if DEFAULT_KEY not in keys else f"_{DEFAULT_KEY}"
    rows: list[tuple[str, str, str, bool]] = [
        (key, f"Variant {i + 1}: {key}", _targeting(variant), False)
        for i, (key, variant, _) in enumerate(entries)
    ]
    rows.append((default, "Default (control)", "everyone else / holdout", True))
    # variants seen in the data that the block no longer has (renamed or removed)
    for (s, key), _counts in sorted(exposures.items()):
        if s == slot and key not in {r[0] for r in rows}:
            rows.append((key, f"{key} (no longer on the page)", "—", False))
    control = exposures.get((slot, default), {})
    n_c, k_c = control.get("visitors", 0), conversions.get((slot, default), {}).get("converted", 0)
    arms = []
    for key, label, targeting, is_control in rows:
        e = exposures.get((slot, key), {})
        c = conversions.get((slot, key), {})
        n, k = e.get("visitors", 0), min(c.get("converted", 0), e.get("visitors", 0))
        arm: dict[str, Any] = {
            "key": key,
            "label": label,
            "targeting": targeting,
            "is_control": is_control,
            "exposures": e.get("exposures", 0),
            "visitors": n,
            "converted": k,
            "conversions": c.get("conversions", 0),
            "value": float(c.get("value") or 0.0),
        }
        if n:
            arm["rate"] = k / n
            arm["low"], arm["high"] = wilson_interval(k, n)
            if not is_control and n_c:
                d, lo, hi = newcombe_interval(k, n, min(k_c, n_c), n_c)
                arm["uplift"], arm["uplift_low"], arm["uplift_high"] = d, lo, hi
                p_c = min(k_c, n_c) / n_c
                arm["relative"] = (d / p_c) if p_c else None
        arms.append(Arm(**arm))
    return arms, (default if n_c else None)


def block_reports(instance: Any, goals: Sequence[str] | None = None) -> list[BlockReport]:
    """A :class:`BlockReport` for each personalized block of ``instance`` (a page)."""
    from persona_django.conf import get_config as django_config
    from persona_django.models import Conversion, Exposure

    goals = list(goals if goals is not None else django_config()["CONVERSION_GOALS"])
    found = []
    for field, path, block, value in personalized_in_instance(instance):
        name = slot_json(_spec(value))[0]
        found.append((field, path, block, value, name))
    slots = sorted({f[4] for f in found})
    exposures: dict[tuple[str, str], dict[str, int]] = {}
    conversions: dict[tuple[str, str], dict[str, Any]] = {}
    if slots:
        for row in (
            Exposure.objects.filter(slot__in=slots)
            .values("slot", "variant")
            .annotate(exposures=Count("id"), visitors=Count("profile_id", distinct=True))
            .order_by()
        ):
            exposures[(row["slot"], row["variant"])] = row
        for row in (
            Conversion.objects.filter(Q(slot__in=slots) & Q(goal__in=goals))
            .values("slot", "variant")
            .annotate(
                converted=Count("profile_id", distinct=True),
                conversions=Count("id"),
                value=Sum("value"),
            )
            .order_by()
        ):
            conversions[(row["slot"], row["variant"])] = row
    reports = []
    for field, path, block, value, name in found:
        arms, control = _arms(value, name, exposures, conversions)
        exp = value.get("experiment") or {}
        reports.append(
            BlockReport(
                field=field,
                path=path,
                slot=name,
                experiment=bool(exp.get("enabled")),
                holdout=float(exp.get("holdout") or 0.0),
                version=str(exp.get("version") or "1"),
                arms=tuple(arms),
                problems=tuple(block.problems(value)),
                control=control,
            )
        )
    return reports


# -- the chart -----------------------------------------------------------------------------
def _pct(x: float) -> str:
    return f"{x * 100:.1f}%"


def _n(v: float) -> str:
    return f"{v:.1f}"


def chart_svg(arms: Iterable[Arm], *, title: str = "Conversion rate per variant") -> SafeString:
    """Horizontal bars of each arm's conversion rate with 95 % interval whiskers and a
    dashed line at the control's rate. Plain SVG: readable without JavaScript."""
    arms = [a for a in arms if a.rate is not None]
    if not arms:
        return mark_safe("")
    label_w, bar_w, row_h, pad = 220, 360, 34, 8
    top = max((a.high or 0.0) for a in arms)
    # the axis ends at a round number: the next multiple of 4 percentage points (0-4-8...),
    # of 20 above 40% (so the ticks at quarters are whole percentages)
    step = 0.04 if top <= 0.4 else 0.2
    scale_max = min(1.0, max(step, math.ceil(top * 1.02 / step) * step))
    width = label_w + bar_w + 90
    height = pad * 2 + row_h * len(arms) + 18

    def x(v: float) -> str:
        return _n(label_w + bar_w * (v / scale_max))

    parts: list[SafeString] = []
    control = next((a for a in arms if a.is_control), None)
    for i, arm in enumerate(arms):
        y = pad + i * row_h
        mid, y0, y1 = _n(y + row_h / 2), _n(y + 10), _n(y + row_h - 10)
        if arm.is_control:
            colour = "#8c8c8c"
        elif arm.significant:
            colour = "#1b8666" if (arm.uplift or 0) > 0 else "#cd4444"
        else:
            colour = "#2e5eaa"
        rate, low, high = arm.rate or 0.0, arm.low or 0.0, arm.high or 0.0
        label = arm.label if len(arm.label) <= 32 else arm.label[:31] + "…"
        parts.append(
            format_html(
                '<g class="arm" data-variant="{}">'
                '<text x="{}" y="{}" text-anchor="end" font-size="12">{}</text>'
                '<rect x="{}" y="{}" width="{}" height="{}" fill="{}" rx="2">'
                "<title>{}: {} ({} of {}), 95% CI {} to {}</title></rect>"
                '<line x1="{}" x2="{}" y1="{}" y2="{}" stroke="#222" stroke-width="1.5"/>'
                '<line x1="{}" x2="{}" y1="{}" y2="{}" stroke="#222" stroke-width="1.5"/>'
                '<line x1="{}" x2="{}" y1="{}" y2="{}" stroke="#222" stroke-width="1.5"/>'
                '<text x="{}" y="{}" font-size="12">{}</text></g>',
                arm.key,
                label_w - 8,
                _n(y + row_h / 2 + 4),
                label,
                label_w,
                y + 6,
                _n(max(0.0, float(x(rate)) - label_w)),
                row_h - 12,
                colour,
                arm.label,
                _pct(rate),
                arm.converted,
                arm.visitors,
                _pct(low),
                _pct(high),
                x(low),
                x(high),
                mid,
                mid,
                x(low),
                x(low),
                y0,
                y1,
                x(high),
                x(high),
                y0,
                y1,
                _n(float(x(high)) + 6),
                _n(y + row_h / 2 + 4),
                _pct(rate),
            )
        )
    if control is not None and control.rate is not None:
        cx = x(control.rate)
        parts.append(
            format_html(
                '<line class="control" x1="{}" x2="{}" y1="{}" y2="{}" stroke="#8c8c8c" '
                'stroke-dasharray="4 3"/>',
                cx,
                cx,
                pad,
                pad + row_h * len(arms),
            )
        )
    axis_y = pad + row_h * len(arms) + 14
    ticks = format_html_join(
        "",
        '<text x="{}" y="{}" font-size="10" text-anchor="middle" fill="#5c5c5c">{}</text>',
        ((x(t * scale_max), axis_y, _pct(t * scale_max)) for t in (0, 0.25, 0.5, 0.75, 1)),
    )
    return format_html(
        '<svg class="persona-chart" role="img" aria-label="{}" viewBox="0 0 {} {}" width="{}" '
        'height="{}" xmlns="http://www.w3.org/2000/svg"><title>{}</title>{}{}</svg>',
        title,
        width,
        height,
        width,
        height,
        title,
        mark_safe("".join(parts)),  # each part is built with format_html
        ticks,
    )

"""Number formats for the personalization report."""

from __future__ import annotations

from typing import Any

from django import template

register = template.Library()


@register.filter
def pct(value: Any) -> str:
    """0.1234 → ``12.3%``."""
    try:
        return f"{float(value) * 100:.1f}%"
    except (TypeError, ValueError):
        return "—"


@register.filter
def pp(value: Any) -> str:
    """A difference of proportions in percentage points: 0.012 → ``+1.2 pp``."""
    try:
        return f"{float(value) * 100:+.1f} pp"
    except (TypeError, ValueError):
        return "—"


@register.filter
def signed_pct(value: Any) -> str:
    """A relative change: 0.25 → ``+25%``."""
    try:
        return f"{float(value) * 100:+.0f}%"
    except (TypeError, ValueError):
        return "—"

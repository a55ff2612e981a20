"""Template context for every page: the category navigation and the cart count."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest


def shop(request: HttpRequest) -> dict[str, Any]:
    from catalog.models import CategoryPage

    cart = request.session.get("cart", {}) if hasattr(request, "session") else {}
    return {
        "categories": CategoryPage.objects.live().order_by("title"),
        "cart_count": sum(cart.values()),
    }

"""A product grid for the page chrome, the same on every benchmark page (persona's and
Wagtail's), so the pages have a realistic amount of template work besides the slots."""

from __future__ import annotations

from typing import Any

_CATEGORIES = ["shoes", "outdoor", "kitchen", "books", "toys", "garden", "beauty", "sports"]
PRODUCTS = [
    {
        "name": f"{_CATEGORIES[i % 8].title()} product {i + 1}",
        "url": f"/shop/{_CATEGORIES[i % 8]}/{i + 1}/",
        "price": 19.0 + 7.5 * i,
        "category": _CATEGORIES[i % 8],
        "badge": "new" if i % 5 == 0 else "",
    }
    for i in range(12)
]
NAV = [(c.title(), f"/shop/{c}/") for c in _CATEGORIES] + [
    ("Sale", "/sale/"), ("Gift cards", "/gift-cards/"), ("Stores", "/stores/"), ("Help", "/help/"),
]


def catalogue(request: Any) -> dict[str, Any]:
    return {"products": PRODUCTS, "nav": NAV}

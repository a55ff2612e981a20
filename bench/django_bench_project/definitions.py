"""What the benchmark page personalizes: 20 segments and 3 priority slots (persona), and the
nearest wagtail-personalisation equivalent of each segment.

The visitor (built by ``bench_django.py``) is a returning customer from Germany on a Mac,
arriving from a Google search on a newsletter link: 6 visits in 3 weeks, 3 orders worth 820,
5 shoe views, 2 add-to-carts, a newsletter signup, CRM traits ``ltv=820, plan=pro``. They
match 13 or 14 of the 20 segments (``business-hours`` depends on the clock), and in every
slot the variant that matches is the **last** one tried, so each slot evaluates all three
of its variants' segments before it decides.
"""

from __future__ import annotations

from typing import Any

SEGMENTS: dict[str, Any] = {
    # behaviour (day-bucket windows)
    "first-time": {"behaviour.visits": {"$lte": 1}},
    "returning": {"behaviour.visits": {"$gte": 2}},
    "frequent": {"behaviour.visits_30d": {"$gte": 3}},
    "active-week": {"behaviour.visits_7d": {"$gte": 2}},
    "lapsed": {"behaviour.last_seen_days": {"$gte": 30}},
    # traits, RFM, affinity, events
    "high-value": {"traits.ltv": {"$gte": 500}},
    "pro-plan": {"traits.plan": {"$in": ["pro", "enterprise"]}},
    "big-spender-90d": {"rfm.monetary_90d": {"$gte": 1000}},
    "recent-buyer": {"rfm.recency_days": {"$lte": 14}},
    "shoe-fan": {"affinity.shoes": {"$gte": 3}},
    "cart-abandoner": {"$and": [
        {"events.Product Added.count_7d": {"$gte": 1}},
        {"$or": [
            {"events.Order Completed.last_days": {"$exists": False}},
            {"events.Order Completed.last_days": {"$gt": 3}},
        ]},
    ]},
    "subscriber": {"events.Newsletter Signup.count": {"$gte": 1}},
    "vip": {"$and": [{"$segment": "high-value"}, {"$segment": "frequent"}]},
    # request context (enricher plugins)
    "germany": {"context.country": "DE"},
    "france": {"context.country": {"$in": ["FR", "BE"]}},
    "mobile": {"context.device.type": "mobile"},
    "desktop": {"context.device.type": "desktop"},
    "newsletter-traffic": {"context.utm.source": "newsletter"},
    "from-search": {"context.referrer_type": "search"},
    "business-hours": {"$and": [
        {"context.weekday": {"$lte": 5}},
        {"context.hour": {"$gte": 9, "$lt": 17}},
    ]},
}

#: slot -> [(variant key, segment)], in priority order; the visitor matches only the last.
SLOTS: dict[str, list[tuple[str, str]]] = {
    "hero": [("win-back", "lapsed"), ("welcome", "first-time"), ("vip", "vip")],
    "promo": [("get-the-app", "mobile"), ("livraison", "france"), ("versand", "germany")],
    "banner": [
        ("cart-reminder", "cart-abandoner"),
        ("big-spender", "big-spender-90d"),
        ("newsletter-reader", "newsletter-traffic"),
    ],
}
#: what the visitor must get (checked before timing; a mismatch is a setup error)
EXPECTED = {"hero": "vip", "promo": "versand", "banner": "newsletter-reader"}

#: What each variant shows: (key, heading, text, link, call to action). The persona
#: templates (``templates/bench/*.html``) spell the same HTML out literally; the Wagtail pages
#: are built from this. ``default`` is persona's default branch (Wagtail has no default).
VARIANT_CONTENT: dict[str, list[tuple[str, str, str, str, str]]] = {
    "hero": [
        ("win-back", "We missed you", "Here is 15% off your next order, for the next 7 days.", "/new/", "Shop new arrivals"),
        ("welcome", "Welcome to the store", "Free shipping on your first order over 50 EUR.", "/shop/", "Start shopping"),
        ("vip", "Thanks for being a regular", "Early access to the summer sale starts today for our best customers.", "/sale/early-access/", "Open the sale"),
        ("default", "Summer collection", "New shoes, outdoor gear and more.", "/shop/", "Shop now"),
    ],
    "promo": [
        ("get-the-app", "Get the app", "Order faster and track your deliveries.", "/app/", "Download"),
        ("livraison", "Livraison gratuite", "Free delivery to France and Belgium this week.", "/fr/livraison/", "En savoir plus"),
        ("versand", "Kostenloser Versand", "Free shipping to Germany on every order.", "/de/versand/", "Mehr erfahren"),
        ("default", "Free returns", "30 days to change your mind.", "/help/returns/", "Learn more"),
    ],
    "banner": [
        ("cart-reminder", "Still thinking it over?", "Your cart is waiting for you.", "/cart/", "Go to cart"),
        ("big-spender", "A gift for you", "Choose a free gift with your next order.", "/gifts/", "Choose"),
        ("newsletter-reader", "Thanks for reading our newsletter", "This week's picks from the newsletter, all in one place.", "/newsletter/picks/", "See the picks"),
        ("default", "Join our newsletter", "News, offers and tips every week.", "/newsletter/", "Subscribe"),
    ],
}

DEFINITIONS: dict[str, Any] = {
    "segments": {name: {"rule": rule} for name, rule in SEGMENTS.items()},
    "slots": {
        slot: {
            "strategy": "priority",
            "default": "default",
            "variants": [
                {"key": key, "segment": segment, "priority": 10 * (len(variants) - i)}
                for i, (key, segment) in enumerate(variants)
            ],
        }
        for slot, variants in SLOTS.items()
    },
}

# -- wagtail-personalisation ------------------------------------------------------------------
# wagtail-personalisation keeps no profile: what it knows of a visitor is the request and the
# session's per-page visit counts (VisitCountRule). So request-context segments map one to
# one (country <-> OriginCountryRule on CF-IPCountry, device <-> DeviceRule, UTM source <->
# QueryRule, search referrer <-> ReferralRule, weekday/hour <-> DayRule + TimeRule), and every
# segment on behaviour, traits, RFM, affinity or events becomes a VisitCountRule on the page
# whose visits stand for that data (orders <-> visits of the order-confirmation page, shoe
# views <-> the shoes page, the plan <-> the pricing page...) with a threshold that gives the
# same answer for the benchmark visitor. Windows ("in the last 30 days") and recency cannot
# be expressed: those rules count all visits in the session. A segment with several
# conditions gets as many rules (all must match, or ``match_any`` for an ``$in``).
#
# rule specs: ("visits", page slug, operator, count) | ("country", code) | ("device", kind)
#             | ("query", parameter, value) | ("referral", regex) | ("days", "mon..fri")
#             | ("time", "HH:MM", "HH:MM")
WAGTAIL_SEGMENTS: dict[str, tuple[bool, list[tuple[Any, ...]]]] = {
    "first-time": (False, [("visits", "home", "less_than", 2)]),
    "returning": (False, [("visits", "home", "more_than", 1)]),
    "frequent": (False, [("visits", "home", "more_than", 2)]),
    "active-week": (False, [("visits", "shop", "more_than", 1)]),
    "lapsed": (False, [("visits", "home", "less_than", 1)]),
    "high-value": (False, [("visits", "order-confirmation", "more_than", 2)]),
    "pro-plan": (False, [("visits", "pricing", "more_than", 0)]),
    "big-spender-90d": (False, [("visits", "order-confirmation", "more_than", 5)]),
    "recent-buyer": (False, [("visits", "order-confirmation", "more_than", 0)]),
    "shoe-fan": (False, [("visits", "shoes", "more_than", 2)]),
    "cart-abandoner": (False, [
        ("visits", "cart", "more_than", 0),
        ("visits", "order-confirmation", "less_than", 1),
    ]),
    "subscriber": (False, [("visits", "newsletter-thanks", "more_than", 0)]),
    "vip": (False, [
        ("visits", "order-confirmation", "more_than", 2),
        ("visits", "home", "more_than", 2),
    ]),
    "germany": (False, [("country", "de")]),
    "france": (True, [("country", "fr"), ("country", "be")]),
    "mobile": (False, [("device", "mobile")]),
    "desktop": (False, [("device", "desktop")]),
    "newsletter-traffic": (False, [("query", "utm_source", "newsletter")]),
    "from-search": (False, [("referral", r"^https?://(www\.)?(google|bing|duckduckgo)\.")]),
    "business-hours": (False, [("days", "mon..fri"), ("time", "09:00", "17:00")]),
}

#: The wagtail visitor's session history: visits per page before timing (the persona
#: visitor's profile history, expressed as page visits).
WAGTAIL_HISTORY: dict[str, int] = {
    "home": 6,
    "shop": 2,
    "shoes": 5,
    "pricing": 1,
    "cart": 2,
    "order-confirmation": 3,
    "newsletter-thanks": 1,
}

#!/usr/bin/env python
"""Benchmark of persona-sdk's email adapter: rendering personalized emails per recipient.

Run with ``./dev bench`` (every ``bench/bench_*.py``) or directly::

    .venv/bin/python bench/bench_email.py            # 10,000 recipients per repeat
    .venv/bin/python bench/bench_email.py --quick    # 1,000 recipients per repeat (CI)
    .venv/bin/python bench/bench_email.py --json out.json

Measures, in one process on one core, what ``persona_email.sending.Campaign`` does for each
recipient before the email backend takes over: three ``{% personalize %}`` slots decided
through the decision engine (a priority slot over 3-condition rules, a sticky experiment, a
segment-targeted footer), the HTML template rendered, links tagged with the signed
click-tracking parameter, the plain-text part derived; then, separately, the same plus the
consent/address gate and the ``EmailMultiAlternatives`` serialized to MIME bytes (what the
SMTP backend hands to the socket; the SMTP transfer itself is excluded). No database: the
profiles are in memory (a real send reads them in batches from the database and records
exposures there, which this does not time).

This is a measurement, not a test: it prints medians next to the target from the issue with
PASS/MISS and always exits 0 (a non-zero exit means the benchmark's own setup is broken).
Every number is the median, over several repeats, of the per-recipient time of one repeat (a
repeat renders every recipient once), with the spread (min..max) of the repeats; the
measurements are interleaved repeat by repeat. See bench/README.md.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import random
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
for extra in (ROOT, ROOT / "adapters", ROOT / "plugins"):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

perf_counter_ns = time.perf_counter_ns

#: A fixed "now" so every run sees the same windows (2025-06-02 12:00 UTC).
NOW = 1_748_865_600.0
TARGET_PER_S = 2_000

DEFINITIONS: dict[str, Any] = {
    "segments": {
        "first-time": {"rule": {"behaviour.visits": {"$lte": 1}}},
        "returning": {"rule": {"behaviour.visits": {"$gte": 2}}},
        "frequent": {"rule": {"behaviour.visits_30d": {"$gte": 3}}},
        "high-value": {"rule": {"rfm.monetary": {"$gte": 500}}},
        "recent-buyer": {"rule": {"rfm.recency_days": {"$lte": 30}}},
        "lapsed": {"rule": {"$and": [{"rfm.frequency": {"$gte": 1}},
                                     {"rfm.recency_days": {"$gt": 60}}]}},
        "shoe-lover": {"rule": {"affinity.shoes": {"$gte": 2}}},
        "pro": {"rule": {"traits.plan": {"$in": ["pro", "enterprise"]}}},
        "vip": {"rule": {"$and": [{"$segment": "frequent"}, {"$segment": "high-value"}]}},
        **{f"extra-{i:02d}": {"rule": {"traits.ltv": {"$gte": 100 * i}}} for i in range(11)},
    },
    "slots": {
        "hero": {
            "variants": [
                {"key": "loyal-eu", "rule": {"$and": [
                    {"traits.ltv": {"$gte": 500}}, {"behaviour.visits_30d": {"$gte": 10}},
                    {"traits.country": {"$in": ["DE", "FR", "NL"]}}]}},
                {"key": "big-spender", "rule": {"$and": [
                    {"traits.ltv": {"$gte": 2000}}, {"behaviour.visits_30d": {"$gte": 3}},
                    {"traits.country": {"$in": ["US", "CA"]}}]}},
                {"key": "returning-high-value", "rule": {"$and": [
                    {"traits.ltv": {"$gte": 500}}, {"behaviour.visits_30d": {"$gte": 3}},
                    {"traits.country": {"$in": ["US", "GB", "DE", "FR"]}}]}},
                {"key": "promising", "rule": {"$and": [
                    {"traits.ltv": {"$gte": 100}}, {"behaviour.visits_30d": {"$gte": 2}},
                    {"traits.country": {"$in": ["US", "GB", "DE"]}}]}},
            ],
        },
        "offer": {
            "strategy": "experiment",
            "experiment": {"version": "3", "holdout": 0.1},
            "variants": [{"key": "free-shipping"}, {"key": "ten-percent"}, {"key": "gift"}],
        },
        "footer": {
            "variants": [
                {"key": "vip", "segment": "vip", "priority": 20},
                {"key": "lapsed", "segment": "lapsed", "priority": 10},
                {"key": "welcome", "segment": "first-time"},
            ],
        },
    },
}

TEMPLATE = """{% load persona %}<!doctype html>
<html><head><meta charset="utf-8"><title>{{ campaign }}</title>
<style>body{font-family:Helvetica,Arial,sans-serif;color:#222}.cta{background:#0a6;color:#fff;padding:12px 20px}</style>
</head><body>
<table width="600" align="center" cellpadding="0" cellspacing="0"><tr><td>
<a href="https://shop.example/?src=mail"><img src="https://cdn.shop.example/logo.png" alt="Shop" width="120"></a>
<p>Hi {{ recipient.traits.first_name|default:"there" }},</p>
{% personalize "hero" %}
  {% variant "loyal-eu" %}<h1>Danke, {{ recipient.traits.first_name }}!</h1><p>Your member prices are live.</p><a class="cta" href="https://shop.example/members?lang=de">See member prices</a>
  {% variant "big-spender" %}<h1>Early access is yours</h1><p>The new collection, two days before everyone else.</p><a class="cta" href="https://shop.example/early-access">Shop early</a>
  {% variant "returning-high-value" %}<h1>Welcome back</h1><p>We kept your favourites in stock.</p><a class="cta" href="https://shop.example/favourites">Your favourites</a>
  {% variant "promising" %}<h1>Good to see you again</h1><p>Here is what is new since your last visit.</p><a class="cta" href="https://shop.example/new">What is new</a>
  {% default %}<h1>Spring is here</h1><p>Fresh arrivals for the season.</p><a class="cta" href="https://shop.example/spring">Shop spring</a>
{% endpersonalize %}
<table><tr>{% for product in products %}<td><a href="{{ product.url }}"><img src="{{ product.image }}" alt="{{ product.name }}" width="180"><br>{{ product.name }}</a><br>{{ product.price }}</td>{% endfor %}</tr></table>
{% personalize "offer" %}
  {% variant "free-shipping" %}<p><b>Free shipping</b> on your next order: <a href="https://shop.example/offer/shipping">claim it</a></p>
  {% variant "ten-percent" %}<p><b>10% off</b> with code SPRING10: <a href="https://shop.example/offer/ten">shop now</a></p>
  {% variant "gift" %}<p><b>A gift</b> with orders over 50: <a href="https://shop.example/offer/gift">see the gift</a></p>
  {% default %}<p>Thanks for being with us.</p>
{% endpersonalize %}
{% personalize "footer" %}
  {% variant "vip" %}<p>Your VIP line: +49 30 1234567 (<a href="https://shop.example/vip">VIP corner</a>)</p>
  {% variant "lapsed" %}<p>We miss you. <a href="https://shop.example/comeback">Here is 15% to come back</a></p>
  {% variant "welcome" %}<p>New here? <a href="https://shop.example/guide">Our guide</a> gets you started.</p>
  {% default %}<p><a href="https://shop.example/help">Help</a> &middot; <a href="https://shop.example/stores">Stores</a></p>
{% endpersonalize %}
<p style="font-size:11px">You receive this email because you subscribed at shop.example.
<a href="https://shop.example/unsubscribe">Unsubscribe</a> &middot; <a href="https://shop.example/privacy">Privacy</a></p>
</td></tr></table></body></html>"""

PRODUCTS = [
    {"name": "Trail runner", "price": "€89", "url": "https://shop.example/p/trail-runner",
     "image": "https://cdn.shop.example/p/trail-runner.jpg"},
    {"name": "Rain shell", "price": "€129", "url": "https://shop.example/p/rain-shell",
     "image": "https://cdn.shop.example/p/rain-shell.jpg"},
    {"name": "Day pack", "price": "€59", "url": "https://shop.example/p/day-pack",
     "image": "https://cdn.shop.example/p/day-pack.jpg"},
]


def setup_django() -> None:
    import django
    from django.conf import settings

    settings.configure(
        SECRET_KEY="persona-bench-not-secret",
        DEBUG=False,
        USE_TZ=True,
        INSTALLED_APPS=["django.contrib.auth", "django.contrib.contenttypes", "persona_django"],
        DATABASES={},
        TEMPLATES=[{"BACKEND": "django.template.backends.django.DjangoTemplates",
                    "APP_DIRS": True, "OPTIONS": {}}],
        PERSONA={"CONSENT_MODE": "opt-in", "DEBUG_EXPLAIN": False},
        EMAIL_BACKEND="django.core.mail.backends.locmem.EmailBackend",
    )
    django.setup()


def recipients(n: int) -> list[Any]:
    """``n`` profiles with varied histories (built through the real event path, seeded)."""
    from persona_sdk.testing import build_profile

    rnd = random.Random(42)
    consent = {"personalization": "granted", "analytics": "granted", "marketing": "granted"}
    countries = ["DE", "FR", "NL", "US", "CA", "GB", "SE"]
    names = ["Ada", "Bo", "Cy", "Di", "Ed", "Fay", "Gil", "Hal", "Ivy", "Jo"]
    out = []
    for i in range(n):
        visits = rnd.choice([0, 1, 2, 3, 4, 6, 12])
        purchases = [rnd.choice([40.0, 120.0, 300.0, 900.0]) for _ in range(rnd.choice([0, 0, 1, 3]))]
        profile = build_profile(
            now=NOW - rnd.choice([0, 0, 0, 90]) * 86_400,
            visits=visits,
            visit_spacing_days=rnd.choice([1, 2, 5]),
            purchases=purchases,
            categories={"shoes": rnd.choice([0, 1, 3])},
            traits={"first_name": rnd.choice(names), "country": rnd.choice(countries),
                    "ltv": rnd.choice([0, 150, 620, 820, 2400]), "plan": rnd.choice(["free", "pro"]),
                    "email": f"person{i:05d}@example.com"},
            consent=consent,
            anonymous_id=f"anon-{i:05d}",
            user_id=f"user-{i:05d}",
        )
        profile.id = f"{i:032x}"  # fixed ids: the experiment buckets are the same every run
        out.append(profile)
    return out


class Stats:
    def __init__(self, samples: Sequence[float], ops: int) -> None:
        self.samples = tuple(samples)
        self.median = statistics.median(samples)
        self.low = min(samples)
        self.high = max(samples)
        self.ops = ops

    def to_json(self) -> dict[str, Any]:
        return {"median_ns": round(self.median, 2), "min_ns": round(self.low, 2),
                "max_ns": round(self.high, 2), "repeats": len(self.samples),
                "recipients_per_repeat": self.ops,
                "samples_ns": [round(s, 2) for s in self.samples]}


def interleaved(runs: Mapping[str, Callable[[], int]], repeats: int) -> dict[str, Stats]:
    """Each ``run()`` renders every recipient once and returns how many; one warm-up pass,
    then ``repeats`` timed passes of each in turn (``gc.collect()`` before each)."""
    for run in runs.values():
        run()
    samples: dict[str, list[float]] = {name: [] for name in runs}
    counts: dict[str, int] = {}
    for _ in range(repeats):
        for name, run in runs.items():
            gc.collect()
            t0 = perf_counter_ns()
            n = run()
            samples[name].append((perf_counter_ns() - t0) / n)
            counts[name] = n
    return {name: Stats(s, counts[name]) for name, s in samples.items()}


def fmt_time(ns: float) -> str:
    if ns >= 1_000_000:
        return f"{ns / 1e6:.2f} ms"
    if ns >= 1_000:
        return f"{ns / 1e3:.1f} µs"
    return f"{ns:.0f} ns"


def fmt_rate(ns: float) -> str:
    return f"{1e9 / ns:,.0f}/s"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1,000 recipients, fewer repeats")
    parser.add_argument("--json", metavar="PATH", help="also write the numbers to PATH")
    args = parser.parse_args(argv)
    n = 1_000 if args.quick else 10_000
    repeats = 3 if args.quick else 5

    setup_django()
    from persona_email.sending import SENT, Campaign
    from persona_sdk import ConsentPolicy, Persona

    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print("persona-sdk email benchmark: personalized rendering per recipient")
    print(f"Python {platform.python_version()} ({platform.python_implementation()}) "
          f"on {platform.platform()}, {cpus} CPU(s) available")
    print(f"{'quick' if args.quick else 'full'} run: {n:,} recipients per repeat, {repeats} "
          f"repeats; load average {load:.2f} at start")
    sys.stdout.flush()

    t_build = time.perf_counter()
    persona = Persona(definitions=DEFINITIONS, policy=ConsentPolicy(mode="opt-in"))
    people = recipients(n)
    build_s = time.perf_counter() - t_build

    def campaign(track_links: bool = True) -> Campaign:
        return Campaign("spring-2026", template_string=TEMPLATE, subject="Spring, {{ recipient.traits.first_name|default:'friend' }}",
                        from_email="shop@example.com", persona=persona,
                        context={"products": PRODUCTS}, track_links=track_links,
                        clock=lambda: NOW)

    tracked, untracked = campaign(), campaign(track_links=False)
    # The 10,000 profiles stand for what a send streams from the database a batch at a time;
    # held in memory at once they would make every full collection walk them. Freeze them
    # (the collector stays enabled for everything the rendering allocates).
    gc.collect()
    gc.freeze()

    # Check the setup means what the note says (not a timing assertion): all three slots
    # decide several different variants across the recipients, and the output is clean.
    seen: dict[str, Counter[str]] = {s: Counter() for s in ("hero", "offer", "footer")}
    checked = people[:2000]
    for profile in checked:
        rendered = tracked.render(profile)
        if rendered.problems:
            sys.exit(f"setup error: {rendered.problems}")
        for slot in seen:
            seen[slot][rendered.variants[slot]] += 1
    for slot, counter in seen.items():
        if len(counter) < 3:
            sys.exit(f"setup error: slot {slot} decided only {dict(counter)}")
    sample = tracked.render(people[0])
    if "pzc=" not in sample.html or "\ue000" in sample.html or "{%" in sample.html:
        sys.exit("setup error: the rendered HTML is not what it should be")

    def render_all(c: Campaign) -> Callable[[], int]:
        def run(render: Any = c.render, people: Sequence[Any] = people) -> int:
            for profile in people:
                render(profile)
            return len(people)

        return run

    def pipeline() -> int:
        # what a send does per recipient before the SMTP transfer: the consent and address
        # gate, the render, the message, its MIME bytes
        c = tracked
        for profile in people:
            status, _, address = c.check(profile)
            if status != SENT:
                continue
            rendered = c.render(profile, email=address)
            c.message(rendered, address, profile.id).message().as_bytes()
        return len(people)

    t_start, cpu_start = time.perf_counter(), time.process_time()
    stats = interleaved(
        {"render": render_all(tracked), "render_no_link_tracking": render_all(untracked),
         "gate_render_mime": pipeline},
        repeats,
    )
    elapsed = time.perf_counter() - t_start
    cpu_share = (time.process_time() - cpu_start) / elapsed

    rows: list[tuple[str, str, str, str, str]] = []
    targets: list[dict[str, Any]] = []

    def rate_row(label: str, s: Stats, target: float | None = None, key: str = "") -> None:
        goal, word = "", ""
        if target is not None:
            ok = 1e9 / s.median >= target
            goal, word = f">= {target:,.0f}/s", "PASS" if ok else "MISS"
            targets.append({"name": key, "target": goal, "measured_per_s": round(1e9 / s.median),
                            "pass": ok})
        rows.append((label, f"{fmt_time(s.median)} = {fmt_rate(s.median)}",
                     f"{fmt_rate(s.high)}..{fmt_rate(s.low)}", goal, word))

    rows.append(("1. one recipient's email: 3 slots decided, HTML rendered (~2.4 KB), text part", "", "", "", ""))
    rate_row("   render, links tagged for click tracking", stats["render"], TARGET_PER_S,
             "render_10k_3_slots")
    rate_row("   render, no link tracking", stats["render_no_link_tracking"])
    rows.append(("2. + consent/address gate + EmailMultiAlternatives as MIME bytes", "", "", "", ""))
    rate_row("   everything before the SMTP transfer", stats["gate_render_mime"])

    head = ("measurement (per recipient)", "median", "spread (min..max)", "target", "")
    widths = [max(len(r[i]) for r in [*rows, head]) for i in range(5)]
    line = "  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)).rstrip()
    print()
    print(line)
    print("-" * len(line))
    for r in rows:
        print(r[0] if not r[1] else "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    print()
    mix = "; ".join(f"{slot}: " + ", ".join(f"{k} {v}" for k, v in c.most_common())
                    for slot, c in seen.items())
    print(f"variants over the first {len(checked):,} recipients: {mix}")
    missed = [t["name"] for t in targets if not t["pass"]]
    print(f"targets: {len(targets) - len(missed)}/{len(targets)} met"
          + (f" (missed: {', '.join(missed)})" if missed else "")
          + f"; building {n:,} profiles took {build_s:.1f} s, measuring {elapsed:.1f} s"
          + (f"; load average {os.getloadavg()[0]:.2f} at the end"
             if hasattr(os, "getloadavg") else ""))
    if cpu_share < 0.9:
        print(f"WARNING: this process got only {cpu_share:.0%} of a core while measuring (other "
              "load on the machine): medians are inflated; re-run when it is quiet.")
    if args.json:
        doc = {
            "python": platform.python_version(),
            "implementation": platform.python_implementation(),
            "platform": platform.platform(),
            "cpus": cpus,
            "loadavg_start": load,
            "quick": args.quick,
            "recipients": n,
            "elapsed_s": round(elapsed, 2),
            "cpu_share": round(cpu_share, 3),
            "results": {name: s.to_json() for name, s in stats.items()},
            "variants": {slot: dict(c) for slot, c in seen.items()},
            "targets": targets,
        }
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(doc, fh, indent=2)
            fh.write("\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python
"""Benchmark of persona-sdk's Wagtail adapter: a page with personalized blocks vs plain blocks.

Run with ``./dev bench`` (every ``bench/bench_*.py``) or directly::

    .venv/bin/python bench/bench_wagtail.py                      # SQLite + locmem (default)
    .venv/bin/python bench/bench_wagtail.py --backend postgres   # PostgreSQL + Redis
    .venv/bin/python bench/bench_wagtail.py --backend both       # one after the other
    .venv/bin/python bench/bench_wagtail.py --quick --json out.json

Measures, in one process, whole warm requests through Django's test client and the full
middleware stack: a Wagtail page with **3 PersonalizedBlocks** (3 targeted variants each)
over **20 segments** (12 defined in code, 8 saved in the admin) against the same page with
plain blocks showing the same content (time and SQL queries), with ``RECORD_PAGE_VIEWS`` off
and on; plus the per-request check that the admin segments are current (one cache read).
The project is configured in this script (the page models of ``tests/wagtail/testapp``).

This is a measurement, not a test: it prints medians next to the targets with PASS/MISS
words and always exits 0 (a non-zero exit means the benchmark's own setup is broken). Every
number is the median, over several repeats, of the per-request time of one repeat, with the
spread (min..max) of the repeats; the compared pages are measured interleaved, repeat by
repeat. See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
import types
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

perf_counter_ns = time.perf_counter_ns

HEADERS = {
    "User-Agent": "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15"
    " (KHTML, like Gecko) Version/17.0 Safari/605.1.15",
    "CF-IPCountry": "DE",
    "Referer": "https://www.google.com/",
    "Accept": "text/html,application/xhtml+xml",
}
QUERY = "?utm_source=newsletter&utm_campaign=summer-sale"
PERSONAL = "/personal/" + QUERY
PLAIN = "/plain/" + QUERY
TARGET_ADDED_MS = 1.5
TARGET_EXTRA_SQL = 0

#: 12 segments defined in code (PERSONA["DEFINITIONS"]) ...
CODE_SEGMENTS: dict[str, Any] = {
    "first-time": {"behaviour.visits": {"$lte": 1}},
    "returning": {"behaviour.visits": {"$gte": 2}},
    "frequent": {"behaviour.visits_30d": {"$gte": 3}},
    "high-value": {"rfm.monetary": {"$gte": 500}},
    "lapsed": {"behaviour.last_seen_days": {"$gte": 60}},
    "mobile": {"context.device.type": "mobile"},
    "germany": {"context.country": "DE"},
    "newsletter": {"context.utm.source": "newsletter"},
    "from-search": {"context.referrer_type": "search"},
    "shoe-fans": {"affinity.shoes": {"$gte": 2}},
    "big-basket": {"rfm.aov": {"$gte": 150}},
    "vip": {"$and": [{"$segment": "frequent"}, {"$segment": "high-value"}]},
}
#: ... and 8 saved in the Wagtail admin (persona_wagtail.models.Segment).
ADMIN_SEGMENTS: dict[str, Any] = {
    "pro-plan": {"traits.plan": "pro"},
    "mid-size": {"traits.company_size": {"$gte": 20, "$lt": 200}},
    "subscribers": {"events.Newsletter Signup.count": {"$gte": 1}},
    "cart-abandoner": {"events.Product Added.count_30d": {"$gte": 1}},
    "known": {"identity.known": True},
    "outdoor": {"affinity.outdoor": {"$gt": 0}},
    "eu-pro": {"$and": [{"$segment": "pro-plan"}, {"context.country": {"$in": ["DE", "FR"]}}]},
    "summer-campaign": {"context.utm.campaign": "summer-sale"},
}
#: the three blocks: (slot, [(variant key, segment), ...]); the visitor matches the 2nd each
BLOCKS: list[tuple[str, list[tuple[str, str]]]] = [
    ("hero", [("lapsed", "lapsed"), ("vip", "vip"), ("first", "first-time")]),
    ("promo", [("mobile", "mobile"), ("eu-pro", "eu-pro"), ("search", "from-search")]),
    ("banner", [("cart", "first-time"), ("summer", "summer-campaign"), ("known", "known")]),
]
EXPECTED = ["vip", "eu-pro", "summer"]


# --------------------------------------------------------------------------------------------
# Timing (the same method as bench_core.py and bench_django.py)
# --------------------------------------------------------------------------------------------


class Stats:
    """Per-operation nanoseconds: median of the repeats and their spread."""

    def __init__(self, samples: Sequence[float], ops: int) -> None:
        self.samples = tuple(samples)
        self.median = statistics.median(samples)
        self.low = min(samples)
        self.high = max(samples)
        self.ops_per_repeat = ops

    def to_json(self) -> dict[str, Any]:
        return {
            "median_ns": round(self.median, 2),
            "min_ns": round(self.low, 2),
            "max_ns": round(self.high, 2),
            "repeats": len(self.samples),
            "ops_per_repeat": self.ops_per_repeat,
            "samples_ns": [round(s, 2) for s in self.samples],
        }


def interleaved(
    runs: Mapping[str, tuple[Callable[[int], object], int]], repeats: int
) -> dict[str, Stats]:
    """Time each ``run(n)``, one repeat of each in turn, after one warm-up pass; a
    ``gc.collect()`` before every timed repeat (the collector stays enabled)."""
    for run, n in runs.values():
        run(max(2, n // 10))
    samples: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, (run, n) in runs.items():
            gc.collect()
            t0 = perf_counter_ns()
            run(n)
            samples[name].append((perf_counter_ns() - t0) / n)
    return {name: Stats(s, runs[name][1]) for name, s in samples.items()}


def paired(a: Stats, b: Stats) -> float:
    """The median over repeats of (a - b) within each repeat: the two were measured one
    right after the other, so load that comes and goes hits both sides of a pair alike."""
    return statistics.median(x - y for x, y in zip(a.samples, b.samples, strict=True))


def fmt_time(ns: float) -> str:
    if abs(ns) >= 1_000_000:
        return f"{ns / 1e6:.2f} ms"
    if abs(ns) >= 1_000:
        return f"{ns / 1e3:.1f} µs"
    return f"{ns:.0f} ns"


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


# --------------------------------------------------------------------------------------------
# The project: configured here, before Django starts
# --------------------------------------------------------------------------------------------

PG_DSN = "host=127.0.0.1 port=5432 user={user} dbname=postgres"


def _pg_admin(sql: str) -> None:
    import psycopg

    dsn = PG_DSN.format(user=os.environ.get("PGUSER", "postgres"))
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql)


class _NoMigrations(dict):  # type: ignore[type-arg]
    """Tables straight from the models (``migrate --run-syncdb``), as pytest-django's
    ``--nomigrations``: Wagtail's ~200 migrations would take most of a quick run."""

    def __contains__(self, item: object) -> bool:
        return True

    def __getitem__(self, item: str) -> None:
        return None


def configure(backend: str, db_name: str, cache_prefix: str) -> None:
    from django.conf import settings

    from tests.django_project.settings_wagtail import EXTRA_APPS_WAGTAIL

    if backend == "postgres":
        databases = {
            "default": {
                "ENGINE": "django.db.backends.postgresql",
                "NAME": db_name,
                "USER": os.environ.get("PGUSER", "postgres"),
                "HOST": "127.0.0.1",
                "PORT": "5432",
            }
        }
        caches = {
            "default": {
                "BACKEND": "django.core.cache.backends.redis.RedisCache",
                "LOCATION": "redis://127.0.0.1:6379/0",
                "KEY_PREFIX": cache_prefix,
            }
        }
    else:
        databases = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": db_name}}
        caches = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    settings.configure(
        SECRET_KEY="persona-bench-not-secret",
        DEBUG=False,
        ALLOWED_HOSTS=["*"],
        USE_TZ=True,
        TIME_ZONE="UTC",
        LANGUAGE_CODE="en",
        ROOT_URLCONF="bench_wagtail_urls",
        DEFAULT_AUTO_FIELD="django.db.models.BigAutoField",
        INSTALLED_APPS=[
            "django.contrib.auth",
            "django.contrib.contenttypes",
            "django.contrib.sessions",
            "django.contrib.messages",
            "django.contrib.staticfiles",
            "persona_django",
            *EXTRA_APPS_WAGTAIL,
        ],
        MIDDLEWARE=[
            "django.middleware.security.SecurityMiddleware",
            "django.contrib.sessions.middleware.SessionMiddleware",
            "django.middleware.common.CommonMiddleware",
            "django.middleware.csrf.CsrfViewMiddleware",
            "django.contrib.auth.middleware.AuthenticationMiddleware",
            "django.contrib.messages.middleware.MessageMiddleware",
            "persona_django.middleware.PersonaMiddleware",
        ],
        TEMPLATES=[
            {
                "BACKEND": "django.template.backends.django.DjangoTemplates",
                "APP_DIRS": True,
                "OPTIONS": {
                    "context_processors": [
                        "django.template.context_processors.request",
                        "django.contrib.auth.context_processors.auth",
                        "django.contrib.messages.context_processors.messages",
                    ]
                },
            }
        ],
        STATIC_URL="/static/",
        SESSION_ENGINE="django.contrib.sessions.backends.signed_cookies",
        DATABASES=databases,
        CACHES=caches,
        MIGRATION_MODULES=_NoMigrations(),
        WAGTAIL_SITE_NAME="persona bench",
        WAGTAILADMIN_BASE_URL="http://testserver",
        PERSONA={
            "CONSENT_MODE": "opt-in",
            "DEFINITIONS": {"segments": {n: {"rule": r} for n, r in CODE_SEGMENTS.items()}},
            "RECORD_PAGE_VIEWS": False,
            "DEBUG_EXPLAIN": False,
        },
        LOGGING={
            "version": 1,
            "disable_existing_loggers": False,
            "handlers": {"console": {"class": "logging.StreamHandler"}},
            "loggers": {
                "persona_django": {"handlers": ["console"], "level": "WARNING"},
                "persona_wagtail": {"handlers": ["console"], "level": "WARNING"},
            },
        },
    )


def install_urls() -> None:
    from django.urls import include, path
    from wagtail import urls as wagtail_urls

    module = types.ModuleType("bench_wagtail_urls")
    module.urlpatterns = [  # type: ignore[attr-defined]
        path("persona/", include("persona_django.urls")),
        path("", include(wagtail_urls)),
    ]
    sys.modules["bench_wagtail_urls"] = module


@contextlib.contextmanager
def backend_environment(backend: str) -> Iterator[tuple[str, str, str]]:
    """A throwaway database (and cache key prefix); yields (label, db name, cache prefix)."""
    if backend == "postgres":
        name = f"persona_bench_wagtail_{os.getpid()}"
        prefix = f"persona-bench-wagtail-{os.getpid()}"
        _pg_admin(f'DROP DATABASE IF EXISTS "{name}"')
        _pg_admin(f'CREATE DATABASE "{name}"')
        try:
            yield (
                f"PostgreSQL 127.0.0.1:5432 (database {name}) + Redis 127.0.0.1:6379 (RedisCache)",
                name,
                prefix,
            )
        finally:
            with contextlib.suppress(Exception):
                from django.db import connections

                connections.close_all()
            with contextlib.suppress(Exception):
                from django.core.cache import cache

                client = cache._cache.get_client(write=True)  # type: ignore[attr-defined]
                keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
                if keys:
                    client.delete(*keys)
            _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    else:
        with tempfile.TemporaryDirectory(prefix="persona-bench-wagtail-") as tmp:
            try:
                yield (
                    "SQLite (a file in a temporary directory) + LocMemCache",
                    str(Path(tmp) / "bench.sqlite3"),
                    "",
                )
            finally:
                with contextlib.suppress(Exception):
                    from django.db import connections

                    connections.close_all()


# --------------------------------------------------------------------------------------------
# Setup: tables, site, pages, segments, the visitor
# --------------------------------------------------------------------------------------------


def uid() -> str:
    import uuid

    return str(uuid.uuid4())


def hero(key: str, slot: str) -> dict[str, Any]:
    return {
        "type": "hero",
        "id": uid(),
        "value": {"heading": f"{slot}: {key}", "text": f"data-variant={key}"},
    }


def paragraph(i: int) -> dict[str, Any]:
    text = "<p>Free shipping on orders over 50 euros. Returns within 30 days, no questions.</p>"
    return {"type": "paragraph", "id": uid(), "value": text * (1 + i % 2)}


def personalized_block(slot: str, variants: list[tuple[str, str]]) -> dict[str, Any]:
    return {
        "type": "personalized",
        "id": uid(),
        "value": {
            "slot": slot,
            "variants": [
                {
                    "type": "item",
                    "id": uid(),
                    "value": {
                        "key": key,
                        "segment": segment,
                        "rule": "",
                        "weight": 1.0,
                        "content": [hero(key, slot)],
                    },
                }
                for key, segment in variants
            ],
            "default": [hero("default", slot)],
            "experiment": {"enabled": False, "holdout": 0.0, "version": "1"},
        },
    }


def build_site() -> None:
    from django.conf import settings
    from django.core.management import call_command
    from wagtail.models import Locale, Page, Site
    from wagtail.models.i18n import get_supported_content_language_variant

    from persona_wagtail.models import Segment
    from tests.wagtail.testapp.models import PersonalizedPage, PlainPage

    call_command("migrate", run_syncdb=True, verbosity=0, interactive=False)
    Locale.objects.get_or_create(
        language_code=get_supported_content_language_variant(settings.LANGUAGE_CODE)
    )
    root = Page.add_root(title="Root", slug="root")
    home = root.add_child(instance=Page(title="Home", slug="home"))
    Site.objects.create(
        hostname="localhost", port=80, root_page=home, is_default_site=True, site_name="bench"
    )
    for name, rule in ADMIN_SEGMENTS.items():
        segment = Segment(name=name, rule=rule)
        segment.full_clean()
        segment.save()
    personal, plain = [], []
    for i, (slot, variants) in enumerate(BLOCKS):
        personal += [paragraph(i), personalized_block(slot, variants)]
        plain += [paragraph(i), hero(EXPECTED[i], slot)]
    for model, slug, body in (
        (PersonalizedPage, "personal", personal),
        (PlainPage, "plain", plain),
    ):
        page = home.add_child(instance=model(title="Shop", slug=slug, body=json.dumps(body)))
        page.save_revision().publish()


def make_visitor() -> tuple[Any, str]:
    """A returning customer with consent (the bench_django visitor, plus a pro plan), saved
    through the adapter's store, and a test client holding their signed visitor cookie."""
    import secrets

    from django.core import signing
    from django.test import Client

    from persona_django.conf import get_config
    from persona_django.request import COOKIE_SALT
    from persona_django.runtime import get_persona
    from persona_sdk.testing import build_profile

    visitor_id = secrets.token_hex(16)
    profile = build_profile(
        now=time.time(),
        visits=6,
        visit_spacing_days=4,
        page_views=14,
        purchases=[120.0, 300.0, 400.0],
        categories={"shoes": 5, "outdoor": 2},
        events={"Product Added": 2, "Newsletter Signup": 1},
        traits={"ltv": 820, "plan": "pro", "company_size": 40},
        consent={"personalization": "granted", "analytics": "granted"},
        anonymous_id=visitor_id,
    )
    get_persona().store.save(profile)
    name = get_config()["COOKIE_NAME"]
    client = Client()
    client.cookies[name] = signing.get_cookie_signer(salt=name + COOKIE_SALT).sign(visitor_id)
    return client, visitor_id


def variants_in(html: str) -> list[str]:
    return re.findall(r"data-variant=([a-z0-9-]+)", html)


def expect(label: str, html: str, expected: Sequence[str]) -> None:
    got = variants_in(html)
    if got != list(expected):
        sys.exit(f"setup error: {label} shows {got}, expected {list(expected)}")


# --------------------------------------------------------------------------------------------
# Measurements
# --------------------------------------------------------------------------------------------


def requests_run(client: Any, path: str) -> Callable[[int], None]:
    def run(n: int) -> None:
        get = client.get
        response = None
        for _ in range(n):
            response = get(path, headers=HEADERS)
        if response is None or response.status_code != 200:
            sys.exit(f"setup error: GET {path} answered {getattr(response, 'status_code', None)}")

    return run


def count_queries(fn: Callable[[], object]) -> dict[str, Any]:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as ctx:
        fn()
    sql = [q["sql"] for q in ctx.captured_queries]
    kinds = [s.lstrip().split(None, 1)[0].upper() if s.strip() else "" for s in sql]
    return {
        "count": len(sql),
        "reads": sum(k == "SELECT" for k in kinds),
        "writes": sum(k in ("INSERT", "UPDATE", "DELETE") for k in kinds),
        "sql": [s[:300] for s in sql],
    }


def bench(args: argparse.Namespace, label: str) -> int:
    import django
    from django.conf import settings
    from django.test import override_settings

    quick = args.quick
    repeats = 5 if quick else 9
    n = 30 if quick else 200
    n_check = 2_000 if quick else 20_000
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    import wagtail

    print("persona-sdk Wagtail adapter benchmark")
    print(
        f"Python {platform.python_version()} ({platform.python_implementation()}) on "
        f"{platform.platform()}, {cpus} CPU(s) available; Django {django.get_version()}, "
        f"Wagtail {wagtail.__version__}"
    )
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"backend: {label}")
    print(
        f"{'quick' if quick else 'full'} run: {repeats} repeats of {n} requests per page; "
        f"load average {load:.2f} at start"
    )
    sys.stdout.flush()

    t_setup = time.perf_counter()
    build_site()
    client, _ = make_visitor()
    from persona_django.runtime import get_persona
    from persona_wagtail import registry

    for path in (PERSONAL, PLAIN):  # warm: the profile into the cache, the slots built
        response = client.get(path, headers=HEADERS)
        if response.status_code != 200:
            sys.exit(f"setup error: GET {path} answered {response.status_code}")
        expect(path, response.content.decode(), EXPECTED)
    persona = get_persona()
    n_segments = len(persona.segments)
    admin = sum(1 for s in persona.segments if s.source == "admin")
    if (n_segments, admin) != (20, 8):
        sys.exit(f"setup error: {n_segments} segments ({admin} admin), expected 20 (8)")
    setup_s = time.perf_counter() - t_setup

    t_start, cpu_start = time.perf_counter(), time.process_time()
    results: dict[str, Stats] = {}
    queries: dict[str, dict[str, Any]] = {}

    def q(name: str, path: str) -> None:
        client.get(path, headers=HEADERS)
        queries[name] = count_queries(lambda: client.get(path, headers=HEADERS))

    results.update(
        interleaved(
            {
                "plain": (requests_run(client, PLAIN), n),
                "personal": (requests_run(client, PERSONAL), n),
            },
            repeats,
        )
    )
    q("plain", PLAIN)
    q("personal", PERSONAL)

    with override_settings(PERSONA={**settings.PERSONA, "RECORD_PAGE_VIEWS": True}):
        results.update(
            interleaved(
                {
                    "plain_rpv": (requests_run(client, PLAIN), n),
                    "personal_rpv": (requests_run(client, PERSONAL), n),
                },
                repeats,
            )
        )
        q("plain_rpv", PLAIN)
        q("personal_rpv", PERSONAL)
        expect("page views on", client.get(PERSONAL, headers=HEADERS).content.decode(), EXPECTED)

    # the per-request "are the admin segments current?" check: by default at most one cache
    # read a second per process; with VERSION_CHECK_SECONDS = 0, one per request
    persona = registry.ensure_current()

    class _RP:
        def __init__(self) -> None:
            self.persona = persona

    def check_run(count: int) -> None:
        for _ in range(count):
            registry.ensure_current(rp=_RP())

    results.update(interleaved({"registry_check": (check_run, n_check)}, repeats))
    queries["registry_check"] = count_queries(lambda: check_run(10))
    with override_settings(PERSONA_WAGTAIL={"VERSION_CHECK_SECONDS": 0}):
        results.update(interleaved({"registry_check_read": (check_run, n_check // 4)}, repeats))
        queries["registry_check_read"] = count_queries(lambda: check_run(10))

    # where it goes: the page body's StreamField conversion and the blocks' render, alone
    results.update(breakdown(client, repeats, n_check // 10))

    elapsed = time.perf_counter() - t_start
    cpu_share = (time.process_time() - cpu_start) / elapsed
    report(args, results, queries, label, load, cpus, elapsed, setup_s, cpu_share)
    return 0


def breakdown(client: Any, repeats: int, n: int) -> dict[str, Stats]:
    """The parts of the added time, measured without the client and the middleware:
    converting the page body (``StreamField.to_python`` and reading every top-level value)
    and rendering the three places, with a fresh ``request.persona`` per render (its profile
    load, request context and decisions happen inside, as in a request) or one whose
    decisions are made (the blocks' own cost)."""
    from django.contrib.auth.models import AnonymousUser
    from django.test import RequestFactory

    from persona_django.conf import get_config
    from persona_django.request import RequestPersona
    from persona_django.runtime import get_persona
    from tests.wagtail.testapp.models import PersonalizedPage, PlainPage

    persona, config = get_persona(), get_config()
    pages = {
        "personal": PersonalizedPage.objects.get(slug="personal"),
        "plain": PlainPage.objects.get(slug="plain"),
    }
    raw = {k: json.dumps(list(p.body.raw_data)) for k, p in pages.items()}
    fields = {k: type(p)._meta.get_field("body") for k, p in pages.items()}
    places = {k: [(c.block, c.value) for c in fields[k].to_python(raw[k])] for k in pages}
    places["personal"] = [(b, v) for b, v in places["personal"] if b.name == "personalized"]
    places["plain"] = [(b, v) for b, v in places["plain"] if b.name == "hero"]
    factory = RequestFactory(headers=HEADERS)
    cookies = {k: v.value for k, v in client.cookies.items()}

    def request() -> Any:
        r = factory.get(PERSONAL)
        r.COOKIES.update(cookies)
        r.user = AnonymousUser()
        r.persona = RequestPersona(r, persona, config)
        return r

    def convert(kind: str) -> Callable[[int], None]:
        field, text = fields[kind], raw[kind]

        def run(count: int) -> None:
            for _ in range(count):
                for child in field.to_python(text):
                    child.value  # noqa: B018 - converting is what is measured

        return run

    def render(kind: str, fresh: bool) -> Callable[[int], None]:
        blocks = places[kind]

        def run(count: int) -> None:
            if fresh:
                requests = [request() for _ in range(count)]
            else:
                one = request()
                for b, v in blocks:
                    b.render(v, {"request": one})
                requests = [one] * count
            t0 = perf_counter_ns()
            for r in requests:
                context = {"request": r}
                for b, v in blocks:
                    b.render(v, context)
            run.elapsed = perf_counter_ns() - t0  # type: ignore[attr-defined]

        return run

    out = interleaved(
        {"convert_plain": (convert("plain"), n), "convert_personal": (convert("personal"), n)},
        repeats,
    )
    runs = {
        "render_plain": (render("plain", False), n),
        "render_personal_fresh": (render("personal", True), n),
        "render_personal_memo": (render("personal", False), n),
    }
    for run, count in runs.values():
        run(max(2, count // 10))
    samples: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, (run, count) in runs.items():
            gc.collect()
            run(count)
            samples[name].append(run.elapsed / count)  # type: ignore[attr-defined]
    out.update({name: Stats(s, runs[name][1]) for name, s in samples.items()})
    return out


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


def report(
    args: argparse.Namespace,
    r: dict[str, Stats],
    queries: dict[str, dict[str, Any]],
    label: str,
    load: float,
    cpus: int | None,
    elapsed: float,
    setup_s: float,
    cpu_share: float,
) -> None:
    rows: list[tuple[str, ...]] = []
    targets: list[dict[str, Any]] = []

    def sql(name: str) -> str:
        info = queries.get(name)
        if info is None:
            return ""
        if not info["writes"]:
            return str(info["count"])
        return f"{info['count']} ({info['reads']}r {info['writes']}w)"

    def timing(text: str, name: str) -> None:
        s = r[name]
        rows.append(
            (text, fmt_time(s.median), f"{fmt_time(s.low)}..{fmt_time(s.high)}", sql(name), "", "")
        )

    def target(text: str, value: str, goal: str, ok: bool, key: str, measured: float) -> None:
        targets.append({"name": key, "target": goal, "measured": round(measured, 4), "pass": ok})
        rows.append((text, value, "", "", goal, verdict(ok)))

    def section(title: str) -> None:
        rows.append((title, "", "", "", "", ""))

    section("1. warm request, 20 segments (12 code + 8 admin), test Client, full middleware")
    section('   RECORD_PAGE_VIEWS = False ("added": median of the per-repeat differences)')
    timing("   same page, plain blocks", "plain")
    timing("   3 x PersonalizedBlock (3 variants each)", "personal")
    added = paired(r["personal"], r["plain"])
    target(
        "   added by personalizing",
        fmt_time(added),
        f"<= {TARGET_ADDED_MS:.2f} ms",
        added <= TARGET_ADDED_MS * 1e6,
        "added_per_request_ms",
        added / 1e6,
    )
    extra = queries["personal"]["count"] - queries["plain"]["count"]
    target(
        "   extra SQL queries (personalized - plain)",
        str(extra),
        str(TARGET_EXTRA_SQL),
        extra <= TARGET_EXTRA_SQL,
        "extra_sql_queries",
        extra,
    )
    section("   RECORD_PAGE_VIEWS = True (each request records a page view: a profile write)")
    timing("   same page, plain blocks", "plain_rpv")
    timing("   3 x PersonalizedBlock", "personal_rpv")
    added_rpv = paired(r["personal_rpv"], r["plain_rpv"])
    rows.append(("   added by personalizing", fmt_time(added_rpv), "", "", "", ""))
    extra_rpv = queries["personal_rpv"]["count"] - queries["plain_rpv"]["count"]
    rows.append(("   extra SQL queries", str(extra_rpv), "", "", "", ""))
    section("2. the per-request check that the admin segments are current")
    timing("   ensure_current, default (<= 1 cache read/s)", "registry_check")
    timing("   ensure_current, a cache read per request", "registry_check_read")
    section("3. where the added time goes (no client, no middleware)")
    timing("   page body to_python, plain", "convert_plain")
    timing("   page body to_python, personalized", "convert_personal")
    timing("   3 plain hero blocks render", "render_plain")
    timing("   3 PersonalizedBlocks, fresh request.persona", "render_personal_fresh")
    timing("   3 PersonalizedBlocks, decisions made", "render_personal_memo")
    parts = paired(r["convert_personal"], r["convert_plain"]) + paired(
        r["render_personal_fresh"], r["render_plain"]
    )
    rows.append(("   added by these two parts", fmt_time(parts), "", "", "", ""))

    head = ("measurement", "median", "spread (min..max)", "SQL", "target", "")
    widths = [max(len(h), *(len(row[i]) for row in rows if row[1])) for i, h in enumerate(head)]
    line = "  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)).rstrip()
    print()
    print(line)
    print("-" * len(line))
    for row in rows:
        if not row[1]:
            print(row[0])
        else:
            print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    print()
    missed = [t["name"] for t in targets if not t["pass"]]
    print(
        f"targets: {len(targets) - len(missed)}/{len(targets)} met"
        + (f" (missed: {', '.join(missed)})" if missed else "")
        + f"; setup {setup_s:.1f} s, measuring {elapsed:.1f} s"
        + (
            f"; load average {os.getloadavg()[0]:.2f} at the end"
            if hasattr(os, "getloadavg")
            else ""
        )
    )
    if cpu_share < 0.9:
        print(
            f"WARNING: this process got only {cpu_share:.0%} of a core while measuring (other "
            "load on the machine): medians are inflated; the fastest repeats (left end of the "
            "spread) are closer to an idle machine. Re-run when it is quiet."
        )
    if args.json:
        import wagtail

        doc = {
            "python": platform.python_version(),
            "implementation": platform.python_implementation(),
            "platform": platform.platform(),
            "cpus": cpus,
            "backend": label,
            "wagtail": wagtail.__version__,
            "loadavg_start": load,
            "quick": args.quick,
            "elapsed_s": round(elapsed, 2),
            "setup_s": round(setup_s, 2),
            "cpu_share": round(cpu_share, 3),
            "results": {name: s.to_json() for name, s in r.items()},
            "queries": queries,
            "targets": targets,
        }
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(doc, fh, indent=2)
            fh.write("\n")
        print(f"wrote {args.json}")


# --------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="~10x fewer iterations (CI)")
    parser.add_argument("--json", metavar="PATH", help="also write the numbers to PATH")
    parser.add_argument(
        "--backend",
        choices=("sqlite", "postgres", "both"),
        default="sqlite",
        help="sqlite + locmem (default) or PostgreSQL + Redis on 127.0.0.1",
    )
    args = parser.parse_args(argv)
    if args.backend == "both":  # Django settings are per process: one child per backend
        code = 0
        for backend in ("sqlite", "postgres"):
            cmd = [sys.executable, __file__, "--backend", backend] + ["--quick"] * args.quick
            if args.json:
                stem, dot, ext = args.json.rpartition(".")
                cmd += ["--json", f"{stem}.{backend}.{ext}" if dot else f"{args.json}.{backend}"]
            print(f"== --backend {backend}", flush=True)
            code = subprocess.call(cmd) or code
        return code
    with backend_environment(args.backend) as (label, db_name, prefix):
        configure(args.backend, db_name, prefix)
        import django

        django.setup()
        install_urls()
        return bench(args, label)


if __name__ == "__main__":
    sys.exit(main())

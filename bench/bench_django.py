#!/usr/bin/env python
"""Benchmarks of persona-sdk's Django adapter: whole requests through Django's test client.

Run with ``./dev bench`` (every ``bench/bench_*.py``) or directly::

    .venv/bin/python bench/bench_django.py                       # SQLite + locmem (default)
    .venv/bin/python bench/bench_django.py --backend postgres    # PostgreSQL + Redis
    .venv/bin/python bench/bench_django.py --backend both        # one after the other
    .venv/bin/python bench/bench_django.py --quick --json out.json

Measures, in one process, through the full middleware stack of a small standalone project
(``bench/django_bench_project``): a warm request for a page with three server-side
``{% personalize %}`` slots over 20 segments against the same page with plain blocks (time
and SQL queries, with ``RECORD_PAGE_VIEWS`` off and on), the render of a template with one
personalized block against the same template with a plain one, and, when Wagtail and
wagtail-personalisation are installed, the most equivalent page built with
wagtail-personalisation, measured interleaved with persona's. ``--profile`` adds a cProfile
of the personalized request.

This is a measurement, not a test: it prints medians next to the targets with PASS/MISS
words and always exits 0 (a non-zero exit means the benchmark's own setup is broken). Every
number is the median, over several repeats, of the per-request (per-render) time of one
repeat, with the spread (min..max) of the repeats; compared measurements are interleaved
repeat by repeat. See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

perf_counter_ns = time.perf_counter_ns

#: The benchmark visitor's request: a Mac (Safari) in Germany, from a Google search, on a
#: newsletter link.
QUERY = "?utm_source=newsletter&utm_campaign=summer-sale"
HEADERS = {
    "User-Agent": "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15"
    " (KHTML, like Gecko) Version/17.0 Safari/605.1.15",
    "CF-IPCountry": "DE",
    "Referer": "https://www.google.com/",
    "Accept": "text/html,application/xhtml+xml",
    "Accept-Language": "de-DE,de;q=0.9,en;q=0.8",
}
PERSONALIZED = "/p/personalized/" + QUERY
PLAIN = "/p/plain/" + QUERY
WT_PLAIN = "/wt/bench-plain/" + QUERY
WT_STREAM = "/wt/bench-stream/" + QUERY
WT_TAG = "/wt/bench-tag/" + QUERY
SLOT_NAMES = ("hero", "promo", "banner")


# --------------------------------------------------------------------------------------------
# Timing (the same method as bench_core.py)
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
    """Time each ``run(n)`` (``n`` operations back to back), one repeat of each in turn.

    ``runs`` maps a name to ``(run, n)``: a slow page gets fewer requests per repeat than a
    fast one, every page gets the same number of repeats. One warm-up pass first (a tenth of
    ``n``, at least 1); a ``gc.collect()`` before every timed repeat (the collector stays
    enabled while timing: real requests pay for it too).
    """
    for run, n in runs.values():
        run(max(1, n // 10))
    samples: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, (run, n) in runs.items():
            gc.collect()
            t0 = perf_counter_ns()
            run(n)
            samples[name].append((perf_counter_ns() - t0) / n)
    return {name: Stats(s, runs[name][1]) for name, s in samples.items()}


def fmt_time(ns: float) -> str:
    if ns >= 1_000_000:
        return f"{ns / 1e6:.2f} ms"
    if ns >= 1_000:
        return f"{ns / 1e3:.1f} µs"
    return f"{ns:.0f} ns"


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


# --------------------------------------------------------------------------------------------
# Backends: the database and cache are chosen before Django starts
# --------------------------------------------------------------------------------------------

PG_DSN = "host=127.0.0.1 port=5432 user={user} dbname=postgres"


def _pg_admin(sql: str) -> None:
    import psycopg

    dsn = PG_DSN.format(user=os.environ.get("PGUSER", "postgres"))
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql)


@contextlib.contextmanager
def backend_environment(backend: str) -> Iterator[str]:
    """Set the environment the bench project's settings read; create (and afterwards drop)
    the throwaway database. Yields a description of the backend."""
    os.environ["PERSONA_BENCH_BACKEND"] = backend
    if backend == "postgres":
        name = f"persona_bench_{os.getpid()}"
        os.environ["PERSONA_BENCH_DB"] = name
        os.environ["PERSONA_BENCH_CACHE_PREFIX"] = f"persona-bench-{os.getpid()}"
        _pg_admin(f'DROP DATABASE IF EXISTS "{name}"')
        _pg_admin(f'CREATE DATABASE "{name}"')
        try:
            yield f"PostgreSQL 127.0.0.1:5432 (database {name}) + Redis 127.0.0.1:6379 (RedisCache)"
        finally:
            with contextlib.suppress(Exception):
                from django.db import connections

                connections.close_all()
            with contextlib.suppress(Exception):
                _redis_cleanup(os.environ["PERSONA_BENCH_CACHE_PREFIX"])
            _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    else:
        with tempfile.TemporaryDirectory(prefix="persona-bench-") as tmp:
            os.environ["PERSONA_BENCH_DB"] = str(Path(tmp) / "bench.sqlite3")
            try:
                yield "SQLite (a file in a temporary directory) + LocMemCache"
            finally:
                with contextlib.suppress(Exception):
                    from django.db import connections

                    connections.close_all()


def _redis_cleanup(prefix: str) -> None:
    """Delete this run's keys (only ours: the Redis database may be shared)."""
    from django.core.cache import cache

    client = cache._cache.get_client(write=True)  # type: ignore[attr-defined]
    keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
    if keys:
        client.delete(*keys)


def wagtail_importable() -> bool:
    return all(
        importlib.util.find_spec(m) is not None for m in ("wagtail", "wagtail_personalisation")
    )


# --------------------------------------------------------------------------------------------
# Setup: database, the persona visitor, the wagtail-personalisation site and visitor
# --------------------------------------------------------------------------------------------


def create_tables() -> None:
    from django.core.management import call_command

    # MIGRATION_MODULES disables every app's migrations: tables come from the models.
    call_command("migrate", run_syncdb=True, verbosity=0, interactive=False)


def persona_visitor() -> tuple[Any, str, Any]:
    """A returning customer with consent, saved through the adapter's profile store, and a
    test client holding their signed visitor cookie. Returns (client, visitor id, profile).

    The history is built with the real event path (``build_profile`` applies events), then
    the profile is saved once: 6 visits in 3 weeks, 14 page views, 3 orders (820), product
    views, an add-to-cart, a newsletter signup, CRM traits, consent to personalization and
    analytics (as the consent banner records it)."""
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
    # What response.set_signed_cookie(name, visitor_id, salt=COOKIE_SALT) writes.
    client.cookies[name] = signing.get_cookie_signer(salt=name + COOKIE_SALT).sign(visitor_id)
    return client, visitor_id, profile


def variants_in(html: str) -> list[str]:
    import re

    return re.findall(r'data-variant="([^"]+)"', html)


def expect_variants(label: str, html: str, expected: Sequence[str]) -> None:
    got = variants_in(html)
    if got != list(expected):
        sys.exit(f"setup error: {label} shows variants {got}, expected {list(expected)}")


class WagtailSide:
    """The wagtail-personalisation site: pages, 20 segments with rules, a visitor."""

    def __init__(self) -> None:
        self.client: Any = None
        self.tag_variants: list[str] = []
        self.members: list[str] = []  # the visitor's segments, as wagtail-personalisation sees
        self.persona_members: list[str] = []  # and as persona sees them

    def build(self) -> None:
        from django.conf import settings
        from django.test import Client
        from django_bench_project.benchpages.models import SimplePage, StreamPage, TagPage
        from django_bench_project.definitions import WAGTAIL_HISTORY
        from wagtail.models import Locale, Page, Site
        from wagtail.models.i18n import get_supported_content_language_variant

        # What Wagtail's data migrations would create.
        Locale.objects.get_or_create(
            language_code=get_supported_content_language_variant(settings.LANGUAGE_CODE)
        )
        root = Page.add_root(title="Root", slug="root")
        home = root.add_child(instance=SimplePage(title="Home", slug="home"))
        Site.objects.create(hostname="localhost", port=80, root_page=home, is_default_site=True,
                            site_name="bench")
        self.pages = {"home": home}
        for slug in WAGTAIL_HISTORY:
            if slug != "home":
                self.pages[slug] = home.add_child(instance=SimplePage(title=slug, slug=slug))
        self.segments = self._segments()
        from django_bench_project.definitions import SLOTS, VARIANT_CONTENT

        def place(slot: str, personalised: bool) -> list[dict[str, Any]]:
            blocks = []
            by_key = {v[0]: v for v in VARIANT_CONTENT[slot]}
            keys = [k for k, _ in SLOTS[slot]] if personalised else [_expected(slot)]
            for key in keys:
                _, heading, text, link, cta = by_key[key]
                value = {"slot": slot, "variant": key, "heading": heading, "text": text,
                         "link": link, "cta": cta}
                if personalised:
                    segment = dict(SLOTS[slot])[key]
                    value["segment"] = str(self.segments[segment].pk)
                blocks.append({"type": "personalised" if personalised else "plain",
                               "value": value})
            return blocks

        for slug, personalised in (("bench-plain", False), ("bench-stream", True)):
            home.add_child(instance=StreamPage(
                title="Shop", slug=slug,
                **{slot: place(slot, personalised) for slot in SLOT_NAMES},
            ))
        home.add_child(instance=TagPage(title="Shop", slug="bench-tag"))

        # The visitor's history: page visits recorded in their (signed-cookie) session.
        self.client = Client()
        for slug, count in WAGTAIL_HISTORY.items():
            url = "/wt/" if slug == "home" else f"/wt/{slug}/"
            for _ in range(count):
                response = self.client.get(url, headers=HEADERS)
                if response.status_code != 200:
                    raise RuntimeError(f"GET {url} answered {response.status_code}")

    def _segments(self) -> dict[str, Any]:
        import datetime as dt

        from django_bench_project.definitions import WAGTAIL_SEGMENTS
        from wagtail_personalisation.models import Segment
        from wagtail_personalisation.rules import (
            DayRule,
            DeviceRule,
            OriginCountryRule,
            QueryRule,
            ReferralRule,
            TimeRule,
            VisitCountRule,
        )

        out = {}
        for name, (match_any, rules) in WAGTAIL_SEGMENTS.items():
            # Defaults otherwise: enabled, dynamic, not persistent, no randomisation.
            segment = Segment.objects.create(name=name, match_any=match_any)
            for spec in rules:
                kind, *args = spec
                if kind == "visits":
                    slug, operator, count = args
                    VisitCountRule.objects.create(segment=segment, counted_page=self.pages[slug],
                                                  operator=operator, count=count)
                elif kind == "country":
                    OriginCountryRule.objects.create(segment=segment, country=args[0])
                elif kind == "device":
                    DeviceRule.objects.create(segment=segment, **{args[0]: True})
                elif kind == "query":
                    QueryRule.objects.create(segment=segment, parameter=args[0], value=args[1])
                elif kind == "referral":
                    ReferralRule.objects.create(segment=segment, regex_string=args[0])
                elif kind == "days":
                    DayRule.objects.create(segment=segment, mon=True, tue=True, wed=True,
                                           thu=True, fri=True)
                elif kind == "time":
                    TimeRule.objects.create(
                        segment=segment,
                        start_time=dt.time.fromisoformat(args[0]),
                        end_time=dt.time.fromisoformat(args[1]),
                    )
                else:
                    raise ValueError(kind)
            out[name] = segment
        return out


def _expected(slot: str) -> str:
    from django_bench_project.definitions import EXPECTED

    return EXPECTED[slot]


@contextlib.contextmanager
def personalisation_hooks(enabled: bool) -> Iterator[None]:
    """With ``enabled=False``, take wagtail-personalisation's ``before_serve_page`` hooks
    (visit counting, segment refresh, page variants) out of Wagtail's hook registry for the
    duration: the baseline "Wagtail page without personalisation" in the same process."""
    if enabled:
        yield
        return
    from wagtail import hooks

    hooks.search_for_hooks()
    registered = hooks._hooks.get("before_serve_page", [])
    ours = [h for h in registered if h[0].__module__.startswith("wagtail_personalisation")]
    for h in ours:
        registered.remove(h)
    try:
        yield
    finally:
        registered.extend(ours)


# --------------------------------------------------------------------------------------------
# Measurements
# --------------------------------------------------------------------------------------------


def requests_run(client: Any, path: str, hooks: bool = True) -> Callable[[int], None]:
    def run(n: int) -> None:
        with personalisation_hooks(hooks):
            get = client.get
            response = None
            for _ in range(n):
                response = get(path, headers=HEADERS)
        if response is None or response.status_code != 200:
            sys.exit(f"setup error: GET {path} answered "
                     f"{getattr(response, 'status_code', None)}")

    return run


def count_queries(fn: Callable[[], object]) -> dict[str, Any]:
    """SQL statements run by ``fn()`` on the default database (counted outside the timing:
    capturing queries forces Django's debug cursor): all of them, and how many read, wrote,
    or only opened/closed a transaction (BEGIN, COMMIT, savepoints)."""
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
        "transaction": sum(k in ("BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE")
                           for k in kinds),
        "sql": [s[:300] for s in sql],
    }


def profile_request(client: Any, path: str, n: int) -> str:
    import cProfile
    import io
    import pstats

    prof = cProfile.Profile()
    prof.enable()
    for _ in range(n):
        client.get(path, headers=HEADERS)
    prof.disable()
    out = io.StringIO()
    stats = pstats.Stats(prof, stream=out)
    stats.sort_stats("cumulative").print_stats(35)
    stats.sort_stats("tottime").print_stats(20)
    return out.getvalue()


def bench(args: argparse.Namespace, backend_label: str, wagtail_error: str | None) -> int:
    import django

    django.setup()
    from django.conf import settings
    from django.contrib.auth.models import AnonymousUser
    from django.template import Context
    from django.template.loader import get_template
    from django.test import RequestFactory, override_settings
    from django_bench_project.context_processors import NAV, PRODUCTS
    from django_bench_project.definitions import EXPECTED

    from persona_django.conf import get_config
    from persona_django.request import RequestPersona
    from persona_django.runtime import get_persona

    quick = args.quick
    repeats = 5 if quick else 9
    scale = 10 if quick else 1
    n_fast = 100 // scale  # persona pages: requests per repeat
    n_wagtail = 6 if not quick else 1  # Wagtail pages (~50x slower)
    n_page_render = 200 // scale  # renders of the whole page per repeat
    n_block_render = 1000 // scale  # renders of the block alone

    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print("persona-sdk Django adapter benchmarks")
    print(f"Python {platform.python_version()} ({platform.python_implementation()}) "
          f"on {platform.platform()}, {cpus} CPU(s) available; Django {django.get_version()}")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"backend: {backend_label}")
    print(f"{'quick' if quick else 'full'} run: {repeats} repeats; per repeat {n_fast} requests "
          f"(persona pages), {n_wagtail} (Wagtail pages), {n_page_render} page renders, "
          f"{n_block_render} block renders; load average {load:.2f} at start")
    sys.stdout.flush()

    t_setup = time.perf_counter()
    create_tables()
    client, _, _ = persona_visitor()
    expected = [EXPECTED[s] for s in SLOT_NAMES]

    wagtail: WagtailSide | None = None
    wagtail_info: dict[str, Any] = {"installed": False, "error": wagtail_error}
    if settings.WAGTAIL and wagtail_error is None:
        try:
            import wagtail as wagtail_pkg

            wagtail = WagtailSide()
            wagtail.build()
            from importlib.metadata import version

            wagtail_info = {"installed": True, "error": None,
                            "wagtail": wagtail_pkg.__version__,
                            "wagtail_personalisation": version("wagtail-personalisation")}
        except Exception as exc:  # report exactly why, and carry on with persona's side
            import traceback

            wagtail = None
            wagtail_info = {"installed": True,
                            "error": "".join(traceback.format_exception_only(exc)).strip()}
            traceback.print_exc()

    # Warm: the first request loads the profile from the database into the cache.
    for path, want in ((PERSONALIZED, expected), (PLAIN, expected)):
        response = client.get(path, headers=HEADERS)
        if response.status_code != 200:
            sys.exit(f"setup error: GET {path} answered {response.status_code}")
        expect_variants(path, response.content.decode(), want)
    if wagtail is not None:
        html = wagtail.client.get(WT_STREAM, headers=HEADERS).content.decode()
        expect_variants(WT_STREAM, html, expected)
        with personalisation_hooks(False):
            html = wagtail.client.get(WT_PLAIN, headers=HEADERS).content.decode()
        expect_variants(WT_PLAIN, html, expected)
        wagtail.tag_variants = variants_in(
            wagtail.client.get(WT_TAG, headers=HEADERS).content.decode())
        wagtail.client.get(WT_STREAM, headers=HEADERS)
        wagtail.members = sorted(s["encoded_name"] for s in wagtail.client.session["segments"])
        probe = RequestFactory().get(PERSONALIZED, headers=HEADERS)
        probe.COOKIES.update({k: v.value for k, v in client.cookies.items()})
        probe.user = AnonymousUser()
        rp = RequestPersona(probe, get_persona(), get_config())
        wagtail.persona_members = sorted(get_persona().segments.evaluate_all(rp.subject))
    setup_s = time.perf_counter() - t_setup

    t_start, cpu_start = time.perf_counter(), time.process_time()
    results: dict[str, Stats] = {}
    queries: dict[str, dict[str, Any]] = {}

    def q(name: str, c: Any, path: str, hooks: bool = True) -> None:
        def one() -> None:
            with personalisation_hooks(hooks):
                c.get(path, headers=HEADERS)

        one()  # warm (e.g. after a settings switch)
        queries[name] = count_queries(one)

    # -- 1 and 3, RECORD_PAGE_VIEWS = False ---------------------------------------------------
    runs: dict[str, tuple[Callable[[int], object], int]] = {
        "plain": (requests_run(client, PLAIN), n_fast),
        "personalized": (requests_run(client, PERSONALIZED), n_fast),
    }
    if wagtail is not None:
        runs["wagtail_plain"] = (requests_run(wagtail.client, WT_PLAIN, hooks=False), n_wagtail)
        runs["wagtail_stream"] = (requests_run(wagtail.client, WT_STREAM), n_wagtail)
        runs["wagtail_tag"] = (requests_run(wagtail.client, WT_TAG), n_wagtail)
    with override_settings(PERSONA={**settings.PERSONA, "RECORD_PAGE_VIEWS": False}):
        results.update(interleaved(runs, repeats))
        q("plain", client, PLAIN)
        q("personalized", client, PERSONALIZED)
        if wagtail is not None:
            q("wagtail_plain", wagtail.client, WT_PLAIN, hooks=False)
            q("wagtail_stream", wagtail.client, WT_STREAM)
            q("wagtail_tag", wagtail.client, WT_TAG)
        profile_text = (profile_request(client, PERSONALIZED, n_fast)
                        if args.profile else None)

    # -- 1 and 3, RECORD_PAGE_VIEWS = True ----------------------------------------------------
    runs_rpv: dict[str, tuple[Callable[[int], object], int]] = {
        "plain_rpv": (requests_run(client, PLAIN), n_fast),
        "personalized_rpv": (requests_run(client, PERSONALIZED), n_fast),
    }
    if wagtail is not None:
        runs_rpv["wagtail_stream_rpv"] = (requests_run(wagtail.client, WT_STREAM), n_wagtail)
    with override_settings(PERSONA={**settings.PERSONA, "RECORD_PAGE_VIEWS": True}):
        results.update(interleaved(runs_rpv, repeats))
        q("plain_rpv", client, PLAIN)
        q("personalized_rpv", client, PERSONALIZED)
        response = client.get(PERSONALIZED, headers=HEADERS)
        expect_variants(PERSONALIZED + " (page views recorded)", response.content.decode(),
                        expected)

    # -- 2: Template.render, one personalized block vs a plain block ------------------------
    with override_settings(PERSONA={**settings.PERSONA, "RECORD_PAGE_VIEWS": False}):
        config = get_config()
        persona = get_persona()
        request = RequestFactory().get(PERSONALIZED, headers=HEADERS)
        request.COOKIES[config["COOKIE_NAME"]] = client.cookies[config["COOKIE_NAME"]].value
        request.user = AnonymousUser()
        base = {"request": request, "products": PRODUCTS, "nav": NAV}

        def tpl(name: str) -> Any:
            return get_template(name).template  # the django.template.base.Template

        templates = {n: tpl(f"bench/{n}.html")
                     for n in ("plain", "one_block", "block_plain", "block_one")}
        for name, want in (("one_block", expected), ("block_one", expected[:1])):
            request.persona = RequestPersona(request, persona, config)
            expect_variants(f"{name}.html", templates[name].render(Context(base)), want)

        def render_run(name: str, persona_state: str) -> Callable[[int], None]:
            """``persona_state``: "fresh": a new RequestPersona per render, as the middleware
            leaves it (its profile load, context and decision happen inside the render);
            "memoized": one whose decision is already made (the tag's own overhead); "none"
            (plain templates): the request has a RequestPersona that nothing uses. Built
            before the clock starts, like the middleware's work."""
            template = templates[name]

            def run(n: int) -> None:
                if persona_state == "fresh":
                    rps = [RequestPersona(request, persona, config) for _ in range(n)]
                else:
                    rp = RequestPersona(request, persona, config)
                    if persona_state == "memoized":
                        rp.decide("hero")
                    rps = [rp] * n
                render = template.render
                t0 = perf_counter_ns()
                for rp in rps:
                    request.persona = rp
                    render(Context(base))
                run.elapsed = perf_counter_ns() - t0  # type: ignore[attr-defined]

            return run

        results.update(interleaved_elapsed({
            "render_plain": (render_run("plain", "none"), n_page_render),
            "render_one_block": (render_run("one_block", "fresh"), n_page_render),
            "render_one_block_memoized": (render_run("one_block", "memoized"), n_page_render),
            "render_bare_plain": (render_run("block_plain", "none"), n_block_render),
            "render_bare_block": (render_run("block_one", "fresh"), n_block_render),
            "render_bare_block_memoized": (render_run("block_one", "memoized"),
                                           n_block_render),
        }, repeats))

    elapsed = time.perf_counter() - t_start
    cpu_share = (time.process_time() - cpu_start) / elapsed
    report(args, results, queries, wagtail, wagtail_info, backend_label, load, cpus, elapsed,
           setup_s, cpu_share, profile_text)
    return 0


def _with_persona(request: Any, rp: Any) -> Any:
    request.persona = rp
    return request


def interleaved_elapsed(
    runs: Mapping[str, tuple[Callable[[int], object], int]], repeats: int
) -> dict[str, Stats]:
    """Like :func:`interleaved`, but each run times itself (``run.elapsed``) so that what
    it prepares before its loop stays outside the timing."""
    for run, n in runs.values():
        run(max(1, n // 10))
    samples: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, (run, n) in runs.items():
            gc.collect()
            run(n)
            samples[name].append(run.elapsed / n)  # type: ignore[attr-defined]
    return {name: Stats(s, runs[name][1]) for name, s in samples.items()}


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


def report(
    args: argparse.Namespace,
    r: dict[str, Stats],
    queries: dict[str, dict[str, Any]],
    wagtail: WagtailSide | None,
    wagtail_info: dict[str, Any],
    backend_label: str,
    load: float,
    cpus: int | None,
    elapsed: float,
    setup_s: float,
    cpu_share: float,
    profile_text: str | None,
) -> None:
    rows: list[tuple[str, ...]] = []  # label, median, spread, sql, target, verdict
    targets: list[dict[str, Any]] = []
    ratios: dict[str, float] = {}

    def sql(name: str) -> str:
        info = queries.get(name)
        if info is None:
            return ""
        if not info["writes"] and not info["transaction"]:
            return str(info["count"])
        parts = [f"{info['reads']}r", f"{info['writes']}w"]
        if info["transaction"]:
            parts.append(f"{info['transaction']}tx")
        return f"{info['count']} ({' '.join(parts)})"

    def timing(label: str, name: str) -> None:
        s = r[name]
        rows.append((label, fmt_time(s.median), f"{fmt_time(s.low)}..{fmt_time(s.high)}",
                     sql(name), "", ""))

    def target_row(label: str, value: str, target: str, ok: bool | None, key: str,
                   measured: float) -> None:
        word = "" if ok is None else verdict(ok)
        if ok is not None:
            targets.append({"name": key, "target": target, "measured": round(measured, 3),
                            "pass": ok})
        rows.append((label, value, "", "", target, word))

    def ratio(label: str, a: str, b: str, key: str, limit: float | None = None) -> None:
        value = r[a].median / r[b].median
        ratios[key] = value
        target_row(label, f"{value:.2f}x", f"<= {limit:.1f}x" if limit else "",
                   None if limit is None else value <= limit, key, value)

    def section(title: str) -> None:
        rows.append((title, "", "", "", "", ""))

    section("1. warm request, 20 segments, 3 priority slots, test Client, full middleware")
    section("   RECORD_PAGE_VIEWS = False")
    timing("   same page, plain blocks", "plain")
    timing("   3 x {% personalize %}", "personalized")
    added = r["personalized"].median - r["plain"].median
    target_row("   added by personalizing", fmt_time(added), "<= 1.00 ms", added <= 1e6,
               "added_per_request_ms", added / 1e6)
    n_sql = queries["personalized"]["count"]
    target_row("   SQL queries, personalized request", str(n_sql), "0", n_sql == 0,
               "sql_queries_personalized", n_sql)
    section("   RECORD_PAGE_VIEWS = True (each request records a page view: a profile write)")
    timing("   same page, plain blocks", "plain_rpv")
    timing("   3 x {% personalize %}", "personalized_rpv")
    added_rpv = r["personalized_rpv"].median - r["plain_rpv"].median
    rows.append(("   added by personalizing", fmt_time(added_rpv), "", "", "", ""))
    section("2. Template.render, Context with a request that has request.persona (no client)")
    section("   the benchmark page (hero personalized; promo, banner plain)")
    timing("   plain block", "render_plain")
    timing("   {% personalize %}, fresh request.persona", "render_one_block")
    timing("   {% personalize %}, decision memoized", "render_one_block_memoized")
    ratio("   one block (fresh) / plain", "render_one_block", "render_plain",
          "render_one_block_over_plain", 1.5)
    section("   the block alone (a template holding only the hero slot)")
    timing("   plain block", "render_bare_plain")
    timing("   {% personalize %}, fresh request.persona", "render_bare_block")
    timing("   {% personalize %}, decision memoized", "render_bare_block_memoized")
    ratio("   block alone (fresh) / plain", "render_bare_block", "render_bare_plain",
          "render_bare_block_over_plain")
    if wagtail is not None:
        section(f"3. wagtail-personalisation {wagtail_info['wagtail_personalisation']} "
                f"(Wagtail {wagtail_info['wagtail']}), 20 segments, same visitor data")
        timing("   Wagtail page, plain blocks, hooks off", "wagtail_plain")
        timing("   9 PersonalisedStructBlocks in 3 places", "wagtail_stream")
        timing("   (RPV phase) 9 PersonalisedStructBlocks", "wagtail_stream_rpv")
        timing("   9 {% segment %} tags", "wagtail_tag")
        w_added = r["wagtail_stream"].median - r["wagtail_plain"].median
        rows.append(("   added by personalising (blocks)", fmt_time(w_added), "", "", "", ""))
        ratio("   wagtail blocks / persona (RPV off)", "wagtail_stream", "personalized",
              "wagtail_stream_over_persona")
        ratio("   wagtail blocks / persona (RPV on)", "wagtail_stream_rpv", "personalized_rpv",
              "wagtail_stream_over_persona_rpv")
        ratios["wagtail_added_over_persona_added"] = w_added / added
        rows.append(("   added: wagtail / persona (RPV off)", f"{w_added / added:.1f}x", "", "",
                     "", ""))
        same = wagtail.members == wagtail.persona_members
        section(f"   the visitor is in {len(wagtail.members)} of the 20 segments in "
                f"wagtail-personalisation, {len(wagtail.persona_members)} in persona"
                + (" (the same ones)" if same else " (NOT the same ones: see the JSON)"))
        section("   the {% segment %} page showed: "
                + (", ".join(wagtail.tag_variants) or "no variant (see bench/README.md)"))
    else:
        why = wagtail_info.get("error") or "not installed (pip install wagtail-personalisation)"
        section(f"3. wagtail-personalisation: skipped: {why}")

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
    print(f"targets: {len(targets) - len(missed)}/{len(targets)} met"
          + (f" (missed: {', '.join(missed)})" if missed else "")
          + f"; setup {setup_s:.1f} s, measuring {elapsed:.1f} s"
          + (f"; load average {os.getloadavg()[0]:.2f} at the end" if hasattr(os, "getloadavg")
             else ""))
    if cpu_share < 0.9:
        print(f"WARNING: this process got only {cpu_share:.0%} of a core while measuring (other "
              "load on the machine): medians are inflated; the fastest repeats (left end of the "
              "spread) are closer to an idle machine. Re-run when it is quiet.")
    if profile_text:
        print("\ncProfile of the personalized request (RECORD_PAGE_VIEWS = False):")
        print(profile_text)

    if args.json:
        doc = {
            "python": platform.python_version(),
            "implementation": platform.python_implementation(),
            "platform": platform.platform(),
            "cpus": cpus,
            "backend": backend_label,
            "loadavg_start": load,
            "quick": args.quick,
            "wagtail": wagtail_info,
            "segments": None if wagtail is None else {
                "wagtail_personalisation": wagtail.members, "persona": wagtail.persona_members},
            "elapsed_s": round(elapsed, 2),
            "setup_s": round(setup_s, 2),
            "cpu_share": round(cpu_share, 3),
            "results": {name: s.to_json() for name, s in r.items()},
            "queries": queries,
            "ratios": {k: round(v, 3) for k, v in ratios.items()},
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
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="~10x fewer iterations (CI)")
    parser.add_argument("--json", metavar="PATH", help="also write the numbers to PATH")
    parser.add_argument("--backend", choices=("sqlite", "postgres", "both"), default="sqlite",
                        help="sqlite + locmem (default) or PostgreSQL + Redis on 127.0.0.1")
    parser.add_argument("--profile", action="store_true",
                        help="also print a cProfile of the personalized request")
    args = parser.parse_args(argv)

    if args.backend == "both":  # Django settings are per process: one child per backend
        code = 0
        for backend in ("sqlite", "postgres"):
            cmd = [sys.executable, __file__, "--backend", backend]
            cmd += ["--quick"] * args.quick + ["--profile"] * args.profile
            if args.json:
                stem, dot, ext = args.json.rpartition(".")
                cmd += ["--json", f"{stem}.{backend}.{ext}" if dot else f"{args.json}.{backend}"]
            print(f"== --backend {backend}", flush=True)
            code = subprocess.call(cmd) or code
        return code

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "django_bench_project.settings")
    wagtail_error = os.environ.get("PERSONA_BENCH_WAGTAIL_ERROR")
    if wagtail_error is None and wagtail_importable():
        os.environ["PERSONA_BENCH_WAGTAIL"] = "1"
    with backend_environment(args.backend) as label:
        if os.environ.get("PERSONA_BENCH_WAGTAIL") == "1":
            # Starting Django with Wagtail installed can fail (a version mismatch, say):
            # then say exactly why and measure persona's side in a fresh process.
            try:
                import django

                django.setup()
            except Exception as exc:
                import traceback

                text = "".join(traceback.format_exception_only(exc)).strip()
                print(f"wagtail-personalisation cannot start here: {text}", flush=True)
                env = {**os.environ, "PERSONA_BENCH_WAGTAIL_ERROR": text,
                       "PERSONA_BENCH_WAGTAIL": "0"}
                return subprocess.call([sys.executable, __file__, *(argv or sys.argv[1:])],
                                       env=env)
        return bench(args, label, wagtail_error)


if __name__ == "__main__":
    sys.exit(main())

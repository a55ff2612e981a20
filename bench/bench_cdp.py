#!/usr/bin/env python
"""Benchmarks of the CDP adapter: the durable outbox delivering to a fake Segment over
loopback, and what queueing an event for it adds to a request.

Run with ``./dev bench`` (every ``bench/bench_*.py``) or directly::

    .venv/bin/python bench/bench_cdp.py                       # SQLite + locmem (default)
    .venv/bin/python bench/bench_cdp.py --backend postgres    # PostgreSQL + Redis
    .venv/bin/python bench/bench_cdp.py --backend both        # one after the other
    .venv/bin/python bench/bench_cdp.py --quick --json out.json

Measures, in one process, on the Django adapter's own stores (``DatabaseOutbox``,
``DatabaseProfileStore``) and the real ``CdpSink``:

1. **delivery**: events queued in the outbox, then drained by the worker command as a site
   runs it, ``manage.py persona_deliver --drain --batch 500`` (its default ``--threads``: 2
   loops on PostgreSQL, 1 on SQLite), and by one loop of ``persona.deliver(limit=500)``
   (what ``manage.py persona_deliver --batch 500`` loops over: claim and lease 500 in one
   statement, read their consent with one ``load_consents`` and re-check it per item,
   build and POST ``/v1/batch``, mark done) to the fake Segment of ``tests/cdp/fakes.py``,
   which runs in its own process (it validates every message and counts the ids; the count
   is checked after each repeat). Also, to show where the time goes: the sink alone (500
   prepared items → one request), the outbox alone (the same loop with a sink that does
   nothing) and, of that, the consent re-check as ``Persona.deliver`` does it.
2. **enqueue cost**: ``persona.track(...)`` for a consenting visitor with the Segment sink
   registered against the same call without it, interleaved; the difference is what
   queueing costs a request. The outbox row is written inside the profile's save (a
   transactional outbox): in its transaction on SQLite, in the same statement as the
   profile's ``UPDATE`` on PostgreSQL. Measured in autocommit (Django's default) and inside
   ``transaction.atomic()`` (``ATOMIC_REQUESTS``). Also, for comparison, the enqueue outside
   a profile save (what a direct ``outbox.enqueue`` call costs: its own statement and
   commit): ``persona._enqueue`` and, of it, ``DatabaseOutbox.enqueue`` of one prepared
   item.

This is a measurement, not a test: it prints medians next to the targets with PASS/MISS
words and always exits 0 (a non-zero exit means the benchmark's own setup is broken). Every
number is the median over several repeats, with the spread (min..max) of the repeats. See
bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

perf_counter_ns = time.perf_counter_ns
BATCH = 500
VISITORS = 200
TARGET_RATE = 10_000.0  # events/s
TARGET_ENQUEUE_NS = 200_000.0  # 200 µs

# --------------------------------------------------------------------------------------------
# Timing (the same method as bench_core.py / bench_django.py)
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


def fmt_time(ns: float) -> str:
    if ns >= 1_000_000:
        return f"{ns / 1e6:.2f} ms"
    if ns >= 1_000:
        return f"{ns / 1e3:.1f} µs"
    return f"{ns:.0f} ns"


def fmt_signed(ns: float) -> str:
    return ("-" if ns < 0 else "") + fmt_time(abs(ns))


def fmt_rate(ns: float) -> str:
    return f"{1e9 / ns:,.0f}/s"


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


# --------------------------------------------------------------------------------------------
# Backends and the fake
# --------------------------------------------------------------------------------------------

PG_DSN = "host=127.0.0.1 port=5432 user={user} dbname=postgres"


def _pg_admin(sql: str) -> None:
    import psycopg

    dsn = PG_DSN.format(user=os.environ.get("PGUSER", "postgres"))
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql)


@contextlib.contextmanager
def fake_segment() -> Iterator[str]:
    """The fake Segment of tests/cdp/fakes.py in its own process; yields its URL."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.cdp.fakes", "--vendor", "segment"],
        cwd=ROOT, stdout=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        if not url.startswith("http://"):
            sys.exit(f"setup error: the fake Segment did not start ({url!r})")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def fake_stats(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{url}/__stats", timeout=10) as response:
        data: dict[str, Any] = json.load(response)
        return data


@contextlib.contextmanager
def django_for(backend: str, fake_url: str) -> Iterator[str]:
    """Configure Django for ``backend`` (a throwaway database), migrate, yield a label."""
    import django
    from django.conf import settings

    segment = {"write_key": "WK", "host": fake_url, "public_api_token": "PAT",
               "public_api_host": fake_url, "max_batch": BATCH}
    common: dict[str, Any] = dict(
        SECRET_KEY="persona-bench-cdp", USE_TZ=True, TIME_ZONE="UTC", ALLOWED_HOSTS=["*"],
        DEFAULT_AUTO_FIELD="django.db.models.BigAutoField",
        INSTALLED_APPS=["django.contrib.auth", "django.contrib.contenttypes", "persona_django"],
        MIDDLEWARE=["django.contrib.sessions.middleware.SessionMiddleware",
                    "django.contrib.auth.middleware.AuthenticationMiddleware",
                    "persona_django.middleware.PersonaMiddleware"],
        SESSION_ENGINE="django.contrib.sessions.backends.signed_cookies",
        PERSONA={"CONSENT_MODE": "opt-in", "PLUGINS": {"segment": segment}},
        LOGGING={"version": 1, "disable_existing_loggers": False,
                 "loggers": {"persona_cdp": {"level": "ERROR"}}},
    )
    tmp = None
    name = ""
    if backend == "postgres":
        name = f"persona_bench_cdp_{os.getpid()}"
        _pg_admin(f'DROP DATABASE IF EXISTS "{name}"')
        _pg_admin(f'CREATE DATABASE "{name}"')
        settings.configure(
            **common,
            DATABASES={"default": {"ENGINE": "django.db.backends.postgresql", "NAME": name,
                                   "USER": os.environ.get("PGUSER", "postgres"),
                                   "HOST": "127.0.0.1", "PORT": "5432"}},
            CACHES={"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache",
                                "LOCATION": "redis://127.0.0.1:6379/0",
                                "KEY_PREFIX": f"persona-bench-cdp-{os.getpid()}"}},
        )
        label = (f"PostgreSQL 127.0.0.1:5432 (database {name}) + Redis 127.0.0.1:6379 "
                 "(RedisCache)")
    else:
        tmp = tempfile.TemporaryDirectory(prefix="persona-bench-cdp-")
        options: dict[str, Any] = {"timeout": 30}
        pragmas = "default journal"
        if django.VERSION >= (5, 1):
            options["init_command"] = "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"
            pragmas = "WAL, synchronous=NORMAL"
        settings.configure(
            **common,
            DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3",
                                   "NAME": str(Path(tmp.name) / "bench.sqlite3"),
                                   "OPTIONS": options}},
            CACHES={"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}},
        )
        label = f"SQLite (a file in a temporary directory; {pragmas}) + LocMemCache"
    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0, interactive=False)
    try:
        yield label
    finally:
        from django.db import connections

        connections.close_all()
        if backend == "postgres":
            with contextlib.suppress(Exception):
                from django.core.cache import cache

                client = cache._cache.get_client(write=True)  # type: ignore[attr-defined]
                keys = list(client.scan_iter(match=f"persona-bench-cdp-{os.getpid()}:*"))
                if keys:
                    client.delete(*keys)
            _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if tmp is not None:
            tmp.cleanup()


# --------------------------------------------------------------------------------------------
# Setup
# --------------------------------------------------------------------------------------------


def visitors(persona: Any, n: int) -> list[tuple[str, str]]:
    """``n`` visitors who granted analytics and sharing: (anonymous id, profile id)."""
    from persona_sdk import Identity

    out = []
    for i in range(n):
        who = Identity.anonymous(f"bench-{os.getpid()}-{i:04d}")
        profile = persona.set_consent(who, {"analytics": True, "sharing": True,
                                            "personalization": True}, source="bench")
        out.append((who.value, profile.id))
    return out


def make_items(people: Sequence[tuple[str, str]], n: int, sink: Any, seed: int) -> list[Any]:
    """``n`` realistic track events (a product view with a handful of properties) as the
    outbox items ``Persona._enqueue`` creates for the sink."""
    from persona_sdk import Event
    from persona_sdk.outbox import OutboxItem

    now = time.time()
    items = []
    for i in range(n):
        anonymous_id, profile_id = people[(i + seed) % len(people)]
        event = Event.create(
            "track", anonymous_id=anonymous_id, event="Product Viewed",
            properties={"product_id": f"P-{(i * 7919) % 5000:05d}", "sku": f"SKU-{i % 97:03d}",
                        "category": ("shoes", "hats", "bags", "outdoor")[i % 4],
                        "price": 19.5 + i % 80, "currency": "EUR", "position": i % 12},
            context={"page": {"path": f"/p/{i % 97}", "referrer": "https://www.google.com/"},
                     "userAgent": "Mozilla/5.0 (bench)", "ip": "203.0.113.7"},
            timestamp=now,
        )
        items.append(OutboxItem.for_event(event, sink=sink.name, profile_id=profile_id,
                                          purposes=tuple(sink.purposes), now=now))
    return items


def clear_outbox() -> None:
    """Empty the outbox between repeats (untimed). On PostgreSQL with ``TRUNCATE``: a
    ``DELETE`` of every row would leave them all as dead tuples that autovacuum does not
    reach within the run, so each repeat would walk more dead index entries than the last
    (a real outbox loses rows only to ``prune``, a little at a time)."""
    from django.db import connection

    from persona_django.models import OutboxMessage

    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(f"TRUNCATE {connection.ops.quote_name(OutboxMessage._meta.db_table)}")
    else:
        OutboxMessage.objects.all().delete()


class NullSink:
    """Accepts everything, sends nothing: the outbox's own cost."""

    name = "segment"
    purposes = ("analytics", "sharing")
    max_batch = BATCH

    def accepts(self, event: Any) -> bool:
        return True

    def deliver(self, items: Sequence[Any]) -> Any:
        from persona_sdk.outbox import DeliveryResult

        return DeliveryResult.all_delivered(items)


# --------------------------------------------------------------------------------------------
# The measurements
# --------------------------------------------------------------------------------------------


def bench_delivery(persona: Any, people: Sequence[tuple[str, str]], fake_url: str,
                   per_repeat: int, repeats: int) -> dict[str, Stats]:
    from persona_sdk.consent import ConsentView
    from persona_sdk.stores import load_consents

    sink = persona.registry.sinks["segment"]
    outbox = persona.outbox
    from django.core.management import call_command

    samples: dict[str, list[float]] = {"deliver": [], "outbox_only": [], "sink_only": [],
                                       "allowed": [], "command": []}
    expected_distinct = fake_stats(fake_url)["distinct"]

    def recheck(batch: Sequence[Any]) -> bool:
        """The consent re-check as ``Persona.deliver`` does it for a claimed batch: one
        ``load_consents`` for the batch's profiles, then ``persona.may`` per item and
        purpose."""
        found = load_consents(persona.store, {item.profile_id for item in batch})
        views = {pid: ConsentView(consent) for pid, consent in found.items()}
        ok = True
        for item in batch:
            view = views.get(item.profile_id)
            if view is None or not all(persona.may(view, p) for p in item.purposes):
                ok = False
        return ok

    def drain() -> None:
        while True:
            report = persona.deliver(limit=BATCH)
            if report.retried or report.dead or report.withheld:
                sys.exit(f"setup error: a delivery pass did not deliver everything: {report}")
            if report.delivered == 0:
                return

    def command() -> None:
        """What a site runs: the worker command, here until the outbox is drained."""
        out = io.StringIO()
        call_command("persona_deliver", "--drain", "--batch", str(BATCH), verbosity=1,
                     stdout=out, stderr=out)
        last = out.getvalue().strip().splitlines()[-1]
        if "retried=0 dead=0 withheld=0" not in last or "nothing left" not in last:
            sys.exit(f"setup error: persona_deliver did not deliver everything: {last}")

    for r in range(repeats + 1):  # the first round (a fifth of the size) warms up, unrecorded
        size = per_repeat if r else max(BATCH, per_repeat // 5)
        # (e) the worker command, as a site runs it (threads: its default for the database);
        # (a) the full path to the fake, one loop in this process
        for key, run, seed in (("command", command, r + 3000), ("deliver", drain, r)):
            clear_outbox()
            outbox.enqueue(make_items(people, size, sink, seed=seed))
            gc.collect()
            t0 = perf_counter_ns()
            run()
            elapsed = perf_counter_ns() - t0
            expected_distinct += size
            got = fake_stats(fake_url)["distinct"]
            if got != expected_distinct:
                sys.exit(f"setup error: the fake counted {got} distinct ids after {key}, "
                         f"expected {expected_distinct}")
            if r:
                samples[key].append(elapsed / per_repeat)

        # (b) the outbox alone: same loop, a sink that does nothing
        clear_outbox()
        outbox.enqueue(make_items(people, size, sink, seed=r + 1000))
        persona.registry.sinks["segment"] = NullSink()
        try:
            gc.collect()
            t0 = perf_counter_ns()
            drain()
            elapsed = perf_counter_ns() - t0
        finally:
            persona.registry.sinks["segment"] = sink
        if r:
            samples["outbox_only"].append(elapsed / per_repeat)

        # (c) the sink alone: prepared batches of 500 -> one request each
        batches = [make_items(people, BATCH, sink, seed=r + 2000 + b)
                   for b in range(max(1, size // BATCH // 2))]
        gc.collect()
        t0 = perf_counter_ns()
        for batch in batches:
            result = sink.deliver(batch)
            if len(result.delivered) != len(batch):
                sys.exit(f"setup error: the sink did not deliver a batch: {result.failed}")
        elapsed = perf_counter_ns() - t0
        expected_distinct += len(batches) * BATCH
        if r:
            samples["sink_only"].append(elapsed / (len(batches) * BATCH))

        # (d) the consent re-check alone, as Persona.deliver does it per claimed batch
        gc.collect()
        t0 = perf_counter_ns()
        for batch in batches:
            if not recheck(batch):
                sys.exit("setup error: a consenting visitor was refused")
        elapsed = perf_counter_ns() - t0
        if r:
            samples["allowed"].append(elapsed / (len(batches) * BATCH))
    clear_outbox()
    return {
        "persona_deliver_drain": Stats(samples["command"], per_repeat),
        "deliver_to_fake_segment": Stats(samples["deliver"], per_repeat),
        "outbox_only_null_sink": Stats(samples["outbox_only"], per_repeat),
        "sink_only_500_per_request": Stats(samples["sink_only"], per_repeat // 2),
        "consent_recheck_per_item": Stats(samples["allowed"], per_repeat // 2),
    }


def bench_enqueue(with_sink: Any, people: Sequence[tuple[str, str]], n: int,
                  repeats: int) -> dict[str, Stats]:
    """``persona.track`` with and without the sink registered — the same ``Persona`` and
    stores, the sink taken out of its registry for the "without" call — in pairs on the same
    visitor, the order swapped every pair (so drift, noise and warm caches hit both alike),
    in autocommit and inside ``transaction.atomic()``; and, for comparison, the enqueue
    outside a profile save: ``persona._enqueue(profile, event)`` and, of it,
    ``DatabaseOutbox.enqueue([item])`` of prepared items."""
    from django.db import transaction

    from persona_django.models import OutboxMessage
    from persona_sdk import Event
    from persona_sdk.outbox import OutboxItem

    counter = [0]
    atomic = transaction.atomic
    registry = with_sink.registry.sinks
    sinks = dict(registry)

    def alternate(k: int, in_atomic: bool) -> tuple[float, float]:
        """``k`` pairs of calls; the mean ns per call with and without the sink."""
        spent = [0, 0]
        for pair in range(k):
            i = counter[0]
            counter[0] += 1
            anonymous_id = people[i % len(people)][0]
            for slot in (0, 1) if pair % 2 == 0 else (1, 0):
                registry.clear()
                if slot == 0:
                    registry.update(sinks)
                props = {"product_id": f"P-{i % 5000:05d}", "category": "shoes",
                         "price": 19.5 + i % 80, "slot": slot}
                t0 = perf_counter_ns()
                if in_atomic:
                    with atomic():
                        with_sink.track("Product Viewed", props, anonymous_id=anonymous_id)
                else:
                    with_sink.track("Product Viewed", props, anonymous_id=anonymous_id)
                spent[slot] += perf_counter_ns() - t0
        registry.clear()
        registry.update(sinks)
        return spent[0] / k, spent[1] / k

    profiles = [with_sink.store.load(pid) for _, pid in people[:50]]
    if any(p is None for p in profiles):
        sys.exit("setup error: a visitor's profile is missing")

    sink = with_sink.registry.sinks["segment"]

    def events(k: int) -> list[Any]:
        return [Event.create("track", anonymous_id=people[i % 50][0], event="Product Viewed",
                             properties={"product_id": f"P-{i:05d}", "price": 19.5})
                for i in range(k)]

    def enqueue_only(k: int) -> float:
        batch = events(k)
        t0 = perf_counter_ns()
        for i, event in enumerate(batch):
            if with_sink._enqueue(profiles[i % 50], event) != 1:
                sys.exit("setup error: _enqueue did not queue the event")
        return (perf_counter_ns() - t0) / k

    def outbox_enqueue_only(k: int) -> float:
        now = time.time()
        items = [[OutboxItem.for_event(event, sink=sink.name, profile_id=profiles[i % 50].id,
                                       purposes=tuple(sink.purposes), now=now)]
                 for i, event in enumerate(events(k))]
        enqueue = with_sink.outbox.enqueue
        t0 = perf_counter_ns()
        for one in items:
            if enqueue(one) != 1:
                sys.exit("setup error: DatabaseOutbox.enqueue did not insert the item")
        return (perf_counter_ns() - t0) / k

    alternate(max(2, n // 10), False)  # warm-up
    alternate(max(2, n // 10), True)
    enqueue_only(max(2, n // 10))
    outbox_enqueue_only(max(2, n // 10))
    if OutboxMessage.objects.count() == 0:
        sys.exit("setup error: track() with the sink registered queued nothing")
    samples: dict[str, list[float]] = {k: [] for k in (
        "track_with_sink", "track_without_sink", "track_with_sink_atomic",
        "track_without_sink_atomic", "enqueue_only", "outbox_enqueue_one")}
    for _ in range(repeats):
        clear_outbox()
        gc.collect()
        a, b = alternate(n, False)
        samples["track_with_sink"].append(a)
        samples["track_without_sink"].append(b)
        gc.collect()
        a, b = alternate(n, True)
        samples["track_with_sink_atomic"].append(a)
        samples["track_without_sink_atomic"].append(b)
        gc.collect()
        samples["enqueue_only"].append(enqueue_only(n))
        gc.collect()
        samples["outbox_enqueue_one"].append(outbox_enqueue_only(n))
    clear_outbox()
    out = {name: Stats(s, n) for name, s in samples.items()}
    for kind in ("", "_atomic"):  # the per-repeat differences, and their median
        diffs = [a - b for a, b in zip(samples[f"track_with_sink{kind}"],
                                       samples[f"track_without_sink{kind}"], strict=True)]
        out[f"enqueue_difference{kind}"] = Stats(diffs, n)
    return out


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


def bench(args: argparse.Namespace) -> int:
    quick = args.quick
    per_repeat = 5_000 if quick else 10_000
    repeats = 3 if quick else 5
    enqueue_n = 150 if quick else 400
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")

    with fake_segment() as fake_url, django_for(args.backend, fake_url) as label:
        from persona_django.runtime import get_persona

        print("persona-sdk CDP adapter benchmarks")
        print(f"Python {platform.python_version()} ({platform.python_implementation()}) on "
              f"{platform.platform()}, {cpus} CPU(s) available")
        print(f"backend: {label}")
        print(f"fake Segment: {fake_url} (tests/cdp/fakes.py, its own process)")
        print(f"{'quick' if quick else 'full'} run: {repeats} repeats of {per_repeat:,} events "
              f"(batches of {BATCH}); enqueue: {repeats} x {enqueue_n} calls; load average "
              f"{load:.2f} at start")
        sys.stdout.flush()

        t_start, cpu_start = time.perf_counter(), time.process_time()
        with_sink = get_persona()
        if "segment" not in with_sink.registry.sinks:
            sys.exit("setup error: the segment sink is not registered")
        people = visitors(with_sink, VISITORS)
        delivery = bench_delivery(with_sink, people, fake_url, per_repeat, repeats)
        from persona_django.management.commands.persona_deliver import _thread_count

        threads = _thread_count("auto", once=False)
        threads_label = f"{threads} thread{'s' * (threads > 1)}, its default here"
        enqueue = bench_enqueue(with_sink, people, enqueue_n, repeats)
        elapsed = time.perf_counter() - t_start
        cpu_share = (time.process_time() - cpu_start) / elapsed
        sink_stats = dict(with_sink.registry.sinks["segment"].stats)

    rows: list[tuple[str, str, str, str, str]] = []
    targets: list[dict[str, Any]] = []

    def section(title: str) -> None:
        rows.append((title, "", "", "", ""))

    def rate_row(label: str, s: Stats, target: float | None = None, key: str = "") -> None:
        t, word = "", ""
        if target is not None:
            ok = 1e9 / s.median >= target
            t, word = f">= {target:,.0f}/s", verdict(ok)
            targets.append({"name": key, "target": t, "measured_per_s": round(1e9 / s.median),
                            "pass": ok})
        rows.append((label, f"{fmt_time(s.median)} = {fmt_rate(s.median)}",
                     f"{fmt_rate(s.high)}..{fmt_rate(s.low)}", t, word))

    def time_row(label: str, s: Stats) -> None:
        rows.append((label, fmt_time(s.median), f"{fmt_time(s.low)}..{fmt_time(s.high)}", "",
                     ""))

    def diff_row(label: str, s: Stats, target: float | None, key: str) -> None:
        t, word = "", ""
        if target is not None:
            ok = s.median <= target
            t, word = f"<= {fmt_time(target)}", verdict(ok)
            targets.append({"name": key, "target": t, "measured_ns": round(s.median, 1),
                            "pass": ok})
        rows.append((label, fmt_signed(s.median), f"{fmt_signed(s.low)}..{fmt_signed(s.high)}",
                     t, word))

    section(f"1. outbox -> fake Segment over loopback, batches of {BATCH} ({args.backend})")
    rate_row(f"   manage.py persona_deliver --drain --batch 500 ({threads_label})",
             delivery["persona_deliver_drain"], TARGET_RATE, f"deliver_{args.backend}")
    rate_row("   one loop: persona.deliver(limit=500) until drained",
             delivery["deliver_to_fake_segment"])
    rate_row("   the outbox alone (a sink that sends nothing)",
             delivery["outbox_only_null_sink"])
    time_row("     of which the consent re-check (load_consents + may), per item",
             delivery["consent_recheck_per_item"])
    rate_row("   the sink alone (500 prepared items -> 1 POST)",
             delivery["sink_only_500_per_request"])
    section("2. what queueing for the sink adds to a request (a consenting visitor)")
    time_row("   persona.track, sink registered (autocommit)", enqueue["track_with_sink"])
    time_row("   persona.track, no sink (autocommit)", enqueue["track_without_sink"])
    diff_row("   difference = the enqueue cost (autocommit)", enqueue["enqueue_difference"],
             TARGET_ENQUEUE_NS, f"enqueue_{args.backend}")
    time_row("   persona.track, sink registered, in atomic()", enqueue["track_with_sink_atomic"])
    time_row("   persona.track, no sink, in atomic()", enqueue["track_without_sink_atomic"])
    diff_row("   difference (ATOMIC_REQUESTS)", enqueue["enqueue_difference_atomic"], None, "")
    time_row("   for comparison, outside a profile save: persona._enqueue(profile, event)",
             enqueue["enqueue_only"])
    time_row("     of which DatabaseOutbox.enqueue([item]) (INSERT + its own commit)",
             enqueue["outbox_enqueue_one"])

    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    head = ("measurement", "median", "spread (min..max)", "target", "")
    widths = [max(w, len(h)) for w, h in zip(widths, head, strict=True)]
    line = "  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)).rstrip()
    print()
    print(line)
    print("-" * len(line))
    for r in rows:
        if not r[1]:
            print(r[0])
        else:
            print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    print()
    missed = [t["name"] for t in targets if not t["pass"]]
    print(f"targets: {len(targets) - len(missed)}/{len(targets)} met"
          + (f" (missed: {', '.join(missed)})" if missed else "")
          + f"; sink made {sink_stats['requests']} requests; took {elapsed:.1f} s"
          + (f"; load average {os.getloadavg()[0]:.2f} at the end"
             if hasattr(os, "getloadavg") else ""))
    if cpu_share < 0.9:
        print(f"note: this process used {cpu_share:.0%} of a core over the run (it also waits "
              "for the fake and the database, which run in other processes); on a busy "
              "machine the medians are inflated: re-run when it is quiet.")
    if args.json:
        doc = {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": cpus,
            "backend": args.backend,
            "backend_label": label,
            "loadavg_start": load,
            "quick": quick,
            "elapsed_s": round(elapsed, 2),
            "cpu_share": round(cpu_share, 3),
            "results": {name: s.to_json() for name, s in {**delivery, **enqueue}.items()},
            "sink": sink_stats,
            "targets": targets,
        }
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(doc, fh, indent=2)
            fh.write("\n")
        print(f"wrote {args.json}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer, smaller repeats (CI)")
    parser.add_argument("--json", metavar="PATH", help="also write the numbers to PATH")
    parser.add_argument("--backend", choices=("sqlite", "postgres", "both"), default="sqlite",
                        help="sqlite + locmem (default) or PostgreSQL + Redis on 127.0.0.1")
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
    return bench(args)


if __name__ == "__main__":
    sys.exit(main())

"""``manage.py persona_deliver``: the outbox worker.

Loops ``get_persona().deliver(limit=--batch)``: claims due items, re-checks consent, hands
them to the sinks, then marks them done, retries later, or dead-letters them. After a full
batch it goes again at once; otherwise it sleeps ``--idle-sleep`` seconds. ``--drain``
stops once a pass finds nothing due. Several workers may run at once (on PostgreSQL,
``SKIP LOCKED`` gives each its own items), as processes or as ``--threads`` in one process
(default: 2 on PostgreSQL, where one loop's database and network waits overlap the other's
work, ~40% more events per second; 1 on SQLite, which takes one writer at a time). SIGTERM
or Ctrl-C stops it after the pass in progress (a second Ctrl-C stops it at once).
"""

from __future__ import annotations

import gc
import logging
import signal
import threading
import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connections, router

from persona_sdk.outbox import Backoff, DeliveryReport

from ...models import OutboxMessage
from ...runtime import get_persona

log = logging.getLogger("persona_django")


def _recycle_connections() -> None:
    """What Django does between requests: honour CONN_MAX_AGE and drop broken connections
    (not inside a transaction someone else opened, e.g. a test's). The loop calls it
    before it idles and after a failed pass, not between the passes of a backlog: with the
    default CONN_MAX_AGE of 0 that would open a new connection for every batch (~30 µs an
    event on PostgreSQL)."""
    for conn in connections.all(initialized_only=True):
        if not conn.in_atomic_block:
            conn.close_if_unusable_or_obsolete()


class _Totals:
    """Counts across the worker threads (and the pass numbering they share)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.passes = 0
        self.counts = (0, 0, 0, 0)
        self.timed_out = False

    def next_pass(self) -> int:
        with self._lock:
            self.passes += 1
            return self.passes

    def add(self, counts: tuple[int, int, int, int]) -> None:
        with self._lock:
            self.counts = tuple(  # type: ignore[assignment]
                total + n for total, n in zip(self.counts, counts, strict=True)
            )


def _thread_count(value: str, once: bool) -> int:
    """``--threads``: a number, or ``auto`` (2 on PostgreSQL, where ``SKIP LOCKED`` lets
    them claim side by side and one thread's database waits overlap the other's work; 1
    elsewhere: SQLite takes one writer at a time). ``--once`` runs one pass: one thread."""
    if once:
        return 1
    if value == "auto":
        vendor = connections[router.db_for_write(OutboxMessage)].vendor
        return 2 if vendor == "postgresql" else 1
    return int(value)


def _threads(value: str) -> str:
    if value != "auto":
        _positive_int(value)
    return value


def _positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise ValueError(value)
    return number


def _non_negative(value: str) -> float:
    number = float(value)
    if number < 0:
        raise ValueError(value)
    return number


class Command(BaseCommand):
    help = (
        "Deliver queued events to the registered sinks (CDPs, email services). Runs until "
        "stopped (SIGTERM / Ctrl-C finish the current pass first); --once runs one pass."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--once", action="store_true", help="run one pass and exit")
        parser.add_argument(
            "--batch", type=_positive_int, default=500, help="items claimed per pass (default 500)"
        )
        parser.add_argument(
            "--idle-sleep",
            type=_non_negative,
            default=1.0,
            metavar="SECONDS",
            help="pause after a pass that did not fill a batch (default 1.0)",
        )
        parser.add_argument(
            "--lease",
            type=_non_negative,
            default=60.0,
            metavar="SECONDS",
            help="how long claimed items stay this worker's; a worker killed mid-batch holds "
            "its items this long before another may retry them (default 60)",
        )
        parser.add_argument(
            "--max-backoff",
            type=_non_negative,
            default=600.0,
            metavar="SECONDS",
            help="the longest wait between two attempts of an item (default 600; never "
            "shorter than the vendor's Retry-After)",
        )
        parser.add_argument(
            "--drain",
            action="store_true",
            help="stop once a pass finds nothing due (after a backlog, or from cron); "
            "items waiting for a retry later are left for the next run",
        )
        parser.add_argument(
            "--threads",
            type=_threads,
            default="auto",
            metavar="N",
            help="delivery loops in this process, each with its own database connection "
            "(default auto: 2 on PostgreSQL, 1 on SQLite and others)",
        )
        parser.add_argument(
            "--max-seconds",
            type=_non_negative,
            default=None,
            metavar="SECONDS",
            help="stop after running this long",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        self._stop = False
        previous = self._install_handlers()
        try:
            self._run(options)
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    # -- signals ---------------------------------------------------------------------------
    def _install_handlers(self) -> dict[int, Any]:
        if threading.current_thread() is not threading.main_thread():
            return {}  # signals are delivered to the main thread only (tests run us in others)

        def stop(signum: int, frame: Any) -> None:
            if self._stop and signum == signal.SIGINT:
                raise KeyboardInterrupt
            self._stop = True

        previous = {}
        for signum in (signal.SIGTERM, signal.SIGINT):
            previous[signum] = signal.getsignal(signum)
            signal.signal(signum, stop)
        return previous

    def _sleep(self, seconds: float, deadline: float | None) -> None:
        end = time.monotonic() + seconds
        if deadline is not None:
            end = min(end, deadline)
        while not self._stop:
            left = end - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(left, 0.1))

    # -- the loop --------------------------------------------------------------------------
    def _run(self, options: dict[str, Any]) -> None:
        once: bool = options["once"]
        threads = _thread_count(options.get("threads") or "auto", once)
        max_seconds: float | None = options["max_seconds"]
        deadline = None if max_seconds is None else time.monotonic() + max_seconds
        get_persona()  # built once, before the threads share it
        # a long-lived worker: what exists now (Django, the settings, the persona) stays, so
        # the collector need not scan it again on every full collection (~5% of a pass)
        gc.collect()
        gc.freeze()
        try:
            self._work(options, threads, deadline)
        finally:
            gc.unfreeze()

    def _work(self, options: dict[str, Any], threads: int, deadline: float | None) -> None:
        once: bool = options["once"]
        drain: bool = options.get("drain") or False
        verbosity: int = options.get("verbosity", 1)
        totals = _Totals()
        if threads == 1:
            self._loop(options, deadline, totals, label="")
        else:
            errors: list[BaseException] = []

            def work(number: int) -> None:
                try:
                    self._loop(options, deadline, totals, label=f" (thread {number})")
                except BaseException as exc:  # reported by the main thread
                    errors.append(exc)
                    self._stop = True
                finally:
                    connections.close_all()  # this thread's own connections

            workers = [
                threading.Thread(target=work, args=(n,), name=f"persona_deliver-{n}", daemon=True)
                for n in range(1, threads + 1)
            ]
            for worker in workers:
                worker.start()
            for worker in workers:
                while worker.is_alive():
                    worker.join(0.2)  # short waits: signals reach the main thread meanwhile
            if errors:
                raise errors[0]
        if not once and verbosity >= 1:
            if self._stop:
                reason = "stop requested"
            elif drain and not totals.timed_out:
                reason = "nothing left to deliver"
            else:
                reason = "time limit reached"
            delivered, retried, dead, withheld = totals.counts
            self.stdout.write(
                f"stopped ({reason}) after {totals.passes} pass(es): delivered={delivered} "
                f"retried={retried} dead={dead} withheld={withheld}"
            )

    def _loop(
        self, options: dict[str, Any], deadline: float | None, totals: _Totals, label: str
    ) -> None:
        """One worker's loop: passes until stopped, the time limit, or (``--drain``) a pass
        that finds nothing due."""
        once: bool = options["once"]
        drain: bool = options.get("drain") or False
        batch: int = options["batch"]
        idle_sleep: float = options["idle_sleep"]
        verbosity: int = options.get("verbosity", 1)
        lease = options.get("lease") or 60.0
        backoff = Backoff(cap=max(0.001, options.get("max_backoff") or 600.0))
        persona = get_persona()
        _recycle_connections()
        while True:
            number = totals.next_pass()
            began = time.monotonic()
            try:
                report = persona.deliver(limit=batch, lease=lease, backoff=backoff)
            except Exception as exc:
                if once:
                    message = f"delivery pass failed: {type(exc).__name__}: {exc}"
                    raise CommandError(message) from exc
                log.exception("persona_deliver: pass %d failed; trying again", number)
                self.stderr.write(f"pass {number}{label}: failed: {type(exc).__name__}: {exc}")
                _recycle_connections()
                report = None
            handled = 0
            if report is not None:
                counts = (report.delivered, report.retried, report.dead, report.withheld)
                handled = sum(counts)
                totals.add(counts)
                # an idle pass is only worth a line when asked (-v 2), or with --once
                if once or handled or verbosity >= 2:
                    line = self._line(number, report, time.monotonic() - began, label)
                    self.stdout.write(line)
            if once or self._stop:
                return
            if deadline is not None and time.monotonic() >= deadline:
                totals.timed_out = True
                return
            if drain and report is not None and handled == 0:
                return
            if report is None or handled < batch:
                if report is not None:  # (a failed pass recycled them already)
                    _recycle_connections()
                self._sleep(0.0 if drain else idle_sleep, deadline)
                if self._stop:
                    return
                if deadline is not None and time.monotonic() >= deadline:
                    totals.timed_out = True
                    return

    @staticmethod
    def _line(number: int, report: DeliveryReport, seconds: float, label: str = "") -> str:
        return (
            f"pass {number}{label}: delivered={report.delivered} retried={report.retried} "
            f"dead={report.dead} withheld={report.withheld} ({seconds * 1000:.0f} ms)"
        )

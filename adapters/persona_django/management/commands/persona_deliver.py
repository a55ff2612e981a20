"""``manage.py persona_deliver``: the outbox worker.

Loops ``get_persona().deliver(limit=--batch)``: claims due items, re-checks consent, hands
them to the sinks, then marks them done, retries later, or dead-letters them. After a full
batch it goes again at once; otherwise it sleeps ``--idle-sleep`` seconds. Several workers
may run at once (on PostgreSQL, ``SKIP LOCKED`` gives each its own items). SIGTERM or
Ctrl-C stops it after the pass in progress (a second Ctrl-C stops it at once).
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connections

from persona_sdk.outbox import Backoff, DeliveryReport

from ...runtime import get_persona

log = logging.getLogger("persona_django")


def _recycle_connections() -> None:
    """What Django does between requests: honour CONN_MAX_AGE and drop broken connections
    (not inside a transaction someone else opened, e.g. a test's)."""
    for conn in connections.all(initialized_only=True):
        if not conn.in_atomic_block:
            conn.close_if_unusable_or_obsolete()


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
        batch: int = options["batch"]
        idle_sleep: float = options["idle_sleep"]
        max_seconds: float | None = options["max_seconds"]
        verbosity: int = options.get("verbosity", 1)
        started = time.monotonic()
        deadline = None if max_seconds is None else started + max_seconds
        persona = get_persona()
        passes = 0
        totals = [0, 0, 0, 0]
        while True:
            _recycle_connections()
            passes += 1
            began = time.monotonic()
            try:
                report = persona.deliver(
                    limit=batch,
                    lease=options.get("lease") or 60.0,
                    backoff=Backoff(cap=max(0.001, options.get("max_backoff") or 600.0)),
                )
            except Exception as exc:
                if once:
                    message = f"delivery pass failed: {type(exc).__name__}: {exc}"
                    raise CommandError(message) from exc
                log.exception("persona_deliver: pass %d failed; trying again", passes)
                self.stderr.write(f"pass {passes}: failed: {type(exc).__name__}: {exc}")
                _recycle_connections()
                report = None
            handled = 0
            if report is not None:
                counts = (report.delivered, report.retried, report.dead, report.withheld)
                handled = sum(counts)
                totals = [t + n for t, n in zip(totals, counts, strict=True)]
                # an idle pass is only worth a line when asked (-v 2), or with --once
                if once or handled or verbosity >= 2:
                    self.stdout.write(self._line(passes, report, time.monotonic() - began))
            if once or self._stop:
                break
            if deadline is not None and time.monotonic() >= deadline:
                break
            if report is None or handled < batch:
                self._sleep(idle_sleep, deadline)
                if self._stop or (deadline is not None and time.monotonic() >= deadline):
                    break
        if not once and verbosity >= 1:
            reason = "stop requested" if self._stop else "time limit reached"
            self.stdout.write(
                f"stopped ({reason}) after {passes} pass(es): delivered={totals[0]} "
                f"retried={totals[1]} dead={totals[2]} withheld={totals[3]}"
            )

    @staticmethod
    def _line(number: int, report: DeliveryReport, seconds: float) -> str:
        return (
            f"pass {number}: delivered={report.delivered} retried={report.retried} "
            f"dead={report.dead} withheld={report.withheld} ({seconds * 1000:.0f} ms)"
        )

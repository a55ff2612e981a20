"""Nothing is lost: events through the durable outbox and real ``persona_deliver``
processes to a fake Segment.

* 20,000 events, the fake failing 30% of requests (5xx, 429 + Retry-After, timeouts that
  lose the acknowledgement), the worker SIGKILLed twice mid-batch and restarted: every
  message id must arrive, duplicates may only be repeated ids (at-least-once). The figures
  are printed (``pytest -s``) and written to ``reliability.json`` in the test's tmp dir.
  Most of its time is waiting: a killed worker's claimed items stay leased (the workers
  run with ``--lease 20``) before another worker may take them — the recovery being
  tested — and then the retries' backoff.
* Two workers at once on the same outbox (``SKIP LOCKED`` on PostgreSQL, an
  ``UPDATE … RETURNING`` claim on SQLite): both work, and with a fake that never fails no
  id is sent twice.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .fakes import FakeSegment

ROOT = Path(__file__).resolve().parents[2]
BACKEND = os.environ.get("PERSONA_TEST_BACKEND", "sqlite")
EVENTS = 20_000
#: seconds the drain may take: the 20 s lease of the killed workers' batches, then their
#: retries. The bound is generous because exponential backoff with full
#: jitter at a 30% failure rate has a long tail (an item failing 6 times in a row waits up
#: to 63 s), and a bound that a healthy run can cross would make the test flaky.
DEADLINE = 180.0


def _pg_dsn(name: str) -> str:
    return f"host=127.0.0.1 port=5432 user={os.environ.get('PGUSER', 'postgres')} dbname={name}"


def _pg_admin(sql: str) -> None:
    import psycopg

    with psycopg.connect(_pg_dsn("postgres"), autocommit=True) as conn:
        conn.execute(sql)


class Site:
    """A throwaway site database (an SQLite file in tmp_path, or a PostgreSQL database)
    with the outbox filled by ``reliability_tool``, and ``persona_deliver`` processes on it
    pointed at ``fake``."""

    def __init__(self, tmp_path: Path, fake: FakeSegment, name: str) -> None:
        self.tmp_path = tmp_path
        self.fake = fake
        self.workers: list[subprocess.Popen] = []
        self._logs: list = []
        self.env = dict(os.environ, PYTHONPATH=str(ROOT), PERSONA_TEST_BACKEND=BACKEND,
                        DJANGO_SETTINGS_MODULE="tests.cdp.worker_settings",
                        PERSONA_CDP_SEGMENT_URL=fake.url, PERSONA_CDP_TIMEOUT="1.0",
                        PERSONA_CDP_CACHE_PREFIX=f"cdp-{name}-{os.getpid()}")
        self.env.pop("PERSONA_DISABLE_PLUGINS", None)
        if BACKEND == "postgres":
            self.db = f"persona_cdp_{name}_{os.getpid()}"
            _pg_admin(f'DROP DATABASE IF EXISTS "{self.db}" WITH (FORCE)')
            _pg_admin(f'CREATE DATABASE "{self.db}"')
        else:
            self.db = str(tmp_path / f"{name}.sqlite3")
        self.env["PERSONA_CDP_DB"] = self.db

    def run(self, *args: str) -> str:
        done = subprocess.run([sys.executable, *args], cwd=ROOT, env=self.env,
                              capture_output=True, text=True, timeout=180)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    def fill(self, count: int) -> set[str]:
        """Migrate, queue ``count`` events; the expected message ids."""
        self.run("-m", "django", "migrate", "-v", "0")
        ids_file = self.tmp_path / "ids.txt"
        out = self.run("-m", "tests.cdp.reliability_tool", "enqueue", str(count), str(ids_file))
        assert out.strip() == f"queued {count}"
        ids = set(ids_file.read_text().split())
        assert len(ids) == count
        return ids

    def counts(self, column: str = "status") -> dict[str, int]:
        """Outbox rows by status (or ``attempts``), read directly (the test's own Django DB
        is another one)."""
        sql = f"SELECT {column}, COUNT(*) FROM persona_outboxmessage GROUP BY {column}"
        if BACKEND == "postgres":
            import psycopg

            with psycopg.connect(_pg_dsn(self.db), autocommit=True) as conn:
                rows = conn.execute(sql).fetchall()
        else:
            with sqlite3.connect(self.db, timeout=10) as conn:
                rows = conn.execute(sql).fetchall()
        return {status: n for status, n in rows}

    def start_worker(self, verbosity: int = 0) -> subprocess.Popen:
        log = open(self.tmp_path / f"worker-{len(self.workers) + 1}.log", "w")
        self._logs.append(log)
        proc = subprocess.Popen(
            [sys.executable, "-m", "django", "persona_deliver", "--batch", "500",
             "--idle-sleep", "0.2", "--lease", "20", "--max-backoff", "10",
             "-v", str(verbosity)],
            cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        self.workers.append(proc)
        return proc

    def wait_for(self, predicate, what: str, timeout: float) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if predicate():
                return
            for n, proc in enumerate(self.workers, 1):
                if proc.poll() not in (None, -signal.SIGKILL):
                    log = (self.tmp_path / f"worker-{n}.log").read_text()[-3000:]
                    pytest.fail(f"worker {n} exited on its own ({proc.returncode}): {log}")
            time.sleep(0.05)
        pytest.fail(f"timed out waiting for {what}: fake={self.fake.stats()} "
                    f"outbox={self.counts()}")

    def kill_mid_batch(self, proc: subprocess.Popen) -> None:
        paused = self.fake.arm_pause()  # the next accepted request: counted, then held
        self.wait_for(paused.is_set, "a batch in flight", 60)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        self.fake.release()

    def stop_workers(self) -> None:
        for proc in self.workers:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.workers:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=30)

    def close(self) -> None:
        for proc in self.workers:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)
        for log in self._logs:
            log.close()
        if BACKEND == "postgres":
            _pg_admin(f'DROP DATABASE IF EXISTS "{self.db}" WITH (FORCE)')
            import redis  # the workers' cache entries: only this run's prefix

            client = redis.Redis(host="127.0.0.1", port=6379, db=1)
            keys = list(client.scan_iter(match=f"{self.env['PERSONA_CDP_CACHE_PREFIX']}:*"))
            if keys:
                client.delete(*keys)


@pytest.mark.slow
def test_twenty_thousand_events_survive_failures_and_two_sigkills(tmp_path):
    started = time.monotonic()
    fake = FakeSegment(fail_ratio=0.30, failure_modes=("5xx", "429", "timeout"),
                       retry_after="1", timeout_sleep=1.5, seed=20_000, keep_requests=False)
    fake.start()
    site = Site(tmp_path, fake, "rel")
    try:
        expected = site.fill(EVENTS)
        setup_s = time.monotonic() - started

        drain_started = time.monotonic()
        marks = {}
        first = site.start_worker()
        site.wait_for(lambda: fake.distinct >= 1_000, "1,000 delivered", 60)
        site.kill_mid_batch(first)
        marks["kill_1_s"] = round(time.monotonic() - drain_started, 1)
        second = site.start_worker()
        site.wait_for(lambda: fake.distinct >= 3_000, "3,000 delivered", 60)
        site.kill_mid_batch(second)
        marks["kill_2_s"] = round(time.monotonic() - drain_started, 1)
        site.start_worker()
        site.wait_for(lambda: fake.distinct == EVENTS, "every id at the fake once", DEADLINE)
        marks["all_ids_seen_s"] = round(time.monotonic() - drain_started, 1)
        site.wait_for(lambda: site.counts().get("pending", 0) == 0, "the outbox to drain",
                      DEADLINE - (time.monotonic() - drain_started))
        drain_s = time.monotonic() - drain_started
        site.stop_workers()

        counts = site.counts()
        stats = fake.stats()
        with fake.lock:
            received = dict(fake.ids)
        figures = {
            "backend": BACKEND,
            "events": EVENTS,
            "distinct_ids_received": len(received),
            "received_total": sum(received.values()),
            "duplicates": sum(received.values()) - len(received),
            "ids_received_more_than_once": sum(1 for n in received.values() if n > 1),
            "kills": sum(1 for p in site.workers if p.returncode == -signal.SIGKILL),
            "workers_started": len(site.workers),
            "requests": stats["requests"],
            "statuses": stats["statuses"],
            "injected": {k: v for k, v in stats["outcomes"].items() if k != "ok"},
            "outbox": counts,
            "attempts_per_item": dict(sorted(site.counts("attempts").items())),
            **marks,
            "setup_s": round(setup_s, 1),
            "drain_s": round(drain_s, 1),
            "total_s": round(time.monotonic() - started, 1),
        }
        (tmp_path / "reliability.json").write_text(json.dumps(figures, indent=2))
        print("\nreliability:", json.dumps(figures))

        assert set(received) == expected  # every id arrived, and nothing else did
        assert figures["distinct_ids_received"] == EVENTS
        assert counts == {"done": EVENTS}  # no dead letters, nothing pending
        assert figures["kills"] == 2
        assert figures["duplicates"] >= 2  # at least the two batches in flight were re-sent
        assert stats["statuses"].get("429") and stats["statuses"].get("503", 0) + \
            stats["statuses"].get("500", 0) + stats["statuses"].get("502", 0) + \
            stats["statuses"].get("504", 0)
    finally:
        site.close()
        fake.stop()


@pytest.mark.slow
def test_two_workers_at_once_share_the_outbox_and_send_nothing_twice(tmp_path):
    with FakeSegment(keep_requests=False, slow=0.02) as fake:
        site = Site(tmp_path, fake, "pair")
        try:
            expected = site.fill(6_000)
            site.start_worker(verbosity=1)
            site.start_worker(verbosity=1)
            site.wait_for(lambda: site.counts().get("pending", 0) == 0, "the outbox to drain",
                          90)
            site.stop_workers()
            assert site.counts() == {"done": 6_000}
            with fake.lock:
                received = dict(fake.ids)
            assert set(received) == expected
            assert sum(received.values()) == 6_000  # exclusive claims: no id twice
            outputs = [(tmp_path / f"worker-{n}.log").read_text() for n in (1, 2)]
            delivered = [int(out.rsplit("delivered=", 1)[1].split()[0]) for out in outputs]
            assert sum(delivered) == 6_000 and min(delivered) > 0, delivered  # both worked
        finally:
            site.close()

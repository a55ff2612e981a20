"""A circuit breaker per sink, and the vendor's "not before" (``Retry-After``) hold.

States:

``closed``
    requests go out; consecutive failed batches (5xx, 429, timeouts, connection errors) are
    counted, and a success resets the count.
``open``
    after ``threshold`` consecutive failures: for ``cooldown`` seconds no request goes out,
    the sink answers "retry later" for every item without network I/O.
``half-open``
    the cool-down is over: exactly one batch (the probe) is let through. Success closes the
    breaker; failure opens it again for twice the previous cool-down (up to ``max_cooldown``).

Separately, :meth:`hold` records a vendor's ``Retry-After`` / ``X-RateLimit-Reset``: until
then :meth:`blocked_for` says how long to wait, breaker state notwithstanding.
:meth:`blocked_reason` says why, with the last failure's detail: the sink keeps it as the
``last_error`` of the items it did not send (they are rescheduled without counting an
attempt: they were never tried).

The state lives in the worker process (each ``persona_deliver`` process has its own); it is
not shared through the database, so N workers send at most N probes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

__all__ = ["CLOSED", "HALF_OPEN", "OPEN", "CircuitBreaker"]

CLOSED = "closed"
OPEN = "open"
HALF_OPEN = "half-open"


class CircuitBreaker:
    def __init__(
        self,
        *,
        threshold: int = 5,
        cooldown: float = 30.0,
        max_cooldown: float = 600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.threshold = max(1, int(threshold))
        self.cooldown = float(cooldown)
        self.max_cooldown = max(float(max_cooldown), self.cooldown)
        self.clock = clock
        self._lock = threading.Lock()
        self._state = CLOSED
        self._failures = 0
        self._open_until = 0.0
        self._current_cooldown = self.cooldown
        self._probe_out = False
        self._hold_until = 0.0
        #: how many times the breaker opened (for logs and tests)
        self.trips = 0
        #: what the last failed batch said (``failure(detail)``), for ``blocked_reason``
        self.last_failure = ""

    @property
    def state(self) -> str:
        with self._lock:
            if self._state == OPEN and self.clock() >= self._open_until:
                return HALF_OPEN
            return self._state

    @property
    def failures(self) -> int:
        return self._failures

    def blocked_for(self) -> float | None:
        """None when a request may go out now (a half-open breaker hands out its single
        probe here); otherwise the seconds until it may."""
        with self._lock:
            now = self.clock()
            if self._hold_until > now:
                return self._hold_until - now
            if self._state == OPEN:
                if now < self._open_until:
                    return self._open_until - now
                self._state = HALF_OPEN
                self._probe_out = False
            if self._state == HALF_OPEN:
                if self._probe_out:
                    # another thread's probe is in flight: wait for its verdict
                    return max(0.5, min(self._current_cooldown, 5.0))
                self._probe_out = True
            return None

    def blocked_reason(self) -> str:
        """Why :meth:`blocked_for` holds requests back now (for the items' ``last_error``)."""
        with self._lock:
            now = self.clock()
            last = f" (last failure: {self.last_failure})" if self.last_failure else ""
            if self._hold_until > now:
                return f"the vendor asked to wait (Retry-After){last}"
            if self._state == OPEN and now < self._open_until:
                return (
                    f"the circuit breaker is open for {self._current_cooldown:g} s after "
                    f"failed requests{last}"
                )
            if self._state == HALF_OPEN and self._probe_out:
                return f"the circuit breaker is half-open: waiting for the probe's answer{last}"
            return ""

    def hold(self, seconds: float) -> None:
        """The vendor asked for nothing before ``seconds`` from now."""
        if seconds > 0:
            with self._lock:
                self._hold_until = max(self._hold_until, self.clock() + seconds)

    def success(self) -> None:
        with self._lock:
            self._state = CLOSED
            self._failures = 0
            self._probe_out = False
            self._current_cooldown = self.cooldown
            self.last_failure = ""

    def failure(self, detail: str = "") -> bool:
        """Record a failed batch (``detail``: what went wrong); True when this failure
        opened the breaker."""
        with self._lock:
            now = self.clock()
            if detail:
                self.last_failure = detail
            if self._state == HALF_OPEN:
                self._current_cooldown = min(self.max_cooldown, max(self._current_cooldown * 2,
                                                                    self.cooldown))
                self._open(now)
                return True
            self._failures += 1
            if self._state == CLOSED and self._failures >= self.threshold:
                self._current_cooldown = self.cooldown
                self._open(now)
                return True
            return False

    def _open(self, now: float) -> None:
        self._state = OPEN
        self._open_until = now + self._current_cooldown
        self._probe_out = False
        self.trips += 1

    def reset(self) -> None:
        with self._lock:
            self._state = CLOSED
            self._failures = 0
            self._open_until = 0.0
            self._hold_until = 0.0
            self._probe_out = False
            self._current_cooldown = self.cooldown
            self.last_failure = ""

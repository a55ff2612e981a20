"""The sink for Segment's HTTP Tracking API and RudderStack's (Segment-compatible) gateway.

One :class:`CdpSink` per configured vendor. The outbox worker hands it up to ``max_batch``
items at a time; it turns each into a Segment-spec message, packs them into
``POST {host}/v1/batch`` requests under the vendor's limits, sends them on one reused
``requests.Session`` and says, per item, what happened (:class:`DeliveryResult`):

* **2xx** → delivered.
* **429, 408, 5xx, timeouts, connection errors** → retry. The delay is the vendor's
  ``Retry-After`` (delay-seconds or an HTTP-date) or else ``X-RateLimit-Reset`` (seconds to
  wait, or an epoch time in seconds or milliseconds), and the outbox's exponential backoff
  with full jitter never retries earlier than that. The batch also counts as a failure for
  the circuit breaker (:mod:`persona_cdp.breaker`).
* **400, 413, 422** for a batch of several messages → the batch is split in two and each half
  sent again, down to the single message the vendor refuses, which is dead-lettered with the
  vendor's own message; its neighbours are delivered.
* **other 4xx** (401 bad write key, 403, 404 source disabled...) and redirects → every item of
  that request is dead-lettered with the vendor's message: these never succeed by retrying.
  Fix the configuration, then replay the dead letters (admin action).
* A message over the per-message limit (32 KB), or one the vendor would drop (no userId and
  no anonymousId, a track without an event name) is dead-lettered before anything is sent,
  with the reason.

While the breaker is open, or the vendor's ``Retry-After`` has not passed, :meth:`deliver`
answers "retry" for every item without network I/O and marks them ``deferred``: the outbox
reschedules them without counting a delivery attempt (they were never sent, so a long outage
does not dead-letter them), with the reason and the last failure as their ``last_error``. A
wait of at most ``max_inline_wait`` seconds (default 2) is slept through in the worker
instead: waiting a moment is cheaper than rescheduling every claimed item. Items that were
sent and failed get the vendor's answer (or the timeout, the connection error) as their
``last_error``.
"""

from __future__ import annotations

import base64
import gzip as gzip_module
import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from email.utils import parsedate_to_datetime
from typing import Any

import requests
from requests.adapters import HTTPAdapter

from persona_sdk.clock import to_iso
from persona_sdk.events import Event
from persona_sdk.outbox import DeliveryResult, OutboxItem

from .breaker import CircuitBreaker
from .config import RUDDERSTACK, SEGMENT, VendorConfig

__all__ = ["CdpSink", "parse_retry_delay", "vendor_message"]

log = logging.getLogger("persona_cdp")

MESSAGE_TYPES = ("track", "identify", "page", "screen", "group", "alias")
#: the most any single Retry-After / X-RateLimit-Reset is believed (a guard, not a budget)
MAX_VENDOR_DELAY = 3600.0
MAX_ERROR_TEXT = 1000
#: statuses that mean "this payload is wrong" (split the batch to find the culprit)
REJECTS = frozenset({400, 413, 422})
RETRIES = frozenset({408, 425, 429})

try:
    from importlib.metadata import version as _version

    LIBRARY_VERSION = _version("persona-sdk")
except Exception:  # pragma: no cover - not installed as a distribution
    LIBRARY_VERSION = "0+unknown"
LIBRARY = {"name": "persona-sdk", "version": LIBRARY_VERSION}
USER_AGENT = f"persona-sdk/{LIBRARY_VERSION} (persona_cdp)"

ConsentLookup = Callable[[str, tuple[str, ...]], "Mapping[str, bool] | None"]


class BadMessage(Exception):
    """An item that can never be accepted (dead-lettered with this reason)."""


def parse_retry_delay(headers: Mapping[str, str], *, now: float | None = None) -> float | None:
    """Seconds the vendor asked us to wait, from ``Retry-After`` (delay-seconds or an
    HTTP-date, RFC 9110 §10.2.3) or else ``X-RateLimit-Reset``; None when it said nothing
    usable. ``X-RateLimit-Reset`` is read as seconds to wait when small, and as an epoch time
    (seconds, or milliseconds when it is that large) otherwise."""
    wall = time.time() if now is None else now
    value = headers.get("Retry-After")
    if value:
        value = value.strip()
        try:
            seconds = float(value)
        except ValueError:
            try:
                when = parsedate_to_datetime(value)
            except (TypeError, ValueError, IndexError):
                when = None
            if when is not None:
                if when.tzinfo is None:  # "-0000" parses naive; it means UTC
                    from datetime import timezone

                    when = when.replace(tzinfo=timezone.utc)
                return min(MAX_VENDOR_DELAY, max(0.0, when.timestamp() - wall))
        else:
            if seconds == seconds and seconds >= 0:  # not NaN
                return min(MAX_VENDOR_DELAY, seconds)
    value = headers.get("X-RateLimit-Reset")
    if value:
        try:
            reset = float(value.strip())
        except ValueError:
            return None
        if not reset == reset or reset < 0:
            return None
        if reset > 1e12:  # epoch milliseconds
            reset /= 1000.0
        if reset > 1e9:  # epoch seconds
            return min(MAX_VENDOR_DELAY, max(0.0, reset - wall))
        return min(MAX_VENDOR_DELAY, reset)
    return None


def vendor_message(vendor: str, response: Any) -> str:
    """``HTTP <status> from <vendor>: <what the vendor said>``: Segment answers JSON
    ``{"code", "message"}``, RudderStack plain text, the Profile and Public APIs
    ``{"error": {"code", "message"}}`` / ``{"errors": [{"message"}]}``."""
    status = getattr(response, "status_code", "?")
    text = ""
    try:
        text = (response.text or "").strip()
    except Exception:  # pragma: no cover - undecodable body
        text = ""
    said = text[:MAX_ERROR_TEXT]
    if text.startswith(("{", "[")):
        try:
            data = json.loads(text)
        except ValueError:
            data = None
        if isinstance(data, dict):
            inner = data.get("error") if isinstance(data.get("error"), dict) else data
            errors = data.get("errors")
            if isinstance(inner, dict) and ("message" in inner or "code" in inner):
                code, message = inner.get("code"), inner.get("message")
                said = ": ".join(str(p) for p in (code, message) if p not in (None, ""))
            elif isinstance(errors, list) and errors and isinstance(errors[0], dict):
                said = "; ".join(str(e.get("message", e)) for e in errors[:5])
    reason = getattr(response, "reason", "") or ""
    return f"HTTP {status} from {vendor}: {said or reason or 'no explanation given'}"[
        : MAX_ERROR_TEXT + 64
    ]


class CdpSink:
    """An :class:`~persona_sdk.outbox.EventSink` for Segment or RudderStack.

    ``consent_lookup(profile_id, purposes)`` (optional) answers which of ``purposes`` the
    person has granted *now*; it drives ``integrations`` (see the package docs). Without it,
    destinations mapped to a purpose are switched off (the safe answer).
    """

    def __init__(
        self,
        config: VendorConfig,
        *,
        session: requests.Session | None = None,
        breaker: CircuitBreaker | None = None,
        consent_lookup: ConsentLookup | None = None,
        sleep: Callable[[float], None] = time.sleep,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.vendor = config.vendor
        self.name = config.name
        self.purposes = tuple(config.purposes)
        self.max_batch = config.max_batch
        self.breaker = breaker or CircuitBreaker(
            threshold=config.breaker_threshold, cooldown=config.breaker_cooldown
        )
        self.consent_lookup = consent_lookup
        self.url = f"{config.host}/v1/batch"
        self._sleep = sleep
        self._wall = wall_clock
        self._session = session
        self._session_lock = threading.Lock()
        self._encode = json.JSONEncoder(
            separators=(",", ":"), ensure_ascii=False, allow_nan=False
        ).encode
        self._sharing = "sharing" in self.purposes
        self._mapped_purposes = tuple(config.integrations)
        # the constant parts of every request body
        self._head = b'{"batch":['
        tail = b'],"sentAt":"%s"'
        if self.vendor == SEGMENT:
            tail += b',"writeKey":' + json.dumps(config.write_key).encode()
        self._tail = tail + b"}"
        self._headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT}
        if self.vendor == RUDDERSTACK:
            token = base64.b64encode(f"{config.write_key}:".encode()).decode("ascii")
            self._headers["Authorization"] = f"Basic {token}"
        if config.gzip:
            self._headers["Content-Encoding"] = "gzip"
        #: counters for logs, tests and the benchmark (``persona_deliver --threads`` calls
        #: ``deliver`` from several threads: they are updated under ``_stats_lock``)
        self._stats_lock = threading.Lock()
        self.stats = {
            "requests": 0,
            "delivered": 0,
            "retried": 0,
            "deferred": 0,
            "failed": 0,
            "split": 0,
        }

    def _count(self, **counts: int) -> None:
        with self._stats_lock:
            for key, n in counts.items():
                self.stats[key] += n

    def __repr__(self) -> str:
        return f"<CdpSink {self.name} -> {self.url}>"

    # -- EventSink ---------------------------------------------------------------------------
    def accepts(self, event: Event) -> bool:
        """Every track, identify and page; an alias only with a user id (Segment's alias
        links ``previousId`` to a ``userId``)."""
        if event.type == "alias":
            return event.user_id is not None
        return event.type in ("track", "identify", "page")

    def deliver(self, items: Sequence[OutboxItem]) -> DeliveryResult:
        delivered: set[str] = set()
        retry: dict[str, float] = {}
        failed: dict[str, str] = {}
        errors: dict[str, str] = {}
        deferred: set[str] = set()
        prepared: list[tuple[OutboxItem, bytes]] = []
        consent = self._consent_of(items)
        limit = self.config.max_message_bytes
        for item in items:
            try:
                data = self._encode(self.message(item, consent.get(item.profile_id))).encode()
            except BadMessage as exc:
                failed[item.id] = f"not sent: {exc}"
                continue
            except (TypeError, ValueError) as exc:
                failed[item.id] = f"not sent: the payload is not JSON-serializable ({exc})"
                continue
            if len(data) > limit:
                failed[item.id] = (
                    f"not sent: the message is {len(data):,} bytes, over {self.config.label}'s "
                    f"per-message limit of {limit:,} bytes{' (32 KB)' * (limit == 32 * 1024)}; "
                    "the vendor would refuse it, so it is never retried"
                )
                continue
            prepared.append((item, data))

        queue: deque[list[tuple[OutboxItem, bytes]]] = deque(self._chunks(prepared))
        while queue:
            chunk = queue.popleft()
            wait = self._may_send()
            if wait is not None:
                why = self.breaker.blocked_reason() or "the circuit breaker holds requests back"
                reason = f"not sent: {why}; next try in {wait:.0f} s"
                for rest in (chunk, *queue):
                    for item, _ in rest:
                        retry[item.id] = wait
                        errors[item.id] = reason
                        deferred.add(item.id)
                break
            outcome, detail, delay = self._post(chunk)
            if outcome == "ok":
                delivered.update(item.id for item, _ in chunk)
            elif outcome == "retry":
                for item, _ in chunk:
                    retry[item.id] = delay
                    errors[item.id] = detail
            elif outcome == "reject" and len(chunk) > 1:
                self._count(split=1)
                half = len(chunk) // 2
                queue.appendleft(chunk[half:])
                queue.appendleft(chunk[:half])
            else:  # a single rejected message, or a request that can never succeed
                for item, _ in chunk:
                    failed[item.id] = detail
        self._count(
            delivered=len(delivered), retried=len(retry), deferred=len(deferred),
            failed=len(failed),
        )
        for item_id, reason in failed.items():
            log.warning("persona_cdp: %s: dead letter %s: %s", self.name, item_id, reason)
        return DeliveryResult(
            delivered=frozenset(delivered),
            retry=retry,
            failed=failed,
            errors=errors,
            deferred=frozenset(deferred),
        )

    # -- messages ----------------------------------------------------------------------------
    def message(
        self, item: OutboxItem, consent: Mapping[str, bool] | None = None
    ) -> dict[str, Any]:
        """The Segment-spec message for ``item`` (raises :class:`BadMessage`)."""
        msg = dict(item.payload)
        kind = msg.get("type")
        if kind not in MESSAGE_TYPES:
            raise BadMessage(f"unknown message type {kind!r}")
        if not msg.get("userId") and not msg.get("anonymousId"):
            raise BadMessage(
                "the message has neither userId nor anonymousId (the vendor drops it: "
                "no_user_anon_id)"
            )
        message_id = msg.get("messageId") or item.message_id
        if not isinstance(message_id, str) or not 0 < len(message_id) < 100:
            raise BadMessage("messageId must be a string of 1-99 characters")
        msg["messageId"] = message_id
        if kind == "track" and not msg.get("event"):
            raise BadMessage("a track message needs an event name")
        if kind == "alias" and not (msg.get("previousId") and msg.get("userId")):
            raise BadMessage("an alias message needs previousId and userId")
        if not msg.get("timestamp"):
            msg["timestamp"] = to_iso(item.created_at)
        context = dict(msg.get("context") or {})
        context["library"] = LIBRARY
        if kind == "identify":
            traits = dict(msg.get("traits") or {})
            if not self._sharing:
                traits.pop("email", None)
            if self.vendor == RUDDERSTACK:
                # rudder-sdk-python puts identify traits in context.traits, not at the top
                merged = dict(context.get("traits") or {})
                merged.update(traits)
                context["traits"] = merged
                msg.pop("traits", None)
            else:
                msg["traits"] = traits
        if not self._sharing and isinstance(context.get("traits"), Mapping):
            context["traits"] = {k: v for k, v in context["traits"].items() if k != "email"}
        msg["context"] = context
        integrations = self.integrations_for(consent)
        if integrations is not None:
            msg["integrations"] = integrations
        if self.vendor == RUDDERSTACK:
            msg["channel"] = "server"
        return msg

    def integrations_for(self, consent: Mapping[str, bool] | None) -> dict[str, bool] | None:
        """``{"All": True, "<Destination>": False, ...}``: destinations mapped to a purpose
        the person has not granted are switched off. None when nothing is mapped (Segment:
        field omitted, every enabled destination gets the event); RudderStack always gets
        ``{"All": True}`` at least, as its SDK sends."""
        if not self._mapped_purposes:
            return {"All": True} if self.vendor == RUDDERSTACK else None
        out: dict[str, bool] = {"All": True}
        for purpose, names in self.config.integrations.items():
            if not (consent is not None and consent.get(purpose) is True):
                for name in names:
                    out[name] = False
        return out

    def _consent_of(self, items: Iterable[OutboxItem]) -> dict[str, Mapping[str, bool] | None]:
        if not self._mapped_purposes:
            return {}
        out: dict[str, Mapping[str, bool] | None] = {}
        for item in items:
            pid = item.profile_id
            if pid in out:
                continue
            answer: Mapping[str, bool] | None = None
            if self.consent_lookup is not None:
                try:
                    answer = self.consent_lookup(pid, self._mapped_purposes)
                except Exception:
                    log.warning(
                        "persona_cdp: %s: consent lookup failed for %s; mapped destinations "
                        "are switched off for it", self.name, pid, exc_info=True,
                    )
            out[pid] = answer
        return out

    def _chunks(
        self, prepared: list[tuple[OutboxItem, bytes]]
    ) -> list[list[tuple[OutboxItem, bytes]]]:
        """Greedy packing under ``max_batch`` events and ``max_batch_bytes`` per request body
        (the body's envelope and separators included)."""
        limit = self.config.max_batch_bytes
        envelope = len(self._head) + len(self._tail % (b"x" * 24))  # sentAt: 24 chars
        chunks: list[list[tuple[OutboxItem, bytes]]] = []
        current: list[tuple[OutboxItem, bytes]] = []
        size = envelope
        for entry in prepared:
            grow = len(entry[1]) + (1 if current else 0)
            if current and (len(current) >= self.max_batch or size + grow > limit):
                chunks.append(current)
                current, size, grow = [], envelope, len(entry[1])
            current.append(entry)
            size += grow
        if current:
            chunks.append(current)
        return chunks

    def body(self, chunk: Sequence[tuple[OutboxItem, bytes]], sent_at: str) -> bytes:
        return b"".join(
            (self._head, b",".join(data for _, data in chunk), self._tail % sent_at.encode())
        )

    # -- HTTP --------------------------------------------------------------------------------
    @property
    def session(self) -> requests.Session:
        if self._session is None:
            with self._session_lock:
                if self._session is None:
                    session = requests.Session()
                    adapter = HTTPAdapter(pool_connections=2, pool_maxsize=4, max_retries=0)
                    session.mount("https://", adapter)
                    session.mount("http://", adapter)
                    self._session = session
        return self._session

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None

    def _may_send(self) -> float | None:
        """None to send now (after a short inline wait, if any); else the delay to give
        every remaining item."""
        wait = self.breaker.blocked_for()
        if wait is not None and wait <= self.config.max_inline_wait:
            self._sleep(wait)
            wait = self.breaker.blocked_for()
        return wait

    def _post(self, chunk: Sequence[tuple[OutboxItem, bytes]]) -> tuple[str, str, float]:
        """Send one request. Returns ``(outcome, detail, delay)`` with outcome ``ok``,
        ``retry``, ``reject`` (payload refused: split or dead-letter) or ``fail``."""
        body = self.body(chunk, to_iso(self._wall()))
        if self.config.gzip:
            body = gzip_module.compress(body, compresslevel=6)
        self._count(requests=1)
        try:
            response = self.session.post(
                self.url,
                data=body,
                headers=self._headers,
                timeout=(self.config.connect_timeout, self.config.timeout),
                allow_redirects=False,
            )
        except requests.Timeout as exc:
            return self._failed_batch(f"timed out after {self.config.timeout:g} s ({exc})", 0.0)
        except requests.RequestException as exc:
            return self._failed_batch(f"{type(exc).__name__}: {exc}", 0.0)
        status = response.status_code
        if 200 <= status < 300:
            self.breaker.success()
            return "ok", "", 0.0
        detail = vendor_message(self.config.label, response)
        if status in RETRIES or status >= 500:
            delay = parse_retry_delay(response.headers, now=self._wall())
            if delay:
                self.breaker.hold(delay)
            return self._failed_batch(detail, delay or 0.0)
        self.breaker.success()  # the vendor is up; it refuses this payload
        if 300 <= status < 400:
            where = response.headers.get("Location", "")
            return "fail", f"{detail} (redirect to {where!r}: check the configured host)", 0.0
        if status in REJECTS:
            return "reject", detail, 0.0
        log.error(
            "persona_cdp: %s refused a batch of %d with %s: items are dead-lettered; fix the "
            "configuration and replay them", self.name, len(chunk), detail,
        )
        return "fail", detail, 0.0

    def _failed_batch(self, detail: str, delay: float) -> tuple[str, str, float]:
        if self.breaker.failure(detail):
            log.warning(
                "persona_cdp: %s: circuit breaker opened after %d failed batches (last: %s)",
                self.name, self.breaker.threshold, detail,
            )
        return "retry", detail, delay

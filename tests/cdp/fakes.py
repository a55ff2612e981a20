"""Local fake Segment, RudderStack and Segment Profile API servers that enforce the contract.

Each fake is an ``http.server.ThreadingHTTPServer`` on 127.0.0.1 (port 0) in a daemon thread,
speaking HTTP/1.1 with keep-alive (so a client's reused session really is reused). What they
enforce is ../shared/api-contracts.md, sections 1-3:

:class:`FakeSegment` (HTTP Tracking API + the Public API's ``POST /regulations``)
    ``POST /v1/batch`` and ``/v1/{identify,track,page,screen,group,alias}``; ``Content-Type:
    application/json``; gzip bodies; auth by ``writeKey`` in the body or ``Basic
    base64(key:)``; 500 KB per batch request and 32 KB per message (400); invalid JSON (400);
    more than 2,500 events → 200, the excess rejected. Errors are JSON ``{"code", "message"}``
    (analytics-python reads exactly those keys). The fake is **stricter than Segment**, which
    answers 200 and drops silently: a message without ``userId``/``anonymousId`` is a 400
    ``no_user_anon_id`` (status unconfirmed in the docs), as are a track without ``event``, an
    alias without ``previousId``/``userId``, a ``messageId`` of 100+ characters and a
    timestamp that is not ISO-8601; an unknown write key is a 401. A loud fake catches a
    sender that would lose data silently. The success body (unconfirmed) is
    ``{"success": true}``.
:class:`FakeRudderStack` (gateway + ``POST /v2/regulations``)
    Basic auth only (a body ``writeKey`` is ignored): 401 ``failed to read writekey from
    header`` / ``invalid write key``, 404 ``source is disabled``; plain-text answers: 200
    ``OK``, 400 ``invalid json`` / ``empty batch payload`` / ``request neither has
    anonymousId nor userId``, 413 ``request size exceeds max limit`` (4000 KB by default),
    429 ``max requests limit reached`` without ``Retry-After``; a missing ``messageId`` is
    filled with a UUID.
:class:`FakeProfileAPI`
    ``GET /v1/spaces/{space}/collections/users/profiles/{type}:{value}/traits`` with
    ``limit`` (1-200), ``class`` (``audience``/``computed_trait``), ``include``; Basic auth with
    the token as user name; errors ``{"error": {"code", "message"}}`` (404 ``not_found``
    "Profile was not found.", 401 ``authentication_error``, 400 ``validation_error``).

Failure injection (every fake): ``fail_ratio`` of requests fail with one of
``failure_modes`` — ``"5xx"`` (500/502/503/504, nothing processed), ``"429"`` (with
``Retry-After`` and ``X-RateLimit-Reset`` as configured, nothing processed) or
``"timeout"`` (the request **is** processed and counted, then the answer comes after
``timeout_sleep`` seconds, later than the client waits: the lost-acknowledgement case that
makes at-least-once delivery send duplicates); ``slow`` delays every answer; ``script()``
forces the next outcomes; ``arm_pause()`` holds the next accepted request after counting it
until ``release()`` (to kill a worker mid-batch). Every fake counts the message ids it
accepted: ``distinct``, ``total``, ``duplicates``.

``python -m tests.cdp.fakes --vendor segment`` serves one from the command line (the
benchmark runs it in its own process) and prints its URL; ``GET /__stats`` answers the counts.
"""

from __future__ import annotations

import argparse
import base64
import gzip
import json
import random
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Iterable, Mapping
from datetime import datetime
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import attrs

SEGMENT_TYPES = ("identify", "track", "page", "screen", "group", "alias")
KB = 1024
_compact = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


@attrs.define
class Record:
    method: str
    path: str
    headers: dict[str, str]
    body: Any  # parsed JSON (or None)
    raw_size: int
    status: int = 0
    outcome: str = ""
    client_port: int = 0


class _Reply(Exception):
    """Stop handling and answer with this."""

    def __init__(self, status: int, body: Any, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(status)
        self.status = status
        self.body = body
        self.headers = dict(headers or {})


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64


class FakeServer:
    """What every fake shares: the server thread, failure injection, counters."""

    vendor = "fake"

    def __init__(
        self,
        *,
        fail_ratio: float = 0.0,
        failure_modes: Iterable[str] = ("5xx", "429", "timeout"),
        retry_after: str | None = "1",
        rate_limit_reset: str | None = None,
        timeout_sleep: float = 2.0,
        slow: float = 0.0,
        seed: int = 0,
        keep_requests: bool = True,
    ) -> None:
        self.fail_ratio = fail_ratio
        self.failure_modes = tuple(failure_modes)
        self.retry_after = retry_after
        self.rate_limit_reset = rate_limit_reset
        self.timeout_sleep = timeout_sleep
        self.slow = slow
        self.keep_requests = keep_requests
        self._rng = random.Random(seed)
        self.lock = threading.Lock()
        self.requests: list[Record] = []
        self.statuses: Counter[int] = Counter()
        self.outcomes: Counter[str] = Counter()
        self.ids: Counter[str] = Counter()
        self.rejected_excess = 0
        self._script: deque[str] = deque()
        self._pause_armed = False
        self.paused = threading.Event()
        self._release = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.url = ""

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> FakeServer:
        fake = self

        class Handler(_Handler):
            pass

        Handler.fake = fake
        self._server = _Server(("127.0.0.1", 0), Handler)
        host, port = self._server.server_address[:2]
        self.url = f"http://{host}:{port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
            name=f"fake-{self.vendor}", daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._release.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- control -----------------------------------------------------------------------------
    def script(self, *outcomes: str) -> None:
        """Force the next outcomes, in order: ``"ok"``, ``"5xx"``/``"500"``/``"503"``...,
        ``"429"``, ``"timeout"``, ``"slow:<seconds>"``."""
        with self.lock:
            self._script.extend(outcomes)

    def arm_pause(self) -> threading.Event:
        """Hold the next accepted request (after counting its ids) until :meth:`release`."""
        with self.lock:
            self.paused.clear()
            self._release.clear()
            self._pause_armed = True
        return self.paused

    def release(self) -> None:
        self._release.set()

    def reset(self) -> None:
        with self.lock:
            self.requests.clear()
            self.statuses.clear()
            self.outcomes.clear()
            self.ids.clear()
            self.rejected_excess = 0
            self._script.clear()

    # -- counters ----------------------------------------------------------------------------
    @property
    def distinct(self) -> int:
        with self.lock:
            return len(self.ids)

    @property
    def total(self) -> int:
        with self.lock:
            return sum(self.ids.values())

    @property
    def duplicates(self) -> int:
        with self.lock:
            return sum(self.ids.values()) - len(self.ids)

    def stats(self) -> dict[str, Any]:
        with self.lock:
            return {
                "distinct": len(self.ids),
                "total": sum(self.ids.values()),
                "requests": sum(self.statuses.values()),
                "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
                "outcomes": dict(self.outcomes),
                "rejected_excess": self.rejected_excess,
            }

    def batches(self, path: str = "/v1/batch") -> list[list[dict[str, Any]]]:
        """The ``batch`` arrays of the accepted requests to ``path``."""
        with self.lock:
            return [
                r.body["batch"]
                for r in self.requests
                if r.path == path and r.status == 200 and isinstance(r.body, dict)
            ]

    def messages(self) -> list[dict[str, Any]]:
        return [m for batch in self.batches() for m in batch]

    # -- the request path --------------------------------------------------------------------
    def _choose(self) -> str:
        with self.lock:
            if self._script:
                return self._script.popleft()
            if self.fail_ratio and self._rng.random() < self.fail_ratio:
                return self._rng.choice(self.failure_modes)
            return "ok"

    def _failure(self, outcome: str) -> _Reply | None:
        if outcome == "5xx" or (outcome.isdigit() and outcome.startswith("5")):
            status = int(outcome) if outcome.isdigit() else self._rng.choice((500, 502, 503, 504))
            return self.error_reply(status, "internal_error", "the fake failed on purpose")
        if outcome == "429":
            headers = {}
            if self.retry_after is not None:
                headers["Retry-After"] = self.retry_after
            if self.rate_limit_reset is not None:
                headers["X-RateLimit-Reset"] = self.rate_limit_reset
            return self.rate_limited_reply(headers)
        return None

    def count(self, message_ids: Iterable[str]) -> None:
        with self.lock:
            self.ids.update(message_ids)

    def after_accept(self, outcome: str) -> None:
        """The pause hook and the simulated lost acknowledgement (timeout)."""
        with self.lock:
            pause, self._pause_armed = self._pause_armed, False
        if pause:
            self.paused.set()
            self._release.wait(timeout=60)
        if outcome == "timeout":
            time.sleep(self.timeout_sleep)
        elif outcome.startswith("slow:"):
            time.sleep(float(outcome.split(":", 1)[1]))

    # vendor specifics -------------------------------------------------------------------
    def handle(self, method: str, path: str, query: dict[str, list[str]],
               headers: Mapping[str, str], raw: bytes, record: Record,
               outcome: str) -> tuple[int, Any, dict[str, str]]:
        raise NotImplementedError

    def error_reply(self, status: int, code: str, message: str) -> _Reply:
        return _Reply(status, {"code": code, "message": message})

    def rate_limited_reply(self, headers: dict[str, str]) -> _Reply:
        return _Reply(429, {"code": "rate_limited", "message": "Too many requests"}, headers)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are two writes: no 40 ms delayed ACK
    fake: FakeServer

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_PUT(self) -> None:
        self._serve("PUT")

    def _serve(self, method: str) -> None:
        fake = self.fake
        parts = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        record = Record(method, parts.path, headers, None, len(raw),
                        client_port=self.client_address[1])
        if parts.path == "/__stats":
            self._send(200, fake.stats(), {})
            return
        outcome = fake._choose()
        try:
            failure = fake._failure(outcome)
            if failure is not None:
                raise failure
            if fake.slow and not outcome.startswith("slow:"):
                time.sleep(fake.slow)
            status, body, extra = fake.handle(
                method, parts.path, parse_qs(parts.query), headers, raw, record, outcome
            )
        except _Reply as reply:
            status, body, extra = reply.status, reply.body, reply.headers
        record.status = status
        record.outcome = outcome
        with fake.lock:
            fake.statuses[status] += 1
            fake.outcomes[outcome if status < 300 or outcome != "ok" else f"refused-{status}"] += 1
            if fake.keep_requests:
                fake.requests.append(record)
        if 200 <= status < 300:
            fake.after_accept(outcome)
        self._send(status, body, extra)

    def _send(self, status: int, body: Any, headers: Mapping[str, str]) -> None:
        if isinstance(body, (bytes, str)):
            data = body.encode() if isinstance(body, str) else body
            ctype = "text/plain; charset=utf-8"
        else:
            data = json.dumps(body).encode()
            ctype = "application/json"
        try:
            self.send_response(status)
            self.send_header("Content-Type", headers.get("Content-Type", ctype))
            self.send_header("Content-Length", str(len(data)))
            for key, value in headers.items():
                if key != "Content-Type":
                    self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout)
            self.close_connection = True


def _basic_user(headers: Mapping[str, str]) -> str | None:
    auth = headers.get("authorization", "")
    if not auth.lower().startswith("basic "):
        return None
    try:
        decoded = base64.b64decode(auth.split(None, 1)[1], validate=True).decode()
    except (ValueError, UnicodeDecodeError):
        return None
    return decoded.split(":", 1)[0]


def _bearer(headers: Mapping[str, str]) -> str | None:
    auth = headers.get("authorization", "")
    return auth.split(None, 1)[1].strip() if auth.lower().startswith("bearer ") else None


def _decode(headers: Mapping[str, str], raw: bytes, bad: _Reply) -> bytes:
    if headers.get("content-encoding", "").lower() == "gzip":
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError):
            raise bad from None
    return raw


def _is_iso(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    text = value[:-1] + "+00:00" if value.endswith(("Z", "z")) else value
    try:
        datetime.fromisoformat(text)
    except ValueError:
        return False
    return True


class FakeSegment(FakeServer):
    """Segment's HTTP Tracking API (and the Public API's regulations endpoint)."""

    vendor = "segment"

    def __init__(
        self,
        *,
        write_keys: Iterable[str] = ("WK",),
        public_api_tokens: Iterable[str] = ("PAT",),
        max_message_bytes: int = 32 * KB,
        max_batch_bytes: int = 500_000,
        max_batch_events: int = 2_500,
        strict: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.write_keys = set(write_keys)
        self.public_api_tokens = set(public_api_tokens)
        self.max_message_bytes = max_message_bytes
        self.max_batch_bytes = max_batch_bytes
        self.max_batch_events = max_batch_events
        self.strict = strict
        self.regulations: list[dict[str, Any]] = []

    def handle(self, method, path, query, headers, raw, record, outcome):
        if path == "/regulations" and method == "POST":
            return self._regulation(headers, raw, record)
        kind = path[len("/v1/"):] if path.startswith("/v1/") else ""
        if method != "POST" or (kind != "batch" and kind not in SEGMENT_TYPES):
            raise self.error_reply(404, "not_found", f"no route for {method} {path}")
        if not headers.get("content-type", "").lower().startswith("application/json"):
            raise self.error_reply(
                400, "invalid_request", "Content-Type must be application/json")
        body = _decode(headers, raw,
                       self.error_reply(400, "invalid_request", "invalid gzip body"))
        limit = self.max_batch_bytes if kind == "batch" else self.max_message_bytes
        if len(body) > limit:
            raise self.error_reply(
                400, "payload_too_large",
                f"request is {len(body)} bytes; the limit is {limit} bytes")
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise self.error_reply(400, "invalid_json", f"invalid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise self.error_reply(400, "invalid_json", "the body must be a JSON object")
        record.body = data
        key = data.get("writeKey") or _basic_user(headers)
        if not key:
            raise self.error_reply(401, "unauthorized", "missing write key")
        if key not in self.write_keys:
            raise self.error_reply(401, "unauthorized", "invalid write key")
        if kind == "batch":
            batch = data.get("batch")
            if not isinstance(batch, list) or not batch:
                raise self.error_reply(400, "invalid_request", "batch must be a non-empty array")
            shared = {k: data[k] for k in ("context", "integrations") if k in data}
        else:
            batch = [dict(data, type=data.get("type", kind))]
            shared = {}
        accepted = []
        for n, message in enumerate(batch):
            where = f"batch[{n}]" if kind == "batch" else "message"
            self._check(message, where, shared)
            accepted.append(message)
        if len(accepted) > self.max_batch_events:
            with self.lock:
                self.rejected_excess += len(accepted) - self.max_batch_events
            accepted = accepted[: self.max_batch_events]
        self.count(m["messageId"] for m in accepted if isinstance(m.get("messageId"), str))
        return 200, {"success": True}, {}

    def _check(self, message: Any, where: str, shared: Mapping[str, Any]) -> None:
        if not isinstance(message, dict):
            raise self.error_reply(400, "invalid_request", f"{where} must be an object")
        size = len(_compact(message).encode())
        if size > self.max_message_bytes:
            raise self.error_reply(
                400, "payload_too_large",
                f"{where} is {size} bytes; the limit is {self.max_message_bytes} bytes per message")
        kind = message.get("type")
        if kind not in SEGMENT_TYPES:
            raise self.error_reply(400, "invalid_request", f"{where}: missing or unknown type")
        if not message.get("userId") and not message.get("anonymousId"):
            raise self.error_reply(
                400, "no_user_anon_id", f"{where}: userId or anonymousId is required")
        if not self.strict:
            return
        problem = None
        message_id = message.get("messageId")
        if message_id is not None and (not isinstance(message_id, str) or len(message_id) >= 100):
            problem = "messageId must be a string shorter than 100 characters"
        elif "timestamp" in message and not _is_iso(message["timestamp"]):
            problem = "timestamp must be ISO-8601"
        elif kind == "track" and not message.get("event"):
            problem = "a track call needs an event name"
        elif kind == "alias" and not (message.get("previousId") and message.get("userId")):
            problem = "an alias call needs previousId and userId"
        elif kind == "group" and not message.get("groupId"):
            problem = "a group call needs groupId"
        elif kind in ("identify", "group") and not isinstance(message.get("traits", {}), dict):
            problem = "traits must be an object"
        elif not isinstance(message.get("integrations", shared.get("integrations", {})), dict):
            problem = "integrations must be an object"
        if problem:
            raise self.error_reply(400, "invalid_request", f"{where}: {problem}")

    def _regulation(self, headers, raw, record):
        token = _bearer(headers)
        if token not in self.public_api_tokens:
            raise _Reply(401, {"errors": [{"type": "unauthorized",
                                           "message": "Unauthorized request"}]})
        try:
            data = json.loads(raw)
        except ValueError:
            raise _Reply(400, {"errors": [{"type": "bad-request", "message": "invalid JSON"}]}) \
                from None
        record.body = data
        types = ("DELETE_INTERNAL", "DELETE_ONLY", "SUPPRESS_ONLY", "SUPPRESS_WITH_DELETE",
                 "SUPPRESS_WITH_DELETE_INTERNAL", "UNSUPPRESS")
        ids = data.get("subjectIds") if isinstance(data, dict) else None
        if (
            not isinstance(data, dict)
            or data.get("regulationType") not in types
            or data.get("subjectType") not in ("USER_ID", "OBJECT_ID")
            or not isinstance(ids, list)
            or not ids
            or len(ids) > 5000
            or not all(isinstance(i, str) and i for i in ids)
        ):
            raise _Reply(422, {"errors": [{"type": "validation",
                                           "message": "invalid regulation request"}]})
        regulate_id = uuid.uuid4().hex[:27]
        with self.lock:
            self.regulations.append(dict(data, regulateId=regulate_id))
        return 200, {"data": {"regulateId": regulate_id}}, {}


class FakeRudderStack(FakeServer):
    """RudderStack's gateway (and the User Suppression API's ``POST /v2/regulations``)."""

    vendor = "rudderstack"

    def __init__(
        self,
        *,
        write_keys: Iterable[str] = ("RWK",),
        disabled_keys: Iterable[str] = (),
        api_tokens: Iterable[str] = ("RPAT",),
        max_request_bytes: int = 4000 * KB,
        max_message_bytes: int | None = None,
        retry_after: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(retry_after=retry_after, **kwargs)
        self.write_keys = set(write_keys)
        self.disabled_keys = set(disabled_keys)
        self.api_tokens = set(api_tokens)
        self.max_request_bytes = max_request_bytes
        self.max_message_bytes = max_message_bytes
        self.regulations: list[dict[str, Any]] = []

    def error_reply(self, status: int, code: str, message: str) -> _Reply:
        return _Reply(status, message + "\n")  # http.Error: plain text

    def rate_limited_reply(self, headers: dict[str, str]) -> _Reply:
        return _Reply(429, "max requests limit reached\n", headers)

    def handle(self, method, path, query, headers, raw, record, outcome):
        if path == "/v2/regulations" and method == "POST":
            return self._regulation(headers, raw, record)
        kind = path[len("/v1/"):] if path.startswith("/v1/") else ""
        if method != "POST" or (kind not in SEGMENT_TYPES and kind not in ("batch", "merge")):
            raise _Reply(404, "404 page not found\n")
        key = _basic_user(headers)
        if not key:
            raise _Reply(401, "failed to read writekey from header\n")
        if key in self.disabled_keys:
            raise _Reply(404, "source is disabled\n")
        if key not in self.write_keys:
            raise _Reply(401, "invalid write key\n")
        if len(raw) > self.max_request_bytes:
            raise _Reply(413, "request size exceeds max limit\n")
        body = _decode(headers, raw, _Reply(400, "invalid json\n"))
        if len(body) > self.max_request_bytes:
            raise _Reply(413, "request size exceeds max limit\n")
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise _Reply(400, "invalid json\n") from None
        if not isinstance(data, dict):
            raise _Reply(400, "invalid json\n")
        record.body = data
        if kind == "batch":
            batch = data.get("batch")
            if not isinstance(batch, list) or not batch:
                raise _Reply(400, "empty batch payload\n")
        else:
            batch = [dict(data, type=data.get("type", kind))]
        for message in batch:
            if not isinstance(message, dict):
                raise _Reply(400, "invalid json\n")
            if not message.get("anonymousId") and not message.get("userId"):
                raise _Reply(400, "request neither has anonymousId nor userId\n")
            if self.max_message_bytes is not None and len(json.dumps(message).encode()) > \
                    self.max_message_bytes:
                raise _Reply(413, "request size exceeds max limit\n")
        ids = []
        for message in batch:
            if not message.get("messageId"):
                message["messageId"] = str(uuid.uuid4())
            ids.append(str(message["messageId"]))
        self.count(ids)
        return 200, "OK", {}

    def _regulation(self, headers, raw, record):
        if _bearer(headers) not in self.api_tokens:
            raise _Reply(401, {"error": "Unauthorized"})
        try:
            data = json.loads(raw)
        except ValueError:
            raise _Reply(400, {"error": "invalid JSON"}) from None
        record.body = data
        users = data.get("users") if isinstance(data, dict) else None
        if (
            not isinstance(data, dict)
            or data.get("regulationType") not in ("suppress", "suppress_with_delete")
            or not isinstance(users, list)
            or not users
            or not all(isinstance(u, dict) and u.get("userId") for u in users)
            or (data["regulationType"] == "suppress_with_delete"
                and not isinstance(data.get("destinationIds"), list))
        ):
            raise _Reply(400, {"error": "invalid regulation"})
        regulation_id = str(uuid.uuid4())
        with self.lock:
            self.regulations.append(dict(data, id=regulation_id))
        return 201, {"id": regulation_id}, {}


class FakeProfileAPI(FakeServer):
    """Segment's Profile API (traits only: what the adapter reads)."""

    vendor = "segment-profiles"

    def __init__(
        self,
        *,
        space_id: str = "spa_test",
        tokens: Iterable[str] = ("PTOKEN",),
        retry_after: str | None = "1",
        **kwargs: Any,
    ) -> None:
        super().__init__(retry_after=retry_after, **kwargs)
        self.space_id = space_id
        self.tokens = set(tokens)
        #: "user_id:u1" -> {"custom": {...}, "computed_trait": {...}, "audience": {...}}
        self.profiles: dict[str, dict[str, dict[str, Any]]] = {}

    def add_profile(
        self,
        key: str,
        traits: Mapping[str, Any] | None = None,
        *,
        audiences: Mapping[str, Any] | None = None,
        computed: Mapping[str, Any] | None = None,
    ) -> None:
        with self.lock:
            self.profiles[key] = {
                "custom": dict(traits or {}),
                "computed_trait": dict(computed or {}),
                "audience": dict(audiences or {}),
            }

    def error_reply(self, status: int, code: str, message: str) -> _Reply:
        return _Reply(status, {"error": {"code": code, "message": message}})

    def rate_limited_reply(self, headers: dict[str, str]) -> _Reply:
        return _Reply(429, {"error": {"code": "rate_limit_error",
                                      "message": "Too many requests"}}, headers)

    def handle(self, method, path, query, headers, raw, record, outcome):
        prefix = f"/v1/spaces/{self.space_id}/collections/users/profiles/"
        if method != "GET" or not path.startswith(prefix) or not path.endswith("/traits"):
            raise self.error_reply(404, "not_found", "Resource was not found.")
        if _basic_user(headers) not in self.tokens:
            raise self.error_reply(401, "authentication_error", "Invalid access token.")
        ident = unquote(path[len(prefix): -len("/traits")])
        kind, _, value = ident.partition(":")
        if kind not in ("user_id", "anonymous_id", "email") or not value:
            raise self.error_reply(400, "validation_error", f"invalid identifier {ident!r}")
        try:
            limit = int(query.get("limit", ["10"])[0])
        except ValueError:
            limit = -1
        if not 1 <= limit <= 200:
            raise self.error_reply(400, "validation_error", "limit must be between 1 and 200")
        cls = query.get("class", [""])[0]
        if cls not in ("", "audience", "computed_trait"):
            raise self.error_reply(400, "validation_error", f"unknown class {cls!r}")
        with self.lock:
            stored = self.profiles.get(f"{kind}:{value}")
        if stored is None:
            raise self.error_reply(404, "not_found", "Profile was not found.")
        if cls:
            traits = dict(stored[cls])
        else:
            traits = {**stored["custom"], **stored["computed_trait"], **stored["audience"]}
        include = query.get("include", [""])[0]
        if include:
            wanted = set(include.split(","))
            traits = {k: v for k, v in traits.items() if k in wanted}
        names = sorted(traits)
        more = len(names) > limit
        page = {k: traits[k] for k in names[:limit]}
        cursor = {"url": path, "has_more": more, "next": names[limit] if more else "",
                  "limit": limit}
        self.count([f"{kind}:{value}"])
        return 200, {"traits": page, "cursor": cursor}, {"Request-Id": uuid.uuid4().hex}


def http_date(seconds_from_now: float) -> str:
    """An HTTP-date (RFC 9110) ``seconds_from_now`` in the future."""
    return formatdate(time.time() + seconds_from_now, usegmt=True)


FAKES = {"segment": FakeSegment, "rudderstack": FakeRudderStack, "profiles": FakeProfileAPI}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="serve a fake CDP on 127.0.0.1")
    parser.add_argument("--vendor", choices=sorted(FAKES), default="segment")
    parser.add_argument("--fail-ratio", type=float, default=0.0)
    parser.add_argument("--keep-requests", action="store_true")
    args = parser.parse_args(argv)
    fake = FAKES[args.vendor](fail_ratio=args.fail_ratio, keep_requests=args.keep_requests)
    fake.start()
    print(fake.url, flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        fake.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

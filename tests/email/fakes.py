"""Local fakes of SendGrid (v3 mail send), Klaviyo and Mailchimp that enforce the contracts
in ``shared/api-contracts.md`` (§5 Klaviyo, §6 Mailchimp, §7 SendGrid, §10 retry rules).

Each is a ``ThreadingHTTPServer`` on 127.0.0.1 (a free port) in a daemon thread: ``.url``,
``.requests`` (what arrived: method, path, headers, parsed body), ``.stop()``. They check
auth, required headers, payload shapes and limits, answer with the vendor's documented error
bodies, and keep state tests can read (``fake.lists``, ``fake.members``, ``fake.messages``).
``test_fakes_faithful.py`` shows they are faithful by pointing the official clients at them.

Assumptions the contracts mark unconfirmed are switches: ``FakeKlaviyo.missing_revision``
(what a request without ``revision`` gets), ``FakeSendGrid.message_id_header``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import re
import threading
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

__all__ = ["FakeKlaviyo", "FakeMailchimp", "FakeSendGrid", "Reply"]

EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


@dataclass
class Reply:
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: Any
    raw: bytes


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        parts = urlsplit(self.path)
        seen = Seen(
            self.command, unquote(parts.path), parse_qs(parts.query),
            {k.lower(): v for k, v in self.headers.items()}, None, raw,
        )
        try:
            reply = self.server.fake.handle(seen)
        except Exception as exc:  # a bug in the fake: make it loud
            reply = Reply(500, {"errors": [{"message": f"fake crashed: {exc!r}"}]})
        payload = b""
        if reply.body is not None:
            payload = (
                reply.body.encode() if isinstance(reply.body, str) else json.dumps(reply.body).encode()
            )
        self.send_response(reply.status)
        if payload:
            self.send_header("Content-Type", reply.content_type)
        for k, v in reply.headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if payload and self.command != "HEAD":
            self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, fake: _Fake) -> None:
        self.fake = fake
        super().__init__(("127.0.0.1", 0), _Handler)


class _Fake:
    """The HTTP plumbing shared by the fakes."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.requests: list[Seen] = []
        self._throttle: list[tuple[float, bool]] = []
        self.httpd = _Server(self)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def throttle_next(self, count: int = 1, *, retry_after: float = 1, as_date: bool = False) -> None:
        """The next ``count`` requests get 429 with ``Retry-After`` (seconds, or an HTTP-date
        with ``as_date``: RFC 9110 allows both)."""
        with self.lock:
            self._throttle.extend([(retry_after, as_date)] * count)

    def _take_throttle(self) -> tuple[float, bool] | None:
        with self.lock:
            return self._throttle.pop(0) if self._throttle else None

    @staticmethod
    def retry_after_value(seconds: float, as_date: bool) -> str:
        if as_date:
            return formatdate(time.time() + seconds, usegmt=True)
        return str(math.ceil(seconds))

    def handle(self, seen: Seen) -> Reply:
        with self.lock:
            self.requests.append(seen)
        return self.route(seen)

    def route(self, seen: Seen) -> Reply:  # pragma: no cover - overridden
        raise NotImplementedError

    def calls(self, method: str | None = None, path: str | None = None) -> list[Seen]:
        with self.lock:
            return [
                s for s in self.requests
                if (method is None or s.method == method) and (path is None or re.search(path, s.path))
            ]


def _json_body(seen: Seen) -> tuple[Any, str | None]:
    if not seen.raw:
        return None, "empty body"
    try:
        return json.loads(seen.raw), None
    except ValueError as exc:
        return None, f"invalid JSON: {exc}"


# ==========================================================================================
# SendGrid v3 mail send (§7)
# ==========================================================================================
class FakeSendGrid(_Fake):
    """``POST /v3/mail/send``. ``messages``: accepted payloads; ``reject``: addresses answered
    with a 400 (as SendGrid does for an address it refuses); ``limit``: requests allowed
    before 429 (None: unlimited)."""

    def __init__(self, api_keys: tuple[str, ...] = ("SG.persona-test-key",)) -> None:
        self.api_keys = set(api_keys)
        self.messages: list[dict[str, Any]] = []
        self.reject: set[str] = set()
        self.limit: int | None = None
        self.max_bytes = 30 * 1024 * 1024
        self.message_id_header = True  # X-Message-Id: unconfirmed in the contracts
        self._count = 0
        super().__init__()

    @staticmethod
    def _errors(status: int, message: str, field_: str | None = None, **headers: str) -> Reply:
        return Reply(status, {"errors": [{"message": message, "field": field_, "help": None}]},
                     headers=dict(headers))

    def _rate_headers(self) -> dict[str, str]:
        limit = self.limit if self.limit is not None else 600
        return {
            "X-RateLimit-Limit": str(limit),
            "X-RateLimit-Remaining": str(max(0, limit - self._count)),
            "X-RateLimit-Reset": str(int(time.time()) + 60),
        }

    def route(self, seen: Seen) -> Reply:
        if seen.path != "/v3/mail/send":
            return self._errors(404, "not found")
        if seen.method != "POST":
            return self._errors(405, "method not allowed")
        auth = seen.headers.get("authorization", "")
        if not auth.startswith("Bearer ") or auth[7:] not in self.api_keys:
            return self._errors(401, "The provided authorization grant is invalid, expired, or revoked")
        with self.lock:
            self._count += 1
            count = self._count
        throttled = self._take_throttle()
        if throttled is not None or (self.limit is not None and count > self.limit):
            reply = self._errors(429, "too many requests", **self._rate_headers())
            reply.body["errors"][0]["field"] = None
            return reply
        if len(seen.raw) > self.max_bytes:
            return self._errors(413, "content too large")
        if "json" not in seen.headers.get("content-type", ""):
            return self._errors(400, "Content-Type should be application/json.")
        data, problem = _json_body(seen)
        if problem:
            return self._errors(400, f"Bad Request: {problem}")
        error = self._validate(data)
        if error is not None:
            return Reply(400, {"errors": [error]}, headers=self._rate_headers())
        headers = self._rate_headers()
        sandbox = ((data.get("mail_settings") or {}).get("sandbox_mode") or {}).get("enable")
        if sandbox is True:
            return Reply(200, None, headers=headers)
        with self.lock:
            self.messages.append(data)
        if self.message_id_header:
            headers["X-Message-Id"] = uuid.uuid4().hex[:22]
        return Reply(202, None, headers=headers)

    def _validate(self, data: Any) -> dict[str, Any] | None:
        def err(message: str, field_: str | None) -> dict[str, Any]:
            return {"message": message, "field": field_, "help": None}

        if not isinstance(data, dict):
            return err("The request body must be a JSON object.", None)
        sender = data.get("from")
        if not isinstance(sender, dict) or not isinstance(sender.get("email"), str):
            return err("The from object must be provided for every email send.", "from")
        if not EMAIL.match(sender["email"]):
            return err("The from email does not contain a valid address.", "from.email")
        personalizations = data.get("personalizations")
        if not isinstance(personalizations, list) or not 1 <= len(personalizations) <= 1000:
            return err("The personalizations field is required and must have at least one "
                       "personalization.", "personalizations")
        seen: set[str] = set()
        total = 0
        for i, p in enumerate(personalizations):
            if not isinstance(p, dict) or not isinstance(p.get("to"), list) or not p["to"]:
                return err("The to array is required for all personalization objects, and must "
                           "have at least one email object with a valid email address.",
                           f"personalizations.{i}.to")
            for kind in ("to", "cc", "bcc"):
                for j, r in enumerate(p.get(kind) or []):
                    address = (r or {}).get("email") if isinstance(r, dict) else None
                    where = f"personalizations.{i}.{kind}.{j}.email"
                    if not isinstance(address, str) or not EMAIL.match(address):
                        return err("Does not contain a valid address.", where)
                    if address.lower() in self.reject:
                        return err("The email address is rejected.", where)
                    if address.lower() in seen:
                        return err("Each email address in the personalization block should be "
                                   "unique between to, cc, and bcc.", where)
                    seen.add(address.lower())
                    total += 1
            args = p.get("custom_args") or {}
            if not isinstance(args, dict) or not all(isinstance(v, str) for v in args.values()):
                return err("Custom args values must be strings.", f"personalizations.{i}.custom_args")
        if total > 1000:
            return err("The total number of recipients must be no more than 1000.", "personalizations")
        if not data.get("template_id"):
            subject = data.get("subject") or any(p.get("subject") for p in personalizations)
            if not subject:
                return err("The subject is required. You can get around this requirement if you "
                           "use a template with a subject defined or if every personalization "
                           "has a subject defined.", "subject")
            content = data.get("content")
            if not isinstance(content, list) or not content:
                return err("Unless a valid template_id is provided, the content parameter is "
                           "required.", "content")
            for k, c in enumerate(content):
                if not isinstance(c, dict) or not c.get("type") or not isinstance(c.get("value"), str) or not c["value"]:
                    return err("The content value must be a string at least one character in "
                               "length.", f"content.{k}.value")
        categories = data.get("categories")
        if categories is not None and (
            not isinstance(categories, list) or len(set(categories)) != len(categories)
            or len(categories) > 10
        ):
            return err("Too many categories (max 10, unique).", "categories")
        args = data.get("custom_args") or {}
        if not isinstance(args, dict) or not all(isinstance(v, str) for v in args.values()):
            return err("Custom args values must be strings.", "custom_args")
        return None

    def delivered(self) -> list[dict[str, Any]]:
        """One entry per personalization: to, subject, html, text, custom_args (merged)."""
        out = []
        with self.lock:
            for data in self.messages:
                content = {c["type"]: c["value"] for c in data.get("content", [])}
                for p in data["personalizations"]:
                    out.append({
                        "to": p["to"][0]["email"],
                        "subject": p.get("subject") or data.get("subject"),
                        "html": content.get("text/html", ""),
                        "text": content.get("text/plain", ""),
                        "custom_args": {**(data.get("custom_args") or {}), **(p.get("custom_args") or {})},
                        "categories": data.get("categories", []),
                    })
        return out


# ==========================================================================================
# Klaviyo (§5)
# ==========================================================================================
REVISION = re.compile(r"^\d{4}-\d{2}-\d{2}(\.[a-z0-9]+)?$")
_FILTER = re.compile(r'^equals\(email,"([^"]+)"\)$')

#: endpoint → (burst per second, steady per minute), from the contracts / SDK docstrings
KLAVIYO_LIMITS = {
    "profile-import": (75, 750),
    "subscribe": (75, 750),
    "unsubscribe": (75, 750),
    "list-relationships": (10, 150),
    "profiles": (75, 700),
    "deletion": (3, 60),
}


class FakeKlaviyo(_Fake):
    """Klaviyo's JSON:API: profile import, bulk subscribe / unsubscribe jobs, list
    relationships, profile lookup by email, data-privacy deletion.

    State: ``profiles`` (id → dict with email, external_id, subscribed), ``lists`` (list id →
    set of profile ids), ``deletions`` (emails a deletion was requested for). Fixed-window
    rate limits per endpoint (``limits``; burst 1 s, steady 60 s) answer 429 with
    ``Retry-After`` and without ``RateLimit-*`` headers; other answers carry them.
    """

    def __init__(
        self,
        api_keys: tuple[str, ...] = ("pk_persona_test",),
        lists: tuple[str, ...] = ("LVIP01", "LRET02"),
    ) -> None:
        self.api_keys = set(api_keys)
        self.profiles: dict[str, dict[str, Any]] = {}
        self.lists: dict[str, set[str]] = {lid: set() for lid in lists}
        self.deletions: list[str] = []
        #: addresses Klaviyo refuses as invalid in a job (its 400 points at the profile)
        self.reject: set[str] = set()
        self.limits = dict(KLAVIYO_LIMITS)
        self.missing_revision = 400  # unconfirmed: what Klaviyo does without `revision`
        self.clock = time.time  # the rate-limit windows' clock (tests may freeze it)
        self._windows: dict[tuple[str, str, int], int] = defaultdict(int)
        super().__init__()

    # -- helpers ---------------------------------------------------------------------------
    @staticmethod
    def error(status: int, code: str, title: str, detail: str, pointer: str | None = None,
              headers: dict[str, str] | None = None) -> Reply:
        body = {"errors": [{
            "id": uuid.uuid4().hex, "status": status, "code": code, "title": title,
            "detail": detail, "source": {"pointer": pointer} if pointer else {},
        }]}
        return Reply(status, body, headers=headers or {}, content_type="application/vnd.api+json")

    @staticmethod
    def parameter_error(parameter: str, detail: str) -> Reply:
        body = {"errors": [{"id": uuid.uuid4().hex, "status": 400, "code": "invalid",
                            "title": "Invalid input.", "detail": detail,
                            "source": {"parameter": parameter}}]}
        return Reply(400, body, content_type="application/vnd.api+json")

    def invalid(self, detail: str, pointer: str) -> Reply:
        return self.error(400, "invalid", "Invalid input.", detail, pointer)

    def by_email(self, email: str) -> dict[str, Any] | None:
        email = email.lower()
        for p in self.profiles.values():
            if p["email"] == email:
                return p
        return None

    def members(self, list_id: str) -> set[str]:
        """Emails on a list."""
        with self.lock:
            return {self.profiles[pid]["email"] for pid in self.lists[list_id] if pid in self.profiles}

    def subscribed(self) -> set[str]:
        with self.lock:
            return {p["email"] for p in self.profiles.values() if p["subscribed"]}

    def _rate(self, endpoint: str) -> Reply | dict[str, str]:
        burst, steady = self.limits.get(endpoint, (1000, 100000))
        now = self.clock()
        with self.lock:
            second = self._windows[(endpoint, "s", int(now))] + 1
            minute = self._windows[(endpoint, "m", int(now // 60))] + 1
            if second > burst or minute > steady:
                wait = (1 - now % 1) if second > burst else (60 - now % 60)
                return self.error(429, "throttled", "Request was throttled.",
                                  f"Request was throttled. Expected available in {math.ceil(wait)} seconds.",
                                  headers={"Retry-After": str(max(1, math.ceil(wait)))})
            self._windows[(endpoint, "s", int(now))] = second
            self._windows[(endpoint, "m", int(now // 60))] = minute
        return {
            "RateLimit-Limit": f"{burst}, {burst};w=1, {steady};w=60",
            "RateLimit-Remaining": str(max(0, burst - second)),
            "RateLimit-Reset": str(max(1, math.ceil(1 - now % 1))),
        }

    def _profile_json(self, p: dict[str, Any]) -> dict[str, Any]:
        return {"type": "profile", "id": p["id"],
                "attributes": {"email": p["email"], "external_id": p["external_id"],
                               "properties": p["properties"]},
                "links": {"self": f"{self.url}/api/profiles/{p['id']}/"}}

    def _upsert(self, email: str | None, external_id: str | None = None,
                properties: dict[str, Any] | None = None) -> tuple[dict[str, Any], bool]:
        existing = self.by_email(email) if email else None
        if existing is None and external_id:
            existing = next((p for p in self.profiles.values() if p["external_id"] == external_id), None)
        if existing is not None:
            if email:
                existing["email"] = email.lower()
            if external_id:
                existing["external_id"] = external_id
            existing["properties"].update(properties or {})
            return existing, False
        pid = "01" + uuid.uuid4().hex[:24].upper()
        profile = {"id": pid, "email": (email or "").lower() or None, "external_id": external_id,
                   "properties": dict(properties or {}), "subscribed": False}
        self.profiles[pid] = profile
        return profile, True

    # -- routing ---------------------------------------------------------------------------
    ROUTES = [
        ("POST", re.compile(r"^/api/profile-import/?$"), "profile-import", "_profile_import"),
        ("POST", re.compile(r"^/api/profile-subscription-bulk-create-jobs/?$"), "subscribe", "_subscribe"),
        ("POST", re.compile(r"^/api/profile-subscription-bulk-delete-jobs/?$"), "unsubscribe", "_unsubscribe"),
        ("POST", re.compile(r"^/api/lists/([^/]+)/relationships/profiles/?$"), "list-relationships", "_list_add"),
        ("DELETE", re.compile(r"^/api/lists/([^/]+)/relationships/profiles/?$"), "list-relationships", "_list_remove"),
        ("GET", re.compile(r"^/api/profiles/?$"), "profiles", "_get_profiles"),
        ("POST", re.compile(r"^/api/data-privacy-deletion-jobs/?$"), "deletion", "_deletion"),
    ]

    def route(self, seen: Seen) -> Reply:
        auth = seen.headers.get("authorization", "")
        key = auth[len("Klaviyo-API-Key "):] if auth.startswith("Klaviyo-API-Key ") else None
        if key not in self.api_keys:
            return self.error(401, "not_authenticated", "Authentication credentials were not provided.",
                              "Missing or invalid private key.", "/data/")
        revision = seen.headers.get("revision")
        if revision is None:
            return self.error(self.missing_revision, "invalid", "Invalid input.",
                              "The revision header is required.", None)
        if not REVISION.match(revision):
            return self.error(400, "invalid", "Invalid input.",
                              f"Invalid revision header: {revision!r}; expected YYYY-MM-DD.", None)
        for method, pattern, endpoint, handler in self.ROUTES:
            match = pattern.match(seen.path)
            if match is None:
                continue
            if seen.method != method:
                if not any(m == seen.method and p.match(seen.path) for m, p, _, _ in self.ROUTES):
                    return self.error(405, "method_not_allowed", "Method not allowed.",
                                      f"{seen.method} is not allowed here.")
                continue
            throttled = self._take_throttle()
            if throttled is not None:
                return self.error(429, "throttled", "Request was throttled.", "Request was throttled.",
                                  headers={"Retry-After": self.retry_after_value(*throttled)})
            rate = self._rate(endpoint)
            if isinstance(rate, Reply):
                return rate
            body = None
            if method in ("POST", "DELETE"):
                ctype = seen.headers.get("content-type", "")
                if "json" not in ctype:
                    return self.error(415, "unsupported_media_type", "Unsupported media type.",
                                      f"Content-Type {ctype!r} is not supported; use application/vnd.api+json.")
                body, problem = _json_body(seen)
                if problem:
                    return self.error(400, "parse_error", "Malformed request.", problem)
                seen.body = body
            with self.lock:
                reply = getattr(self, handler)(seen, body, *match.groups())
            reply.headers.update(rate)
            return reply
        return self.error(404, "not_found", "Not found.", f"{seen.path} is not an endpoint.")

    # -- endpoints -------------------------------------------------------------------------
    def _data(self, body: Any, type_: str) -> tuple[dict[str, Any] | None, Reply | None]:
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, dict):
            return None, self.invalid("'data' must be an object.", "/data")
        if data.get("type") != type_:
            return None, self.invalid(f"'type' must be {type_!r}.", "/data/type")
        attributes = data.get("attributes")
        if not isinstance(attributes, dict):
            return None, self.invalid("'attributes' must be an object.", "/data/attributes")
        return data, None

    def _profile_import(self, seen: Seen, body: Any) -> Reply:
        if len(seen.raw) > 100 * 1024:
            return self.error(413, "payload_too_large", "Payload too large.", "Max 100 KB.")
        data, error = self._data(body, "profile")
        if error:
            return error
        attrs_ = data["attributes"]
        email = attrs_.get("email")
        if email is not None and (not isinstance(email, str) or not EMAIL.match(email)):
            return self.invalid("Invalid email address", "/data/attributes/email")
        if not any(attrs_.get(k) for k in ("email", "phone_number", "external_id")) and not data.get("id"):
            return self.invalid("One of email, phone_number, external_id or id is required.",
                                "/data/attributes")
        properties = attrs_.get("properties") or {}
        if not isinstance(properties, dict):
            return self.invalid("'properties' must be an object.", "/data/attributes/properties")
        profile, created = self._upsert(email, attrs_.get("external_id"), properties)
        return Reply(201 if created else 200, {"data": self._profile_json(profile)},
                     content_type="application/vnd.api+json")

    def _job_profiles(self, data: dict[str, Any], consent: str) -> tuple[list[str], Reply | None]:
        profiles = (data["attributes"].get("profiles") or {}).get("data")
        base = "/data/attributes/profiles/data"
        if not isinstance(profiles, list) or not profiles:
            return [], self.invalid("'profiles.data' must be a non-empty list.", base)
        if len(profiles) > 1000:
            return [], self.invalid("At most 1000 profiles per job.", base)
        emails = []
        for i, p in enumerate(profiles):
            if not isinstance(p, dict) or p.get("type") != "profile":
                return [], self.invalid("Each profile needs type 'profile'.", f"{base}/{i}/type")
            attrs_ = p.get("attributes") or {}
            email = attrs_.get("email")
            if not isinstance(email, str) or not EMAIL.match(email) or email.lower() in self.reject:
                return [], self.invalid("Invalid email address", f"{base}/{i}/attributes/email")
            marketing = (((attrs_.get("subscriptions") or {}).get("email") or {}).get("marketing") or {})
            if marketing.get("consent") != consent:
                return [], self.invalid(f"subscriptions.email.marketing.consent must be {consent!r}.",
                                        f"{base}/{i}/attributes/subscriptions")
            if consent == "SUBSCRIBED" and data["attributes"].get("historical_import") is True \
                    and not marketing.get("consented_at"):
                return [], self.invalid("consented_at is required for a historical import.",
                                        f"{base}/{i}/attributes/subscriptions/email/marketing/consented_at")
            emails.append(email)
        return emails, None

    def _list_of(self, data: dict[str, Any]) -> tuple[str | None, Reply | None]:
        rel = ((data.get("relationships") or {}).get("list") or {}).get("data")
        if rel is None:
            return None, None
        if not isinstance(rel, dict) or rel.get("type") != "list" or not isinstance(rel.get("id"), str):
            return None, self.invalid("relationships.list.data must be {type: list, id}.",
                                      "/data/relationships/list/data")
        if rel["id"] not in self.lists:
            return None, self.error(404, "not_found", "Not found.", f"List {rel['id']} does not exist.",
                                    "/data/relationships/list/data/id")
        return rel["id"], None

    def _subscribe(self, seen: Seen, body: Any) -> Reply:
        data, error = self._data(body, "profile-subscription-bulk-create-job")
        if error:
            return error
        historical = data["attributes"].get("historical_import", False)
        if not isinstance(historical, bool):
            return self.invalid("historical_import must be a boolean.", "/data/attributes/historical_import")
        emails, error = self._job_profiles(data, "SUBSCRIBED")
        if error:
            return error
        list_id, error = self._list_of(data)
        if error:
            return error
        for email in emails:
            profile, _ = self._upsert(email)
            profile["subscribed"] = True
            if list_id:
                self.lists[list_id].add(profile["id"])
        return Reply(202, None)

    def _unsubscribe(self, seen: Seen, body: Any) -> Reply:
        data, error = self._data(body, "profile-subscription-bulk-delete-job")
        if error:
            return error
        emails, error = self._job_profiles(data, "UNSUBSCRIBED")
        if error:
            return error
        _, error = self._list_of(data)  # optional: unsubscribe from one list's consent only
        if error:
            return error
        for email in emails:
            profile = self.by_email(email)
            if profile is not None:
                profile["subscribed"] = False
        return Reply(202, None)

    def _relationship_ids(self, body: Any, list_id: str) -> tuple[list[str], Reply | None]:
        if list_id not in self.lists:
            return [], self.error(404, "not_found", "Not found.", f"List {list_id} does not exist.")
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, list) or not data:
            return [], self.invalid("'data' must be a non-empty list of profile identifiers.", "/data")
        if len(data) > 1000:
            return [], self.invalid("At most 1000 profiles.", "/data")
        ids = []
        for i, ref in enumerate(data):
            if not isinstance(ref, dict) or ref.get("type") != "profile" or not isinstance(ref.get("id"), str):
                return [], self.invalid("Each item must be {type: profile, id}.", f"/data/{i}")
            if ref["id"] not in self.profiles:
                return [], self.invalid(f"Profile {ref['id']} does not exist.", f"/data/{i}/id")
            ids.append(ref["id"])
        return ids, None

    def _list_add(self, seen: Seen, body: Any, list_id: str) -> Reply:
        ids, error = self._relationship_ids(body, list_id)
        if error:
            return error
        self.lists[list_id].update(ids)
        return Reply(204, None)

    def _list_remove(self, seen: Seen, body: Any, list_id: str) -> Reply:
        ids, error = self._relationship_ids(body, list_id)
        if error:
            return error
        self.lists[list_id].difference_update(ids)
        return Reply(204, None)

    def _get_profiles(self, seen: Seen, body: Any) -> Reply:
        size = seen.query.get("page[size]", ["20"])[-1]
        if not size.isdigit() or not 1 <= int(size) <= 100:
            return self.parameter_error("page[size]", "page[size] must be 1-100.")
        found = list(self.profiles.values())
        flt = seen.query.get("filter", [None])[-1]
        if flt is not None:
            match = _FILTER.match(flt)
            if match is None:
                return self.parameter_error("filter", f"Invalid filter: {flt}")
            found = [p for p in found if p["email"] == match.group(1).lower()]
        return Reply(200, {"data": [self._profile_json(p) for p in found[: int(size)]],
                           "links": {"self": f"{self.url}/api/profiles/", "next": None, "prev": None}},
                     content_type="application/vnd.api+json")

    def _deletion(self, seen: Seen, body: Any) -> Reply:
        data, error = self._data(body, "data-privacy-deletion-job")
        if error:
            return error
        profile = (data["attributes"].get("profile") or {}).get("data")
        if not isinstance(profile, dict) or profile.get("type") != "profile":
            return self.invalid("profile.data must be {type: profile, ...}.", "/data/attributes/profile/data")
        attrs_ = profile.get("attributes") or {}
        given = [k for k in ("email", "phone_number") if attrs_.get(k)] + (["id"] if profile.get("id") else [])
        if len(given) != 1:
            return self.invalid("Provide exactly one of email, phone_number or id.",
                                "/data/attributes/profile/data/attributes")
        email = attrs_.get("email")
        if email is not None:
            if not EMAIL.match(email):
                return self.invalid("Invalid email address", "/data/attributes/profile/data/attributes/email")
            self.deletions.append(email.lower())
            for pid in [p["id"] for p in self.profiles.values() if p["email"] == email.lower()]:
                del self.profiles[pid]
                for members in self.lists.values():
                    members.discard(pid)
        return Reply(202, None)


# ==========================================================================================
# Mailchimp Marketing API v3 (§6)
# ==========================================================================================
STATUSES = {"subscribed", "unsubscribed", "cleaned", "pending", "transactional"}


def md5(email: str) -> str:
    return hashlib.md5(email.lower().encode()).hexdigest()


class FakeMailchimp(_Fake):
    """One or more audiences under ``/3.0``: upsert, patch, read members, tags, permanent
    delete. Basic auth (any user, the key as password) or ``Bearer``. Beyond ``max_connections``
    requests in flight at once → 429; ``latency`` seconds per request make overlap visible;
    ``max_in_flight`` is the most seen at once."""

    def __init__(
        self,
        api_key: str = "0123456789abcdef0123456789abcdef-us19",
        lists: tuple[str, ...] = ("aud001",),
        merge_fields: tuple[str, ...] = ("FNAME", "LNAME"),
    ) -> None:
        self.api_key = api_key
        self.members: dict[str, dict[str, dict[str, Any]]] = {lid: {} for lid in lists}
        self.merge_fields = set(merge_fields)
        self.forgotten: dict[str, set[str]] = {lid: set() for lid in lists}
        self.max_connections = 10
        self.latency = 0.0
        self.in_flight = 0
        self.max_in_flight = 0
        self.rejected_for_concurrency = 0
        super().__init__()

    @staticmethod
    def problem(status: int, title: str, detail: str, errors: list[dict[str, str]] | None = None) -> Reply:
        body: dict[str, Any] = {
            "type": "https://mailchimp.com/developer/marketing/docs/errors/",
            "title": title, "status": status, "detail": detail, "instance": str(uuid.uuid4()),
        }
        if errors:
            body["errors"] = errors
        return Reply(status, body, content_type="application/problem+json")

    def tags(self, list_id: str, email: str) -> set[str]:
        with self.lock:
            member = self.members[list_id].get(md5(email))
            return set(member["tags"]) if member else set()

    def member(self, list_id: str, email: str) -> dict[str, Any] | None:
        with self.lock:
            return self.members[list_id].get(md5(email))

    def handle(self, seen: Seen) -> Reply:
        with self.lock:
            self.requests.append(seen)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            over = self.in_flight > self.max_connections
            if over:
                self.rejected_for_concurrency += 1
        try:
            if over:
                return self.problem(429, "Too Many Requests",
                                    f"You have exceeded the limit of {self.max_connections} "
                                    "simultaneous connections.")
            if self.latency:
                time.sleep(self.latency)
            return self.route(seen)
        finally:
            with self.lock:
                self.in_flight -= 1

    MEMBER = re.compile(r"^/3\.0/lists/([^/]+)/members/([^/]+)(/tags|/actions/delete-permanent)?/?$")

    def route(self, seen: Seen) -> Reply:
        auth = seen.headers.get("authorization", "")
        ok = False
        if auth.startswith("Basic "):
            try:
                _, _, password = base64.b64decode(auth[6:]).decode().partition(":")
                ok = password == self.api_key
            except ValueError:
                ok = False
        elif auth.startswith("Bearer "):
            ok = auth[7:] == self.api_key
        if not ok:
            return self.problem(401, "API Key Invalid", "Your API key may be invalid, or you've "
                                "attempted to access the wrong datacenter.")
        throttled = self._take_throttle()
        if throttled is not None:
            reply = self.problem(429, "Too Many Requests", "You have exceeded the limit of 10 simultaneous connections.")
            return reply
        match = self.MEMBER.match(seen.path)
        if match is None:
            return self.problem(404, "Resource Not Found", "The requested resource could not be found.")
        list_id, sub_hash, action = match.groups()
        if list_id not in self.members:
            return self.problem(404, "Resource Not Found", "The requested resource could not be found.")
        body = None
        if seen.method in ("PUT", "PATCH", "POST") and action != "/actions/delete-permanent":
            body, problem = _json_body(seen)
            if problem:
                return self.problem(400, "JSON Parse Exception", "We encountered an unspecified JSON "
                                    f"parsing error. ({problem})")
            seen.body = body
            if not isinstance(body, dict):
                return self.problem(400, "Invalid Resource", "The resource submitted could not be validated.")
        with self.lock:
            if action is None:
                if seen.method == "PUT":
                    return self._put(list_id, sub_hash, body)
                if seen.method == "PATCH":
                    return self._patch(list_id, sub_hash, body)
                if seen.method == "GET":
                    member = self.members[list_id].get(sub_hash.lower())
                    if member is None:
                        return self.problem(404, "Resource Not Found", "The requested resource could not be found.")
                    return Reply(200, self._member_json(list_id, member))
                return self.problem(405, "Method Not Allowed", "The requested method and resource are not compatible.")
            if seen.method != "POST":
                return self.problem(405, "Method Not Allowed", "The requested method and resource are not compatible.")
            if action == "/tags":
                return self._tags(list_id, sub_hash, body)
            return self._delete_permanent(list_id, sub_hash)

    def _member_json(self, list_id: str, m: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": m["id"], "email_address": m["email_address"], "unique_email_id": m["id"][:10],
            "status": m["status"], "merge_fields": dict(m["merge_fields"]),
            "tags": [{"id": i, "name": t} for i, t in enumerate(sorted(m["tags"]))],
            "tags_count": len(m["tags"]), "list_id": list_id,
        }

    def _invalid(self, field_: str, message: str) -> Reply:
        return self.problem(400, "Invalid Resource",
                            "The resource submitted could not be validated. For field-specific "
                            "details, see the 'errors' array.", [{"field": field_, "message": message}])

    def _put(self, list_id: str, sub_hash: str, body: dict[str, Any]) -> Reply:
        email = body.get("email_address")
        if not isinstance(email, str) or not EMAIL.match(email):
            return self._invalid("email_address", "This value should be a valid email address.")
        if sub_hash.lower() not in (md5(email), email.lower()):
            return self.problem(400, "Invalid Resource",
                                "The subscriber hash does not match the email address.")
        key = md5(email)
        if key in self.forgotten[list_id]:
            return self.problem(400, "Forgotten Email Not Subscribed",
                                f"{email} was permanently deleted and cannot be re-imported. The "
                                "contact must re-subscribe to get back on the list.")
        for name in ("status", "status_if_new"):
            if name in body and body[name] not in STATUSES:
                return self._invalid(name, f"Invalid status: {body[name]!r}.")
        merge = body.get("merge_fields") or {}
        if not isinstance(merge, dict):
            return self._invalid("merge_fields", "merge_fields must be an object.")
        for tag, value in merge.items():
            if tag not in self.merge_fields:
                return self._invalid(f"merge_fields.{tag}", "This merge field does not exist.")
            if not isinstance(value, str):
                return self._invalid(f"merge_fields.{tag}", "Merge field values must be strings.")
        member = self.members[list_id].get(key)
        if member is None:
            status = body.get("status") or body.get("status_if_new")
            if status is None:
                return self._invalid("status_if_new", "The status_if_new field is required to add "
                                     "a new member.")
            member = {"id": key, "email_address": email.lower(), "status": status,
                      "merge_fields": {}, "tags": set()}
            self.members[list_id][key] = member
        elif "status" in body:
            member["status"] = body["status"]
        member["merge_fields"].update(merge)
        return Reply(200, self._member_json(list_id, member))

    def _patch(self, list_id: str, sub_hash: str, body: dict[str, Any]) -> Reply:
        member = self.members[list_id].get(sub_hash.lower())
        if member is None:
            return self.problem(404, "Resource Not Found", "The requested resource could not be found.")
        if "status" in body:
            if body["status"] not in STATUSES:
                return self._invalid("status", f"Invalid status: {body['status']!r}.")
            member["status"] = body["status"]
        return Reply(200, self._member_json(list_id, member))

    def _tags(self, list_id: str, sub_hash: str, body: dict[str, Any]) -> Reply:
        member = self.members[list_id].get(sub_hash.lower())
        if member is None:
            return self.problem(404, "Resource Not Found", "The requested resource could not be found.")
        tags = body.get("tags")
        if not isinstance(tags, list) or not tags:
            return self._invalid("tags", "tags must be a non-empty array.")
        if "is_syncing" in body and not isinstance(body["is_syncing"], bool):
            return self._invalid("is_syncing", "is_syncing must be a boolean.")
        changes = []
        for i, tag in enumerate(tags):
            if not isinstance(tag, dict) or not isinstance(tag.get("name"), str) or not tag["name"].strip():
                return self._invalid(f"tags.{i}.name", "Each tag needs a name.")
            if len(tag["name"]) > 100:
                return self._invalid(f"tags.{i}.name", "Tag names are at most 100 characters.")
            if tag.get("status") not in ("active", "inactive"):
                return self._invalid(f"tags.{i}.status", "status must be 'active' or 'inactive'.")
            changes.append((tag["name"], tag["status"]))
        for name, status in changes:
            (member["tags"].add if status == "active" else member["tags"].discard)(name)
        return Reply(204, None)

    def _delete_permanent(self, list_id: str, sub_hash: str) -> Reply:
        member = self.members[list_id].pop(sub_hash.lower(), None)
        if member is None:
            return self.problem(404, "Resource Not Found", "The requested resource could not be found.")
        self.forgotten[list_id].add(sub_hash.lower())
        return Reply(204, None)
